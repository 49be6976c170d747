"""Run ``pipeline`` on a real pseudo-terminal, for what only a terminal shows: questions,
colour, progress. The command runs in a subprocess whose stdin, stdout and stderr are the
terminal's other end, exactly as when an editor types it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence

from tests.conftest import REPO

# Select Graphic Rendition: colours and bold/italic, not cursor movement.
STYLE_CODE = re.compile(r"\x1b\[[0-9;]*m")


def run_in_terminal(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    answer: str | None = None,
    timeout: float = 120.0,
) -> tuple[int, str]:
    """Run ``python -m pipeline ARGS`` on a terminal; type ``answer`` at a [y/N] question.

    Returns the exit code and everything the terminal showed. ``timeout`` only stops a hung
    run from hanging the suite; nothing is measured.
    """
    main, other = pty.openpty()
    fcntl.ioctl(other, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        stdin=other,
        stdout=other,
        stderr=other,
        env=dict(env),
        cwd=REPO,
        close_fds=True,
    )
    os.close(other)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            if answer is not None and b"[y/N]" in screen:
                os.write(main, answer.encode("utf-8") + b"\n")
                answer = None
        else:
            process.kill()
            raise AssertionError(f"pipeline {' '.join(args)} did not finish: {screen!r}")
        return process.wait(timeout=timeout), screen.decode("utf-8", "replace")
    finally:
        os.close(main)
