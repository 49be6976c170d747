"""``pipeline worker`` and ``publish --no-deliver``: publishing on one machine, delivering on
others, with only the database between them.

Workers here are real processes (``pipeline worker``), each with its own copy of the
project folder, sending into a real SMTP server (aiosmtpd on 127.0.0.1).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from pipeline.cli import cli
from tests.conftest import Received, free_port
from tests.helpers import ledger_rows
from tests.smtp_faults import Faults, faulty_server
from tests.test_delivery import add_readers, assert_one_copy_each, configure, outbox


def _worker(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--root", str(root), "worker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_publish_no_deliver_records_the_digest_and_a_worker_sends_it(
    project: Path, ledger_backend: str, smtp_server: Received
) -> None:
    readers = add_readers(project, 40)
    runner = CliRunner()
    root = ["--root", str(project)]
    result = runner.invoke(cli, [*root, "publish", "--no-deliver"])
    assert result.exit_code == 0, result.output
    assert "45 message(s) in the outbox for the workers (`pipeline worker`)" in result.output
    assert smtp_server.messages == []
    assert {status for (status,) in ledger_rows(project, "SELECT status FROM outbox")} == {
        "pending"
    }

    once = runner.invoke(cli, [*root, "worker", "--once"])
    assert once.exit_code == 0, once.output
    assert "45 sent, 0 deferred, 0 failed" in once.output
    assert_one_copy_each(project, smtp_server)
    assert set(readers) <= {r.lower() for r in smtp_server.recipients()}

    # With [send] deliver = "workers" a plain publish leaves delivery to them too.
    configure(project, send={"deliver": "workers"})
    path = project / "articles" / "nintedanib.md"
    path.write_text(path.read_text().replace("twelve hours apart", "twelve hours, with food"))
    again = runner.invoke(cli, [*root, "publish"])
    assert again.exit_code == 0, again.output
    assert "message(s) in the outbox for the workers" in again.output
    assert len(smtp_server.messages) == 45
    nothing = runner.invoke(cli, [*root, "worker", "--once", "--json"])
    assert nothing.exit_code == 0, nothing.output
    assert len(smtp_server.messages) > 45


def test_a_running_worker_takes_new_digests_and_stops_cleanly_on_sigterm(
    project: Path, ledger_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_readers(project, 300)
    configure(project, send={"processes": 1})
    with faulty_server(Faults(delay_per_message=0.004)) as server:
        monkeypatch.setenv("PIPELINE_SMTP_URL", server.url)
        worker = _worker(project, "--poll", "0.2")
        try:
            time.sleep(1.0)  # the worker is up and finds nothing to do
            published = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-deliver"])
            assert published.exit_code == 0, published.output
            _wait(lambda: len(server.received.messages) >= 40, 60, "the worker to start sending")
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=60)
        finally:
            worker.kill()
        assert worker.returncode == 0, out + err
        assert "Worker stopped" in out and "Traceback" not in err
        rows = outbox(project)
        sent = {e for e, r in rows.items() if r.status == "sent"}
        # Every message accepted was recorded, nothing is left leased, the rest waits.
        assert Counter(r.lower() for r in server.received.recipients()) == Counter(sent)
        assert all(r.lease_owner is None for r in rows.values())
        assert len(sent) < len(rows)

        finish = CliRunner().invoke(cli, ["--root", str(project), "worker", "--once"])
        assert finish.exit_code == 0, finish.output
    assert_one_copy_each(project, server.received)


def test_an_idle_worker_on_postgresql_wakes_when_a_digest_is_recorded(
    project: Path, fresh_postgres: str, smtp_server: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LISTEN/NOTIFY: with a poll of two minutes, the digest still goes out in seconds."""
    monkeypatch.setenv("PIPELINE_DATABASE_URL", fresh_postgres)
    add_readers(project, 5)
    worker = _worker(project, "--poll", "120")
    try:
        time.sleep(2.0)  # connected, drained nothing, now waiting
        published = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-deliver"])
        assert published.exit_code == 0, published.output
        _wait(lambda: len(smtp_server.messages) == 10, 20, "the worker to wake and send")
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, out + err
    assert_one_copy_each(project, smtp_server)


