"""Send messages: the transports (SMTP through aiosmtplib, or a local Maildir).

Only this module opens SMTP connections. A ``Transport`` sends one message and returns the
server's reply, or raises what the reply means for that row:

    Refused               the server refused the message: ``verdict`` says what about
                          (``pipeline.bounce_rules``: the sender, the mailbox, the address)
    TemporaryFailure      a dropped connection, a timeout: try again later
    └── Unreachable       the connection could not be (re)opened: the message never left
    PermanentFailure      refused before sending (an address this client cannot send to)
    DeliveryError         the connection cannot be opened (unreachable, login refused)

``DeliveryOptions`` says how to send and ``DeliveryReport`` what a run did (both in
``pipeline.delivery_run``). Draining the outbox through transports is ``pipeline.drain``;
running several drains in parallel processes, and choosing how many, is
``pipeline.workers``.
"""

from __future__ import annotations

import contextlib
import functools
import mailbox
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import aiosmtplib

from pipeline.bounce_rules import Phase, Verdict, judge
from pipeline.config import Settings
from pipeline.config_urls import SmtpTarget
from pipeline.errors import DeliveryError
from pipeline.messages import OutgoingMessage
from pipeline.smtp_session import Reply, SmtpSession

__all__ = [
    "MaildirTransport",
    "PermanentFailure",
    "Refused",
    "SmtpTransport",
    "TemporaryFailure",
    "Transport",
    "Unreachable",
    "transport_for",
    "wire_form",
]


class Refused(Exception):
    """The server answered a refusal; ``verdict`` judges it, ``server`` names who said it."""

    def __init__(self, verdict: Verdict, server: str) -> None:
        super().__init__(verdict.reply)
        self.verdict = verdict
        self.server = server


