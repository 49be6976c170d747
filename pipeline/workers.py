"""Deliver the outbox with every core: one drain per process, all claiming from one ledger.

A single Python process tops out well below what a mail server accepts on the same
machine: building and sending a message is CPU-bound. ``deliver_outbox`` therefore starts
one drain per core for large outboxes. The drains share nothing but the SQLite ledger;
claim-before-send leases (``pipeline.ledger``) keep them from sending a row twice. The
connections and rate limits of ``[send]`` are split evenly between them.

Ctrl-C in the parent tells every drain to finish its messages in flight and stop; a drain
whose parent has died stops the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Event

from pipeline.config import Settings, secret_key
from pipeline.delivery import Transport, transport_for
from pipeline.delivery_run import DeliveryOptions, DeliveryReport
from pipeline.drain import Progress, deliver
from pipeline.errors import DeliveryError
from pipeline.messages import MessageFactory
from pipeline.refusals import revive_misjudged
from pipeline.store import Ledger, open_ledger

__all__ = ["PARALLEL_FROM", "deliver_outbox", "process_count"]

# Below this many due rows one process finishes before more would have started.
PARALLEL_FROM = 5000
# How often a drain process reports its progress to the parent.
PROGRESS_EVERY = 0.2


def process_count(settings: Settings, due: int, *, smtp: bool = True) -> int:
    """How many drains to run: ``[send] processes``, or with 0 one per core for big lists."""
    wanted = settings.send.processes
    if wanted == 0:
        wanted = (os.cpu_count() or 1) if smtp and due >= PARALLEL_FROM else 1
    return max(1, min(wanted, settings.send.connections))


def deliver_outbox(
    settings: Settings,
    ledger: Ledger,
    *,
    retry_failed: bool = False,
    on_progress: Progress | None = None,
    make_transport: Callable[[], Transport] | None = None,
    connections: int | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    stop: Callable[[], bool] | None = None,
) -> DeliveryReport:
    """Send every due row of the outbox as ``[send]`` and ``[smtp]`` say; return the report.

    ``retry_failed`` first reactivates addresses an older pipeline suppressed on a refusal
    today's rules do not hold against them (``revive_misjudged``), then makes failed rows
    pending again (suppressed addresses stay failed). ``make_transport`` replaces the configured transport (one process then).
    ``stop()`` returning true ends the run after the messages in flight (a worker's
    SIGTERM). Raises ``DeliveryError`` when nothing could be sent at all.
    """
    revived = revive_misjudged(ledger, clock()) if retry_failed else []
    retried = ledger.retry_failed() if retry_failed else 0
    configured, smtp = transport_for(settings)
    options = DeliveryOptions.from_settings(settings.send, bounces=settings.bounces)
    if not smtp:
        connections = connections or 1  # one writer is plenty for a local Maildir
    if connections is not None:
        options = dataclasses.replace(options, connections=connections)
    processes = 1
    if make_transport is None:
        processes = process_count(settings, ledger.due_count(clock()), smtp=smtp)
    if processes == 1:
        factory = MessageFactory(
            settings, secret_key(settings), ledger.audience, load_stored=ledger.stored_message
        )
        report = deliver(
            ledger,
            factory,
            make_transport or configured,
            options,
            clock=clock,
            on_progress=on_progress,
            stop=stop,
        )
    else:
        report = _deliver_in_processes(settings, ledger, processes, on_progress, clock, stop)
    report.retried = retried
    report.reactivated = len(revived)
    report.waiting, report.next_try = ledger.deferred_waiting(clock())
    return report


def _deliver_in_processes(
    settings: Settings,
    ledger: Ledger,
    processes: int,
    on_progress: Progress | None,
    clock: Callable[[], datetime],
    external_stop: Callable[[], bool] | None,
) -> DeliveryReport:
    started = time.perf_counter()
    total = ledger.due_count(clock())
    # Fork: the drains share the parent's imported code pages instead of importing it all
    # again (about 40 MB a process). They open their own ledger connection and never touch
    # the parent's, and no event loop runs in the parent while they work.
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    messages: multiprocessing.Queue[tuple[str, int, object]] = context.Queue()
    key = secret_key(settings)
    children = [
        context.Process(
            target=_drain_process,
            args=(settings, key, index, processes, os.getpid(), stop, messages),
            name=f"pipeline-drain-{index}",
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    latest = {index: DeliveryReport() for index in range(processes)}
    finished: dict[int, DeliveryReport] = {}
    errors: dict[int, str] = {}
    with _stop_on_sigint(stop):
        while len(finished) + len(errors) < processes:
            if external_stop is not None and external_stop():
                stop.set()
            try:
                kind, index, payload = messages.get(timeout=0.5)
            except queue.Empty:
                for index, child in enumerate(children):
                    if child.exitcode is not None and index not in finished | errors:
                        errors[index] = f"drain process {index} died (exit code {child.exitcode})"
                continue
            if kind == "error":
                errors[index] = str(payload)
                continue
            assert isinstance(payload, DeliveryReport)
            latest[index] = payload
            if kind == "done":
                finished[index] = payload
            if on_progress is not None:
                on_progress(_combine(latest.values(), total))
    for child in children:
        child.join()
    report = _combine(latest.values(), total)
    if errors and report.done == 0:
        # Every drain that had rows stopped before settling one (a drain with nothing left
        # to claim finishes cleanly): nothing was delivered, and the error says why.
        raise DeliveryError(next(iter(errors.values())))
    if errors and not report.stopped:
        report.stopped = "; ".join(errors.values())
    report.pending = ledger.delivery_counts().pending
    report.seconds = time.perf_counter() - started
    return report


def _combine(reports: Iterable[DeliveryReport], total: int) -> DeliveryReport:
    combined = DeliveryReport(total=total)
    for report in reports:
        combined.add(report)
    return combined


@contextlib.contextmanager
def _stop_on_sigint(stop: Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _drain_process(
    settings: Settings,
    key: str,
    index: int,
    processes: int,
    parent: int,
    stop: Event,
    messages: multiprocessing.Queue[tuple[str, int, object]],
) -> None:
    """One drain in a child process; reports progress and its final report to the parent."""
    # The parent decides when to stop (a service manager signals every process of the group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    last_sent = 0.0

    def progress(report: DeliveryReport) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent >= PROGRESS_EVERY:
            last_sent = now
            messages.put(("progress", index, dataclasses.replace(report)))

    try:
        make_transport, _ = transport_for(settings)
        options = DeliveryOptions.from_settings(
            settings.send, share=index, shares=processes, bounces=settings.bounces
        )
        with open_ledger(settings) as ledger:
            factory = MessageFactory(
                settings, key, ledger.audience, load_stored=ledger.stored_message
            )
            report = deliver(
                ledger,
                factory,
                make_transport,
                options,
                on_progress=progress,
                stop=lambda: stop.is_set() or os.getppid() != parent,
            )
    except DeliveryError as exc:
        messages.put(("error", index, str(exc)))
        return
    messages.put(("done", index, report))
