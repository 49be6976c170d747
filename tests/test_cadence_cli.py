"""``pipeline digests --due`` as a user meets it: a mail server that is down, odd instants."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.periodic import change_frequency
from pipeline.publish import open_ledger
from tests.conftest import Received, free_port
from tests.helpers import publish, write_article


def run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    return result.exit_code, result.output


def test_a_digest_recorded_while_the_server_is_down_says_so_and_waits(
    project: Path, smtp_server: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(project)
    publish(project, now=datetime(2026, 11, 2, 12, tzinfo=UTC))
    with open_ledger(settings) as ledger:
        change_frequency(
            settings,
            ledger,
            "ana.reyes@example.org",
            "weekly",
            datetime(2026, 11, 2, 13, tzinfo=UTC),
        )
    write_article(project, "tuesday", "Published on Tuesday", date(2026, 11, 3))
    publish(project, now=datetime(2026, 11, 3, 12, tzinfo=UTC))
    smtp_server.messages.clear()
    running = os.environ["PIPELINE_SMTP_URL"]
    # Nothing listens on a fresh free port: the connection is refused, as by a stopped server.
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{free_port()}")
    code, output = run(project, "digests", "--due", "--as-of", "2026-11-09T09:00")
    assert code == 3, output  # recorded, delivered in part (none), as publish says it
    assert "Weekly digest for 2\N{EN DASH}8 November" in output
    assert "no email sent: cannot reach the SMTP server" in output
    assert "1 message(s) wait in the outbox" in output and "Traceback" not in output
    code, output = run(project, "digests", "--due", "--as-of", "2026-11-09T09:00")
    assert code == 3 and "recorded before" in output
    assert smtp_server.messages == []
    monkeypatch.setenv("PIPELINE_SMTP_URL", running)  # the server is back
    code, output = run(project, "deliver")
    assert code == 0, output
    ((rcpt, _),) = smtp_server.messages
    assert rcpt == "ana.reyes@example.org"
    subject = str(smtp_server.parsed()[0]["Subject"])
    assert subject == "Your weekly digest, 2\N{EN DASH}8 November"


@pytest.mark.parametrize(
    "as_of", ["0001-01-01", "0001-01-01T00:30+14:00", "9999-12-31T23:00+00:00"]
)
def test_as_of_out_of_any_schedule_is_a_usage_error(project: Path, as_of: str) -> None:
    with (project / "pipeline.toml").open("a", encoding="utf-8") as config:
        config.write('\n[schedule]\ntimezone = "Europe/Paris"\n')
    # looking ahead, and (for an instant long past) recording
    for args in (["digests", "--as-of", as_of], ["digests", "--due", "--as-of", as_of]):
        code, output = run(project, *args)
        assert code == 2, output
        assert "--as-of" in output and "Traceback" not in output
        assert "between 1970 and 9998" in output or "still to come" in output
    assert "between 1970 and 9998" in run(project, "digests", "--as-of", as_of)[1]


def test_a_back_fill_before_a_recorded_slot_says_the_later_digest_covers_it(
    project: Path,
) -> None:
    code, output = run(project, "digests", "--due", "--as-of", "2026-11-30T08:05")
    assert code == 0, output
    code, output = run(project, "digests", "--due", "--as-of", "2026-11-17T08:05")
    assert code == 0, output
    # the slot of 16 November was never recorded: the one of 30 November covers its days
    assert (
        "Weekly digest for 9\N{EN DASH}15 November: not recorded, the later one for "
        "23\N{EN DASH}29 November covers it" in output
    )
    assert "recorded before" not in output.split("Weekly")[1].splitlines()[0]
    code, output = run(project, "digests", "--due", "--as-of", "2026-11-30T08:05")
    assert "Weekly digest for 23\N{EN DASH}29 November: recorded before" in output


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            'hour = "8"',
            "hour must be a whole number (no quotes), not text in quotes; write hour = 8",
        ),
        (
            "timezone = 1",
            "timezone must be text in quotes, not a whole number (no quotes); "
            'in quotes that is timezone = "1"; the default is timezone = "UTC"',
        ),
        (
            'day_of_month = "15"',
            "day_of_month must be a whole number (no quotes), not text in quotes; "
            "as a whole number that is day_of_month = 15; the default is day_of_month = 1",
        ),
        (
            'day_of_month = "the 15th"',
            "day_of_month must be a whole number (no quotes), not text in quotes; "
            "write it like the default: day_of_month = 1",
        ),
        (
            "hour = 9.0",
            "hour must be a whole number (no quotes), not a decimal number; "
            "as a whole number that is hour = 9; the default is hour = 8",
        ),
        (
            "timezone = 2026-01-01",
            "timezone must be text in quotes, not a date; "
            'write it like the default: timezone = "UTC"',
        ),
        (
            "day_of_month = true",
            "day_of_month must be a whole number (no quotes), not true or "
            "false; write it like the default: day_of_month = 1",
        ),
    ],
)
def test_check_says_how_to_write_a_schedule_value_of_the_wrong_kind(
    project: Path, line: str, said: str
) -> None:
    with (project / "pipeline.toml").open("a", encoding="utf-8") as config:
        config.write(f"\n[schedule]\n{line}\n")
    code, output = run(project, "check")
    assert code == 1 and f"pipeline.toml: [schedule] {said}" in output, output
