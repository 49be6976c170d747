"""Drain the outbox in one process: claim rows, send each, record its fate before the next.

The order of events for one row is what makes delivery safe to interrupt:

1. the row is *claimed* (leased to this drain) in a write transaction, with a batch of
   others, so no other drain sends it;
2. one connection sends it;
3. its outcome (sent, deferred with a next try, failed) is committed at once, before that
   connection takes another row; a refusal is judged first (``pipeline.refusals``), and
   the outcomes of a streak of identical refusals wait until the circuit breaker has
   decided whether the streak is about the relay (then they stay pending).

A crash between 2 and 3 is the only way a message can go out twice: at most one message
per connection. Rows claimed but never sent keep ``pending`` and are released at the end,
or, after a crash, when the lease runs out or a drain on the same host sees that the
owner's process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from pipeline.delivery import PermanentFailure, Refused, TemporaryFailure, Transport, Unreachable
from pipeline.delivery_run import DeliveryOptions, DeliveryReport
from pipeline.errors import DeliveryError
from pipeline.messages import MessageFactory, OutgoingMessage
from pipeline.next_row import NextRow
from pipeline.ratelimit import HOUR, RateLimiter
from pipeline.refusals import Refusals, backoff
from pipeline.store import Ledger, OutboxRow

__all__ = ["Progress", "backoff", "deliver", "lease_owner", "release_abandoned_leases"]

Progress = Callable[[DeliveryReport], None]

# The cause kept with a row whose connection dropped or timed out: nobody's fault known.
_CONNECTION = "connection: dropped or timed out"

# Consecutive failures to reconnect after which a connection gives up for this run.
RECONNECT_TRIES = 3

# How often (seconds) a drain asks its ``stop()`` callable whether to finish.
STOP_CHECK_EVERY = 0.05


def _utc_now() -> datetime:
    return datetime.now(UTC)


def lease_owner() -> str:
    """A name for this drain: host and process id (to spot dead owners), and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _process_gone(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's drain: only its lease expiry can free its rows
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def release_abandoned_leases(ledger: Ledger) -> int:
    """Free rows leased by drains on this host whose process has died (a SIGKILL)."""
    return sum(
        ledger.release_leases(owner) for owner in ledger.lease_holders() if _process_gone(owner)
    )


def deliver(
    ledger: Ledger,
    factory: MessageFactory,
    make_transport: Callable[[], Transport],
    options: DeliveryOptions | None = None,
    *,
    clock: Callable[[], datetime] = _utc_now,
    on_progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> DeliveryReport:
    """Send every due outbox row over ``options.connections`` transports; return the report.

    Raises ``DeliveryError`` only when nothing could be sent at all (the server cannot be
    reached, or refuses the sender). Ctrl-C (in the main thread) or ``stop()`` returning
    true ends the run after the messages in flight; the rest stays pending.
    """
    drain = _Drain(ledger, factory, options or DeliveryOptions(), clock, on_progress, stop)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(drain.run(make_transport))


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a faster loop and socket layer), else None.

    None means asyncio's own loop; delivery behaves the same on either.
    """
    if os.environ.get("PIPELINE_EVENT_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _Drain:
    def __init__(
        self,
        ledger: Ledger,
        factory: MessageFactory,
        options: DeliveryOptions,
        clock: Callable[[], datetime],
        on_progress: Progress | None,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.ledger = ledger
        self.factory = factory
        self.options = options
        self.clock = clock
        self.on_progress = on_progress
        self.external_stop = stop or (lambda: False)
        self.next_stop_check = 0.0
        self.owner = lease_owner()
        self.report = DeliveryReport()
        self.stopping = False
        self.in_flight = 0  # claimed and not yet recorded
        self.deferred_ids: set[int] = set()  # deferred by this run and not settled since
        self.connections_alive = options.connections
        self.queue: asyncio.Queue[OutboxRow | None] = asyncio.Queue()
        self.tick = asyncio.Event()  # set whenever a row is settled or the run stops
        self.limiter = RateLimiter()
        self.refusals = Refusals(
            ledger, options, self.report, self.deferred_ids, clock, self._refusal_settled
        )

    def should_stop(self) -> bool:
        if not self.stopping:
            # Asked once per message; the external check (a multiprocessing Event and the
            # parent's pid, two system calls and a semaphore) is made at most every
            # STOP_CHECK_EVERY seconds, which is soon enough for a person or a SIGTERM.
            now = time.monotonic()
            if now >= self.next_stop_check:
                self.next_stop_check = now + STOP_CHECK_EVERY
                if self.external_stop():
                    self.request_stop()
        return self.stopping

    def request_stop(self, reason: str | None = None) -> None:
        if self.stopping and reason is None and not self.report.stopped:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for messages in flight
        self.stopping = True
        if reason is None:
            self.report.interrupted = True
        elif not self.report.stopped:
            self.report.stopped = reason
        self.tick.set()

    async def run(self, make_transport: Callable[[], Transport]) -> DeliveryReport:
        started = time.perf_counter()
        ledger, report, options = self.ledger, self.report, self.options
        now = self.clock()
        release_abandoned_leases(ledger)
        report.skipped = ledger.cancel_suppressed(now)
        report.total = ledger.due_count(now)
        if report.total:
            self.limiter = self._limiter(now)
            transports = [make_transport() for _ in range(options.connections)]
            await transports[0].open()  # fail fast, naming the server, before claiming rows
            try:
                with self._interrupt_on_sigint(), ledger.checkpoints_in_background():
                    await self._drain(transports)
                self.refusals.finish()
            finally:
                for transport in transports:
                    with contextlib.suppress(Exception):
                        await transport.close()
                report.released = ledger.release_leases(self.owner)
        report.pending = ledger.delivery_counts().pending
        report.seconds = time.perf_counter() - started
        if report.held:
            report.stopped = (
                f"{report.stopped}; nobody was suppressed and {report.pending} message(s) "
                "stay pending: run `pipeline deliver` once that is fixed"
            )
        if report.stopped and report.done == 0:
            raise DeliveryError(f"nothing was delivered: {report.stopped}")
        return report

    def _limiter(self, now: datetime) -> RateLimiter:
        options = self.options
        recent: list[float] = []
        if options.rate_per_hour > 0:
            index, of = options.history_share
            monotonic_now = time.monotonic()
            recent = [
                monotonic_now - (now - sent).total_seconds()
                for sent in _recent_sends(self.ledger, now, options.rate_per_hour * of)[index::of]
            ]
        return RateLimiter(options.rate_per_second, options.rate_per_hour, recent=recent)

    @contextlib.contextmanager
    def _interrupt_on_sigint(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def _drain(self, transports: list[Transport]) -> None:
        producer = asyncio.create_task(self._produce())
        renewer = asyncio.create_task(self._renew_leases())
        workers = [asyncio.create_task(self._work(t)) for t in transports]
        try:
            await asyncio.gather(*workers)
        except Exception as exc:
            # One connection failed (a message that cannot be built, the ledger gone). The
            # others finish and record the message in hand, then stop: closing their
            # connections under them would leave a message delivered but not recorded.
            self.request_stop(f"a connection failed: {exc}")
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            for task in (producer, renewer):
                task.cancel()
            await asyncio.gather(producer, renewer, return_exceptions=True)

    async def _produce(self) -> None:
        """Claim batches while rows are due; hold at most about two batches at a time."""
        batch = self.options.batch
        while not self.should_stop():
            if self.queue.qsize() > batch // 2:
                await self._wait_tick()
                continue
            now = self.clock()
            rows = self.ledger.claim(
                self.owner, now, now + timedelta(seconds=self.options.lease), batch
            )
            if not rows:
                if self.in_flight == 0:
                    break  # nothing due and nothing in flight that could come due again
                if self.in_flight == self.refusals.holding:
                    self.refusals.finish()  # only held refusals left: no streak to wait for
                    continue
                await self._wait_tick()
                continue
            self.in_flight += len(rows)
            for row in rows:
                self.queue.put_nowait(row)
        for _ in range(self.options.connections):
            self.queue.put_nowait(None)

    async def _wait_tick(self) -> None:
        await self.tick.wait()
        self.tick.clear()

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.options.lease / 3)
            self.ledger.extend_leases(
                self.owner, self.clock() + timedelta(seconds=self.options.lease)
            )

    async def _work(self, transport: Transport) -> None:
        next_row = NextRow(self.queue, self.factory.build)
        try:
            await self._send_rows(transport, next_row)
        finally:
            next_row.give_back()  # a row taken early goes to the other connections

    async def _send_rows(self, transport: Transport, next_row: NextRow) -> None:
        reconnect_failures = 0
        while (turn := await next_row.turn()) is not None:
            row, message, still_claimed = turn
            if await self.limiter.acquire():
                # Held back by the rate limit: ask afresh, and date the message now.
                message, still_claimed = None, None
            if self.should_stop():
                return  # the row stays pending; its lease is released at the end
            if still_claimed is None:
                still_claimed = self.ledger.still_claimed(row.id, self.owner)
            if not still_claimed:
                self.report.skipped += 1  # unsubscribed or bounced since it was claimed
                self._settle(row)
                continue
            if message is None:
                message = self.factory.build(row)
            try:
                # The next message's transaction may be opened ahead, unless a rate limit
                # could hold it back: a server waiting for data after its 354 would not
                # wait minutes.
                following = None if self.limiter.limited else next_row.following()
                reply = await transport.send(message, following=following, meanwhile=next_row.build)
            except Unreachable as exc:
                reconnect_failures += 1
                if not await self._retry_row_later(row, exc.reply, reconnect_failures):
                    return
                continue
            except Refused as exc:
                reason = self.refusals.refused(row, exc.verdict, exc.server)
                self.tick.set()  # the producer may be waiting for nothing but held refusals
                if reason is not None:
                    self.request_stop(reason)
                    return
            except TemporaryFailure as exc:
                self._record_temporary(row, exc.reply)
            except PermanentFailure as exc:
                self.ledger.mark_failed(row.id, exc.reply, cause="local: cannot send to it")
                self.report.failed += 1
                self._settle(row)
            else:
                await self._record_sent(row, message, reply, next_row)
            reconnect_failures = 0

    async def _retry_row_later(self, row: OutboxRow, reason: str, failures: int) -> bool:
        """The connection is down and the row never left: requeue it, back off, maybe retire."""
        self.queue.put_nowait(row)
        if failures >= RECONNECT_TRIES:
            self.connections_alive -= 1
            if self.connections_alive == 0:
                self.request_stop(f"the SMTP server stopped answering: {reason}")
            return False
        await asyncio.sleep(min(2.0**failures, 10.0) * random.uniform(0.5, 1.0))
        return not self.should_stop()

    async def _record_sent(
        self, row: OutboxRow, message: OutgoingMessage, reply: str, next_row: NextRow
    ) -> None:
        # Committed before this connection sends its next message: the duplicate window.
        # The same statement says whether the next row is still ours (``pipeline.next_row``).
        # While another drain process holds the write lock, this process's other
        # connections go on working instead of the event loop sleeping in SQLite's busy
        # handler.
        ahead = next_row.take()
        then_check = None if ahead is None else (ahead.id, self.owner)
        pause = 0.0
        while (
            still_claimed := self.ledger.mark_sent(
                row.id, message.message_id, reply, self.clock(), wait=False, then_check=then_check
            )
        ) is None:
            await asyncio.sleep(pause)
            pause = min(0.01, pause * 2 or 0.0005)
        if ahead is not None:
            next_row.checked(still_claimed)
        self.report.sent += 1
        self.refusals.delivered(row)
        self._settle(row)

    def _record_temporary(self, row: OutboxRow, reply: str) -> None:
        options = self.options
        if row.attempts + 1 >= options.max_attempts:
            self.ledger.mark_failed(row.id, reply, cause=_CONNECTION)
            self.report.failed += 1
            self._settle(row)
            return
        delay = backoff(row.attempts, base=options.retry_base, cap=options.retry_cap)
        self.ledger.mark_deferred(row.id, reply, self.clock() + delay, cause=_CONNECTION)
        if row.id not in self.deferred_ids:
            self.deferred_ids.add(row.id)
            self.report.deferred += 1
        self.in_flight -= 1
        self._progress()

    def _refusal_settled(self) -> None:
        self.in_flight -= 1
        self._progress()

    def _settle(self, row: OutboxRow) -> None:
        """The row reached a final state in this run."""
        if row.id in self.deferred_ids:
            self.deferred_ids.discard(row.id)
            self.report.deferred -= 1
        self.in_flight -= 1
        self._progress()

    def _progress(self) -> None:
        self.tick.set()
        if self.on_progress is not None:
            self.on_progress(self.report)


def _recent_sends(ledger: Ledger, now: datetime, limit: int) -> list[datetime]:
    """The newest ``limit`` send times within the past hour, for a per-hour cap that spans
    runs (``limit`` is every drain's share of the cap together: no more can count)."""
    return ledger.sent_since(now - timedelta(seconds=HOUR), limit)
