"""Drain the outbox: send each due row and record its fate before taking the next.

Only this module opens SMTP connections. A ``Transport`` sends one message and either
returns the server's reply or raises ``TemporaryFailure`` (try later) or
``PermanentFailure`` (never). Two transports exist: SMTP through aiosmtplib, and a local
Maildir for runs without a mail server.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiosmtplib

from pipeline.config import SmtpTarget
from pipeline.errors import DeliveryError
from pipeline.ledger import Ledger, OutboxRow
from pipeline.messages import MessageFactory, OutgoingMessage

__all__ = [
    "DeliveryReport",
    "MaildirTransport",
    "PermanentFailure",
    "SmtpTransport",
    "TemporaryFailure",
    "Transport",
    "deliver",
]


class TemporaryFailure(Exception):
    """The message may go through later (4xx, dropped connection, timeout)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class PermanentFailure(Exception):
    """The server refused this recipient for good (5xx): a hard bounce."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Transport(Protocol):
    async def open(self) -> None: ...
    async def send(self, message: OutgoingMessage) -> str: ...
    async def close(self) -> None: ...


class MaildirTransport:
    """Delivers into a local Maildir (``state/maildir``): what a run without SMTP does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._box: mailbox.Maildir | None = None

    async def open(self) -> None:
        self._box = mailbox.Maildir(self.path, create=True)

    async def send(self, message: OutgoingMessage) -> str:
        assert self._box is not None, "open() first"
        key = self._box.add(message.data)
        return f"250 stored in maildir as {key}"

    async def close(self) -> None:
        self._box = None


class SmtpTransport:
    """One persistent aiosmtplib connection, reopened when the server drops it."""

    def __init__(self, target: SmtpTarget, *, timeout: float, local_hostname: str | None) -> None:
        self.target = target
        self._timeout = timeout
        self._local_hostname = local_hostname or socket.getfqdn() or "localhost"
        self._client: aiosmtplib.SMTP | None = None

    async def open(self) -> None:
        target = self.target
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
            username=target.username,
            password=target.password,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP server {target} refused the login: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"cannot reach the SMTP server at {target} ({exc}); check PIPELINE_SMTP_URL "
                "or [smtp] url in pipeline.toml"
            ) from exc
        self._client = client

    async def send(self, message: OutgoingMessage) -> str:
        if self._client is None or not self._client.is_connected:
            try:
                await self.open()
            except DeliveryError as exc:
                raise TemporaryFailure(str(exc)) from exc
        assert self._client is not None
        try:
            _, reply = await self._client.sendmail(
                message.sender, [message.recipient], message.data
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            raise _classify(refusal.code, refusal.message) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._client = None  # the connection is gone or unusable; reopen next time
            raise TemporaryFailure(f"connection lost: {exc}") from exc
        return reply

    async def close(self) -> None:
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self._client.close()
        self._client = None


def _classify(code: int, message: str) -> Exception:
    reply = f"{code} {message}"
    return PermanentFailure(reply) if 500 <= code < 600 else TemporaryFailure(reply)


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.deferred == 0 and self.failed == 0


def backoff(attempts: int, *, base: float = 60.0, cap: float = 6 * 3600.0) -> timedelta:
    """Exponential back-off with full jitter: 1, 2, 4 … minutes, capped at six hours."""
    return timedelta(seconds=random.uniform(0.5, 1.0) * min(cap, base * 2 ** max(0, attempts)))


def deliver(
    ledger: Ledger,
    factory: MessageFactory,
    make_transport: Callable[[], Transport],
    *,
    connections: int = 1,
    max_attempts: int = 5,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_result: Callable[[str], None] | None = None,
) -> DeliveryReport:
    """Send every due outbox row over ``connections`` transports; return what happened."""
    return asyncio.run(
        _deliver(ledger, factory, make_transport, connections, max_attempts, clock, on_result)
    )


async def _deliver(
    ledger: Ledger,
    factory: MessageFactory,
    make_transport: Callable[[], Transport],
    connections: int,
    max_attempts: int,
    clock: Callable[[], datetime],
    on_result: Callable[[str], None] | None,
) -> DeliveryReport:
    report = DeliveryReport()
    started = time.perf_counter()
    first_batch = ledger.due_rows(clock(), limit=1)
    if not first_batch:
        return report

    queue: asyncio.Queue[OutboxRow | None] = asyncio.Queue(maxsize=connections * 8)

    async def produce() -> None:
        after = 0
        while True:
            batch = ledger.due_rows(clock(), after_id=after)
            if not batch:
                break
            for row in batch:
                await queue.put(row)
            after = batch[-1].id
        for _ in range(connections):
            await queue.put(None)

    async def work(transport: Transport) -> None:
        try:
            while (row := await queue.get()) is not None:
                message = factory.build(row)
                try:
                    reply = await transport.send(message)
                except TemporaryFailure as exc:
                    if row.attempts + 1 >= max_attempts:
                        ledger.mark_failed(row.id, exc.reply)
                        report.failed += 1
                        outcome = "failed"
                    else:
                        ledger.mark_deferred(row.id, exc.reply, clock() + backoff(row.attempts))
                        report.deferred += 1
                        outcome = "deferred"
                except PermanentFailure as exc:
                    ledger.mark_failed(row.id, exc.reply)
                    ledger.suppress(row.email, f"bounced: {exc.reply}", clock())
                    report.failed += 1
                    report.suppressed += 1
                    outcome = "failed"
                else:
                    # Recorded before this connection takes its next message.
                    ledger.mark_sent(row.id, message.message_id, reply, clock())
                    report.sent += 1
                    outcome = "sent"
                if on_result is not None:
                    on_result(outcome)
        finally:
            await transport.close()

    transports = [make_transport() for _ in range(connections)]
    await transports[0].open()  # fail fast, naming the server, when it cannot be reached
    for transport in transports[1:]:
        with contextlib.suppress(DeliveryError):  # it retries on its first message
            await transport.open()
    await asyncio.gather(produce(), *(work(t) for t in transports))
    report.seconds = time.perf_counter() - started
    return report
