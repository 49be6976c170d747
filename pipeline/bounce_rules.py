"""What an SMTP refusal is about: the sender or relay, the mailbox for now, or the address.

A reply is judged by its meaning, not its first digit (RFC 5321 replies, RFC 3463
enhanced status codes ``class.subject.detail``), in this order; the first rule that
applies decides:

1. a refusal of ``MAIL FROM``, or ``421`` (the service is closing), is about the sender;
2. texts that name the sender's side (relay denied, a blocklisted sending host, the
   sender not allowed, authentication required, a sending quota or rate) are about the
   sender, whatever the code;
3. Outlook's ``550 5.5.0 … mailbox unavailable`` (its unknown user, but also the RFC's
   generic words) is a mailbox refusal, never a hard bounce on its own;
4. every 4xx may go through later (``retry``): about the sender when its enhanced code's
   subject is the system, network, protocol, content or policy (x.3 to x.7), else about
   the mailbox (a soft bounce);
5. ``552`` at RCPT is the mailbox, transient: RFC 5321 §4.5.3.1.10 says to treat it as 452;
6. enhanced codes: x.1.1, x.1.2, x.1.3, x.1.6, x.1.10 and x.4.4 the address (a hard
   bounce); x.1.7 and x.1.8 the sender; x.2.x the mailbox (x.2.2 full may retry);
   x.3.4 the mailbox (too large); x.3.x, x.5.x, x.6.x and x.7.x the sender;
7. without a telling code, the classic texts: unknown user or domain (hard), mailbox full
   (soft, may retry), message too large (soft);
8. what is left: the reply to DATA and a bare 554 about the sender, any other 5xx the
   mailbox (a soft bounce: an unexplained refusal never suppresses alone).

A refusal about the sender suppresses nobody: the run stops and the rows stay pending.
The same refusal for many recipients in a row is about the sender whatever it says: that
is the circuit breaker in ``pipeline.breaker``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pipeline.bounce_scores import BounceKind

__all__ = ["Phase", "Scope", "Verdict", "judge", "parse_status"]


class Phase(StrEnum):
    """Which command the reply answers; END is the reply to the message's data."""

    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END = "END"


class Scope(StrEnum):
    """Whom a refusal is about."""

    SENDER = "sender"  # the sender, the relay, the message itself: nobody is suppressed
    MAILBOX = "mailbox"  # the recipient's mailbox, for now: a soft bounce
    ADDRESS = "address"  # the recipient's address, for good: a hard bounce


@dataclass(frozen=True, slots=True)
class Verdict:
    """One refusal judged: whom it is about, in short words, and whether to try again."""

    scope: Scope
    cause: str  # "relay access denied", "mailbox full", "unknown user" …
    retry: bool  # the same message may be accepted later (4xx, or a full mailbox)
    reply: str  # the server's reply as received, code first
    status: str | None = None  # the enhanced status code, if the reply had one

    @property
    def bounce(self) -> BounceKind | None:
        """The bounce this refusal scores: hard, soft, or none (about the sender)."""
        if self.scope is Scope.ADDRESS:
            return BounceKind.HARD
        if self.scope is Scope.MAILBOX:
            return BounceKind.SOFT
        return None

    @property
    def label(self) -> str:
        """``scope: cause``, as kept with the outbox row and counted by ``status``."""
        return f"{self.scope}: {self.cause}"


_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")


def parse_status(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply's text, if any."""
    found = _STATUS.match(text)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(patterns), re.IGNORECASE)


_SENDER_TEXTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "relay access denied",
        _words(
            r"relay(ing)? (access )?(denied|not permitted|not allowed|prohibited|disallowed)",
            r"not (permitted|allowed|authori[sz]ed) to relay",
            r"unable to relay",
            r"do(es)? not relay",
            r"rcpthosts",
        ),
    ),
    (
        "sending host blocklisted",
        _words(
            r"block ?list",
            r"black ?list",
            r"blocked using",
            r"listed (in|at|on|by) ",
            r"spamhaus|spamcop|barracuda|sorbs|dnsbl|\brbl\b",
            r"reputation",
            r"client host .*(rejected|blocked)",
        ),
    ),
    (
        "sender not allowed",
        _words(
            r"sender (address )?(rejected|denied|refused|not allowed|blocked|verify failed)",
            r"sender is not (allowed|authori[sz]ed|permitted)",
            r"not (allowed|authori[sz]ed|permitted) to send",
            r"from address (rejected|not allowed|not verified)",
        ),
    ),
    (
        "authentication required",
        _words(
            r"authenticat(e|ion) (is )?required",
            r"must (first )?authenticate",
            r"(not|un)authenticated",
            r"authentication (failed|needed)",
        ),
    ),
    (
        "sending quota or rate exceeded",
        _words(
            r"sending (quota|limit|rate)",
            r"(daily|hourly) (user )?(sending )?(quota|limit)",
            r"rate limit",
            r"too many (messages|connections|recipients)",
            r"message limit",
        ),
    ),
)

