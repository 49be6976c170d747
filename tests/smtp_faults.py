"""A real SMTP server (aiosmtpd) that misbehaves on purpose, for the delivery tests.

Faults are injected on the server side, the way a real relay misbehaves: temporary
refusals at RCPT, a connection dropped during DATA, a mailbox that does not exist, any
reply chosen per address at RCPT or after the data (or for every RCPT: a relay that
denies relaying), and replies slower than the client's timeout. The server records only what it accepted.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import Received, free_port


@dataclass
class Faults:
    tempfail_rate: float = 0.0  # chance of a 451 at RCPT ...
    tempfails_per_address: int = 2  # ... at most this often per address
    drop_in_data: frozenset[str] = frozenset()  # first DATA of these loses the connection
    reject: frozenset[str] = frozenset()  # answered 550 5.1.1 at RCPT
    slow_rcpt: frozenset[str] = frozenset()  # first RCPT of these is slower than the timeout
    slow_seconds: float = 1.5
    delay_per_message: float = 0.0  # to make a run last long enough to interrupt it
    data_delays: dict[str, float] = field(default_factory=dict)  # address -> seconds after DATA
    seed: int = 7
    every_rcpt: str = ""  # if set, the reply to every RCPT ({address} is filled in)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply at RCPT
    rcpt_reply_times: int = 0  # how often each address gets its rcpt_replies one; 0: always
    data_replies: dict[str, str] = field(default_factory=dict)  # address -> reply after DATA


@dataclass
class Log:
    """What the server answered, to compare with the client's report."""

    tempfails: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: set[str] = field(default_factory=set)
    slowed: set[str] = field(default_factory=set)


class FaultyHandler:
    def __init__(self, received: Received, faults: Faults, *, pipelining: bool = False) -> None:
        self.received = received
        self.faults = faults
        self.pipelining = pipelining
        self.log = Log()
        self._random = random.Random(faults.seed)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # aiosmtpd reads one command line at a time, so it copes with pipelined clients;
        # it only does not say so. Saying so is what a relay like Postfix does.
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        faults, log = self.faults, self.log
        refusal = faults.rcpt_replies.get(address) or faults.every_rcpt
        times = faults.rcpt_reply_times
        if refusal and not (times and log.rejected[address] >= times):
            log.rejected[address] += 1
            return refusal.format(address=address)
        if address in faults.reject:
            log.rejected[address] += 1
            return f"550 5.1.1 <{address}>: no such user"
        if address in faults.slow_rcpt and address not in log.slowed:
            log.slowed.add(address)
            await asyncio.sleep(faults.slow_seconds)
        if (
            log.tempfails[address] < faults.tempfails_per_address
            and self._random.random() < faults.tempfail_rate
        ):
            log.tempfails[address] += 1
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        faults = self.faults
        rcpt = envelope.rcpt_tos[0]
        if rcpt in faults.drop_in_data and rcpt not in self.log.dropped:
            self.log.dropped.add(rcpt)
            server.transport.close()  # gone before the final reply: nothing was accepted
            return "421 closing"
        if rcpt in faults.data_replies:
            self.log.rejected[rcpt] += 1
            return faults.data_replies[rcpt]
        if delay := faults.data_delays.get(rcpt, faults.delay_per_message):
            await asyncio.sleep(delay)
        for address in envelope.rcpt_tos:
            self.received.messages.append((address, envelope.original_content))
        return "250 2.0.0 accepted"


class SlowGreetingHandler(FaultyHandler):
    """Answers EHLO later than any sensible timeout: a server too slow to use."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        await asyncio.sleep(self.faults.slow_seconds)
        session.host_name = hostname
        return responses


@dataclass
class Server:
    port: int
    received: Received
    handler: FaultyHandler

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@contextmanager
def faulty_server(
    faults: Faults | None = None,
    *,
    slow_greeting: bool = False,
    pipelining: bool = False,
    **controller_options: Any,
) -> Iterator[Server]:
    """Run a faulty SMTP server on 127.0.0.1 for the duration of the block.

    ``pipelining`` makes it advertise PIPELINING (RFC 2920) in its EHLO reply.
    """
    received = Received()
    handler_class = SlowGreetingHandler if slow_greeting else FaultyHandler
    handler = handler_class(received, faults or Faults(), pipelining=pipelining)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **controller_options)
    controller.start()
    try:
        yield Server(controller.port, received, handler)
    finally:
        controller.stop()


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
