# ruff: noqa: RUF001 - the subjects name their periods with an en dash, as typeset
"""A simulated November: readers on every frequency, each article version received once.

Publishes and edits happen on various days through the library (each at its own instant);
``pipeline digests --due --as-of`` runs as cron would, every morning at 08:05 in Paris,
except on the 16th and 17th (an outage: the weekly digest of the 16th is deferred to the
18th). One reader moves from immediately to weekly, another from weekly back to immediately,
an article is published and withdrawn before the weekly digest, another is published and
edited within one week, a third edited twice in a week. Everything goes through a real SMTP
server; each reader's mail is parsed with the stdlib email parser and compared, digest by
digest, with what they should have received.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from click.testing import CliRunner

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.periodic import change_frequency
from pipeline.publish import open_ledger
from tests.conftest import Received
from tests.helpers import edit_article, publish, write_article

SITE = "Scleroderma Therapy News"
READERS = """email,name,topics,frequency
imm@example.org,Imm,,immediately
day@example.org,Day,,daily
week@example.org,Week,,weekly
month@example.org,Month,,monthly
ms@example.org,Ms,multiple-sclerosis,weekly
switch@example.org,Switch,,immediately
back@example.org,Back,,weekly
"""
SCHEDULE = """
[schedule]
hour = 8
weekday = "monday"
day_of_month = 1
timezone = "Europe/Paris"
"""


def utc(day: int, hour: int, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def digests_due(root: Path, as_of: str) -> str:
    result = CliRunner().invoke(cli, ["--root", str(root), "digests", "--due", "--as-of", as_of])
    assert result.exit_code == 0, result.output
    return result.output


def listed(message: EmailMessage) -> tuple[str, list[str], list[str]]:
    """(subject, new titles, updated titles) read from the text part."""
    text = message.get_body(("plain",))
    assert text is not None
    sections: dict[str, list[str]] = {"NEW": [], "UPDATED": []}
    current = None
    for line in text.get_content().splitlines():
        if line in sections:
            current = line
        elif line == "--":
            break
        elif current and line.startswith("* "):
            sections[current].append(line[2:])
    return str(message["Subject"]), sections["NEW"], sections["UPDATED"]


def by_reader(received: Received) -> dict[str, list[tuple[str, list[str], list[str]]]]:
    mail: dict[str, list[tuple[str, list[str], list[str]]]] = {}
    for rcpt, message in zip(received.recipients(), received.parsed(), strict=True):
        mail.setdefault(rcpt, []).append(listed(message))
    return mail


def test_a_month_of_digests(project: Path, smtp_server: Received) -> None:
    root = project
    (root / "subscribers" / "subscribers.csv").write_text(READERS, encoding="utf-8")
    with (root / "pipeline.toml").open("a", encoding="utf-8") as config:
        config.write(SCHEDULE)
    settings = load_settings(root)
    # The sample's scheduled article goes out before the month, with the others.
    edit_article(root, "ocrelizumab", "published: 2026-11-09", "published: 2026-10-20")
    bundle = root / "articles" / "nintedanib-senscis-results" / "index.md"
    bundle.write_text(
        bundle.read_text("utf-8").replace("published: 2026-11-02", "published: 2026-10-21"),
        "utf-8",
    )
    publish(root, now=utc(30, 12, month=10))  # the sample articles, before the month
    smtp_server.messages.clear()

    def change(email: str, frequency: str, now: datetime) -> None:
        with open_ledger(settings) as ledger:
            assert change_frequency(settings, ledger, email, frequency, now)

    articles = root / "articles"
    steps = {
        utc(3, 10): lambda: write_article(root, "a1", "Aone first", date(2026, 11, 3)),
        utc(5, 10): lambda: (
            edit_article(root, "a1", "Aone first", "Aone second"),
            write_article(root, "a2", "Atwo first", date(2026, 11, 5), "multiple-sclerosis"),
        ),
        utc(10, 10): lambda: write_article(root, "a3", "Athree only", date(2026, 11, 10)),
        utc(10, 15): lambda: edit_article(root, "a2", "Atwo first", "Atwo second"),
        utc(11, 12): lambda: (articles / "a3.md").unlink(),  # withdrawn
        utc(12, 10): lambda: edit_article(root, "a2", "Atwo second", "Atwo third"),
        utc(17, 10): lambda: write_article(root, "a4", "Afour first", date(2026, 11, 17)),
        utc(20, 10): lambda: write_article(
            root, "a5", "Afive first", date(2026, 11, 20), "multiple-sclerosis"
        ),
        utc(25, 10): lambda: edit_article(root, "a1", "Aone second", "Aone third"),
        utc(27, 10): lambda: write_article(root, "a6", "Asix first", date(2026, 11, 27)),
        utc(30, 10): lambda: write_article(root, "a7", "Aseven first", date(2026, 11, 30)),
    }
    changes = {
        utc(12, 12): ("switch@example.org", "weekly"),
        utc(19, 12): ("back@example.org", "immediately"),  # gets what its open week holds
    }
    outage = {16, 17}
    day = datetime(2026, 11, 1, tzinfo=UTC)
    while day <= datetime(2026, 12, 1, tzinfo=UTC):
        if day.day not in outage or day.month != 11:
            digests_due(root, f"{day:%Y-%m-%d}T08:05")  # Paris time: 07:05 UTC
        for moment in sorted(m for m in [*steps, *changes] if day <= m < day + timedelta(days=1)):
            if moment in steps:
                steps[moment]()
                publish(root, now=moment)
            else:
                change(*changes[moment], moment)
        day += timedelta(days=1)

    # The deferred weekly slot was recorded once; running again records nothing more.
    before = len(smtp_server.messages)
    again = digests_due(root, "2026-12-01T08:05")
    assert "recorded before" in again
    assert len(smtp_server.messages) == before

    mail = by_reader(smtp_server)
    daily = [
        ("Your daily digest, 3 November", ["Aone first"], []),
        ("Your daily digest, 5 November", ["Atwo first"], ["Aone second"]),
        ("Your daily digest, 10 November", ["Athree only"], ["Atwo second"]),
        ("Your daily digest, 12 November", [], ["Atwo third"]),
        ("Your daily digest, 15–17 November", ["Afour first"], []),
        ("Your daily digest, 20 November", ["Afive first"], []),
        ("Your daily digest, 25 November", [], ["Aone third"]),
        ("Your daily digest, 27 November", ["Asix first"], []),
        ("Your daily digest, 30 November", ["Aseven first"], []),
    ]
    assert mail["day@example.org"] == daily
    weekly = [
        # published and edited in one week: once, as new, in its latest version
        ("Your weekly digest, 2–8 November", ["Atwo first", "Aone second"], []),
        # deferred to the 18th, it still ends on the 16th; the withdrawn one dropped out and
        # the one edited twice appears once
        ("Your weekly digest, 9–15 November", [], ["Atwo third"]),
        ("Your weekly digest, 16–22 November", ["Afive first", "Afour first"], []),
        ("Your weekly digest, 23–29 November", ["Asix first"], ["Aone third"]),
    ]
    assert mail["week@example.org"] == weekly
    assert mail["month@example.org"] == [
        (
            "Your monthly digest, November 2026",
            [
                "Aseven first",
                "Asix first",
                "Afive first",
                "Afour first",
                "Atwo third",
                "Aone third",
            ],
            [],
        )
    ]
    assert mail["ms@example.org"] == [
        ("Your weekly digest, 2–8 November", ["Atwo first"], []),
        ("Your weekly digest, 9–15 November", [], ["Atwo third"]),
        ("Your weekly digest, 16–22 November", ["Afive first"], []),
    ]
    immediate = [
        (["Aone first"], []),
        (["Atwo first"], ["Aone second"]),
        (["Athree only"], []),
        ([], ["Atwo second"]),
        ([], ["Atwo third"]),
        (["Afour first"], []),
        (["Afive first"], []),
        ([], ["Aone third"]),
        (["Asix first"], []),
        (["Aseven first"], []),
    ]
    assert [(new, upd) for _, new, upd in mail["imm@example.org"]] == immediate
    # immediately until the 12th at noon, then weekly from that instant on
    assert [(new, upd) for _, new, upd in mail["switch@example.org"][:5]] == immediate[:5]
    assert [s for s, _, _ in mail["switch@example.org"]][:5] == [
        s for s, _, _ in mail["imm@example.org"]
    ][:5]
    assert mail["switch@example.org"][5:] == weekly[2:]
    # weekly until the 19th at noon: the open week's news at once, then each publish
    assert mail["back@example.org"][:2] == weekly[:2]
    assert mail["back@example.org"][2] == (
        "Your weekly digest, 16–19 November",
        ["Afour first"],
        [],
    )
    assert [(new, upd) for _, new, upd in mail["back@example.org"][3:]] == immediate[6:]

    # Nothing twice: no reader got the same version of an article in two digests.
    for reader, digests in mail.items():
        titles = [t for _, new, upd in digests for t in (*new, *upd)]
        assert len(titles) == len(set(titles)), reader