_UNKNOWN_USER = _words(
    r"user unknown",
    r"unknown (user|recipient|mailbox|address|local.?part)",
    r"no such (user|mailbox|recipient|address|account)",
    r"(mailbox|user|recipient|account|address) (does not|doesn't|did not) exist",
    r"does not exist",
    r"(mailbox|user|recipient|address) not found",
    r"invalid (recipient|mailbox)",
    r"not a valid (mailbox|user|recipient)",
    r"no mailbox here",
    r"doesn't have an? .{1,40} account",
    r"unrout(e)?able address",
    r"recipient address rejected: access denied",
)
_UNKNOWN_DOMAIN = _words(
    r"domain not found",
    r"no such domain",
    r"domain (does not|doesn't) exist",
    r"host or domain name not found",
)
_MAILBOX_FULL = _words(
    r"mailbox (is )?full",
    r"full mailbox",
    r"inbox is full",
    r"over ?quota",
    r"quota exceeded",
    r"exceed(s|ed)? (the |their |its )?(storage|quota)",
    r"insufficient (disk )?space",
    r"mailbox size limit",
)
_TOO_LARGE = _words(
    r"too (large|big)",
    r"size (limit|exceeds)",
    r"exceeds (the )?(maximum )?(message )?size",
    r"message length exceeds",
)
_GREYLISTED = _words(r"gr[ea]y ?list")
_MAILBOX_UNAVAILABLE = _words(r"mailbox unavailable")

_HARD_STATUSES = {
    (1, 1): "unknown user",
    (1, 2): "unknown domain",
    (1, 3): "invalid address",
    (1, 6): "mailbox moved",
    (1, 10): "domain accepts no mail (null MX)",
    (4, 4): "unroutable domain",
}
_SENDER_SUBJECTS = {
    3: "the receiving mail system refused",
    5: "protocol refusal",
    6: "message content refused",
    7: "policy refusal",
}


def judge(code: int, text: str, phase: Phase) -> Verdict:
    """Judge one refusal (any reply but 2xx and 354) by what it is about.

    ``text`` is the reply after its code (lines of a multi-line reply joined by newlines);
    ``phase`` the command it answers. Never raises.
    """
    reply = f"{code} {text}".strip()
    status = parse_status(text)
    status_text = None if status is None else ".".join(map(str, status))
    temporary = 400 <= code < 500

    def verdict(scope: Scope, cause: str, retry: bool = temporary) -> Verdict:
        return Verdict(scope, cause, retry, reply, status_text)

    if phase is Phase.MAIL:
        return verdict(Scope.SENDER, "the sender address was refused")
    if code == 421:
        return verdict(Scope.SENDER, "the server is closing the connection", True)
    for cause, pattern in _SENDER_TEXTS:
        if pattern.search(text):
            return verdict(Scope.SENDER, cause)
    if code == 550 and _MAILBOX_UNAVAILABLE.search(text):
        return verdict(Scope.MAILBOX, "mailbox unavailable")
    if temporary:
        subject, detail = (0, 0) if status is None else status[1:]
        scope = Scope.SENDER if subject >= 3 else Scope.MAILBOX
        return verdict(scope, _temporary_cause(text, subject, detail))
    if code == 552 and phase is Phase.RCPT:
        return verdict(Scope.MAILBOX, _mailbox_cause(text, "storage exceeded"), True)
    if status is not None:
        found = _judge_status(status[1], status[2], verdict)
        if found is not None and found.scope is Scope.ADDRESS and _UNKNOWN_USER.search(text):
            return verdict(Scope.ADDRESS, "unknown user")  # Outlook says 5.1.10 for it too
        if found is not None:
            return found
    if _UNKNOWN_DOMAIN.search(text):
        return verdict(Scope.ADDRESS, "unknown domain")
    if _UNKNOWN_USER.search(text):
        return verdict(Scope.ADDRESS, "unknown user")
    if _MAILBOX_FULL.search(text):
        return verdict(Scope.MAILBOX, "mailbox full", True)
    if _TOO_LARGE.search(text):
        return verdict(Scope.MAILBOX, "message too large")
    if phase is Phase.DATA or code == 554:
        return verdict(Scope.SENDER, "the transaction was refused")
    return verdict(Scope.MAILBOX, "refused without a known reason")


def _judge_status(subject: int, detail: int, verdict: Callable[..., Verdict]) -> Verdict | None:
    hard = _HARD_STATUSES.get((subject, detail))
    if hard is not None:
        return verdict(Scope.ADDRESS, hard)
    if subject == 1 and detail in (7, 8):
        return verdict(Scope.SENDER, "the sender address was refused")
    if subject == 2:
        causes = {1: "mailbox disabled", 2: "mailbox full", 3: "message too large for the mailbox"}
        return verdict(Scope.MAILBOX, causes.get(detail, "mailbox unavailable"), detail == 2)
    if (subject, detail) == (3, 4):
        return verdict(Scope.MAILBOX, "message too large")
    if subject in _SENDER_SUBJECTS:
        return verdict(Scope.SENDER, _SENDER_SUBJECTS[subject])
    return None  # x.0.x, the other x.1.x and x.4.x: the text decides


def _temporary_cause(text: str, subject: int, detail: int) -> str:
    if _GREYLISTED.search(text):
        return "greylisted"
    if (subject, detail) == (2, 2) or _MAILBOX_FULL.search(text):
        return "mailbox full"
    if subject == 1 or _UNKNOWN_USER.search(text):
        return "address not verified yet"
    return "temporary refusal"


def _mailbox_cause(text: str, default: str) -> str:
    if _TOO_LARGE.search(text):
        return "message too large for the mailbox"
    return "mailbox full" if _MAILBOX_FULL.search(text) else default
