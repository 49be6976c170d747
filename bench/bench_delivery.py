"""Delivery into Postfix's smtp-sink: the pipeline against a naive sender and smtp-source.

One digest of the sample project goes to N generated subscribers (100,000 at scale 1, and
a tenth of that to show memory stays flat). Every sender talks to the same smtp-sink, in
the same run:

- the pipeline: ``deliver_outbox`` as ``pipeline publish`` runs it (claim-before-send
  outbox, persistent connections, one drain per core for large lists), in a fresh
  process whose peak RSS is measured (every process of it, sampled from /proc);
- the straightforward way: per subscriber, render the digest (Jinja2 and MJML), build an
  ``EmailMessage`` and send it over a new aiosmtplib connection; sampled, then
  extrapolated to N;
- Postfix's ``smtp-source`` (C, same number of sessions) sending N messages of the same
  size: the limit of the link on this machine.

``python -m bench delivery`` (``--scale 0.1`` for a quick look).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from bench.table import Table

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONNECTIONS = 4
SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
SENDER = "newsletter@example.org"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen(
        [SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return sink
        time.sleep(0.05)
    sink.kill()
    raise RuntimeError(f"smtp-sink did not start on port {port}")


def make_project(root: Path, subscribers: int) -> int:
    """The sample project with one recorded digest for ``subscribers`` generated addresses.

    The outbox is written straight through ``Ledger.record_publish`` from a generator, so
    preparing a big list costs no memory either. Returns the digest id.
    """
    from pipeline import load_settings, open_ledger, plan_publish
    from pipeline.store import PublishRecord

    for name in ("articles", "templates", "subscribers"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pipeline.toml", root / "pipeline.toml")
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=NOW)
        assert plan.digest is not None
        keys = [a.audience.key for a in plan.digest.audiences]
        record = PublishRecord(
            articles=(),
            withdrawn=(),
            digest_subject=plan.digest.subject,
            web_html=plan.digest.web_html,
            audiences=tuple(a.record() for a in plan.digest.audiences),
            recipients=(
                (keys[i % len(keys)], f"reader{i:06d}@example.net", f"Reader {i}")
                for i in range(subscribers)
            ),
        )
        digest_id = ledger.record_publish(record, NOW)
    assert digest_id is not None
    return digest_id


def _tree_memory(pid: int) -> tuple[int, int]:
    """(PSS summed, largest RSS) in KB over ``pid`` and its descendants.

    PSS splits pages shared between processes (forked drains share the parent's code)
    among them, so the sum is the memory the run really occupies.
    """
    total = largest = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                largest = max(largest, int(line.split()[1]))
        stack += [int(child) for child in children]
    return total, largest


def run_pipeline(
    root: Path, port: int, *, reuse_message: bool = False
) -> tuple[dict[str, float], float, int, int]:
    """Deliver the outbox in a fresh process; (report, seconds, peak KB all, peak KB one)."""
    env = {**os.environ, "PIPELINE_SMTP_URL": f"smtp://127.0.0.1:{port}"}
    if reuse_message:
        env["BENCH_REUSE_MESSAGE"] = "1"
    env.setdefault("PIPELINE_SECRET_KEY", "bench-secret")
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_delivery", str(root)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
    )
    peaks = [0, 0]

    def sample() -> None:
        while child.poll() is None:
            total, largest = _tree_memory(child.pid)
            peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"delivery process failed with exit code {child.returncode}")
    return json.loads(out), seconds, peaks[0], peaks[1]


def _child(root: Path) -> None:
    """The measured process: exactly what ``pipeline deliver`` does, minus the printing."""
    from pipeline import load_settings, open_ledger
    from pipeline.workers import deliver_outbox

    if os.environ.get("BENCH_REUSE_MESSAGE"):
        _reuse_first_message()
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        report = deliver_outbox(settings, ledger)
    print(json.dumps({**asdict(report), "rate": report.rate}))


def _reuse_first_message() -> None:
    """A fake factory, named as such: build one message, then resend its bytes to each row.

    It takes message building out of the measurement, to show what the claiming, sending
    and recording machinery alone can do.
    """
    from dataclasses import replace

    from pipeline.messages import MessageFactory, OutgoingMessage

    build = MessageFactory.build
    first: list[OutgoingMessage] = []

    def reuse(self: MessageFactory, row: object, **options: object) -> OutgoingMessage:
        if not first:
            first.append(build(self, row, **options))  # type: ignore[arg-type]
        return replace(first[0], recipient=row.email)  # type: ignore[attr-defined]

    MessageFactory.build = reuse  # type: ignore[method-assign]


def run_straightforward(root: Path, port: int, sample: int) -> tuple[float, int]:
    """Render, build and send ``sample`` messages the naive way; (messages/s, bytes each)."""
    import aiosmtplib

    from pipeline import load_settings, open_ledger, plan_publish
    from pipeline.digest import public_slot_values, render_audience, template_environment
    from pipeline.disclaimer import load_disclaimer

    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=NOW)
    assert plan.digest is not None
    audience = plan.digest.audiences[0].audience
    disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
    env = template_environment(str(settings.paths.templates))

    async def send_all() -> int:
        size = 0
        for i in range(sample):
            compiled = render_audience(audience, settings, disclaimer, env, f"n{i}")
            values = {**public_slot_values(settings), "greeting": f"Hello Reader {i},"}
            message = EmailMessage()
            message["From"] = SENDER
            message["To"] = f"reader{i:06d}@example.net"
            message["Subject"] = compiled.subject
            message.set_content(compiled.text.fill(values, escape=False))
            message.add_alternative(compiled.html.fill(values, escape=True), subtype="html")
            size = len(message.as_bytes())
            await aiosmtplib.send(message, hostname="127.0.0.1", port=port, start_tls=False)
        return size

    started = time.perf_counter()
    size = asyncio.run(send_all())
    return sample / (time.perf_counter() - started), size


def run_smtp_source(port: int, messages: int, size: int) -> float:
    """smtp-source sending ``messages`` of about ``size`` bytes; messages per second."""
    started = time.perf_counter()
    subprocess.run(
        [
            *(SOURCE, "-s", str(CONNECTIONS), "-d", "-m", str(messages), "-l", str(size)),
            *("-f", SENDER, "-t", "reader@example.net", f"127.0.0.1:{port}"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return messages / (time.perf_counter() - started)


def run(scale: float) -> Table:
    full = max(1000, int(100_000 * scale))
    sizes = [full // 10, full]
    sample = max(50, int(500 * scale))
    table = Table(
        f"Delivery of one digest into smtp-sink ({CONNECTIONS} connections/sessions, "
        f"{os.cpu_count()} cores)",
        ["sender", "messages", "seconds", "messages/s", "vs smtp-source", "peak memory MB"],
    )
    port = _free_port()
    sink = _start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = []
            for count in sizes:
                root = Path(tmp) / f"site-{count}"
                root.mkdir()
                make_project(root, count)
                results.append(
                    (f"pipeline (deliver_outbox), {count:,}", count, *run_pipeline(root, port))
                )
            root = Path(tmp) / "site-reuse"
            root.mkdir()
            make_project(root, full)
            results.append(
                (
                    "pipeline, one message reused (fake factory)",
                    full,
                    *run_pipeline(root, port, reuse_message=True),
                )
            )
            naive_rate, size = run_straightforward(Path(tmp) / f"site-{sizes[0]}", port, sample)
        source_rate = run_smtp_source(port, full, size)
    finally:
        sink.kill()
        sink.wait()

    for label, count, report, seconds, peak_all, peak_one in results:
        assert report["sent"] == count, report
        rate = count / seconds
        table.add(
            label,
            count,
            seconds,
            rate,
            f"{rate / source_rate:.2f}",
            f"{peak_all / 1024:.0f} (largest {peak_one / 1024:.0f})",
        )
    table.add(
        f"straightforward (sampled {sample}, extrapolated)",
        full,
        full / naive_rate,
        naive_rate,
        f"{naive_rate / source_rate:.2f}",
        "",
    )
    table.add("smtp-source (C, Postfix)", full, full / source_rate, source_rate, "1.00", "")
    table.notes += [
        f"Messages are about {size / 1024:.0f} KB (the sample digest); smtp-source sends the "
        "same count of messages of that size over the same number of sessions.",
        "Pipeline times are wall clock of a fresh process: start-up, claiming, building, "
        "sending and recording each row. Peak memory is sampled from /proc every 50 ms: PSS "
        "summed over the process and its drain processes (shared pages split between them), "
        "and in brackets the largest single process's RSS.",
        "The fake-factory row builds one message and resends its bytes to every row: it "
        "measures claiming, sending and recording alone, without message building.",
        f"Target: at least 0.35 of smtp-source end to end (0.5 the goal); RSS under 100 MB "
        f"and flat from {sizes[0]:,} to {sizes[1]:,}.",
    ]
    return table


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
