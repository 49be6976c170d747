"""Delivery through a real SMTP server that misbehaves: nothing lost, nothing doubled.

Every test ends by comparing three accounts of the same run: what the server accepted,
what the outbox in the ledger says, and the report the run returned. The tests that touch
the ledger run on both backends (SQLite, and PostgreSQL through ``ledger_backend``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from pipeline import DeliveryError, execute, load_settings, open_ledger, plan_publish
from pipeline.cli import cli
from pipeline.config import secret_key
from pipeline.config_urls import parse_smtp_url
from pipeline.delivery import SmtpTransport, wire_form
from pipeline.delivery_run import DeliveryOptions, DeliveryReport
from pipeline.drain import deliver, event_loop_factory, release_abandoned_leases
from pipeline.messages import MessageFactory, OutgoingMessage
from pipeline.store import OutboxRow
from pipeline.subscribers import open_store
from pipeline.workers import deliver_outbox
from tests.conftest import REPO, Received, free_port, require_tool
from tests.helpers import FIRST_RUN, edit_article, ledger_rows, publish
from tests.smtp_faults import Faults, Server, faulty_server

READERS = 40


def configure(root: Path, **sections: dict[str, Any]) -> None:
    """Merge keys into the project's pipeline.toml (scalar values only, plus [topics])."""
    data = tomllib.loads((root / "pipeline.toml").read_text(encoding="utf-8"))
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines = []
    for name, values in data.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            literal = f'"{value}"' if isinstance(value, str) else repr(value).lower()
            lines.append(f"{key} = {literal}")
    (root / "pipeline.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def add_readers(root: Path, count: int) -> list[str]:
    """Generated subscribers who chose every topic: each of them gets the digest."""
    emails = [f"reader{i:04d}@example.net" for i in range(count)]
    lines = ["email,name,topics", *(f"{e},Reader {i}," for i, e in enumerate(emails))]
    (root / "subscribers" / "readers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return emails


@dataclass
class Row:
    status: str
    attempts: int
    last_reply: str | None
    message_id: str | None
    lease_owner: str | None


def outbox(root: Path) -> dict[str, Row]:
    rows = ledger_rows(
        root, "SELECT email, status, attempts, last_reply, message_id, lease_owner FROM outbox"
    )
    return {email.lower(): Row(*rest) for email, *rest in rows}


def suppressed(root: Path) -> set[str]:
    rows = ledger_rows(
        root, "SELECT email_key FROM subscribers WHERE status IN ('bounced', 'unsubscribed')"
    )
    return {email for (email,) in rows}


def assert_one_copy_each(
    root: Path, received: Received, *, extra_allowed: int = 0, failed: frozenset[str] = frozenset()
) -> Counter[str]:
    """Every row is sent (or one of ``failed``) and its subscriber holds one copy."""
    rows = outbox(root)
    copies = Counter(rcpt.lower() for rcpt in received.recipients())
    deliverable = {email for email in rows if email not in failed}
    assert {e for e, r in rows.items() if r.status == "sent"} == deliverable
    assert {e for e, r in rows.items() if r.status == "failed"} == set(failed)
    assert set(copies) == deliverable, set(copies) ^ deliverable
    assert sum(n - 1 for n in copies.values()) <= extra_allowed, copies.most_common(5)
    assert all(r.lease_owner is None for r in rows.values())
    for rcpt, raw in received.messages:
        message = message_from_bytes(raw, policy=policy.default)
        assert message["Message-ID"] == rows[rcpt.lower()].message_id
    return copies


@pytest.fixture
def site(project: Path, ledger_backend: str) -> Path:
    add_readers(project, READERS)
    # A reply timeout well under the slow server's 1.5 s, with room for a busy machine.
    configure(project, smtp={"timeout": 1.0, "connect_timeout": 2.0}, send={"retry_after": 0.0})
    return project


def use(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_SMTP_URL", server.url)


# --- faults at the server ---------------------------------------------------------------

# Each fault once against a server that advertises PIPELINING (MAIL, RCPT and DATA go out
# together) and once against one that does not (each command waits for its reply).
both_ways = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])


@both_ways
def test_random_451_at_rcpt_are_retried_until_everyone_has_one_copy(
    site: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    with faulty_server(Faults(tempfail_rate=0.3), pipelining=pipelining) as server:
        use(server, monkeypatch)
        report = publish(site).delivery

    assert report is not None
    assert server.handler.log.tempfails, "the fault was never injected"
    copies = assert_one_copy_each(site, server.received)
    assert report.sent == len(server.received.messages) == len(copies)
    assert (report.deferred, report.failed, report.pending) == (0, 0, 0)
    rows = outbox(site)
    for address, refusals in server.handler.log.tempfails.items():
        assert rows[address.lower()].attempts == refusals + 1


@both_ways
def test_connection_dropped_during_data_is_resent_once(
    site: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    dropped = frozenset({"reader0003@example.net", "reader0017@example.net"})
    with faulty_server(Faults(drop_in_data=dropped), pipelining=pipelining) as server:
        use(server, monkeypatch)
        report = publish(site).delivery

    assert report is not None and report.complete
    assert server.handler.log.dropped == dropped
    assert_one_copy_each(site, server.received)
    assert report.sent == len(server.received.messages)
    rows = outbox(site)
    assert all(rows[a].attempts == 2 for a in dropped)


@both_ways
def test_a_550_fails_the_row_suppresses_the_address_and_the_run_goes_on(
    site: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    bad = "reader0005@example.net"
    with faulty_server(Faults(reject=frozenset({bad})), pipelining=pipelining) as server:
        use(server, monkeypatch)
        report = publish(site).delivery

        assert report is not None and not report.complete
        assert (report.failed, report.suppressed, report.deferred) == (1, 1, 0)
        assert_one_copy_each(site, server.received, failed=frozenset({bad}))
        assert report.sent == len(server.received.messages)
        assert outbox(site)[bad].last_reply.startswith("550 5.1.1")  # type: ignore[union-attr]
        assert bad in suppressed(site)
        assert server.handler.log.rejected[bad] == 1  # refused once, never retried

        # The next digest leaves the bounced address out altogether.
        server.received.messages.clear()
        edit_article(site, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
        publish(site, now=FIRST_RUN + timedelta(days=1))
        assert server.received.messages
        assert bad not in server.received.recipients()
        assert server.handler.log.rejected[bad] == 1


@both_ways
def test_a_server_slower_than_the_timeout_defers_and_a_later_run_delivers(
    site: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    configure(site, send={"retry_after": 600.0})
    slow = frozenset({"reader0011@example.net"})
    with faulty_server(Faults(slow_rcpt=slow), pipelining=pipelining) as server:
        use(server, monkeypatch)
        first = publish(site).delivery
        assert first is not None
        assert (first.deferred, first.failed, first.sent) == (1, 0, len(outbox(site)) - 1)
        row = outbox(site)["reader0011@example.net"]
        assert (row.status, row.attempts) == ("deferred", 1)
        assert "timed out" in (row.last_reply or "")

        settings = load_settings(site)
        with open_ledger(settings) as ledger:
            too_soon = deliver_outbox(settings, ledger)
            later = deliver_outbox(settings, ledger, clock=lambda: _now() + timedelta(hours=1))
        assert too_soon.total == 0
        assert (later.sent, later.deferred) == (1, 0)
    assert_one_copy_each(site, server.received)
    assert first.sent + later.sent == len(server.received.messages)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_server_too_slow_to_greet_stops_the_delivery_naming_it(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(site, smtp={"connect_timeout": 0.5})
    with faulty_server(Faults(slow_seconds=2.0), slow_greeting=True) as server:
        use(server, monkeypatch)
        delivery = publish(site).delivery  # published; the mail waits (a partial result)
        assert delivery is not None and not delivery.complete and delivery.sent == 0
        assert f"127.0.0.1:{server.port}" in (delivery.stopped or "")
    rows = outbox(site)
    assert rows and all(r.status == "pending" and r.lease_owner is None for r in rows.values())


def test_an_unreachable_server_leaves_the_publish_partial_and_the_cli_says_where(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{port}")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--root", str(site), "publish"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    # Feeds, site and digest are published: the mail is what waits (exit 3, partial).
    assert result.returncode == 3
    assert f"cannot reach the SMTP server at 127.0.0.1:{port}" in result.stderr
    assert all(r.status == "pending" for r in outbox(site).values())


# --- crashes and interruptions -------------------------------------------------------------


def _run_cli(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--root", str(root), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(received: Received, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(received.messages) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.01)


def _settle(received: Received) -> int:
    """The count once the server has taken in what was already on the wire."""
    count = -1
    while count != len(received.messages):
        count = len(received.messages)
        time.sleep(0.3)
    return count


@pytest.mark.parametrize("resume", ["publish", "deliver"])
def test_sigkill_mid_publish_then_resume_sends_the_rest_once(
    project: Path, ledger_backend: str, monkeypatch: pytest.MonkeyPatch, resume: str
) -> None:
    add_readers(project, 300)
    connections = load_settings(project).send.connections
    # One resume way over a server offering PIPELINING, where a transaction may be open
    # ahead of its data at the kill, the other over one that does not.
    with faulty_server(Faults(delay_per_message=0.004), pipelining=resume == "deliver") as server:
        use(server, monkeypatch)
        run = _run_cli(project, "publish")
        _wait_for(server.received, 60, run)
        run.send_signal(signal.SIGKILL)
        run.wait()
        before = _settle(server.received)
        assert before < len(outbox(project)), "the run finished before the kill"

        resumed = _run_cli(project, resume)
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out + err
        if resume == "publish":
            assert "no new, updated or withdrawn articles" in out
        sent_after = len(server.received.messages) - before
        assert f"{sent_after} sent, 0 deferred, 0 failed" in out

    assert_one_copy_each(project, server.received, extra_allowed=connections)


def test_ctrl_c_finishes_messages_in_flight_and_leaves_the_rest_pending(
    project: Path, ledger_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_readers(project, 300)
    # PIPELINING offered: at the interrupt a transaction may be open ahead of its data.
    with faulty_server(Faults(delay_per_message=0.004), pipelining=True) as server:
        use(server, monkeypatch)
        run = _run_cli(project, "publish")
        _wait_for(server.received, 40, run)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 3, out + err
        assert "interrupted" in err  # a warning, on stderr
        rows = outbox(project)
        sent = [e for e, r in rows.items() if r.status == "sent"]
        pending = [e for e, r in rows.items() if r.status == "pending"]
        # Nothing accepted went unrecorded; nothing is left leased.
        assert Counter(r.lower() for r in server.received.recipients()) == Counter(sent)
        assert pending and len(sent) + len(pending) == len(rows)
        assert all(r.lease_owner is None for r in rows.values())
        assert f"{len(sent)} sent" in out

        resumed = _run_cli(project, "deliver")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out + err
    assert_one_copy_each(project, server.received)


def test_two_drain_processes_share_the_outbox_without_doubling(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(site, send={"processes": 2, "connections": 4, "retry_after": 0.0})
    settings = load_settings(site)
    progress: list[DeliveryReport] = []
    with faulty_server(Faults(tempfail_rate=0.2)) as server:
        use(server, monkeypatch)
        with open_ledger(settings) as ledger:
            plan = plan_publish(settings, ledger, now=FIRST_RUN)
            delivery = execute(plan, settings, ledger, on_progress=progress.append).delivery

    assert delivery is not None and delivery.complete
    assert server.handler.log.tempfails, "the fault was never injected"
    assert delivery.sent == len(server.received.messages) == len(outbox(site))
    assert progress and progress[-1].done == delivery.sent
    assert_one_copy_each(site, server.received)


# --- the outbox's leases ------------------------------------------------------------------


def test_claims_never_overlap_and_dead_owners_are_released(
    project: Path, ledger_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_readers(project, 30)
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    delivery = publish(project).delivery  # records the digest and its outbox, finds no server
    assert delivery is not None and delivery.stopped and delivery.pending
    settings = load_settings(project)
    now = _now()
    with open_ledger(settings) as ledger:
        total = ledger.due_count(now)
        first = ledger.claim("host:1:a", now, now + timedelta(minutes=2), 10)
        second = ledger.claim("host:2:b", now, now + timedelta(minutes=2), 100)
        assert len(first) == 10 and len(second) == total - 10
        assert not {r.id for r in first} & {r.id for r in second}
        assert ledger.claim("host:3:c", now, now + timedelta(minutes=2), 10) == []

        # A lease that ran out returns its rows; one still running does not.
        later = now + timedelta(minutes=3)
        again = ledger.claim("host:3:c", later, later + timedelta(minutes=2), 100)
        assert {r.id for r in again} == {r.id for r in first} | {r.id for r in second}

        # A drain on this host whose process is gone frees its rows at once.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        owner = f"{os.uname().nodename}:{dead.pid}:feed"
        ledger.release_leases("host:3:c")
        ledger.claim(owner, now, now + timedelta(hours=1), 5)
        ledger.claim(f"{os.uname().nodename}:{os.getpid()}:live", now, now + timedelta(hours=1), 5)
        assert release_abandoned_leases(ledger) == 5
        assert len(ledger.claim("x:9:z", now, now + timedelta(minutes=1), 100)) == total - 5


def test_mark_sent_without_waiting_writes_nothing_while_another_process_holds_the_lock(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_readers(project, 3)
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    delivery = publish(project).delivery  # records the outbox, then finds no server
    assert delivery is not None and delivery.stopped and delivery.pending
    settings = load_settings(project)
    now = _now()
    with open_ledger(settings) as ledger:
        (row, *_) = ledger.claim("host:1:a", now, now + timedelta(minutes=2), 10)
        other = sqlite3.connect(settings.paths.ledger, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another drain, mid-commit
        try:
            assert ledger.mark_sent(row.id, "<m@x>", "250 ok", now, wait=False) is None
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert outbox(project)[row.email.lower()].status == "pending"
        assert ledger.mark_sent(row.id, "<m@x>", "250 ok", now, wait=False) is True
    sent = outbox(project)[row.email.lower()]
    assert (sent.status, sent.message_id, sent.lease_owner) == ("sent", "<m@x>", None)


def test_when_one_connection_fails_the_others_record_the_message_in_hand(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row whose message cannot be built ends the run, while another connection waits
    for the server's answer to its message: that connection finishes, and its message is
    delivered and recorded, instead of being cut off with its connection closed under it
    (where a server that had the whole message could deliver it unrecorded)."""
    add_readers(project, 3)
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    publish(project)  # records the outbox, then finds no server
    slow, broken, *_ = [
        email for (email,) in ledger_rows(project, "SELECT email FROM outbox ORDER BY id")
    ]

    class BrokenFactory(MessageFactory):  # a stand-in: one row's message cannot be built
        def build(self, row: OutboxRow, *, test: bool = False) -> OutgoingMessage:
            if row.email == broken:
                raise RuntimeError("this message cannot be built")
            return super().build(row, test=test)

    settings = load_settings(project)
    with faulty_server(Faults(data_delays={slow: 1.0})) as server, open_ledger(settings) as ledger:
        factory = BrokenFactory(
            settings, secret_key(settings), ledger.audience, load_stored=ledger.stored_message
        )
        target = parse_smtp_url(server.url, None)
        with pytest.raises(RuntimeError, match="cannot be built"):
            deliver(
                ledger,
                factory,
                lambda: SmtpTransport(target, timeout=5),
                DeliveryOptions(connections=2),
            )
    assert [address for address, _ in server.received.messages] == [slow]
    rows = outbox(project)
    assert rows[slow.lower()].status == "sent"
    assert rows[broken.lower()].status == "pending" and rows[broken.lower()].lease_owner is None


def test_delivery_works_the_same_on_asyncios_own_event_loop(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without uvloop (or with PIPELINE_EVENT_LOOP=asyncio) drains run on asyncio's loop."""
    monkeypatch.setenv("PIPELINE_EVENT_LOOP", "asyncio")
    assert event_loop_factory() is None
    with faulty_server(Faults(tempfail_rate=0.3), pipelining=True) as server:
        use(server, monkeypatch)
        report = publish(site).delivery
    assert report is not None and report.complete
    assert server.handler.log.tempfails, "the fault was never injected"
    assert report.sent == len(server.received.messages)
    assert_one_copy_each(site, server.received)


# --- the command line ---------------------------------------------------------------------


def test_deliver_retry_failed_retries_failures_but_not_bounces(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(site, send={"max_attempts": 1})
    bounced, unlucky = "reader0001@example.net", "reader0002@example.net"
    faults = Faults(reject=frozenset({bounced}), drop_in_data=frozenset({unlucky}))
    with faulty_server(faults) as server:
        use(server, monkeypatch)
        first = publish(site).delivery
        assert first is not None and (first.failed, first.suppressed) == (2, 1)

        runner = CliRunner()
        status = runner.invoke(cli, ["--root", str(site), "status", "--json"])
        assert status.exit_code == 0, status.output
        (digest,) = json.loads(status.stdout)["digests"]
        assert (digest["pending"], digest["deferred"], digest["failed"]) == (0, 0, 2)

        result = runner.invoke(cli, ["--root", str(site), "deliver", "--retry-failed"])
        assert result.exit_code == 0, result.output
        assert "1 failed message(s) made pending again" in result.output
        assert "1 sent, 0 deferred, 0 failed" in result.output

        again = runner.invoke(cli, ["--root", str(site), "deliver"])
        assert again.exit_code == 0 and again.output == "No email to send.\n"
    assert_one_copy_each(site, server.received, failed=frozenset({bounced}))


def test_deliver_exits_3_when_delivery_is_partial(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(site, send={"retry_after": 600.0})
    with faulty_server(Faults(drop_in_data=frozenset({"reader0004@example.net"}))) as server:
        use(server, monkeypatch)
        result = CliRunner().invoke(cli, ["--root", str(site), "publish"])
        assert result.exit_code == 3, result.output
        assert "1 deferred" in result.output
        assert "deferred; `pipeline deliver` or `publish` retries them" in result.output


# --- the wire ------------------------------------------------------------------------------


def test_wire_form_stuffs_dots_and_fixes_bare_line_ends() -> None:
    assert wire_form(b".a\r\n.b\r\nc") == b"..a\r\n..b\r\nc\r\n.\r\n"
    assert wire_form(b"a\nb\rc\r\n") == b"a\r\nb\r\nc\r\n.\r\n"


@both_ways
def test_lines_starting_with_a_dot_arrive_intact(pipelining: bool) -> None:
    data = (
        b"From: a@example.org\r\nTo: b@example.net\r\nSubject: dots\r\n\r\n"
        b".leading dot\r\n..two\r\n.\r\nend\r\n"
    )
    with faulty_server(pipelining=pipelining) as server:
        transport = SmtpTransport(parse_smtp_url(server.url, None), timeout=5)

        async def send() -> list[str]:
            await transport.open()
            try:
                return [
                    await transport.send(
                        OutgoingMessage("a@example.org", rcpt, f"<{n}@example.org>", data)
                    )
                    for n, rcpt in enumerate(["b@example.net", "c@example.net"])
                ]
            finally:
                await transport.close()

        replies = asyncio.run(send())
    assert transport.pipelining is pipelining  # it pipelines exactly when offered
    assert all(reply.startswith("250") for reply in replies)
    assert server.received.messages == [("b@example.net", data), ("c@example.net", data)]


def _against_scripted_server(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    use: Callable[[SmtpTransport], Awaitable[list[str]]],
) -> list[str]:
    """Run ``use`` with a transport connected to a one-off server that plays ``serve``."""

    async def scenario() -> list[str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = SmtpTransport(parse_smtp_url(f"smtp://127.0.0.1:{port}", None), timeout=2)
        try:
            return await use(transport)
        finally:
            await transport.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(scenario())


def test_a_pipelined_transaction_sends_its_commands_in_one_go_and_reads_replies_in_order() -> None:
    """A scripted server that answers only once MAIL, RCPT and DATA have all arrived.

    A client that waited for each reply before the next command would hang here. The
    replies come back split at odd places, several in one segment and one over two lines,
    as TCP is free to deliver them.
    """
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        assert (await reader.readline()).startswith(b"EHLO")
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        for _ in range(2):  # two messages on one connection
            commands = [await reader.readline() for _ in range(3)]
            seen.extend(commands)
            writer.write(b"250 2.1.0 sender ok\r\n250-2.1.5 recipient")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b" ok\r\n250 2.1.5 really\r\n354 go ahead\r\n")
            body = await reader.readuntil(b"\r\n.\r\n")
            seen.append(body)
            writer.write(b"250 2.0.0 queued as X\r\n")
        assert await reader.readline() == b"QUIT\r\n"
        writer.write(b"221 bye\r\n")
        writer.close()

    async def send_two(transport: SmtpTransport) -> list[str]:
        return [
            await transport.send(
                OutgoingMessage("a@example.org", rcpt, "<p@example.org>", b"Subject: p\r\n")
            )
            for rcpt in ("b@example.net", "c@example.net")
        ]

    replies = _against_scripted_server(serve, send_two)
    assert replies == ["250 2.0.0 queued as X"] * 2
    assert seen[:3] == [
        b"MAIL FROM:<a@example.org>\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"DATA\r\n",
    ]
    assert seen[3] == b"Subject: p\r\n.\r\n"
    assert seen[5] == b"RCPT TO:<c@example.net>\r\n"


def test_the_next_transaction_is_opened_behind_the_data_in_one_write() -> None:
    """A scripted server that reads the next MAIL, RCPT and DATA before it answers the
    data: a client that waited for that answer before opening the next transaction would
    hang here. Then it answers all four at once, as Postfix flushes replies."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        assert (await reader.readline()).startswith(b"EHLO")
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        seen.extend([await reader.readline() for _ in range(3)])
        writer.write(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        seen.append(await reader.readuntil(b"\r\n.\r\n"))
        ahead = [await asyncio.wait_for(reader.readline(), 2) for _ in range(3)]
        seen.extend(ahead)
        writer.write(b"250 2.0.0 queued as 1\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n")
        seen.append(await reader.readuntil(b"\r\n.\r\n"))
        writer.write(b"250 2.0.0 queued as 2\r\n")
        assert await reader.readline() == b"QUIT\r\n"
        writer.write(b"221 bye\r\n")
        writer.close()

    first = OutgoingMessage("a@example.org", "b@example.net", "<1@example.org>", b"S: 1\r\n")
    second = OutgoingMessage("a@example.org", "c@example.net", "<2@example.org>", b"S: 2\r\n")

    async def send_two(transport: SmtpTransport) -> list[str]:
        return [await transport.send(first, following=second), await transport.send(second)]

    replies = _against_scripted_server(serve, send_two)
    assert replies == ["250 2.0.0 queued as 1", "250 2.0.0 queued as 2"]
    assert seen[3:] == [
        b"S: 1\r\n.\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"RCPT TO:<c@example.net>\r\n",
        b"DATA\r\n",
        b"S: 2\r\n.\r\n",
    ]


def test_a_send_cancelled_mid_transaction_closes_the_connection_without_a_quit() -> None:
    """A second Ctrl-C cancels a send while the server is answering its envelope; the
    transport is then closed. After DATA the server reads every line as message data, so
    a QUIT there would be out of step: the connection must just be closed."""
    enveloped, served = asyncio.Event(), asyncio.Event()
    after: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        assert (await reader.readline()).startswith(b"EHLO")
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        for _ in range(3):
            await reader.readline()
        writer.write(b"250 ok\r\n250 ok\r\n")  # the 354 is still to come
        await writer.drain()
        enveloped.set()
        after.append(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
        served.set()

    async def cancel_mid_send(transport: SmtpTransport) -> list[str]:
        message = OutgoingMessage("a@example.org", "b@example.net", "<c@x>", b"S: c\r\n")
        send = asyncio.create_task(transport.send(message))
        await asyncio.wait_for(enveloped.wait(), 5)
        await asyncio.sleep(0.05)  # the two replies are read; the client waits for the 354
        send.cancel()
        with pytest.raises(asyncio.CancelledError):
            await send
        await transport.close()
        await asyncio.wait_for(served.wait(), 5)
        return []

    _against_scripted_server(serve, cancel_mid_send)
    assert after == [b""]  # the connection closed, no QUIT read as data


def test_a_transaction_opened_for_a_message_not_sent_next_is_dropped_unsent() -> None:
    """After a 354 only data can follow: when the next send is of another message (its
    row was cancelled), the connection is closed, and the server delivers nothing for it."""
    messages = [
        OutgoingMessage("a@example.org", f"{name}@example.net", f"<{name}@x>", b"S: x\r\n")
        for name in ("b", "cancelled", "d")
    ]
    with faulty_server(pipelining=True) as server:
        transport = SmtpTransport(parse_smtp_url(server.url, None), timeout=5)

        async def send() -> list[str]:
            try:
                return [
                    await transport.send(messages[0], following=messages[1]),
                    await transport.send(messages[2]),
                ]
            finally:
                await transport.close()

        replies = asyncio.run(send())
    assert all(reply.startswith("250") for reply in replies)
    assert server.received.recipients() == ["b@example.net", "d@example.net"]


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, trusted by this test's TLS clients only."""
    openssl = require_tool("openssl", why="makes a self-signed certificate for the TLS server")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


def test_starttls_and_login_as_the_url_says(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    from aiosmtpd.smtp import AuthResult

    from tests.smtp_faults import server_tls_context

    logins: list[tuple[bytes, bytes]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret", handled=False)

    with faulty_server(
        tls_context=server_tls_context(str(cert), str(key)),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    ) as server:
        target = parse_smtp_url(f"smtp://news@127.0.0.1:{server.port}?starttls=true", "s3cret")
        transport = SmtpTransport(target, timeout=5)
        message = OutgoingMessage(
            "a@example.org", "b@example.net", "<y@example.org>", b"Subject: tls\r\n\r\nhi\r\n"
        )

        async def send() -> str:
            try:
                return await transport.send(message)
            finally:
                await transport.close()

        assert asyncio.run(send()).startswith("250")
        assert logins == [(b"news", b"s3cret")]
        assert server.received.recipients() == ["b@example.net"]

        wrong_url = f"smtp://news@127.0.0.1:{server.port}?starttls=true"
        wrong = SmtpTransport(parse_smtp_url(wrong_url, "nope"), timeout=5)
        with pytest.raises(DeliveryError, match="refused the login"):
            asyncio.run(wrong.open())


def test_implicit_tls_from_an_smtps_url(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    from tests.smtp_faults import server_tls_context

    with faulty_server(ssl_context=server_tls_context(str(cert), str(key))) as server:
        transport = SmtpTransport(
            parse_smtp_url(f"smtps://127.0.0.1:{server.port}", None), timeout=5
        )
        message = OutgoingMessage(
            "a@example.org", "b@example.net", "<z@example.org>", b"Subject: tls\r\n\r\nhi\r\n"
        )

        async def send() -> str:
            try:
                return await transport.send(message)
            finally:
                await transport.close()

        assert asyncio.run(send()).startswith("250")
        assert server.received.recipients() == ["b@example.net"]


# --- suppressions that arrive while a drain runs -----------------------------------------


class UnsubscribingHandler:
    """Accepts mail; while the first message is being accepted, ``victims`` unsubscribe
    through the ledger (as they would on the web pages, from another process)."""

    def __init__(self, root: Path, victims: list[str], *, pipelining: bool = False) -> None:
        self.root = root
        self.victims = victims
        self.received = Received()
        self.pipelining = pipelining

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:  # then the victims' transactions may already be open
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.received.messages:
            settings = load_settings(self.root)
            with open_store(settings) as store:
                for victim in self.victims:
                    assert store.remove(victim, _now(), reason="one-click unsubscribe")
        for rcpt in envelope.rcpt_tos:
            self.received.messages.append((rcpt, envelope.original_content))
        return "250 Message accepted"


@both_ways
def test_an_address_unsubscribed_during_a_drain_gets_nothing_already_claimed(
    site: Path, monkeypatch: pytest.MonkeyPatch, pipelining: bool
) -> None:
    # One connection and a batch larger than the list: every row is claimed before the
    # first message goes, as a long rate-limited run holds its batch for minutes.
    configure(site, send={"connections": 1, "processes": 1})
    victims = [f"reader{i:04d}@example.net" for i in range(20, 30)]
    handler = UnsubscribingHandler(site, victims, pipelining=pipelining)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        report = publish(site).delivery
    finally:
        controller.stop()

    assert report is not None
    got = {rcpt.lower() for rcpt in handler.received.recipients()}
    assert got and not got & set(victims)
    rows = outbox(site)
    assert all(rows[v].status == "failed" for v in victims)
    assert "unsubscribed" in (rows[victims[0]].last_reply or "")
