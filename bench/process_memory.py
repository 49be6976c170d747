"""Memory and CPU time of a whole command: every process it starts.

Not a benchmark of its own (the name does not start with ``bench_``): the delivery
benchmark uses it to measure ``pipeline publish`` end to end, planning, recording and
sending, and the drain alone.
"""

from __future__ import annotations

import resource
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MemoryPeaks", "run_measured", "tree_memory"]


@dataclass
class MemoryPeaks:
    """Peaks in KB: PSS summed over the tree, and the peak RSS of each process by pid."""

    total_pss: int = 0
    rss: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # user + system time of the whole tree, once it has ended

    @property
    def largest(self) -> int:
        return max(self.rss.values(), default=0)

    def per_process(self) -> str:
        """``"parent 61, drain 45, drain 44"``: each process's peak RSS in MB, oldest first."""
        return ", ".join(
            f"{self.names[pid]} {kb / 1024:.0f}" for pid, kb in sorted(self.rss.items())
        )


def tree_memory(pid: int) -> dict[int, tuple[int, int, str]]:
    """``{pid: (pss_kb, rss_kb, name)}`` for ``pid`` and its descendants.

    PSS splits pages shared between processes (forked drains share the parent's code)
    among them, so their sum is the memory the run really occupies.
    """
    found: dict[int, tuple[int, int, str]] = {}
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pss = sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        rss = sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        found[current] = (pss, rss, "parent" if current == pid else "drain")
        stack += [int(child) for child in children]
    return found


def run_measured(
    command: Sequence[str], *, cwd: Path, env: dict[str, str], every: float = 0.05
) -> tuple[bytes, float, MemoryPeaks]:
    """Run ``command`` to its end; (stdout, seconds, peaks). Raises if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE)
    peaks = MemoryPeaks()

    def sample() -> None:
        while child.poll() is None:
            tree = tree_memory(child.pid)
            peaks.total_pss = max(peaks.total_pss, sum(pss for pss, _, _ in tree.values()))
            for pid, (_, rss, name) in tree.items():
                peaks.rss[pid] = max(peaks.rss.get(pid, 0), rss)
                peaks.names[pid] = name
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    # The children's times include their own waited-for children (the drain processes).
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peaks.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} failed with exit code {child.returncode}")
    return out, seconds, peaks
