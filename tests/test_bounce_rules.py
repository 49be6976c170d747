"""Each SMTP refusal judged by what it is about, on replies as real servers word them."""

from __future__ import annotations

import pytest

from pipeline.bounce_rules import Phase, Scope, judge, parse_status
from pipeline.bounce_scores import BounceKind

RCPT, DATA, END, MAIL = Phase.RCPT, Phase.DATA, Phase.END, Phase.MAIL
SENDER, MAILBOX, ADDRESS = Scope.SENDER, Scope.MAILBOX, Scope.ADDRESS

# (server, phase, code, text, scope, retry, cause)
CASES = [
    # --- about the sender or the relay: nobody is suppressed ------------------------------
    (
        "Postfix",
        RCPT,
        554,
        "5.7.1 <ana@example.org>: Relay access denied",
        SENDER,
        False,
        "relay access denied",
    ),
    (
        "Postfix",
        RCPT,
        554,
        "5.7.1 Service unavailable; Client host [203.0.113.9] blocked "
        "using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.9",
        SENDER,
        False,
        "sending host blocklisted",
    ),
    ("Exim", RCPT, 550, "relay not permitted", SENDER, False, "relay access denied"),
    (
        "Exim",
        RCPT,
        550,
        "Verification failed for <news@example.org>\nUnrouteable address\nSender verify failed",
        SENDER,
        False,
        "sender not allowed",
    ),
    (
        "qmail",
        RCPT,
        553,
        "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        SENDER,
        False,
        "relay access denied",
    ),
    (
        "Postfix",
        RCPT,
        553,
        "5.1.8 <news@bad.example>: Sender address rejected: Domain not found",
        SENDER,
        False,
        "sender not allowed",
    ),
    (
        "Postfix",
        RCPT,
        550,
        "5.1.0 <news@example.org>: Sender address rejected: User unknown in local recipient table",
        SENDER,
        False,
        "sender not allowed",
    ),
    (
        "Outlook",
        RCPT,
        550,
        "5.7.1 Unfortunately, messages from [203.0.113.9] weren't sent. "
        "Please contact your Internet service provider since part of their network is on our "
        "block list (S3150).",
        SENDER,
        False,
        "sending host blocklisted",
    ),
    (
        "Yahoo",
        RCPT,
        553,
        "5.7.1 [BL21] Connections will not be accepted from 203.0.113.9, "
        "because the ip is in Spamhaus's list",
        SENDER,
        False,
        "sending host blocklisted",
    ),
    (
        "Gmail",
        END,
        550,
        "5.7.1 [203.0.113.9] Our system has detected that this message is\n"
        "5.7.1 likely unsolicited mail.",
        SENDER,
        False,
        "policy refusal",
    ),
    (
        "Gmail",
        END,
        550,
        "5.7.26 This mail has been blocked because the sender is unauthenticated.",
        SENDER,
        False,
        "authentication required",
    ),
    ("relay", RCPT, 530, "5.7.0 Authentication required", SENDER, False, "authentication required"),
    (
        "SES",
        MAIL,
        554,
        "Message rejected: Email address is not verified.",
        SENDER,
        False,
        "the sender address was refused",
    ),
    (
        "relay",
        RCPT,
        550,
        "5.7.0 Daily sending quota exceeded",
        SENDER,
        False,
        "sending quota or rate exceeded",
    ),
    (
        "Gmail",
        RCPT,
        421,
        "4.7.0 [203.0.113.9] Our system has detected an unusual rate of\n"
        "4.7.0 unsolicited mail originating from your IP address.",
        SENDER,
        True,
        "the server is closing the connection",
    ),
    (
        "Postfix",
        RCPT,
        452,
        "4.5.3 Error: too many recipients",
        SENDER,
        True,
        "sending quota or rate exceeded",
    ),
    (
        "Postfix",
        RCPT,
        451,
        "4.3.0 <ana@example.org>: Temporary lookup failure",
        SENDER,
        True,
        "temporary refusal",
    ),
    (
        "Postfix",
        RCPT,
        550,
        "5.3.0 <ana@example.org>: mail system configuration error",
        SENDER,
        False,
        "the receiving mail system refused",
    ),
    ("any", RCPT, 554, "Transaction failed", SENDER, False, "the transaction was refused"),
    ("any", DATA, 554, "5.5.1 Error: no valid recipients", SENDER, False, "protocol refusal"),
    ("any", END, 554, "5.6.0 Message content rejected", SENDER, False, "message content refused"),
    # --- about the mailbox, for now: a soft bounce -------------------------------------------
    (
        "Gmail",
        RCPT,
        452,
        "4.2.2 The email account that you tried to reach is over quota.",
        MAILBOX,
        True,
        "mailbox full",
    ),
    (
        "Gmail",
        RCPT,
        552,
        "5.2.2 The email account that you tried to reach is over quota and inactive.",
        MAILBOX,
        True,
        "mailbox full",
    ),
    (
        "Dovecot LMTP",
        END,
        552,
        "5.2.2 <ana@example.org> Quota exceeded (mailbox for user is full)",
        MAILBOX,
        True,
        "mailbox full",
    ),
    (
        "any",
        RCPT,
        552,
        "5.2.3 Message length exceeds administrative limit",
        MAILBOX,
        True,
        "message too large for the mailbox",
    ),
    (
        "any",
        END,
        552,
        "5.2.3 Message length exceeds administrative limit",
        MAILBOX,
        False,
        "message too large for the mailbox",
    ),
    (
        "Exim",
        END,
        552,
        "Message size exceeds maximum permitted",
        MAILBOX,
        False,
        "message too large",
    ),
    (
        "Postfix",
        END,
        552,
        "5.3.4 Message size exceeds fixed limit",
        MAILBOX,
        False,
        "message too large",
    ),
    (
        "Postgrey",
        RCPT,
        450,
        "4.2.0 <ana@example.org>: Recipient address rejected: Greylisted, "
        "see http://postgrey.schweikert.ch/help/example.org.html",
        MAILBOX,
        True,
        "greylisted",
    ),
    (
        "Exim greylist",
        RCPT,
        451,
        "Greylisted, please try again in 5 minutes",
        MAILBOX,
        True,
        "greylisted",
    ),
    (
        "any",
        RCPT,
        451,
        "Temporary local problem - please try later",
        MAILBOX,
        True,
        "temporary refusal",
    ),
    (
        "Postfix",
        RCPT,
        450,
        "4.1.1 <ana@example.org>: Recipient address rejected: unverified "
        "address: host mx.example.org said: 550 5.1.1 User unknown",
        MAILBOX,
        True,
        "address not verified yet",
    ),
    (
        "Gmail",
        RCPT,
        550,
        "5.2.1 The email account that you tried to reach is disabled.",
        MAILBOX,
        False,
        "mailbox disabled",
    ),
    (
        "Outlook",
        RCPT,
        550,
        "5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        MAILBOX,
        False,
        "mailbox unavailable",
    ),
    (
        "any",
        RCPT,
        550,
        "Requested action not taken: mailbox unavailable",
        MAILBOX,
        False,
        "mailbox unavailable",
    ),
    ("any", RCPT, 550, "rejected", MAILBOX, False, "refused without a known reason"),
    # --- about the address, for good: a hard bounce -------------------------------------------
    (
        "Postfix",
        RCPT,
        550,
        "5.1.1 <ana@example.org>: Recipient address rejected: User unknown "
        "in virtual mailbox table",
        ADDRESS,
        False,
        "unknown user",
    ),
    (
        "Gmail",
        RCPT,
        550,
        "5.1.1 The email account that you tried to reach does not exist. "
        "Please try\n5.1.1 double-checking the recipient's email address for typos or\n5.1.1 "
        "unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
        ADDRESS,
        False,
        "unknown user",
    ),
    (
        "Outlook",
        RCPT,
        550,
        "5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]",
        ADDRESS,
        False,
        "unknown user",
    ),
    (
        "Yahoo",
        RCPT,
        554,
        "delivery error: dd This user doesn't have a yahoo.com account "
        "(ana@yahoo.com) [0] - mta1234.mail.ne1.yahoo.com",
        ADDRESS,
        False,
        "unknown user",
    ),
    ("Exim", RCPT, 550, "Unrouteable address", ADDRESS, False, "unknown user"),
    ("sendmail", RCPT, 550, "<ana@example.org>... User unknown", ADDRESS, False, "unknown user"),
    (
        "qmail",
        RCPT,
        550,
        "sorry, no mailbox here by that name. (#5.1.1)",
        ADDRESS,
        False,
        "unknown user",
    ),
    (
        "any",
        RCPT,
        550,
        "5.1.2 Host unknown (Name server: bad.example: host not found)",
        ADDRESS,
        False,
        "unknown domain",
    ),
    (
        "Postfix",
        RCPT,
        556,
        "5.1.10 <ana@nullmx.example>: Recipient address rejected: Domain "
        "nullmx.example does not accept mail (nullMX)",
        ADDRESS,
        False,
        "domain accepts no mail (null MX)",
    ),
    (
        "Postfix",
        RCPT,
        550,
        "5.1.0 <ana@example.org>: Recipient address rejected: User unknown",
        ADDRESS,
        False,
        "unknown user",
    ),
    ("Exim", RCPT, 550, "5.4.4 Host not found for domain", ADDRESS, False, "unroutable domain"),
    (
        "Outlook",
        RCPT,
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        ADDRESS,
        False,
        "unknown user",
    ),
    (
        "Outlook",
        RCPT,
        550,
        "5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        SENDER,
        False,
        "policy refusal",
    ),
    (
        "Gmail",
        RCPT,
        452,
        "4.2.1 The user you are trying to contact is receiving mail at a rate "
        "that prevents additional messages from being delivered.",
        MAILBOX,
        True,
        "temporary refusal",
    ),
    (
        "any",
        RCPT,
        551,
        "User not local; please try <ana@elsewhere.example>",
        MAILBOX,
        False,
        "refused without a known reason",
    ),
]


