"""The mail transactions of one open SMTP connection: commands out, replies read in order.

aiosmtplib opens the connection (TLS, STARTTLS, login, EHLO); ``SmtpSession`` then takes
over its transport for the transactions. aiosmtplib reads one reply per command written,
so it cannot pipeline; here every reply that arrives is parsed and queued, so a client
may write MAIL, RCPT and DATA at once when the server advertises PIPELINING (RFC 2920)
and read the three replies in order. Each message still waits for its final reply before
the next transaction starts: pipelining never lets a message go before the previous one
is recorded.

This module does not open connections; ``pipeline.delivery`` does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple, cast

__all__ = ["Reply", "SessionLost", "SmtpSession"]

# RFC 5321 allows 512 octets a reply line; a reply far longer than any server sends
# means the connection is out of step, not that the server is talkative.
MAX_REPLY = 64 * 1024


class SessionLost(ConnectionError):
    """The connection closed, or sent something that is not an SMTP reply."""


class Reply(NamedTuple):
    """One SMTP reply; the lines of a multi-line reply are joined with newlines.

    A named tuple rather than a frozen dataclass: four are made for every message, and a
    tuple is made in C.
    """

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SmtpSession(asyncio.Protocol):
    """Writes commands to an open transport and hands back its replies, however they arrive."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        """Take over ``transport`` (any event loop's, uvloop's too) from its protocol."""
        # A connection's transport is always writable; uvloop's do not subclass asyncio's.
        self._transport: asyncio.WriteTransport | None = cast(asyncio.WriteTransport, transport)
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # lines of a multi-line reply still coming
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self._lost: SessionLost | None = None
        self._expired = False  # the current wait for replies has timed out
        transport.set_protocol(self)

    @property
    def is_open(self) -> bool:
        return self._lost is None and self._transport is not None

    # --- the asyncio.Protocol side ----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._lost is None and (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._take_line(line)
        if len(self._buffer) > MAX_REPLY:
            self._lose(SessionLost("the server sent a reply line longer than any SMTP reply"))
        self._wake()

    def _take_line(self, line: bytes) -> None:
        code = line[:3]
        if not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
            self._lose(SessionLost(f"the server sent something that is not a reply: {line!r}"))
            return
        self._lines.append(line[4:].strip())
        if line[3:4] != b"-":
            text = b"\n".join(self._lines).decode("utf-8", "replace")
            self._lines = []
            self._replies.append(Reply(int(code), text))

    def eof_received(self) -> bool:
        self._lose(SessionLost("the server closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        lost = SessionLost(f"connection lost: {exc}" if exc else "connection lost")
        self._lose(lost)
        self._transport = None

    def _lose(self, error: SessionLost) -> None:
        if self._lost is None:
            self._lost = error
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        ready = len(self._replies) >= self._wanted or self._lost is not None
        if ready and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _time_out(self) -> None:
        self._expired = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError("no reply in time"))

    # --- the client side ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send commands or message data as they are (CRLF line ends included)."""
        if self._lost is not None or self._transport is None:
            raise self._lost or SessionLost("connection lost")
        self._transport.write(data)

    async def replies(self, count: int, timeout: float) -> list[Reply]:
        """The next ``count`` replies, in order; ``TimeoutError`` if they take too long."""
        if len(self._replies) < count:
            # One timer for the whole wait, on the loop directly: asyncio.timeout() costs
            # several times more, and this runs twice for every message sent.
            loop = asyncio.get_running_loop()
            self._expired = False
            timer = loop.call_later(timeout, self._time_out)
            try:
                while len(self._replies) < count:
                    if self._lost is not None:
                        raise self._lost
                    if self._expired:  # the timer fired as a reply settled the last waiter
                        raise TimeoutError("no reply in time")
                    self._wanted = count
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
            finally:
                timer.cancel()
        return [self._replies.popleft() for _ in range(count)]

    async def commands(
        self, lines: Sequence[bytes], timeout: float, *, pipelining: bool
    ) -> list[Reply]:
        """Send command lines and return their replies, stopping at the first refusal.

        With ``pipelining`` every line goes out in one write and every reply is read; the
        caller judges them in order. Without it, each command waits for its reply and the
        ones after a refusal are not sent. A reply is a refusal unless it is 2xx or 354.
        """
        if pipelining:
            self.write(b"".join(lines))
            return await self.replies(len(lines), timeout)
        replies: list[Reply] = []
        for line in lines:
            self.write(line)
            (reply,) = await self.replies(1, timeout)
            replies.append(reply)
            if not (200 <= reply.code < 300 or reply.code == 354):
                break
        return replies

    async def quit(self, timeout: float) -> None:
        """Say goodbye politely if the connection still stands, then close it."""
        try:
            if self.is_open:
                self.write(b"QUIT\r\n")
                await self.replies(1, timeout)
        except (OSError, TimeoutError):
            pass  # closing anyway
        self.close()

    def close(self) -> None:
        """Close the connection at once (a dropped or out-of-step session)."""
        if self._lost is None:
            self._lost = SessionLost("the session was closed")
        if self._transport is not None:
            self._transport.close()
