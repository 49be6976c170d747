"""Each command reports what it did and exits with the code the README's table gives:
a mail server that is down, deferred messages not due yet, a busy port, a test send
right after a publish, and the --json plan.

Real parts: a real aiosmtpd server (started late to play "the server is back"), the
ledger, the CLI through CliRunner.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner, Result

from pipeline.cli import cli
from tests.conftest import Received, RecordingHandler, free_port

SUBSCRIBERS = 5


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--root", str(root), *args])


def test_publish_with_the_mail_server_down_reports_what_was_done_and_exits_3(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{port}")
    result = run(project, "publish")
    assert result.exit_code == 3, result.output
    assert "Published 4 new" in result.output
    assert "file(s) under public/" in result.output
    assert "Digest 1 recorded." in result.output
    assert f"127.0.0.1:{port}" in result.output
    assert f"{SUBSCRIBERS} message(s) wait in the outbox; `pipeline deliver`" in result.output
    assert (project / "public" / "atom.xml").exists()

    down = run(project, "deliver")  # still down: nothing could be sent at all
    assert down.exit_code == 1
    assert f"{SUBSCRIBERS} message(s) stay in the outbox" in down.output

    received = Received()
    server = Controller(RecordingHandler(received), hostname="127.0.0.1", port=port)
    server.start()
    try:
        back = run(project, "deliver")
    finally:
        server.stop()
    assert back.exit_code == 0, back.output
    assert f"{SUBSCRIBERS} sent" in back.output
    assert len(received.messages) == SUBSCRIBERS


def test_deliver_with_only_deferred_messages_not_due_says_how_many_and_when(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    assert run(project, "publish").exit_code == 3
    with sqlite3.connect(project / "state" / "pipeline.db") as db:
        waiting = db.execute(
            """UPDATE outbox SET status = 'deferred', attempts = 1,
                   next_attempt_at = '2999-01-02T03:04:00+00:00' RETURNING id"""
        ).fetchall()
    result = run(project, "deliver")
    assert result.exit_code == 0, result.output
    assert "No email to send." not in result.output
    assert f"{len(waiting)} deferred message(s) wait for their next try" in result.output
    assert "2999-01-02 03:04 UTC" in result.output