@pytest.mark.parametrize(
    ("server", "phase", "code", "text", "scope", "retry", "cause"),
    CASES,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)],
)
def test_a_reply_is_judged_by_what_it_is_about(
    server: str, phase: Phase, code: int, text: str, scope: Scope, retry: bool, cause: str
) -> None:
    verdict = judge(code, text, phase)
    assert (verdict.scope, verdict.retry, verdict.cause) == (scope, retry, cause)
    assert verdict.reply == f"{code} {text}"
    assert verdict.label == f"{scope}: {cause}"


def test_any_refusal_of_the_sender_is_about_the_sender() -> None:
    for code, text in ((550, "5.1.1 <x@y>: user unknown"), (452, "4.2.2 full")):
        assert judge(code, text, MAIL).scope is SENDER


def test_the_bounce_kind_follows_the_scope() -> None:
    assert judge(550, "5.1.1 user unknown", RCPT).bounce is BounceKind.HARD
    assert judge(552, "5.2.2 mailbox full", RCPT).bounce is BounceKind.SOFT
    assert judge(554, "5.7.1 Relay access denied", RCPT).bounce is None


def test_enhanced_status_codes_are_read_only_at_the_start() -> None:
    assert parse_status("5.1.10 null MX") == (5, 1, 10)
    assert parse_status("4.7.0 try later") == (4, 7, 0)
    assert parse_status("user unknown (#5.1.1)") is None
    assert parse_status("5.1.1000 nonsense") is None
    assert judge(550, "5.1.1 user unknown", RCPT).status == "5.1.1"
