"""Reading what comes back: DSNs, non-standard bounces, ARF complaints, unsubscribe mail."""

from __future__ import annotations

import pytest

from pipeline.inbound import InboundKind, event_kind, read_message
from pipeline.return_path import (
    ReturnPaths,
    bounce_token,
    find_token,
    read_verp_token,
    unsubscribe_token,
)
from pipeline.tokens import TokenError, subscriber_ref
from tests.inbound_samples import KEY, sample

RCPT = "ana.reyes@example.com"


def test_bounce_token_names_digest_and_subscriber_and_fits_a_local_part() -> None:
    token = bounce_token(KEY, 1234567, "Ana.Reyes@Example.com")
    assert token == token.lower() and "ana" not in token
    assert len("bounces+" + token) <= 64
    named = read_verp_token(KEY, token.upper())  # a mail system may fold the case
    assert named.digest_id == 1234567
    assert named.ref == subscriber_ref("ana.reyes@example.com", KEY)


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t.replace(t.split("-")[0], "2", 1),  # another digest
        lambda t: t[:-1] + ("a" if t[-1] != "a" else "b"),  # an altered signature
        lambda t: bounce_token("another-key", 1, RCPT),  # another site's key
        lambda t: unsubscribe_token(KEY, RCPT).replace("u-", "1-", 1),  # purpose swapped
        lambda t: "1-abc-def",
    ],
)
def test_forged_tokens_are_refused(forge: object) -> None:
    token = bounce_token(KEY, 1, RCPT)
    with pytest.raises(TokenError):
        read_verp_token(KEY, forge(token))  # type: ignore[operator]


def test_return_paths_without_verp_keep_the_sender() -> None:
    paths = ReturnPaths(KEY, "newsletter@example.org")
    assert paths.envelope_sender(3, RCPT) == "newsletter@example.org"
    mailto = paths.unsubscribe_mailto(RCPT)
    assert mailto.startswith("mailto:newsletter@example.org?subject=unsubscribe%20u-")
    verp = ReturnPaths(KEY, "newsletter@example.org", "bounces@news.example.org")
    assert verp.envelope_sender(3, RCPT).startswith("bounces+3-")
    assert verp.envelope_sender(3, RCPT).endswith("@news.example.org")
    assert verp.unsubscribe_mailto(RCPT).startswith("mailto:bounces+u-")


def test_postfix_dsn_for_an_unknown_user_is_a_hard_bounce_with_its_verp_token() -> None:
    message = read_message(sample("postfix-user-unknown.eml", RCPT, digest_id=7))
    (event,) = message.events
    assert event.kind is InboundKind.HARD
    assert event.recipient == RCPT
    assert event.status == "5.1.1"
    assert "User unknown" in event.reason
    assert message.key == "mid:<20261208091403.4QmT2b1Zx8z9sWl@relay.example.org>"
    assert read_verp_token(KEY, message.tokens[0]).digest_id == 7


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("postfix-mailbox-full.eml", InboundKind.SOFT),
        ("postfix-blocklisted.eml", InboundKind.SENDER),
        ("postfix-delayed.eml", InboundKind.DELAYED),
        ("qmail-bounce.eml", InboundKind.HARD),
        ("exim-bounce.eml", InboundKind.HARD),
        ("arf-complaint.eml", InboundKind.COMPLAINT),
        ("unsubscribe-request.eml", InboundKind.UNSUBSCRIBE),
        ("auto-reply.eml", InboundKind.AUTO_REPLY),
        ("human-reply.eml", InboundKind.UNKNOWN),
    ],
)
def test_each_kind_of_mail_is_recognised(name: str, kind: InboundKind) -> None:
    message = read_message(sample(name, RCPT))
    assert [e.kind for e in message.events] == [kind]
    if kind in (InboundKind.SOFT, InboundKind.HARD, InboundKind.COMPLAINT):
        assert message.events[0].recipient == RCPT


