"""``pipeline worker``: a long-running deliverer for a service manager (systemd, a container).

A worker is a loop around the same drain ``pipeline deliver`` runs (``deliver_outbox``):
claim due rows with a lease, send, record each message's fate, renew leases while it works.
Between drains it waits for a new digest's announcement (LISTEN/NOTIFY on PostgreSQL)
or ``poll`` seconds, whichever comes first (deferred rows come due without one). Any number of workers, on any number of machines, share the outbox through the
ledger alone: claims (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) keep them from sending a row
twice, and a dead worker's rows come back when its leases run out.

SIGTERM (and Ctrl-C) stop it cleanly: messages in flight are sent and recorded, the rest of
its claim is released for the others, and it exits 0. A relay or database that is down
does not end it: it says so and tries again after ``retry`` seconds. ``once`` drains what is
due and returns (for cron), and there any error is raised.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.config import Settings
from pipeline.delivery_run import DeliveryReport
from pipeline.entry import EARLY_STOP
from pipeline.errors import DeliveryError, LedgerError, PipelineError
from pipeline.store import Ledger, open_ledger
from pipeline.workers import deliver_outbox

__all__ = ["WorkerReport", "run_worker"]

POLL = 5.0  # seconds between looks at the outbox while it is empty
RETRY = 30.0  # seconds before trying again after the relay or the database failed


@dataclass(slots=True)
class WorkerReport:
    """What a worker did over its life: its drains' reports folded together."""

    drains: int = 0
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    errors: list[str] = field(default_factory=list)


def run_worker(
    settings: Settings,
    *,
    once: bool = False,
    poll: float = POLL,
    retry: float = RETRY,
    stop: threading.Event | None = None,
    on_drain: Callable[[DeliveryReport], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> WorkerReport:
    """Deliver the outbox until ``stop`` is set (SIGTERM or SIGINT set it too); return totals.

    ``on_drain`` gets the report of each drain that had something to do, ``on_error`` the
    one-line reason a drain failed (the worker then waits ``retry`` seconds). With ``once``
    it returns after one drain and raises ``DeliveryError`` / ``LedgerError`` instead.
    """
    stop = stop or threading.Event()
    report = WorkerReport()
    ledger: Ledger | None = None

    def failed(exc: PipelineError) -> None:
        """Say why, drop a broken database connection, and wait before trying again."""
        nonlocal ledger
        report.errors.append(str(exc))
        if on_error is not None:
            on_error(str(exc))
        if isinstance(exc, LedgerError) and ledger is not None:
            with contextlib.suppress(Exception):
                ledger.close()
            ledger = None  # reconnect next time
        stop.wait(retry)

    with _stop_on_signals(stop):
        if EARLY_STOP.is_set():  # a stop signal came while the command was starting
            stop.set()
        try:
            while not stop.is_set():
                _listen(stop)  # again each time: a drain hands SIGINT back to Python's default
                try:
                    ledger = ledger or open_ledger(settings)
                    drained = deliver_outbox(
                        settings, ledger, stop=stop.is_set, clock=lambda: datetime.now(UTC)
                    )
                except (DeliveryError, LedgerError) as exc:
                    if once:
                        raise
                    failed(exc)
                    continue
                if drained.interrupted:
                    stop.set()  # Ctrl-C reached the drain's own handler
                _fold(report, drained)
                if (drained.total or drained.done) and on_drain is not None:
                    on_drain(drained)
                if once:
                    break
                try:
                    ledger.wait_for_outbox(poll, stop.is_set)
                except LedgerError as exc:  # the connection broke while idle
                    failed(exc)
        finally:
            if ledger is not None:
                ledger.close()
    return report


def _fold(report: WorkerReport, drained: DeliveryReport) -> None:
    report.drains += 1
    totals = report.delivery
    totals.add(drained)
    totals.total += drained.total
    totals.seconds += drained.seconds
    totals.pending = drained.pending  # as the latest drain left the outbox


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _listen(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; the drain then finishes the messages in flight."""
    if threading.current_thread() is threading.main_thread():
        for sig in _STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: stop.set())


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Within the block the stop signals set ``stop``; their handlers are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    _listen(stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
