"""Each command reports what it did and exits with the code the README's table gives:
a mail server that is down, deferred messages not due yet, a busy port, a test send
right after a publish, and the --json plan.

Real parts: a real aiosmtpd server (started late to play "the server is back"), the
ledger, the CLI through CliRunner.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner, Result

from pipeline.cli import cli
from tests.conftest import REPO, Received, RecordingHandler, free_port

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
    assert "Published 5 new" in result.output
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
    # A script reading --json learns the same: how many wait, and when the first is due.
    document = json.loads(run(project, "deliver", "--json").stdout)
    assert document["delivery"]["waiting"] == len(waiting)
    assert document["delivery"]["next_try"] == "2999-01-02T03:04:00+00:00"


def test_send_test_right_after_a_publish_resends_the_latest_digest_as_a_test(
    project: Path, smtp_server: Received
) -> None:
    assert run(project, "publish").exit_code == 0
    smtp_server.messages.clear()
    result = run(project, "send-test", "--to", "editor@example.org")
    assert result.exit_code == 0, result.output
    assert "resending digest 1, the latest, as the test" in result.output
    (message,) = smtp_server.parsed()
    assert message["Subject"].startswith("[TEST]")
    assert message["To"].addresses[0].addr_spec == "editor@example.org"
    text = message.get_body(("plain",))
    assert text is not None and "/digests/1/" in str(text.get_content())
    with sqlite3.connect(project / "state" / "pipeline.db") as db:  # recorded nothing
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (SUBSCRIBERS,)


def test_send_test_on_a_project_with_nothing_ever_published_and_nothing_new(
    project: Path, smtp_server: Received
) -> None:
    shutil.rmtree(project / "articles")
    (project / "articles").mkdir()
    result = run(project, "send-test", "--to", "editor@example.org")
    assert result.exit_code == 1
    assert "no digest was sent yet" in result.output


def test_serve_on_a_busy_port_exits_1_with_one_clear_line_and_never_says_serving(
    project: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "--root",
                str(project),
                "serve",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert "Serving" not in result.stdout
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_tab_in_the_front_matter_is_called_a_tab(project: Path) -> None:
    article = project / "articles" / "nintedanib.md"
    lines = article.read_text(encoding="utf-8").splitlines()
    topics = next(i for i, line in enumerate(lines) if line.startswith("topics:"))
    lines.insert(topics + 1, "\textra: value")
    article.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(project, "check")
    assert result.exit_code == 1
    assert f"articles/nintedanib.md:{topics + 2}: a tab character" in result.output
    assert "use spaces" in result.output


def test_the_json_plan_lists_only_the_files_the_publish_writes(project: Path) -> None:
    assert run(project, "publish", "--no-email").exit_code == 0
    article = project / "articles" / "nintedanib.md"
    article.write_text(article.read_text(encoding="utf-8") + "\nOne more line.\n", "utf-8")
    planned = json.loads(run(project, "publish", "--dry-run", "--json").output)
    done = json.loads(run(project, "publish", "--no-email", "--json").output)
    assert planned["plan"]["files"] == done["plan"]["files"]
    assert sorted(planned["plan"]["files"]) == sorted(done["written"])
    assert "articles/nintedanib/index.html" in done["written"]
    assert len(done["written"]) < 20  # only what changed, not every rendered file


def test_serve_whose_app_fails_to_start_exits_1_not_0(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in app whose startup fails (as a broken lifespan would) under real uvicorn."""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette

    import pipeline.web

    @asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("cannot start")
        yield

    monkeypatch.setattr(pipeline.web, "create_app", lambda settings: Starlette(lifespan=broken))
    result = run(project, "serve", "--port", str(free_port()))
    assert result.exit_code == 1
    assert "did not start" in result.output
