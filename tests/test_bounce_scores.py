"""Bounce scores over time (Mailman 3 style), against a real SQLite ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.bounce_scores import (
    BounceKind,
    BouncePolicy,
    clear_on_delivery,
    record_bounce,
)
from pipeline.store import Ledger, SubscriberRow

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
POLICY = BouncePolicy()  # the documented defaults: hard 5, soft 1, threshold 5, stale 7 days
HARD, SOFT = BounceKind.HARD, BounceKind.SOFT


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "pipeline.db")
    rows = [
        SubscriberRow(
            f"{name}@example.org",
            f"{name}@example.org",
            name,
            frozenset(),
            "active",
            "test",
            f"ref-{name}",
        )
        for name in ("ana", "ben", "cleo")
    ]
    ledger.merge_subscribers(rows, T0)
    return ledger


def status(ledger: Ledger, key: str) -> str:
    record = ledger.subscriber(key)
    assert record is not None
    return record.status


def test_a_hard_bounce_suppresses_at_once_by_default_and_keeps_the_reason(ledger: Ledger) -> None:
    reply = "550 5.1.1 <ana@example.org>: Recipient address rejected: User unknown"
    assert record_bounce(
        ledger,
        "Ana@Example.org",
        HARD,
        reply,
        now=T0,
        policy=POLICY,
        cause="unknown user",
        digest_id=None,
    )
    record = ledger.subscriber("ana@example.org")
    assert record is not None and record.status == "bounced"
    assert "unknown user" in record.reason and "5.1.1" in record.reason
    (event,) = ledger.bounce_events("ana@example.org")
    assert (event.kind, event.cause, event.reply, event.points) == (
        "hard",
        "unknown user",
        reply,
        5.0,
    )


def test_soft_bounces_never_suppress_alone_within_a_day(ledger: Ledger) -> None:
    for minutes in range(0, 600, 10):
        assert not record_bounce(
            ledger,
            "ben@example.org",
            SOFT,
            "452 4.2.2 mailbox full",
            now=T0 + timedelta(minutes=minutes),
            policy=POLICY,
        )
    assert status(ledger, "ben@example.org") == "active"
    score = ledger.bounce_score("ben@example.org")
    assert score is not None and score.score == 1.0  # one day counts once
    assert len(ledger.bounce_events("ben@example.org")) == 60  # every event is kept


def test_soft_bounces_on_many_days_in_a_row_reach_the_threshold(ledger: Ledger) -> None:
    results = [
        record_bounce(
            ledger,
            "ben@example.org",
            SOFT,
            "552 5.2.2 mailbox full",
            now=T0 + timedelta(days=day),
            policy=POLICY,
        )
        for day in range(5)
    ]
    assert results == [False, False, False, False, True]
    record = ledger.subscriber("ben@example.org")
    assert record is not None and record.status == "bounced" and "5.2.2" in record.reason


def test_a_score_goes_stale_after_a_quiet_period(ledger: Ledger) -> None:
    for day in (0, 1, 2, 3):
        record_bounce(
            ledger, "ben@example.org", SOFT, "452 full", now=T0 + timedelta(days=day), policy=POLICY
        )
    quiet = T0 + timedelta(days=3 + 8)  # more than 7 days after the last one
    assert not record_bounce(ledger, "ben@example.org", SOFT, "452 full", now=quiet, policy=POLICY)
    score = ledger.bounce_score("ben@example.org")
    assert score is not None and score.score == 1.0


def test_a_delivery_clears_the_score(ledger: Ledger) -> None:
    for day in (0, 1, 2, 3):
        record_bounce(
            ledger, "ben@example.org", SOFT, "452 full", now=T0 + timedelta(days=day), policy=POLICY
        )
    assert clear_on_delivery(ledger, "BEN@example.org")
    assert not record_bounce(
        ledger, "ben@example.org", SOFT, "452 full", now=T0 + timedelta(days=4), policy=POLICY
    )
    assert status(ledger, "ben@example.org") == "active"


def test_the_day_counts_its_worst_bounce_once(ledger: Ledger) -> None:
    policy = BouncePolicy(hard_score=3.0, soft_score=1.0, threshold=5.0)
    record_bounce(ledger, "cleo@example.org", SOFT, "452 full", now=T0, policy=policy)
    record_bounce(
        ledger, "cleo@example.org", HARD, "550 5.1.1", now=T0 + timedelta(hours=1), policy=policy
    )
    record_bounce(
        ledger, "cleo@example.org", SOFT, "452 full", now=T0 + timedelta(hours=2), policy=policy
    )
    score = ledger.bounce_score("cleo@example.org")
    assert score is not None and score.score == 3.0
    assert [e.points for e in ledger.bounce_events("cleo@example.org")] == [1.0, 2.0, 0.0]
    assert record_bounce(
        ledger, "cleo@example.org", HARD, "550 5.1.1", now=T0 + timedelta(days=1), policy=policy
    )


def test_unknown_addresses_are_ignored(ledger: Ledger) -> None:
    assert not record_bounce(ledger, "nobody@example.org", HARD, "550 5.1.1", now=T0, policy=POLICY)
    assert ledger.subscriber("nobody@example.org") is None
    assert ledger.bounce_events("nobody@example.org") == []


def test_a_policy_where_a_soft_bounce_alone_suppresses_is_refused() -> None:
    with pytest.raises(ValueError, match="soft_score < threshold"):
        BouncePolicy(soft_score=5.0, threshold=5.0)


def test_reactivation_brings_back_bounced_addresses_only(ledger: Ledger) -> None:
    record_bounce(
        ledger,
        "ana@example.org",
        HARD,
        "550 5.1.1 user unknown",
        now=T0,
        policy=POLICY,
        cause="unknown user",
    )
    record_bounce(
        ledger,
        "ben@example.org",
        HARD,
        "550 5.1.1 user unknown",
        now=T0,
        policy=POLICY,
        cause="unknown user",
    )
    ledger.unsubscribe("cleo@example.org", "web", T0)
    with ledger.transaction():
        back = ledger.reactivate_bounced(cause="UNKNOWN USER", now=T0 + timedelta(hours=1))
    assert back == ["ana@example.org", "ben@example.org"]
    assert status(ledger, "ana@example.org") == "active"
    assert ledger.bounce_score("ana@example.org") is None
    with ledger.transaction():
        assert ledger.reactivate_bounced(keys=("cleo@example.org",), now=T0) == []
    assert status(ledger, "cleo@example.org") == "unsubscribed"


def test_bounces_settings_are_read_and_checked(tmp_path: Path) -> None:
    from pipeline.config import load_settings
    from pipeline.errors import ConfigError

    (tmp_path / "pipeline.toml").write_text(
        "[bounces]\nhard_score = 2\nthreshold = 4.0\nstale_after_days = 14\n", encoding="utf-8"
    )
    policy = BouncePolicy.from_settings(load_settings(tmp_path).bounces)
    assert (policy.hard_score, policy.soft_score, policy.threshold) == (2.0, 1.0, 4.0)
    assert policy.stale_after == timedelta(days=14)
    (tmp_path / "pipeline.toml").write_text("[bounces]\nsoft_score = 5.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[bounces\].*soft_score < threshold"):
        load_settings(tmp_path)


def test_stale_scores_are_forgotten_and_listed_as_zero(ledger: Ledger) -> None:
    record_bounce(ledger, "ben@example.org", SOFT, "452 full", now=T0, policy=POLICY)
    record_bounce(
        ledger, "cleo@example.org", SOFT, "452 full", now=T0 + timedelta(days=6), policy=POLICY
    )
    later = T0 + timedelta(days=8)
    listed = ledger.bounce_listing(fresh_since=later - POLICY.stale_after)
    assert [(a.email, a.score) for a in listed] == [("cleo@example.org", 1.0)]
    assert ledger.forget_stale_scores(later - POLICY.stale_after) == 1
    assert ledger.scored_addresses() == {"cleo@example.org"}
    assert len(ledger.bounce_events("ben@example.org")) == 1  # the history stays
