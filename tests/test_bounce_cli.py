"""The bounce commands: list scores, reactivate after an incident, revive an older run's rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from tests.smtp_faults import Faults, faulty_server
from tests.test_bounce_delivery import RELAY_DENIED, add_readers, statuses, use
from tests.test_delivery import configure

UNKNOWN = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"


@pytest.fixture
def site(project: Path) -> Path:
    add_readers(project, 8)
    configure(project, smtp={"timeout": 2.0}, send={"retry_after": 0.0, "max_attempts": 2})
    return project


def run(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def test_bounces_lists_scores_and_reasons_and_reactivate_brings_back_an_incident(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = ["reader001@example.com", "reader002@mail.example"]
    full = "reader003@post.example"
    faults = Faults(rcpt_replies={**dict.fromkeys(gone, UNKNOWN), full: "452 4.2.2 Mailbox full"})
    with faulty_server(faults) as server:
        use(server, monkeypatch)
        code, _, _ = run(site, "publish", "--yes")
    assert code == 3
    assert run(site, "subscribers", "remove", "ana.reyes@example.org")[0] == 0

    code, out, _ = run(site, "subscribers", "bounces")
    assert code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    assert rows[gone[0]][1:3] == ["bounced", "5"] and "unknown user" in rows[gone[0]][4]
    assert rows[full][1:3] == ["active", "1"] and "mailbox full" in rows[full][4]
    assert "ana.reyes@example.org" not in rows  # unsubscribed, not a bounce
    listing = json.loads(run(site, "subscribers", "bounces", "--json")[1])
    assert {a["email"] for a in listing["addresses"]} == {*gone, full}
    code, out, _ = run(site, "subscribers", "bounces", full.upper())
    first, retry = [line.split("\t") for line in out.splitlines() if "\t" in line]
    assert first[1:5] == ["soft", "1", "1", "mailbox full"]
    assert first[5] == "452 4.2.2 Mailbox full"
    assert retry[1:3] == ["soft", "0"]  # the same day counts once

    code, out, err = run(
        site, "subscribers", "reactivate", "ana.reyes@example.org", "--cause", "user unknown"
    )
    assert code == 0
    assert "2 address(es) reactivated" in out
    assert "ana.reyes@example.org: unsubscribed" in err
    assert statuses(site)["ana.reyes@example.org"] == "unsubscribed"
    assert all(statuses(site)[g] == "active" for g in gone)
    assert run(site, "subscribers", "reactivate")[0] == 2  # nothing chosen: usage, says how


def test_reactivate_since_a_date_and_by_address(site: Path) -> None:
    from pipeline import load_settings, open_ledger
    from pipeline.bounce_scores import BounceKind, BouncePolicy, record_bounce
    from tests.helpers import FIRST_RUN, publish

    publish(site, send_email=False)
    with open_ledger(load_settings(site)) as ledger:
        for address in ("reader001@example.com", "reader004@example.net"):
            record_bounce(
                ledger,
                address,
                BounceKind.HARD,
                "550 5.1.1 gone",
                now=FIRST_RUN,
                policy=BouncePolicy(),
            )
    assert run(site, "subscribers", "reactivate", "--since", "2026-11-21")[1].startswith("0 ")
    code, out, _ = run(site, "subscribers", "reactivate", "--since", "2026-11-20")
    assert (code, out.splitlines()[-1].split(";")[0]) == (0, "2 address(es) reactivated")
    code, _, err = run(site, "subscribers", "reactivate", "--since", "last tuesday")
    assert code == 2 and "YYYY-MM-DD" in err and "'--since'" in err
    assert "Traceback" not in err


def test_retry_failed_revives_rows_an_older_run_failed_on_a_relay_refusal(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with faulty_server(Faults(every_rcpt=RELAY_DENIED)) as bad:
        use(bad, monkeypatch)
        assert run(site, "publish", "--yes")[0] == 3  # published, nothing delivered
    # What the pipeline before bounce verdicts left behind: every row failed and every
    # address suppressed as "bounced: <reply>", and one real unknown user among them.
    real = "reader005@example.com"
    with sqlite3.connect(site / "state" / "pipeline.db") as db:
        db.execute(
            "UPDATE outbox SET status = 'failed', attempts = 1, "
            "last_reply = '554 5.7.1 <' || email || '>: Relay access denied'"
        )
        db.execute(
            "UPDATE subscribers SET status = 'bounced', "
            "reason = 'bounced: 554 5.7.1 <' || email || '>: Relay access denied'"
        )
        db.execute(
            "UPDATE subscribers SET reason = 'bounced: 550 5.1.1 <x>: User unknown' "
            "WHERE email_key = ?",
            (real,),
        )
    with faulty_server() as fixed:
        use(fixed, monkeypatch)
        code, out, err = run(site, "deliver", "--retry-failed")
    assert code == 0, out + err
    assert "12 address(es) suppressed by an older run reactivated" in out
    assert sorted(fixed.received.recipients()) == sorted(e for e in statuses(site) if e != real)
    assert statuses(site)[real] == "bounced"  # a real unknown user stays suppressed
    with sqlite3.connect(site / "state" / "pipeline.db") as db:
        (status,) = db.execute("SELECT status FROM outbox WHERE email = ?", (real,)).fetchone()
    assert status == "failed"


def test_adding_a_bounced_address_points_to_reactivate(site: Path) -> None:
    from pipeline import load_settings, open_ledger
    from pipeline.bounce_scores import BounceKind, BouncePolicy, record_bounce
    from tests.helpers import FIRST_RUN, publish

    publish(site, send_email=False)
    with open_ledger(load_settings(site)) as ledger:
        record_bounce(
            ledger,
            "reader001@example.com",
            BounceKind.HARD,
            "550 5.1.1 gone",
            now=FIRST_RUN,
            policy=BouncePolicy(),
            cause="unknown user",
        )
    code, _, err = run(site, "subscribers", "add", "reader001@example.com")
    assert code == 1 and "pipeline subscribers reactivate reader001@example.com" in err
    assert run(site, "subscribers", "reactivate", "reader001@example.com")[0] == 0
    assert statuses(site)["reader001@example.com"] == "active"


def test_show_includes_bounces_and_forget_erases_them(site: Path) -> None:
    from pipeline import load_settings, open_ledger
    from pipeline.bounce_scores import BounceKind, BouncePolicy, record_bounce
    from tests.helpers import FIRST_RUN, publish

    gone = "reader001@example.com"
    publish(site, send_email=False)
    with open_ledger(load_settings(site)) as ledger:
        record_bounce(
            ledger,
            gone,
            BounceKind.SOFT,
            f"452 4.2.2 <{gone}>: Mailbox full",
            now=FIRST_RUN,
            policy=BouncePolicy(),
            cause="mailbox full",
        )
    shown = json.loads(run(site, "subscribers", "show", gone, "--json")[1])
    assert [(b["kind"], b["cause"]) for b in shown["bounces"]] == [("soft", "mailbox full")]
    assert run(site, "subscribers", "forget", gone)[0] == 0
    with sqlite3.connect(site / "state" / "pipeline.db") as db:
        dump = "\n".join(db.iterdump())
    assert "reader001" not in dump