def test_a_complaint_carries_the_subscribers_tokens_from_the_returned_original() -> None:
    message = read_message(sample("arf-complaint.eml", RCPT, digest_id=4))
    refs = {read_verp_token(KEY, t).ref for t in message.tokens}
    assert refs == {subscriber_ref(RCPT, KEY)}
    assert "abuse" in message.events[0].reason


def test_an_unsubscribe_request_without_verp_has_its_token_in_the_subject() -> None:
    raw = sample("unsubscribe-request.eml", RCPT, return_path="")
    message = read_message(raw)
    assert [e.kind for e in message.events] == [InboundKind.UNSUBSCRIBE]
    assert read_verp_token(KEY, message.tokens[0]).ref == subscriber_ref(RCPT, KEY)


def test_a_message_to_the_bare_sender_saying_unsubscribe_without_a_token_is_not_a_request() -> None:
    raw = sample("unsubscribe-request.eml", RCPT, return_path="")
    token = unsubscribe_token(KEY, RCPT)
    raw = raw.replace(b"unsubscribe " + token.encode(), b"unsubscribe")
    assert [e.kind for e in read_message(raw).events] == [InboundKind.UNKNOWN]


@pytest.mark.parametrize(
    ("action", "status", "text", "kind"),
    [
        ("failed", "5.1.1", "", InboundKind.HARD),
        ("failed", "5.1.2", "", InboundKind.HARD),
        ("failed", "5.1.10", "null MX", InboundKind.HARD),
        ("failed", "5.4.4", "Host or domain name not found", InboundKind.HARD),
        ("failed", "5.2.1", "mailbox disabled", InboundKind.SOFT),  # as in a run: mailbox
        ("failed", "5.1.1", "550 5.1.1 <a@b.c>: Recipient address rejected", InboundKind.HARD),
        ("failed", "5.0.0", "550 5.0.0 <a@b.c>: User unknown in local table", InboundKind.HARD),
        ("failed", "5.0.0", "554 5.0.0 Relay access denied", InboundKind.SENDER),
        ("failed", "4.4.7", "delivery time expired", InboundKind.SOFT),
        ("failed", "5.2.2", "mailbox full", InboundKind.SOFT),
        ("failed", "5.2.3", "message too large", InboundKind.SOFT),
        ("failed", "5.3.4", "message too big for system", InboundKind.SOFT),
        ("failed", "4.2.2", "over quota, gave up", InboundKind.SOFT),
        ("failed", "5.7.1", "Relay access denied", InboundKind.SENDER),
        ("failed", "5.7.26", "DMARC policy", InboundKind.SENDER),
        ("failed", "5.1.8", "bad sender domain", InboundKind.SENDER),
        ("failed", "", "550 User unknown", InboundKind.HARD),
        ("failed", "", "550 Administrative prohibition", InboundKind.SOFT),
        ("delayed", "4.4.1", "timed out", InboundKind.DELAYED),
        ("delivered", "2.0.0", "ok", InboundKind.UNKNOWN),
    ],
)
def test_dsn_recipients_are_judged_by_what_the_code_is_about(
    action: str, status: str, text: str, kind: InboundKind
) -> None:
    assert event_kind(action, status, text) is kind


def test_garbage_is_unknown_and_keyed_by_its_bytes() -> None:
    message = read_message(b"\x00\xff not an email at all")
    assert [e.kind for e in message.events] == [InboundKind.UNKNOWN]
    assert message.key.startswith("sha256:")


def test_an_encoded_subject_is_decoded_for_the_report() -> None:
    raw = sample("human-reply.eml", RCPT).replace(
        b"Subject: Question about nintedanib", b"Subject: =?utf-8?q?Frage_zu_Nintedanib_=C3=BC?="
    )
    message = read_message(raw)
    assert message.subject == "Frage zu Nintedanib ü"


def test_tokens_are_found_in_a_percent_encoded_mailto() -> None:
    mailto = ReturnPaths(KEY, "newsletter@example.org").unsubscribe_mailto(RCPT)
    assert find_token(f"<https://x.example/u/abc>, <{mailto}>") == unsubscribe_token(KEY, RCPT)
