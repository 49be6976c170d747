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
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from tests.conftest import Received, free_port, require_tool
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


def _stop_when(
    worker: subprocess.Popen[str], condition: Any, seconds: float, what: str
) -> tuple[str, str]:
    """Once ``condition()`` holds, SIGTERM ``worker``; its output (killed if it hangs)."""
    try:
        _wait(condition, seconds, what)
        worker.send_signal(signal.SIGTERM)
        return worker.communicate(timeout=60)
    finally:
        worker.kill()


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


@pytest.fixture
def sink() -> Iterator[tuple[Path, str]]:
    """Postfix's smtp-sink (C, fast enough for a list of 20,000) dumping every transaction,
    envelope first (``X-Rcpt-Args: <rcpt>``), into one file; yields (dump, SMTP URL)."""
    binary = require_tool("smtp-sink", why="the multi-worker fault test sends into it")
    # Not under pytest's folders, which are closed to the user smtp-sink becomes as root.
    folder = Path(tempfile.mkdtemp(prefix="pipeline-sink-"))
    dump = folder / "sink.dump"
    as_user: list[str] = []
    if os.geteuid() == 0:  # smtp-sink drops root privileges to nobody, who writes the dump
        shutil.chown(folder, user="nobody")
        as_user = ["-u", "nobody"]
    port = free_port()
    process = subprocess.Popen(
        [binary, *as_user, "-D", str(dump), f"127.0.0.1:{port}", "256"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait(lambda: _accepts(port), 10, "smtp-sink to listen")
    try:
        yield dump, f"smtp://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(folder)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _dumped(dump: Path) -> list[tuple[str, str]]:
    """(recipient, Message-ID) of each message in an smtp-sink dump, in arrival order."""
    received: list[tuple[str, str]] = []
    recipient: str | None = None
    with dump.open("rb") as lines:
        for line in lines:
            if line.startswith(b"X-Rcpt-Args: <"):
                recipient = line[14:].split(b">", 1)[0].decode().lower()
            elif recipient is not None and line[:11].lower() == b"message-id:":
                received.append((recipient, line[11:].decode().strip()))
                recipient = None
    return received


# One digest of 20,000 addresses, as the issue asks; PIPELINE_FAULT_LIST sets another size.
LIST_SIZE = int(os.environ.get("PIPELINE_FAULT_LIST", "20000"))
CONNECTIONS = 4


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_one_digest_and_a_killed_one_costs_at_most_a_message_per_connection(
    tmp_path: Path,
    fresh_postgres: str,
    sink: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    from bench.bench_delivery import make_project

    dump, smtp_url = sink
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

        def sent() -> int:
            return int(
                ledger_rows(first, "SELECT COUNT(*) FROM outbox WHERE status = 'sent'")[0][0]
            )

        _wait(lambda: sent() >= LIST_SIZE // 5, 300, "a fifth of the list")
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

    received = _dumped(dump)
    rows = dict(ledger_rows(first, "SELECT lower(email), message_id FROM outbox"))
    copies = Counter(rcpt for rcpt, _ in received)
    assert len(rows) == LIST_SIZE and set(copies) == set(rows)
    assert sum(n - 1 for n in copies.values()) <= CONNECTIONS, copies.most_common(CONNECTIONS + 1)
    assert ledger_rows(first, "SELECT COUNT(*) FROM outbox WHERE lease_owner IS NOT NULL") == [(0,)]
    # The recorded Message-ID is the one the server accepted (the last copy, for a duplicate).
    accepted = {rcpt: message_id for rcpt, message_id in received}
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
    for command in (["check"], ["publish"], ["worker", "--once"]):
        result = runner.invoke(cli, ["--root", str(project), *command])
        assert result.exit_code == 1, result.output
        assert "PIPELINE_SECRET_KEY is not set: with a PostgreSQL ledger" in result.output
    assert not (project / "state" / "secret_key").exists()


def test_a_site_moving_to_postgresql_is_told_to_keep_the_key_it_signed_with(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links already sent (unsubscribe, preferences) and the hashes of forgotten addresses
    were made with state/secret_key: the error must name that key, not suggest a new one."""
    from pipeline.config import load_settings, secret_key
    from pipeline.errors import ConfigError

    monkeypatch.delenv("PIPELINE_SECRET_KEY")
    first = secret_key(load_settings(project))  # the SQLite years: generated into state/
    monkeypatch.setenv("PIPELINE_DATABASE_URL", "postgresql://pipeline@db.example.org/news")
    with pytest.raises(ConfigError) as caught:
        secret_key(load_settings(project))
    assert f"the key in {project / 'state' / 'secret_key'}" in str(caught.value)
    assert "openssl" not in str(caught.value) and first not in str(caught.value)


def test_each_worker_takes_its_share_of_the_rate_limits_and_all_its_connections() -> None:
    """[send] workers divides the relay's limits between deliverers; connections are per
    machine (split only between one machine's processes)."""
    from pipeline.config_sections import SendSettings
    from pipeline.delivery_run import DeliveryOptions

    send = SendSettings(connections=4, rate_per_second=10.0, rate_per_hour=1000, workers=4)
    alone = DeliveryOptions.from_settings(send)
    assert (alone.connections, alone.rate_per_second, alone.rate_per_hour) == (4, 2.5, 250)
    half = DeliveryOptions.from_settings(send, share=1, shares=2)
    assert (half.connections, half.rate_per_second, half.rate_per_hour) == (2, 1.25, 125)
    assert half.history_share == (1, 8)


def test_an_interrupted_worker_counts_only_the_rows_it_had_claimed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    import sqlite3

    add_readers(project, 300)
    configure(project, send={"processes": 1})
    published = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-deliver"])
    assert published.exit_code == 0, published.output
    # A stand-in for a worker on another machine: it holds 100 rows under a live lease.
    with sqlite3.connect(project / "state" / "pipeline.db") as db:
        db.execute(
            "UPDATE outbox SET lease_owner = 'elsewhere.example:1:feed', "
            "lease_until = '9999-01-01T00:00:00+00:00' "
            "WHERE id IN (SELECT id FROM outbox ORDER BY id DESC LIMIT 100)"
        )
    with faulty_server(Faults(delay_per_message=0.004)) as server:
        monkeypatch.setenv("PIPELINE_SMTP_URL", server.url)
        worker = _worker(project, "--poll", "0.2")
        sending = lambda: len(server.received.messages) >= 40  # noqa: E731
        out, err = _stop_when(worker, sending, 60, "the worker to start sending")
    assert worker.returncode == 0, out + err
    found = re.search(r"interrupted: (\d+) message\(s\) it had claimed left pending", err)
    assert found, out + err
    (pending,) = ledger_rows(project, "SELECT COUNT(*) FROM outbox WHERE status = 'pending'")[0]
    (others,) = ledger_rows(
        project, "SELECT COUNT(*) FROM outbox WHERE lease_owner = 'elsewhere.example:1:feed'"
    )[0]
    assert others == 100  # still theirs
    assert 0 < int(found[1]) <= pending - others  # its own, never the other worker's


def test_the_worker_catches_stop_signals_before_importing_the_library() -> None:
    """The entry point installs the handlers first: a SIGTERM while the library is still
    being imported (about half a second) is kept for the worker, not the default death."""
    code = (
        "import os, signal, sys\n"
        "import pipeline.entry as entry\n"
        "assert entry.wants_worker(['--root', 'worker', 'worker', '--once'])\n"
        "assert not entry.wants_worker(['--root', 'worker', 'status'])\n"
        "entry.hold_stop_signals()\n"
        "slow = [m for m in ('click', 'pipeline.cli', 'pipeline.config') if m in sys.modules]\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print(slow, entry.EARLY_STOP.is_set())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True"


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (Linux: SigCgt in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), 16
    )
    return bool(mask >> (sig - 1) & 1)


def test_a_sigterm_as_the_worker_starts_stops_it_cleanly_with_nothing_lost(
    project: Path, smtp_server: Received
) -> None:
    add_readers(project, 20)
    published = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-deliver"])
    assert published.exit_code == 0, published.output
    script = Path(sys.executable).parent / "pipeline"  # the console script, as installed
    worker = subprocess.Popen(
        [str(script), "--root", str(project), "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # At once: the library may still be loading.
    out, err = _stop_when(worker, lambda: _catches(worker.pid, signal.SIGTERM), 30, "the handler")
    assert worker.returncode == 0, out + err
    assert "Worker stopped" in out and "Traceback" not in err
    rows = outbox(project)
    assert all(r.lease_owner is None for r in rows.values())
    sent = {e for e, r in rows.items() if r.status == "sent"}
    assert {r.lower() for r in smtp_server.recipients()} == sent  # recorded what it sent
