"""The subscriber store on a real SQLite ledger: addresses, list merging, suppression, tokens, CLI."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.config import Settings
from pipeline.errors import SubscriberError
from pipeline.models import Subscriber
from pipeline.store import AudienceRecord, KnownArticle, Ledger, PublishRecord
from pipeline.store.migrations import SQLITE_MIGRATIONS
from pipeline.subscribers import (
    ListEntry,
    SubscriberStore,
    TokenError,
    email_key,
    export_csv,
    load_subscribers,
    normalise_email,
    open_store,
    read_list,
    sign_token,
    subscriber_ref,
    verify_token,
)
from tests.conftest import Received, RecordingHandler, free_port
from tests.helpers import FIRST_RUN, edit_article, ledger_rows, publish

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
KEY = "test-secret-key"  # what the project fixture exports as PIPELINE_SECRET_KEY


@pytest.fixture
def settings(project: Path, ledger_backend: str) -> Settings:
    """The project's settings, once with each ledger backend (SQLite, PostgreSQL)."""
    return load_settings(project)


@pytest.fixture
def store(settings: Settings) -> Iterator[SubscriberStore]:
    with open_store(settings) as opened:
        yield opened


def write_list(root: Path, name: str, text: str) -> Path:
    path = root / "subscribers" / name
    path.write_text(text, encoding="utf-8")
    return path


def merge_lists(store: SubscriberStore, root: Path, now: datetime = NOW) -> None:
    lists = load_subscribers(root / "subscribers", root, known_topics=store.known_topics)
    store.merge(lists.entries, now)


def status_of(store: SubscriberStore, email: str) -> str | None:
    record = store.find(email)
    return None if record is None else record.status


# --- addresses -----------------------------------------------------------------------------


def test_the_domain_is_lower_cased_and_idna_encoded_and_the_local_part_kept() -> None:
    assert normalise_email("  Ana.Reyes@Bücher.DE ") == "Ana.Reyes@xn--bcher-kva.de"
    assert email_key("Ana.Reyes@Bücher.DE") == "ana.reyes@xn--bcher-kva.de"
    assert email_key("ANA.REYES@xn--bcher-kva.de") == "ana.reyes@xn--bcher-kva.de"


@pytest.mark.parametrize(
    "address",
    ["no-at-sign", "two@@example.org", "sp ace@example.org", "a@localhost", "ü@example.org", ""],
)
def test_invalid_addresses_are_refused_saying_why(address: str) -> None:
    with pytest.raises(SubscriberError, match="not a valid email address"):
        normalise_email(address)


LOCAL_PARTS = [
    *("a", "Ana.Reyes", "x+tag", "a_b-c", "_", "-", "+", "UPPER", "a" * 64, "a" * 65),
    *("a..b", ".a", "a.", "", "o'hara", "zoë", '"quoted"', "a b", "a@b", "a\tb"),
]
DOMAINS = [
    *("example.org", "EXAMPLE.ORG", "Bücher.example", "xn--bcher-kva.example", "gmail.com"),
    *("localhost", "example", "example.local", "example.test", "invalid", "x.onion"),
    *("a.123", "123.example", "-a.example", "a-.example", "a" * 63 + ".org", "a" * 64 + ".org"),
    *("exa mple.org", "example..org", "[192.0.2.1]", "example.org.", "ex_ample.org", "É.org"),
    *(".".join(["a" * 60] * 3) + ".org", ".".join(["b" * 61] * 4)),  # 187 and 247 long
]


