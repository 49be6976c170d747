# ruff: noqa: RUF001 - period names use an en dash, as typeset
"""Frequencies and the schedule: slots, period names, settings, lists, pages and commands."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pipeline import execute, load_settings, plan_publish
from pipeline.cadence import latest_slot, next_slot, period_label
from pipeline.cli import cli
from pipeline.config import Settings
from pipeline.config_sections import ScheduleSettings
from pipeline.periodic import change_frequency, run_due, schedule, window_entries
from pipeline.preview import NothingToSend, build_preview
from pipeline.publish import open_ledger
from pipeline.store import ReaderWindow
from pipeline.store.migrations import SQLITE_MIGRATIONS
from pipeline.subscribers import open_store, sign_token
from pipeline.web_subscribers import subscriber_routes
from tests.conftest import Received
from tests.helpers import downgrade_ledger, edit_article, publish, write_article

PARIS = ScheduleSettings(hour=8, weekday="monday", day_of_month=1, timezone="Europe/Paris")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def run(root: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    return result.exit_code, result.output


def published_with_ana_weekly(project: Path) -> Settings:
    """The sample published on Monday 2 November at noon, Ana weekly from an hour later."""
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 2, 12))
    with open_ledger(settings) as ledger:
        change_frequency(settings, ledger, "ana.reyes@example.org", "weekly", utc(2026, 11, 2, 13))
    return settings


def weekly_mail_of_ana(
    project: Path, settings: Settings, received: Received
) -> list[tuple[str, str]]:
    """Record the weekly digests of Monday 9 November and send them: what Ana got, as
    (subject, text part)."""
    received.messages.clear()
    with open_ledger(settings) as ledger:
        run_due(settings, ledger, utc(2026, 11, 9, 9))
    assert run(project, "deliver")[0] == 0
    return _titles(received, "ana.reyes@example.org")


def test_slots_keep_their_local_hour_across_daylight_saving() -> None:
    # Paris leaves summer time on Sunday 25 October 2026: 08:00 is 06:00 UTC before, 07:00 after.
    assert latest_slot("weekly", PARIS, utc(2026, 10, 25, 12)) == utc(2026, 10, 19, 6)
    assert next_slot("weekly", PARIS, utc(2026, 10, 25, 12)) == utc(2026, 10, 26, 7)
    assert latest_slot("daily", PARIS, utc(2026, 10, 26, 6, 59)) == utc(2026, 10, 25, 7)
    assert latest_slot("daily", PARIS, utc(2026, 10, 26, 7)) == utc(2026, 10, 26, 7)
    assert latest_slot("monthly", PARIS, utc(2027, 1, 1, 6)) == utc(2026, 12, 1, 7)
    assert next_slot("monthly", PARIS, utc(2026, 12, 15)) == utc(2027, 1, 1, 7)


def test_periods_are_named_by_the_days_they_cover() -> None:
    assert period_label(utc(2026, 11, 23, 7), utc(2026, 11, 30, 7), PARIS) == "23–29 November"
    assert period_label(utc(2026, 12, 3, 7), utc(2026, 12, 4, 7), PARIS) == "3 December"
    assert period_label(utc(2026, 11, 1, 7), utc(2026, 12, 1, 7), PARIS) == "November 2026"
    assert (
        period_label(utc(2026, 11, 28, 7), utc(2026, 12, 5, 7), PARIS) == "28 November – 4 December"
    )
    assert (
        period_label(utc(2026, 12, 28, 7), utc(2027, 1, 4, 7), PARIS)
        == "28 December 2026 – 3 January 2027"
    )
    # a window closed between slots (a reader leaving weekly) counts its last day in
    assert period_label(utc(2026, 11, 16, 7), utc(2026, 11, 19, 12), PARIS, end_day=True) == (
        "16–19 November"
    )


def test_check_names_every_schedule_mistake(project: Path) -> None:
    with (project / "pipeline.toml").open("a", encoding="utf-8") as config:
        config.write(
            '\n[schedule]\nhour = 24\nweekday = "mon"\nday_of_month = 31\ntimezone = "Paris"\n'
        )
    code, output = run(project, "check")
    assert code == 1
    assert "pipeline.toml: [schedule] hour 24 is not an hour of the day; use 0 to 23" in output
    assert "weekday 'mon' is not a day of the week; use one of monday" in output
    assert "day_of_month 31 is not 1 to 28" in output
    assert "timezone 'Paris' is not a known IANA time zone" in output
    assert "Traceback" not in output


def test_a_list_names_each_bad_frequency_with_file_and_line(project: Path) -> None:
    (project / "subscribers" / "subscribers.csv").write_text(
        "email,name,topics,frequency\na@example.org,A,,weekly\nb@example.org,B,,fortnightly\n",
        encoding="utf-8",
    )
    code, output = run(project, "check")
    assert code == 1
    assert (
        "subscribers/subscribers.csv:3: frequency: 'fortnightly' is not a frequency; use one of immediately, daily"
        in output
    )


def test_subscribers_add_sets_the_frequency_and_list_shows_it(project: Path) -> None:
    assert run(project, "subscribers", "add", "w@example.org", "--frequency", "weekly")[0] == 0
    assert run(project, "subscribers", "add", "i@example.org")[0] == 0
    code, output = run(project, "subscribers", "add", "x@example.org", "--frequency", "hourly")
    assert code == 2 and "hourly" in output
    code, output = run(project, "subscribers", "list")
    assert code == 0
    assert "w@example.org\tactive\t*\t\tweekly\n" in output
    assert "i@example.org\tactive\t*\t\timmediately\n" in output
    # changing only the name keeps the frequency chosen before; set changes it
    assert run(project, "subscribers", "set", "w@example.org", "--name", "W")[0] == 0
    assert "w@example.org\tactive\t*\tW\tweekly\n" in run(project, "subscribers", "list")[1]
    code, output = run(project, "subscribers", "set", "i@example.org", "--frequency", "daily")
    assert code == 0 and "i@example.org: frequency: immediately -> daily" in output
    assert "i@example.org\tactive\t*\t\tdaily\n" in run(project, "subscribers", "list")[1]
    # a person's data export names it
    shown = json.loads(run(project, "subscribers", "show", "w@example.org", "--json")[1])
    assert shown["subscriber"]["frequency"] == "weekly"
    # the export carries it, and imports back into another project
    exported = run(project, "subscribers", "export")[1]
    assert exported.splitlines()[0].endswith(",frequency")
    assert any(
        line.startswith("w@example.org,") and line.endswith(",weekly")
        for line in exported.splitlines()
    )


def test_status_and_digests_show_the_next_runs_and_their_readers(project: Path) -> None:
    with (project / "pipeline.toml").open("a", encoding="utf-8") as config:
        config.write('\n[schedule]\nhour = 7\nweekday = "friday"\ntimezone = "UTC"\n')
    for address, frequency in (("a@example.org", "weekly"), ("b@example.org", "weekly")):
        run(project, "subscribers", "add", address, "--frequency", frequency)
    run(project, "subscribers", "add", "c@example.org", "--frequency", "monthly")
    code, output = run(project, "status", "--json")
    assert code == 0
    schedule = {row["frequency"]: row for row in json.loads(output)["schedule"]}
    assert schedule["weekly"]["readers"] == 2
    assert schedule["monthly"]["readers"] == 1
    assert schedule["daily"]["readers"] == 0
    # nothing recorded yet: each frequency's latest slot is due now
    assert all(row["overdue"] for row in schedule.values())
    assert run(project, "digests", "--due", "--as-of", "2026-12-04T07:00", "--no-deliver")[0] == 0
    code, output = run(project, "digests", "--as-of", "2026-12-04T08:00", "--json")
    schedule = {row["frequency"]: row for row in json.loads(output)["schedule"]}
    assert schedule["weekly"] == {
        "frequency": "weekly",
        "due": "2026-12-11T07:00:00+00:00",
        "overdue": False,
        "readers": 2,
        "with_news": 0,
    }
    assert schedule["monthly"]["due"] == "2027-01-01T07:00:00+00:00"


def test_as_of_that_is_not_a_time_is_a_usage_error(project: Path) -> None:
    code, output = run(project, "digests", "--due", "--as-of", "next monday")
    assert code == 2
    assert "--as-of" in output and "2026-11-30T08:00" in output and "Traceback" not in output


def test_a_version_recorded_after_its_window_closed_goes_in_the_next(
    project: Path, smtp_server: Received
) -> None:
    """A publish whose instant lies before a slot already recorded (a back-fill, or a publish
    that committed after the digest run) must not fall between two digests."""
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 20, 12))
    with open_ledger(settings) as ledger:
        assert change_frequency(
            settings, ledger, "ana.reyes@example.org", "daily", utc(2026, 11, 20, 13)
        )
        run_due(settings, ledger, utc(2026, 11, 23, 9))  # closes the window at 23 Nov 08:00 UTC
    (project / "articles" / "late.md").write_text(
        "---\ntitle: Late arrival\nsummary: Published with an earlier instant.\n"
        "published: 2026-11-21\ntopics: [scleroderma]\n---\n\nBody.\n",
        encoding="utf-8",
    )
    publish(project, now=utc(2026, 11, 22, 12))  # before the window already sent
    smtp_server.messages.clear()
    with open_ledger(settings) as ledger:
        (daily, *_) = run_due(settings, ledger, utc(2026, 11, 24, 9))
        assert daily.recipients == 1
    code, _ = run(project, "deliver")
    assert code == 0
    (message,) = smtp_server.parsed()
    assert message["To"].addresses[0].addr_spec == "ana.reyes@example.org"
    assert "Late arrival" in str(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def test_a_window_moved_since_it_was_planned_is_not_sent_again(project: Path) -> None:
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 20, 12))
    with open_ledger(settings) as ledger:
        change_frequency(settings, ledger, "ana.reyes@example.org", "weekly", utc(2026, 11, 20, 13))
        (stale,) = ledger.reader_windows("weekly")
        run_due(settings, ledger, utc(2026, 11, 23, 9))
        moved = ReaderWindow(
            stale.email_key,
            stale.email,
            stale.name,
            stale.topics,
            "weekly",
            stale.start,
            stale.since,
        )
        # a second runner planned from the old window: its recording must write no row
        ids = ledger.record_windows(
            [moved], [], end=utc(2026, 11, 30, 8), now=utc(2026, 11, 30, 9), run="weekly"
        )
        assert ids == []
        assert ledger.reader_windows("weekly")[0].start == utc(2026, 11, 23, 8)


def test_sign_up_and_preferences_choose_how_often(project: Path, smtp_server: Received) -> None:
    settings = load_settings(project)
    now = utc(2026, 12, 7, 10)
    client = TestClient(Starlette(routes=subscriber_routes(settings, clock=lambda: now)))
    form = client.get("/subscribe/").text
    assert 'value="immediately" checked' in form
    assert "Once a week, on Mondays at 8:00 (UTC)" in form
    refused = client.post("/subscribe/", data={"email": "r@example.org", "frequency": "hourly"})
    assert refused.status_code == 422
    answer = client.post("/subscribe/", data={"email": "r@example.org", "frequency": "weekly"})
    assert answer.status_code == 200
    body = str(smtp_server.parsed()[0].get_body(("plain",)).get_content())  # type: ignore[union-attr]
    confirm = re.search(r"/confirm/\S+", body)
    assert confirm is not None
    confirmed = client.post(confirm.group(0))
    assert confirmed.status_code == 200
    assert "every topic, once a week, on Mondays at 8:00 (UTC)." in confirmed.text
    with open_store(settings) as store:
        record = store.find("r@example.org")
        assert record is not None and record.frequency == "weekly"
        token = sign_token(record.email, "test-secret-key", "preferences")
    page = client.get(f"/preferences/{token}").text
    assert 'value="weekly" checked' in page
    saved = client.post(f"/preferences/{token}", data={"action": "save", "frequency": "monthly"})
    assert saved.status_code == 200
    assert client.post(f"/preferences/{token}", data={"frequency": "yearly"}).status_code == 422
    with open_store(settings) as store:
        record = store.find("r@example.org")
        assert record is not None and record.frequency == "monthly"


def test_a_window_follows_publish_on_restored_renamed_and_withdrawn_articles(
    project: Path,
) -> None:
    """As a publish announces them: an article withdrawn before a window and back, edited,
    within it is updated; one back unchanged, or renamed (same content, same id), announces
    nothing; a withdrawn one drops out."""
    settings = load_settings(project)
    articles = project / "articles"
    publish(project, now=utc(2026, 11, 2, 12))
    with open_ledger(settings) as ledger:
        change_frequency(
            settings, ledger, "chloe.martin@example.org", "weekly", utc(2026, 11, 2, 13)
        )
    tocilizumab = (articles / "tocilizumab.md").read_text(encoding="utf-8")
    alemtuzumab = (articles / "alemtuzumab.md").read_text(encoding="utf-8")
    (articles / "tocilizumab.md").unlink()
    (articles / "alemtuzumab.md").unlink()
    publish(project, now=utc(2026, 11, 3, 12))  # both withdrawn before the window
    with open_ledger(settings) as ledger:
        run_due(settings, ledger, utc(2026, 11, 9, 9))  # window ends 9 Nov 08:00 UTC
    (articles / "tocilizumab.md").write_text(
        tocilizumab.replace("protect the lungs", "shield the lungs"), encoding="utf-8"
    )
    (articles / "alemtuzumab.md").write_text(alemtuzumab, encoding="utf-8")
    nintedanib = (articles / "nintedanib.md").read_text(encoding="utf-8")
    entry_id = "tag:localhost,2026-10-05:articles/nintedanib"
    (articles / "nintedanib.md").unlink()
    (articles / "nintedanib-ipf.md").write_text(
        nintedanib.replace("---\n", f"---\nid: {entry_id}\n", 1), encoding="utf-8"
    )
    report = publish(project, now=utc(2026, 11, 10, 12))  # back, and a rename
    assert [e.slug for e in report.plan.changes.corrected] == ["alemtuzumab"]
    (articles / "ocrelizumab.md").unlink()
    publish(project, now=utc(2026, 11, 11, 12))
    with open_ledger(settings) as ledger:
        assert [k.entry_id for k in ledger.known_articles().values() if k.entry_id == entry_id]
        window = window_entries(ledger, utc(2026, 11, 9, 8), utc(2026, 11, 16, 8))
        # ocrelizumab (dated 9 November) came and went within the window: dropped
        assert window.new == ()
        assert [e.article.title for e in window.updated] == [
            "Tocilizumab: blocking interleukin-6 to shield the lungs in scleroderma"
        ]
        # the version log alone, before the return: nothing but the withdrawals
        assert window_entries(ledger, utc(2026, 11, 2, 13), utc(2026, 11, 9, 8)).announced == ()


def test_readers_who_joined_between_the_same_publishes_share_one_digest(
    project: Path, smtp_server: Received
) -> None:
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 2, 12))
    with open_ledger(settings) as ledger:
        for hour, address in enumerate(
            ("ana.reyes@example.org", "chloe.martin@example.org", "dev.patel@example.org")
        ):
            change_frequency(settings, ledger, address, "weekly", utc(2026, 11, 3, 9 + hour))
    write_article(project, "first", "First of the week", date(2026, 11, 4))
    publish(project, now=utc(2026, 11, 4, 12))
    with open_ledger(settings) as ledger:  # joins after the first publish of the week
        change_frequency(settings, ledger, "emma.schulz@example.org", "weekly", utc(2026, 11, 5, 9))
    write_article(
        project, "second", "Second of the week", date(2026, 11, 6), "interstitial-lung-disease"
    )
    publish(project, now=utc(2026, 11, 6, 12))
    smtp_server.messages.clear()
    with open_ledger(settings) as ledger:
        weekly = next(
            r for r in run_due(settings, ledger, utc(2026, 11, 9, 9)) if r.frequency == "weekly"
        )
    # three different starts, one content: one digest; the later reader gets their own
    assert len(weekly.digests) == 2 and weekly.recipients == 4
    assert run(project, "deliver")[0] == 0
    got = {
        m["To"].addresses[0].addr_spec: (
            str(m["Subject"]),
            str(m.get_body(("plain",)).get_content()),  # type: ignore[union-attr]
        )
        for m in smtp_server.parsed()
    }
    assert got["ana.reyes@example.org"][0] == "Your weekly digest, 3–8 November"
    assert got["emma.schulz@example.org"][0] == "Your weekly digest, 5–8 November"
    assert "First of the week" in got["dev.patel@example.org"][1]
    assert "Second of the week" in got["dev.patel@example.org"][1]
    assert "First of the week" not in got["emma.schulz@example.org"][1]
    assert "Second of the week" in got["emma.schulz@example.org"][1]


def test_check_names_an_unknown_field_in_the_periodic_subject(project: Path) -> None:
    config = project / "pipeline.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[digest]\n", '[digest]\nperiodic_subject = "{site}: {week}"\n'),
        encoding="utf-8",
    )
    code, output = run(project, "check")
    assert code == 1
    assert "[digest] periodic_subject: 'week' is not a known field" in output
    assert "{frequency}, {period}" in output


def test_due_refuses_an_instant_still_to_come(project: Path) -> None:
    code, output = run(project, "digests", "--due", "--as-of", "2999-01-04T09:00")
    assert code == 2 and "still to come" in output
    with open_ledger(load_settings(project)) as ledger:
        assert ledger.last_periods() == {}
    # looking ahead at the schedule is fine
    code, output = run(project, "digests", "--as-of", "2999-01-04T09:00")
    assert code == 0 and "2999-01-04 08:00 UTC" in output


def test_a_reader_back_after_unsubscribing_gets_nothing_from_the_time_away(
    project: Path, smtp_server: Received
) -> None:
    settings = published_with_ana_weekly(project)
    with open_store(settings) as store:
        assert store.remove("ana.reyes@example.org", utc(2026, 11, 3, 9))
    write_article(project, "away", "While away", date(2026, 11, 4))
    publish(project, now=utc(2026, 11, 4, 12))
    with open_store(settings) as store:
        signup = store.request_signup(
            "ana.reyes@example.org", "Ana", frozenset(), utc(2026, 11, 5, 9)
        )
        assert signup.token is not None
        record = store.confirm(signup.token, utc(2026, 11, 5, 10))
        assert record is not None and record.frequency == "weekly"
    write_article(project, "back", "After coming back", date(2026, 11, 6))
    publish(project, now=utc(2026, 11, 6, 12))
    ((subject, text),) = weekly_mail_of_ana(project, settings, smtp_server)
    assert subject == "Your weekly digest, 5–8 November"
    assert "After coming back" in text and "While away" not in text


def _plan_then_change_then_record(project: Path, email: str, frequency: str) -> None:
    """A publish planned at 10:00, a reader changing frequency at 10:01, the publish
    recorded after: the frequency at record time decides how the reader gets it."""
    settings = load_settings(project)
    write_article(project, "racing", "Racing the preferences page", date(2026, 11, 4))
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=utc(2026, 11, 4, 10))
        change_frequency(settings, ledger, email, frequency, utc(2026, 11, 4, 10, 1))
        execute(plan, settings, ledger)


def _titles(received: Received, email: str) -> list[tuple[str, str]]:
    return [
        (str(m["Subject"]), str(m.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
        for rcpt, m in zip(received.recipients(), received.parsed(), strict=True)
        if rcpt == email
    ]


def test_a_reader_back_to_immediately_while_a_publish_renders_still_gets_it(
    project: Path, smtp_server: Received
) -> None:
    published_with_ana_weekly(project)
    write_article(project, "before", "Before the change", date(2026, 11, 3))
    publish(project, now=utc(2026, 11, 3, 12))
    smtp_server.messages.clear()
    _plan_then_change_then_record(project, "ana.reyes@example.org", "immediately")
    got = _titles(smtp_server, "ana.reyes@example.org")
    # the open week at once (without the racing publish), then the publish itself
    assert got[0][0] == "Your weekly digest, 2–4 November"
    assert "Before the change" in got[0][1] and "Racing" not in got[0][1]
    assert len(got) == 2 and "Racing the preferences page" in got[1][1]


def test_a_reader_leaving_immediately_while_a_publish_renders_gets_it_once(
    project: Path, smtp_server: Received
) -> None:
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 2, 12))
    smtp_server.messages.clear()
    _plan_then_change_then_record(project, "ana.reyes@example.org", "weekly")
    assert _titles(smtp_server, "ana.reyes@example.org") == []
    with open_ledger(settings) as ledger:
        run_due(settings, ledger, utc(2026, 11, 9, 9))
    assert run(project, "deliver")[0] == 0
    ((subject, text),) = _titles(smtp_server, "ana.reyes@example.org")
    assert subject == "Your weekly digest, 4–8 November" and "Racing the preferences page" in text


def test_preview_of_a_periodic_reader_shows_their_next_digest_so_far(project: Path) -> None:
    settings = published_with_ana_weekly(project)
    with (
        open_ledger(settings) as ledger,
        pytest.raises(NothingToSend, match="weekly digest holds nothing yet"),
    ):
        build_preview(settings, ledger, subscriber="ana.reyes@example.org")
    write_article(project, "news", "Scleroderma news", date(2026, 11, 3))
    publish(project, now=utc(2026, 11, 3, 12))
    with open_ledger(settings) as ledger:
        preview = build_preview(
            settings, ledger, subscriber="Ana.Reyes@example.org", now=utc(2026, 11, 4, 12)
        )
    assert preview.subject == "Your weekly digest, 2–4 November"
    assert "Scleroderma news" in preview.text and "Hello Ana Reyes," in preview.text
    code, output = run(project, "preview", "--subscriber", "ana.reyes@example.org")
    assert code == 0 and "Subject: Your weekly digest, 2 November" in output  # to today


def test_a_publish_without_email_is_not_announced_by_periodic_digests(
    project: Path, smtp_server: Received
) -> None:
    settings = published_with_ana_weekly(project)
    write_article(project, "quiet", "Published without email", date(2026, 11, 3))
    publish(project, now=utc(2026, 11, 3, 12), send_email=False)
    write_article(project, "loud", "Published with email", date(2026, 11, 4))
    publish(project, now=utc(2026, 11, 4, 12))
    ((_, text),) = weekly_mail_of_ana(project, settings, smtp_server)
    assert "Published with email" in text and "Published without email" not in text


def test_moving_from_daily_to_weekly_keeps_the_window(project: Path, smtp_server: Received) -> None:
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 2, 12))
    with open_ledger(settings) as ledger:
        change_frequency(settings, ledger, "ana.reyes@example.org", "daily", utc(2026, 11, 2, 13))
    write_article(project, "tuesday", "Published on Tuesday", date(2026, 11, 3))
    publish(project, now=utc(2026, 11, 3, 12))
    with open_ledger(settings) as ledger:
        run_due(settings, ledger, utc(2026, 11, 4, 9))  # the daily digest of 3 November
        change_frequency(settings, ledger, "ana.reyes@example.org", "weekly", utc(2026, 11, 4, 10))
    write_article(project, "thursday", "Published on Thursday", date(2026, 11, 5))
    publish(project, now=utc(2026, 11, 5, 12))
    got = weekly_mail_of_ana(project, settings, smtp_server)
    ((subject, text),) = got
    assert subject == "Your weekly digest, 4–8 November"
    assert "Published on Thursday" in text and "Published on Tuesday" not in text


def test_a_ledger_from_before_cadence_knows_its_articles_were_published(
    project: Path, tmp_path: Path, smtp_server: Received
) -> None:
    """The cadence migration logs the articles already published, so an edit after the
    upgrade is announced as updated, not new."""
    settings = load_settings(project)
    publish(project, now=utc(2026, 11, 2, 12))
    # the ledger as the release before the cadence migration left it
    before = next(i for i, script in enumerate(SQLITE_MIGRATIONS) if "article_versions" in script)
    downgrade_ledger(settings.paths.ledger, before)

    settings = published_with_ana_weekly(project)  # the upgrade, and the list merged in
    edit_article(project, "tocilizumab", "Tocilizumab: blocking", "Tocilizumab, blocking")
    publish(project, now=utc(2026, 11, 3, 12))
    ((_, text),) = weekly_mail_of_ana(project, settings, smtp_server)
    updated = text[text.index("UPDATED") :]
    assert "NEW" not in text and "Tocilizumab, blocking" in updated


def test_status_counts_the_readers_with_news_so_far(project: Path) -> None:
    settings = published_with_ana_weekly(project)
    with open_ledger(settings) as ledger:  # Ben: multiple sclerosis only
        change_frequency(settings, ledger, "ben.okafor@example.org", "weekly", utc(2026, 11, 2, 13))
    write_article(project, "news", "Scleroderma news", date(2026, 11, 3))
    publish(project, now=utc(2026, 11, 3, 12))
    with open_ledger(settings) as ledger:
        overdue = {r.frequency: r for r in schedule(settings, ledger, utc(2026, 11, 4, 12))}
        run_due(settings, ledger, utc(2026, 11, 2, 9))  # Monday's slot, before they chose weekly
        runs = {r.frequency: r for r in schedule(settings, ledger, utc(2026, 11, 4, 12))}
    # never recorded, Monday's slot is due; it ends before they chose weekly: nobody to mail
    assert overdue["weekly"].overdue and overdue["weekly"].due == utc(2026, 11, 2, 8)
    assert (overdue["weekly"].readers, overdue["weekly"].with_news) == (2, 0)
    # then the next one, with Ana's news so far (Ben's topic had none)
    assert not runs["weekly"].overdue and runs["weekly"].due == utc(2026, 11, 9, 8)
    assert (runs["weekly"].readers, runs["weekly"].with_news) == (2, 1)
    assert (runs["daily"].readers, runs["daily"].with_news) == (0, 0)


def test_a_bounced_reader_reactivated_starts_a_fresh_window(
    project: Path, smtp_server: Received
) -> None:
    settings = published_with_ana_weekly(project)
    with open_ledger(settings) as ledger:
        ledger.suppress(
            "ana.reyes@example.org", "bounced: 550 5.1.1 unknown user", utc(2026, 11, 3, 9)
        )
    write_article(project, "bouncing", "While bouncing", date(2026, 11, 4))
    publish(project, now=utc(2026, 11, 4, 12))
    with open_ledger(settings) as ledger:
        assert ledger.reactivate_bounced(keys=("ana.reyes@example.org",), now=utc(2026, 11, 5, 9))
    write_article(project, "after", "After the reactivation", date(2026, 11, 6))
    publish(project, now=utc(2026, 11, 6, 12))
    ((subject, text),) = weekly_mail_of_ana(project, settings, smtp_server)
    assert subject == "Your weekly digest, 5–8 November"
    assert "After the reactivation" in text and "While bouncing" not in text