def test_a_worker_outlives_an_unreachable_relay_and_says_so(
    project: Path, ledger_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    add_readers(project, 3)
    published = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-deliver"])
    assert published.exit_code == 0, published.output
    once = CliRunner().invoke(cli, ["--root", str(project), "worker", "--once"])
    assert once.exit_code == 1 and "cannot reach the SMTP server" in once.output
    log = project / "worker.err"
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--root", str(project), "worker", "--poll", "0.2"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait(lambda: "cannot reach the SMTP server" in log.read_text(), 60, "the warning")
        time.sleep(0.5)
        assert worker.poll() is None, log.read_text()  # still running, waiting to retry
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    assert {r.status for r in outbox(project).values()} == {"pending"}


# --- several workers, one killed ---------------------------------------------------------


class _CountingHandler:
    """Keeps only each message's envelope recipient and Message-ID (20,000 full copies of a
    30 KB digest would not fit in the test's memory)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        head = envelope.original_content.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        message_id = next(
            (
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("message-id:")
            ),
            "",
        )
        for rcpt in envelope.rcpt_tos:
            self.received.append((rcpt.lower(), message_id))
        return "250 Message accepted"


@pytest.fixture
def counting_server() -> Iterator[tuple[_CountingHandler, str]]:
    handler = _CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, f"smtp://127.0.0.1:{controller.port}"
    finally:
        controller.stop()


# The issue asks for 20,000 addresses: PIPELINE_FAULT_LIST=20000 runs that (about two
# minutes a test here, the Python SMTP server being the slowest part); CI runs 5,000, which
# still kills a worker with thousands of rows left and two batches claimed.
LIST_SIZE = int(os.environ.get("PIPELINE_FAULT_LIST", "5000"))
CONNECTIONS = 4


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_one_digest_and_a_killed_one_costs_at_most_a_message_per_connection(
    tmp_path: Path,
    fresh_postgres: str,
    counting_server: tuple[_CountingHandler, str],
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    from bench.bench_delivery import make_project

    handler, smtp_url = counting_server
    monkeypatch.setenv("PIPELINE_DATABASE_URL", fresh_postgres)
    monkeypatch.setenv("PIPELINE_SMTP_URL", smtp_url)
    monkeypatch.setenv("PIPELINE_SECRET_KEY", "shared-by-every-worker")
    first = tmp_path / "site-0"
    first.mkdir()
    make_project(first, LIST_SIZE)  # records one digest of LIST_SIZE into PostgreSQL
    configure(
        first,
        send={"connections": CONNECTIONS, "processes": 1, "lease": 10.0, "workers": workers},
    )
    roots = [first]
    for index in range(1, workers):  # each "machine" has its own copy of the project
        roots.append(tmp_path / f"site-{index}")
        shutil.copytree(first, roots[-1], ignore=shutil.ignore_patterns("state", "public"))

    processes = [_worker(root, "--poll", "0.2") for root in roots]
    try:
        _wait(lambda: len(handler.received) >= LIST_SIZE // 5, 300, "a fifth of the list")
        processes[0].send_signal(signal.SIGKILL)  # mid-run: claimed rows stay leased
        processes[0].wait()

        def settled() -> bool:
            (pending,) = ledger_rows(first, "SELECT COUNT(*) FROM outbox WHERE status <> 'sent'")[0]
            return pending == 0

        _wait(settled, 600, "the others to finish the list")
        for process in processes[1:]:
            process.send_signal(signal.SIGTERM)
        for process in processes[1:]:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, out + err
    finally:
        for process in processes:
            process.kill()

    rows = dict(ledger_rows(first, "SELECT lower(email), message_id FROM outbox"))
    copies = Counter(rcpt for rcpt, _ in handler.received)
    assert len(rows) == LIST_SIZE and set(copies) == set(rows)
    assert sum(n - 1 for n in copies.values()) <= CONNECTIONS, copies.most_common(CONNECTIONS + 1)
    assert ledger_rows(first, "SELECT COUNT(*) FROM outbox WHERE lease_owner IS NOT NULL") == [(0,)]
    # The recorded Message-ID is the one the server accepted (the last copy, for a duplicate).
    accepted = {rcpt: message_id for rcpt, message_id in handler.received}
    assert all(accepted[email] == message_id for email, message_id in rows.items())


def test_a_postgresql_ledger_needs_one_secret_key_for_every_machine(
    project: Path, fresh_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each machine generating its own key into state/ would sign links the web server
    cannot check: with a shared ledger the key must come from the environment."""
    monkeypatch.setenv("PIPELINE_DATABASE_URL", fresh_postgres)
    monkeypatch.delenv("PIPELINE_SECRET_KEY")
    add_readers(project, 3)
    runner = CliRunner()
    for command in (["publish"], ["worker", "--once"]):
        result = runner.invoke(cli, ["--root", str(project), *command])
        assert result.exit_code == 1, result.output
        assert "PIPELINE_SECRET_KEY is not set: with a PostgreSQL ledger" in result.output
    assert not (project / "state" / "secret_key").exists()