def test_addresses_are_judged_as_email_validator_judges_them() -> None:
    """The per-domain shortcut (``pipeline.addresses``) against the library on every
    pairing of awkward local parts and domains, lengths at their limits included."""
    from email_validator import EmailNotValidError, validate_email

    for local, domain in itertools.product(LOCAL_PARTS, DOMAINS):
        text = f" {local}@{domain} "
        try:
            checked = validate_email(text.strip(), check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as exc:
            with pytest.raises(SubscriberError) as refused:
                normalise_email(text)
            assert str(exc) in str(refused.value), text
        else:
            expected = f"{checked.local_part}@{checked.ascii_domain.lower()}"
            assert normalise_email(text) == expected, text


def test_bad_list_rows_are_skipped_and_reported_with_file_line_and_field(project: Path) -> None:
    write_list(
        project,
        "more.csv",
        "email,name,topics\n"
        "fine@example.org,Fine,scleroderma\n"
        "not-an-address,Broken,\n"
        "topic@example.org,Topic,astrology\n"
        "short@example.org,Short\n"
        "status@example.org,Status,\n",
    )
    write_list(project, "status.csv", "email,status\nodd@example.org,maybe\n")
    lists = load_subscribers(project / "subscribers", project, known_topics={"scleroderma"})
    problems = sorted(str(p) for p in lists.problems)
    assert problems[0].startswith("subscribers/more.csv:3: email: 'not-an-address'")
    assert problems[1].startswith("subscribers/more.csv:4: topics: unknown topic 'astrology'")
    assert problems[2].startswith("subscribers/more.csv:5: expected 3 columns, found 2 (")
    assert problems[3].startswith(
        "subscribers/status.csv:2: status: 'maybe' is not a status; use one of"
    )
    emails = {e.subscriber.email for e in lists.entries}
    assert {"fine@example.org", "status@example.org"} <= emails
    assert not emails & {"topic@example.org", "short@example.org", "odd@example.org"}


def test_an_unknown_column_is_reported_on_the_header_line(project: Path) -> None:
    path = write_list(project, "odd.csv", "email,nmae\nx@example.org,X\n")
    found = read_list(path, project)
    assert str(found.problems[0]).startswith("subscribers/odd.csv:1: unknown column")
    assert found.entries == ()


# --- merging lists into the ledger ---------------------------------------------------------


def test_addresses_differing_only_in_case_are_one_subscriber_spelled_as_first_seen(
    project: Path, store: SubscriberStore
) -> None:
    write_list(project, "a.csv", "email,name,topics\nAna.Reyes@Example.ORG,Ana,\n")
    write_list(project, "b.csv", "email,name,topics\nana.reyes@example.org,Other,\n")
    merge_lists(store, project)
    store.merge([ListEntry(Subscriber("ANA.REYES@EXAMPLE.ORG", "Third"), "active", "cli")], NOW)
    matches = [r for r in store.records() if r.email_key == "ana.reyes@example.org"]
    assert len(matches) == 1
    assert (matches[0].email, matches[0].name) == ("Ana.Reyes@example.org", "Ana")


def test_an_import_never_reactivates_an_unsubscribed_or_bounced_address(
    project: Path, store: SubscriberStore
) -> None:
    merge_lists(store, project)
    assert store.remove("Ana.Reyes@example.org", NOW)
    store.ledger.suppress("ben.okafor@example.org", "bounced: 550 no such user", NOW)

    merge_lists(store, project, NOW + timedelta(days=1))
    store.import_file(project / "subscribers" / "subscribers.csv", project, NOW)

    assert status_of(store, "ana.reyes@example.org") == "unsubscribed"
    assert status_of(store, "ben.okafor@example.org") == "bounced"
    active = {s.email for s in store.active()}
    assert "ana.reyes@example.org" not in active and "ben.okafor@example.org" not in active
    assert store.ledger.suppressed() >= {"ana.reyes@example.org", "ben.okafor@example.org"}
    with pytest.raises(SubscriberError, match="only a new sign-up"):
        store.add("ana.reyes@example.org", "Ana", frozenset(), NOW)


def test_a_bounce_of_an_unknown_address_keeps_later_lists_from_adding_it(
    project: Path, store: SubscriberStore
) -> None:
    store.ledger.suppress("Chloe.Martin@example.org", "bounced: 550", NOW)
    merge_lists(store, project)
    assert status_of(store, "chloe.martin@example.org") == "bounced"


def test_an_import_keeps_the_topics_a_subscriber_chose(
    project: Path, store: SubscriberStore
) -> None:
    merge_lists(store, project)
    record = store.find("ana.reyes@example.org")
    assert record is not None and record.topics == {"scleroderma"}
    assert store.save_preferences(record, "Ana R.", frozenset({"multiple-sclerosis"}), NOW)
    merge_lists(store, project, NOW + timedelta(days=1))
    after = store.find("ana.reyes@example.org")
    assert after is not None
    assert (after.name, after.topics) == ("Ana R.", {"multiple-sclerosis"})


def test_a_pending_sign_up_on_an_editors_list_becomes_active(
    project: Path, store: SubscriberStore
) -> None:
    store.request_signup("new.reader@example.org", "New", frozenset(), NOW)
    assert status_of(store, "new.reader@example.org") == "pending"
    assert "new.reader@example.org" not in {s.email for s in store.active()}
    write_list(project, "extra.csv", "email,name,topics\nNEW.reader@example.org,New,\n")
    merge_lists(store, project)
    assert status_of(store, "new.reader@example.org") == "active"


def test_export_lists_every_status_and_imports_back_keeping_suppressions(
    project: Path, store: SubscriberStore, tmp_path: Path
) -> None:
    merge_lists(store, project)
    store.remove("ana.reyes@example.org", NOW)
    store.ledger.suppress("ben.okafor@example.org", "bounced: 550", NOW)
    store.request_signup("pending@example.org", "", frozenset(), NOW)

    exported = export_csv(store.records())
    rows = {row["email"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows["ana.reyes@example.org"]["status"] == "unsubscribed"
    assert rows["ben.okafor@example.org"]["status"] == "bounced"
    assert rows["pending@example.org"]["status"] == "pending"
    assert rows["dev.patel@example.org"]["topics"] == "interstitial-lung-disease;scleroderma"
    assert rows["dev.patel@example.org"]["source"] == "subscribers/subscribers.csv:5"

    fresh_path = tmp_path / "fresh.csv"
    fresh_path.write_text(exported, encoding="utf-8")
    with Ledger(tmp_path / "other.db") as ledger:
        other = SubscriberStore(ledger, KEY)
        other.import_file(fresh_path, tmp_path, NOW)
        statuses = {r.email: r.status for r in other.records()}
    assert statuses == {email: row["status"] for email, row in rows.items()}


# --- publishing from the ledger ------------------------------------------------------------


def test_publish_mails_active_subscribers_only(
    project: Path, smtp_server: Received, settings: Settings
) -> None:
    with open_store(settings) as store:
        merge_lists(store, project)
        store.remove("chloe.martin@example.org", NOW)
        store.ledger.suppress("dev.patel@example.org", "bounced: 550", NOW)
        store.request_signup("pending@example.org", "", frozenset(), NOW)
        store.add("added@example.org", "Added", frozenset(), NOW)

    publish(project)

    recipients = set(smtp_server.recipients())
    assert "added@example.org" in recipients
    assert "ana.reyes@example.org" in recipients
    assert not recipients & {
        "chloe.martin@example.org",
        "dev.patel@example.org",
        "pending@example.org",
    }


def test_each_publish_merges_the_lists_but_a_dry_run_writes_nothing(
    project: Path, settings: Settings
) -> None:
    from pipeline import open_ledger, plan_publish

    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=NOW)
        assert plan.recipients == 5
        assert ledger.subscribers() == []
    publish(project, send_email=False)
    with open_store(settings) as store:
        assert len(store.active()) == 5


def test_the_plans_counts_match_who_the_publish_mails(
    project: Path, smtp_server: Received, settings: Settings
) -> None:
    """The plan counts recipients per audience from a streamed list; the publish then reads
    them from the ledger. Every merge rule must give the same answer on both sides."""
    from pipeline import open_ledger, plan_publish

    with open_store(settings) as store:
        store.add("active@example.org", "Active", frozenset({"scleroderma"}), NOW)
        store.add("gone@example.org", "Gone", frozenset(), NOW)
        store.add("unsub@example.org", "Unsub", frozenset(), NOW)
        store.remove("unsub@example.org", NOW)
        store.request_signup("pending@example.org", "", frozenset({"multiple-sclerosis"}), NOW)
    write_list(
        project,
        "z-more.csv",  # read after subscribers.csv
        "email,name,topics,status\n"
        "pending@example.org,P,,active\n"  # activates, keeping its own topics
        "GONE@example.org,G,,unsubscribed\n"  # suppresses an active one
        "unsub@example.org,U,,active\n"  # never brings one back
        "Ana.Reyes@example.org,Again,multiple-sclerosis,unsubscribed\n"  # a repeat: ignored
        "new@example.org,New,interstitial-lung-disease,active\n"
        "new@example.org,New again,,unsubscribed\n",  # a repeat in the same file
    )
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=FIRST_RUN)
    assert plan.digest is not None
    planned = dict(plan.digest.members)

    publish(project)

    recorded = dict(
        ledger_rows(project, "SELECT audience_key, COUNT(*) FROM outbox GROUP BY audience_key")
    )
    assert recorded == planned
    mailed = {r.lower() for r in smtp_server.recipients()}
    assert {"pending@example.org", "new@example.org", "ana.reyes@example.org"} <= mailed
    assert not mailed & {"gone@example.org", "unsub@example.org"}
    assert plan.recipients == len(mailed) == sum(planned.values())


def test_unsubscribing_stops_messages_already_queued(project: Path, settings: Settings) -> None:
    with open_store(settings) as store:
        merge_lists(store, project)
        digest_id = store.ledger.record_publish(
            PublishRecord(
                articles=(KnownArticle("x", "tag:x", "hash", NOW, NOW, True),),
                withdrawn=(),
                digest_subject="News",
                web_html="",
                audiences=(AudienceRecord("*", "News", "nonce", "<p>html</p>", "text"),),
                recipients=[
                    ("*", "ana.reyes@example.org", ""),
                    ("*", "ben.okafor@example.org", ""),
                ],
            ),
            NOW,
        )
        assert store.remove("ANA.REYES@example.org", NOW)
        counts = store.ledger.delivery_counts(digest_id)
        due = store.ledger.due_count(NOW + timedelta(days=1))
    assert (counts.pending, counts.failed) == (1, 1)
    assert due == 1
    pending = ledger_rows(project, "SELECT email FROM outbox WHERE status = 'pending'")
    assert pending == [("ben.okafor@example.org",)]


def test_an_edit_after_unsubscribing_reaches_everyone_else(
    project: Path, smtp_server: Received, settings: Settings
) -> None:
    publish(project)
    assert "dev.patel@example.org" in smtp_server.recipients()
    with open_store(settings) as store:
        store.remove("dev.patel@example.org", NOW)
    smtp_server.messages.clear()
    edit_article(project, "nintedanib", "twelve hours apart", "twelve hours apart, with food")
    publish(project, now=FIRST_RUN + timedelta(days=1))
    assert smtp_server.recipients()
    assert "dev.patel@example.org" not in smtp_server.recipients()


# --- tokens --------------------------------------------------------------------------------


def test_tokens_never_reveal_the_address() -> None:
    token = sign_token("Ana.Reyes@example.org", KEY)
    payload = token.split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    for text in (token.lower(), decoded.decode("utf-8", "replace").lower()):
        assert "ana" not in text and "example" not in text and "reyes" not in text
    assert verify_token(token, KEY) == subscriber_ref("ana.reyes@EXAMPLE.org", KEY)


def test_tokens_are_bound_to_their_purpose_and_key() -> None:
    token = sign_token("ana.reyes@example.org", KEY, "unsubscribe")
    assert verify_token(token, KEY, "unsubscribe") is not None
    assert verify_token(token, KEY, "preferences") is None
    assert verify_token(token, "another-sites-key", "unsubscribe") is None
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert verify_token(tampered, KEY, "unsubscribe") is None
    with pytest.raises(ValueError, match="unknown token purpose"):
        sign_token("ana.reyes@example.org", KEY, "anything")


def test_confirmation_links_expire_after_seven_days(store: SubscriberStore) -> None:
    now = datetime.now(UTC)  # the token's own timestamp is the real time
    token = store.request_signup("late@example.org", "", frozenset(), now).token
    assert token is not None
    with pytest.raises(TokenError) as caught:
        store.confirm(token, now + timedelta(days=7, minutes=1))
    assert caught.value.expired
    assert status_of(store, "late@example.org") == "pending"
    record = store.confirm(token, now + timedelta(days=6))
    assert record is not None and record.status == "active"
    assert store.confirm(token, now + timedelta(days=6)) is None  # a link confirms once


def test_a_confirmed_sign_up_is_the_one_way_back_after_unsubscribing(
    project: Path, store: SubscriberStore
) -> None:
    merge_lists(store, project)
    assert store.request_signup("ana.reyes@example.org", "", frozenset(), NOW).token is None
    store.remove("ana.reyes@example.org", NOW)
    now = datetime.now(UTC)
    token = store.request_signup("ANA.REYES@example.org", "Ana", frozenset({"x"}), now).token
    assert token is not None
    assert store.request_signup("ana.reyes@example.org", "", frozenset(), now).token is None
    assert status_of(store, "ana.reyes@example.org") == "unsubscribed"
    record = store.confirm(token, now)
    assert record is not None
    assert (record.status, record.email, record.topics) == (
        "active",
        "ana.reyes@example.org",
        {"x"},
    )


def test_links_keep_working_after_the_secret_key_changes(
    project: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(settings) as store:
        merge_lists(store, project)
    monkeypatch.setenv("PIPELINE_SECRET_KEY", "a-new-key")
    with open_store(settings) as store:
        record = store.from_token(sign_token("emma.schulz@example.org", "a-new-key"), "unsubscribe")
        assert record.email == "emma.schulz@example.org"
        with pytest.raises(TokenError):
            store.from_token(sign_token("emma.schulz@example.org", KEY), "unsubscribe")


# --- the ledger ----------------------------------------------------------------------------


def test_suppressions_of_an_older_ledger_become_bounced_subscribers(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(SQLITE_MIGRATIONS[0])
        db.execute(
            "INSERT INTO suppressions VALUES ('Gone@Example.org', 'bounced: 550', "
            "'2026-01-01T00:00:00+00:00')"
        )
        db.execute("PRAGMA user_version = 1")
    with Ledger(path) as ledger:
        assert ledger.suppressed() == {"gone@example.org"}
        record = ledger.subscriber("gone@example.org")
        assert record is not None
        assert (record.email, record.status, record.reason) == (
            "Gone@Example.org",
            "bounced",
            "bounced: 550",
        )
        store = SubscriberStore(ledger, KEY)
        assert store.find("gone@example.org") is not None
        assert ledger.subscriber_by_ref(subscriber_ref("gone@example.org", KEY)) is not None


# --- the command line ----------------------------------------------------------------------


def test_the_subscribers_commands(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--root", str(project), "subscribers", *args])
        assert result.exit_code == 0, result.output
        return result.output

    out = run("import", str(project / "subscribers" / "subscribers.csv"))
    assert "5 added" in out
    assert "Ada@example.org added, active" in run("add", "Ada@EXAMPLE.org", "--name", "Ada")
    assert "ana.reyes@example.org unsubscribed" in run("remove", "ana.reyes@example.org")
    listed = run("list")
    assert "Ada@example.org\tactive\t*\tAda" in listed
    assert "ana.reyes@example.org\tunsubscribed\tscleroderma\tAna Reyes" in listed
    assert run("list", "--status", "unsubscribed").count("@") == 1
    target = tmp_path / "out.csv"
    run("export", "--output", str(target))
    assert "ana.reyes@example.org,Ana Reyes,scleroderma,unsubscribed" in target.read_text()

    bad = write_list(project, "bad.csv", "email,name,topics\nnope,No,\n")
    result = runner.invoke(cli, ["--root", str(project), "subscribers", "import", str(bad)])
    assert result.exit_code == 1
    assert "subscribers/bad.csv:2: email:" in result.output

    result = runner.invoke(
        cli, ["--root", str(project), "subscribers", "add", "ana.reyes@example.org"]
    )
    assert result.exit_code == 1
    assert "ana.reyes@example.org" in result.output
    for command in ("list", "add", "remove", "import", "export"):
        assert runner.invoke(cli, ["subscribers", command, "--help"]).exit_code == 0


class RefusingHandler(RecordingHandler):
    """Refuses one recipient for good (550), as a server does for an address that is gone."""

    def __init__(self, received: Received, refused: str) -> None:
        super().__init__(received)
        self.refused = refused

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.lower() == self.refused:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_a_hard_bounce_leaves_the_address_bounced_for_good(
    project: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = Received()
    handler = RefusingHandler(received, "emma.schulz@example.org")
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    try:
        report = publish(project)
    finally:
        controller.stop()
    assert report.delivery is not None and report.delivery.failed == 1
    with open_store(settings) as store:
        merge_lists(store, project, NOW + timedelta(days=3))
        record = store.find("Emma.Schulz@example.org")
        assert record is not None and record.status == "bounced"
        assert "550" in record.reason
        assert "emma.schulz@example.org" not in {s.email for s in store.active()}


def test_listing_and_exporting_a_fresh_project_create_nothing(project: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--root", str(project), "subscribers", "list"])
    exported = runner.invoke(cli, ["--root", str(project), "subscribers", "export"])
    # The list file's five people are shown, as status and preview count them.
    assert listed.exit_code == 0
    assert "5 subscriber(s), 5 from subscribers/*.csv not imported yet" in listed.output
    assert exported.exit_code == 0 and exported.output.startswith("email,")
    assert exported.output.count("@example.org,") == 5
    assert not (project / "state").exists()