class TemporaryFailure(Exception):
    """The message may go through later (a dropped connection, a timeout)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Unreachable(TemporaryFailure):
    """The connection could not be opened again; the message was not sent at all."""


class PermanentFailure(Exception):
    """This client cannot send the message at all (before any server refused it).

    Not held against the subscriber: the row fails, nobody is suppressed.
    """

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Transport(Protocol):
    """One connection's worth of sending; ``open`` raises ``DeliveryError`` naming the server.

    ``send`` returns the server's final reply. It may call ``meanwhile`` once, after the
    whole message is handed over and before waiting for that reply: the caller's own work
    (building its next messages) then overlaps the server reading this one. ``following``
    is the message the caller will send next, if known: an SMTP transport may open its
    transaction ahead (MAIL, RCPT and DATA, never its data), and closes the connection if
    the next send is of another message.
    """

    async def open(self) -> None: ...
    async def send(
        self,
        message: OutgoingMessage,
        *,
        following: OutgoingMessage | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> str: ...
    async def close(self) -> None: ...


class MaildirTransport:
    """Delivers into a local Maildir (``state/maildir``): what a run without SMTP does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._box: mailbox.Maildir | None = None

    async def open(self) -> None:
        # Its parent too: state/ exists only where the ledger is the SQLite file there.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._box = mailbox.Maildir(self.path, create=True)

    async def send(
        self,
        message: OutgoingMessage,
        *,
        following: OutgoingMessage | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> str:
        if self._box is None:
            await self.open()
        assert self._box is not None
        key = self._box.add(message.data)
        return f"250 stored in maildir as {key}"

    async def close(self) -> None:
        self._box = None


_BARE_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
# No control character may reach a command line: CR or LF would end it early (injection).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def wire_form(data: bytes, *, crlf_only: bool = False) -> bytes:
    """The message as it travels after DATA: CRLF line ends, leading dots doubled, the end.

    aiosmtplib makes the same transformation with two regular-expression passes over every
    message; messages from ``policy.SMTP`` already end lines with CRLF, so counting is
    enough to know, and one ``bytes.replace`` does the dot-stuffing. ``crlf_only`` says
    the caller knows there is no bare CR or LF (``OutgoingMessage.crlf_only``), which
    spares the counting: about a tenth of a millisecond for a 24 KB digest.
    """
    if not crlf_only:
        crlf = data.count(b"\r\n")
        if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
            data = _BARE_LINE_ENDS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@functools.cache
def _default_hostname() -> str:
    return socket.getfqdn() or "localhost"


class SmtpTransport:
    """One persistent SMTP connection, reused for many messages, reopened after a drop.

    aiosmtplib opens the connection (TLS, STARTTLS, login, EHLO); the transactions then run
    over ``pipeline.smtp_session``, which writes MAIL, RCPT and DATA at once when the server
    advertises PIPELINING and hands the message over in wire form. Either way the final
    reply to a message is read before the next transaction begins.
    """

    def __init__(
        self,
        target: SmtpTarget,
        *,
        timeout: float,
        connect_timeout: float | None = None,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        pipelining: bool = True,
    ) -> None:
        """``pipelining=False`` never pipelines, even when the server offers it."""
        self.target = target
        self._timeout = timeout
        self._connect_timeout = connect_timeout or timeout
        self._local_hostname = local_hostname or _default_hostname()
        self._tls_context = tls_context
        self._allow_pipelining = pipelining
        self._session: SmtpSession | None = None
        self._opened: OutgoingMessage | None = None  # envelope written ahead, replies unread
        self._utf8 = False
        self.pipelining = False  # whether the open connection pipelines

    async def open(self) -> None:
        target = self.target
        self._opened = None
        client = aiosmtplib.SMTP(
            hostname=target.host,
            port=target.port,
            use_tls=target.use_tls,
            start_tls=target.start_tls,
            timeout=self._timeout,
            local_hostname=self._local_hostname,
            username=target.username,
            password=target.password,
            tls_context=self._tls_context,
        )
        try:
            await client.connect(timeout=self._connect_timeout)
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise DeliveryError(
                f"the SMTP server at {target} refused the login: {exc.code} {exc.message}; "
                "check the user in PIPELINE_SMTP_URL and PIPELINE_SMTP_PASSWORD"
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise DeliveryError(
                f"cannot reach the SMTP server at {target} ({exc}); check that it is running "
                "and PIPELINE_SMTP_URL or [smtp] url in pipeline.toml"
            ) from exc
        self._utf8 = client.supports_extension("smtputf8")
        self.pipelining = self._allow_pipelining and client.supports_extension("pipelining")
        transport = client.transport
        if transport is None or transport.is_closing():
            client.close()
            raise DeliveryError(f"the SMTP server at {target} closed the connection at once")
        # From here on the session owns the connection; the client is not used again.
        self._session = SmtpSession(transport)

    async def send(
        self,
        message: OutgoingMessage,
        *,
        following: OutgoingMessage | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> str:
        if self._opened is not None and self._opened is not message:
            # The envelope written ahead was another message's (its row was cancelled, or
            # the run stops): the server waits for that message's data after its 354, and
            # only closing the connection ends that without sending anything.
            self._drop()
        session = self._session
        if session is None or not session.is_open:
            try:
                await self.open()
            except DeliveryError as exc:
                raise Unreachable(str(exc)) from exc
            session = self._session
            assert session is not None
        try:
            return await self._transaction(session, message, following, meanwhile)
        except (OSError, TimeoutError) as exc:
            # The connection is gone or out of step with the server: never reuse it.
            self._drop()
            reason = "timed out" if isinstance(exc, TimeoutError) else "connection lost"
            raise TemporaryFailure(f"{reason}: {exc}") from exc
        except (Refused, PermanentFailure):
            raise  # answered, and the transaction ended: the connection is in step
        except BaseException:
            # Cancelled (a second Ctrl-C) or failed between the envelope and the final
            # reply: the server may be waiting for data, where even a QUIT would be read
            # as part of the message, so the connection is closed, never reused.
            self._drop()
            raise

    def _envelope(self, message: OutgoingMessage) -> tuple[bytes, bytes, bytes]:
        """MAIL, RCPT and DATA for ``message``; ``PermanentFailure`` if it cannot be sent."""
        sender = message.sender.encode()
        recipient = message.recipient.encode()
        if _CONTROL.search(sender + recipient):
            raise PermanentFailure(f"invalid address: control characters in {message.recipient!r}")
        mail_options = b""
        if not (sender + recipient).isascii():
            if not self._utf8:
                raise PermanentFailure(
                    f"the server at {self.target} does not accept non-ASCII addresses (SMTPUTF8)"
                )
            mail_options = b" SMTPUTF8"
        return (
            b"MAIL FROM:<" + sender + b">" + mail_options + b"\r\n",
            b"RCPT TO:<" + recipient + b">\r\n",
            b"DATA\r\n",
        )

    async def _transaction(
        self,
        session: SmtpSession,
        message: OutgoingMessage,
        following: OutgoingMessage | None,
        meanwhile: Callable[[], object] | None,
    ) -> str:
        if self._opened is message:
            # Its envelope went out behind the previous message's data: read its replies.
            self._opened = None
            replies = await session.replies(len(_PHASES), self._timeout)
        else:
            replies = await session.commands(
                self._envelope(message), self._timeout, pipelining=self.pipelining
            )
        for reply, phase, accepted in zip(replies, _PHASES, _ACCEPTED, strict=False):
            if reply.code not in accepted:
                await self._abandon(session, replies)
                raise Refused(judge(reply.code, reply.text, phase), str(self.target))
        data = wire_form(message.data, crlf_only=message.crlf_only)
        if following is not None and self.pipelining:
            # The next message's transaction is opened behind this one's data, in the same
            # write (RFC 2920 lets message data start a group of commands; one write lets
            # the server answer both in one reply): its envelope's round trip is saved.
            # Its data goes only at its own send, after this message's reply is recorded.
            with contextlib.suppress(PermanentFailure):  # refused at its own send
                data += b"".join(self._envelope(following))
                self._opened = following
        session.write(data)
        if meanwhile is not None:
            meanwhile()  # the caller's work overlaps the server reading the message
        (final,) = await session.replies(1, self._timeout)
        if final.code != 250:
            raise Refused(judge(final.code, final.text, Phase.END), str(self.target))
        return str(final)

    async def _abandon(self, session: SmtpSession, replies: list[Reply]) -> None:
        """End a refused transaction so the connection can take the next message."""
        try:
            if replies[-1].code == 354:
                # A pipelined DATA was accepted although MAIL or RCPT was refused: end
                # the (recipient-less) data at once, then reset.
                session.write(b".\r\n")
                await session.replies(1, self._timeout)
            session.write(b"RSET\r\n")
            (reply,) = await session.replies(1, self._timeout)
            if reply.code == 250:
                return
        except (OSError, TimeoutError):
            pass  # the refusal is what this row is recorded with; reconnect for the next
        self._drop()

    def _drop(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._opened = None

    async def close(self) -> None:
        if self._opened is not None:
            self._drop()  # mid-transaction after a 354: a QUIT would be read as data
            return
        session, self._session = self._session, None
        if session is not None:
            await session.quit(self._timeout)


# The replies to MAIL, RCPT and DATA, and the codes that let the transaction go on.
_PHASES = (Phase.MAIL, Phase.RCPT, Phase.DATA)
_ACCEPTED = ((250,), (250, 251), (354,))


def transport_for(settings: Settings) -> tuple[Callable[[], Transport], bool]:
    """How to open one connection for this configuration, and whether it is SMTP.

    No SMTP URL means the local Maildir ``state/maildir``.
    """
    target = settings.smtp_target()
    if target is None:
        maildir = settings.paths.maildir
        return (lambda: MaildirTransport(maildir)), False
    smtp = settings.smtp
    hostname = smtp.local_hostname or None

    def connect() -> Transport:
        return SmtpTransport(
            target,
            timeout=smtp.timeout,
            connect_timeout=smtp.connect_timeout,
            local_hostname=hostname,
        )

    return connect, True
