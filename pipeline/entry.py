"""The ``pipeline`` console script (and ``python -m pipeline``), light on purpose.

A service manager may send ``pipeline worker`` SIGTERM at any moment, even while Python is
still importing the library (about half a second). So, for ``worker``, the stop signals are
caught here first, before anything slow is imported: a signal that arrives early is kept in
:data:`EARLY_STOP`, and the worker, once running, stops at once without claiming anything.
Every other command keeps the default signal actions. Only the standard library is imported.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

__all__ = ["EARLY_STOP", "main", "wants_worker"]

EARLY_STOP = threading.Event()  # set by SIGTERM or SIGINT before the worker took over
_OPTIONS_WITH_VALUES = ("--root",)  # the group's options that take a value


def wants_worker(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (without the program name) runs ``pipeline worker``."""
    values_left = 0
    for arg in argv:
        if values_left:
            values_left -= 1
        elif arg in _OPTIONS_WITH_VALUES:
            values_left = 1
        elif not arg.startswith("-"):
            return arg == "worker"
    return False


def hold_stop_signals() -> None:
    """Until the worker installs its own handlers, SIGTERM and SIGINT set ``EARLY_STOP``."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: EARLY_STOP.set())


def main() -> None:
    if wants_worker(sys.argv[1:]):
        hold_stop_signals()
    from pipeline.cli import main as run_cli  # the slow part: the whole library

    run_cli()
