"""What a message that came back says: bounce, complaint, unsubscribe request or auto-reply.

``read_message(raw)`` is pure: it parses one message (bytes, as a mailbox holds it) and
returns an ``InboundMessage`` with one ``InboundEvent`` per address it is about. Nothing is
looked up or changed here; ``pipeline.bounce_inbox`` matches the events to subscribers and
applies them.

In order, a message is recognised as:

1. an ARF feedback report (RFC 5965, ``multipart/report; report-type=feedback-report``): a
   complaint, unless its Feedback-Type is one that is not about our mail (``not-spam``,
   ``auth-failure``, ``virus``);
2. a DSN (RFC 3464, ``multipart/report; report-type=delivery-status``): one event per
   recipient, judged by its Action and Status (RFC 3463) as ``event_kind`` says;
3. an unsubscribe request: an unsubscribe token (``pipeline.return_path``) in the address
   it was sent to or in its Subject;
4. a bounce in one of the many non-standard formats flufl.bounce (Mailman's detector) knows;
5. an auto-reply (RFC 3834 ``Auto-Submitted``, and the older ``X-Autoreply``-style headers);
6. anything else: unknown, left for a person to read.
"""

from __future__ import annotations

import email
import hashlib
import logging
import re
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from enum import StrEnum

from flufl.bounce import all_failures

from pipeline.bounce_rules import Phase, judge, parse_status
from pipeline.bounce_scores import BounceKind
from pipeline.return_path import find_token

__all__ = [
    "InboundEvent",
    "InboundKind",
    "InboundMessage",
    "event_kind",
    "judge_failure",
    "message_key",
    "read_message",
]

log = logging.getLogger(__name__)


class InboundKind(StrEnum):
    HARD = "hard"  # the address is gone for good: scores as a hard bounce
    SOFT = "soft"  # the mailbox refused for now (full, too large): scores as a soft bounce
    COMPLAINT = "complaint"  # marked as spam (ARF): unsubscribe at once and for good
    UNSUBSCRIBE = "unsubscribe"  # a request to the List-Unsubscribe mailto
    SENDER = "sender"  # refused because of the sender or relay (policy): nobody is touched
    DELAYED = "delayed"  # a warning: the relay still tries (Action: delayed)
    AUTO_REPLY = "auto_reply"  # out of office and the like: ignored
    UNKNOWN = "unknown"  # not recognised: left in the mailbox for a person


@dataclass(frozen=True, slots=True)
class InboundEvent:
    kind: InboundKind
    recipient: str  # the address the report names ("" when it names none)
    reason: str  # status and diagnostic, or what the message is, for the ledger and report
    status: str = ""  # RFC 3463 enhanced status code, when the report gives one
    cause: str = ""  # short words it was judged by ("unknown user"), when judged


@dataclass(frozen=True, slots=True)
class InboundMessage:
    key: str  # what makes it "already processed": its Message-ID, else a hash of its bytes
    subject: str
    tokens: tuple[str, ...]  # return-path tokens in the addresses it was sent to, unverified
    events: tuple[InboundEvent, ...]
    date: str = ""  # its Date header as written

    @property
    def recognised(self) -> bool:
        return any(e.kind is not InboundKind.UNKNOWN for e in self.events)


# Headers an MTA or the sender put the envelope recipient in (the VERP address of a bounce).
_ADDRESS_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_NOT_OUR_MAIL = frozenset({"not-spam", "auth-failure", "virus", "dmarc"})
# compat32: headers stay plain strings (policy.default parses each into objects, several
# times slower for the dozens of headers a DSN carries); the Subject is decoded on its own.
_POLICY = policy.compat32
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_SMTP_REPLY = re.compile(r"\s*([245]\d\d)[ -](.*)", re.DOTALL)  # "550 5.1.1 <a>: …"
_AUTO_REPLY_SUBJECT = re.compile(
    r"^(auto(matic)?[ -]?(reply|response)|out of (the )?office|autoreply|vacation|abwesenheit)",
    re.IGNORECASE,
)


def _decoded(value: object) -> str:
    """A header's text with RFC 2047 encoded words decoded; the raw text if they are broken."""
    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeDecodeError):
        return str(value)


def message_key(raw: bytes) -> str:
    """The key under which a message counts as processed: ``mid:<Message-ID>`` or a hash.

    Reads the header only, so a message seen before costs little to skip.
    """
    headers = BytesHeaderParser(policy=_POLICY).parsebytes(raw)
    message_id = str(headers.get("Message-ID", "")).strip()
    if message_id:
        return "mid:" + message_id
    canonical = raw.replace(b"\r\n", b"\n")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def judge_failure(action: str, status: str, diagnostic: str) -> tuple[InboundKind, str]:
    """How one DSN recipient counts (RFC 3464 Action, RFC 3463 Status, the server's text),
    and its cause in short words ("unknown user", "mailbox full" …).

    ``delayed`` is a warning only; ``delivered``, ``relayed`` and ``expanded`` are not
    failures. A ``failed`` recipient with a 4.x.x status is one the relay gave up retrying
    (a mailbox full for days, a host that never answered): a soft bounce. Any other failure
    is judged as the same reply during a run would be (``bounce_rules.judge``, at RCPT):
    about the address (hard), the mailbox (soft) or the sender and relay (nobody touched).
    """
    action = action.strip().lower()
    if action == "delayed":
        return InboundKind.DELAYED, "delivery delayed"
    if action in ("delivered", "relayed", "expanded"):
        return InboundKind.UNKNOWN, action
    status = status.strip()
    if status.startswith("4."):
        return InboundKind.SOFT, "the relay gave up retrying"
    found = _SMTP_REPLY.match(diagnostic)
    code, text = (int(found[1]), found[2]) if found else (550, diagnostic)
    if parse_status(text) is None and _STATUS.fullmatch(status):
        text = f"{status} {text}"
    verdict = judge(code, text, Phase.RCPT)
    if verdict.bounce is None:
        return InboundKind.SENDER, verdict.cause
    kind = InboundKind.HARD if verdict.bounce is BounceKind.HARD else InboundKind.SOFT
    return kind, verdict.cause


def event_kind(action: str, status: str, diagnostic: str) -> InboundKind:
    """``judge_failure`` without the cause."""
    return judge_failure(action, status, diagnostic)[0]


def _address(field: object) -> str:
    """``rfc822; ana@example.org`` (RFC 3464 address-type; address) as a bare address."""
    text = str(field or "").strip()
    if ";" in text:
        text = text.partition(";")[2]
    return text.strip().strip("<>").strip()


def _parts(parsed: Message, content_type: str) -> list[Message]:
    return [p for p in parsed.walk() if p.get_content_type() == content_type]


def _fields(part: Message) -> list[Message]:
    """The header blocks inside a ``message/delivery-status`` or ``feedback-report`` part."""
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _dsn_events(parsed: Message) -> list[InboundEvent]:
    events = []
    for part in _parts(parsed, "message/delivery-status"):
        for block in _fields(part)[1:]:  # the first block is about the whole message
            recipient = _address(block.get("Original-Recipient")) or _address(
                block.get("Final-Recipient")
            )
            action = str(block.get("Action", ""))
            status = str(block.get("Status", "")).strip()
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "")).split())
            diagnostic = diagnostic.partition(";")[2].strip() or diagnostic
            kind, cause = judge_failure(action, status, diagnostic)
            reason = f"{status} {diagnostic}".strip() or action.strip().lower()
            events.append(InboundEvent(kind, recipient, reason, status, cause))
    return events


def _original_headers(parsed: Message) -> Message | None:
    """The returned message's headers (``message/rfc822`` or ``text/rfc822-headers``)."""
    for part in parsed.walk():
        if part.get_content_type() == "message/rfc822":
            inner = _fields(part)
            if inner:
                return inner[0]
        if part.get_content_type() == "text/rfc822-headers":
            text = part.get_payload(decode=True) or b""
            assert isinstance(text, bytes)
            return email.message_from_bytes(text, policy=_POLICY)
    return None


def _arf_events(parsed: Message) -> list[InboundEvent]:
    events = []
    for part in _parts(parsed, "message/feedback-report"):
        for block in _fields(part)[:1]:
            feedback_type = str(block.get("Feedback-Type", "abuse")).strip().lower()
            kind = InboundKind.UNKNOWN if feedback_type in _NOT_OUR_MAIL else InboundKind.COMPLAINT
            recipients = [_address(r) for r in block.get_all("Original-Rcpt-To", [])]
            if not recipients:
                original = _original_headers(parsed)
                recipients = [_address(original.get("To"))] if original is not None else [""]
            agent = str(block.get("User-Agent", "")).strip()
            reason = f"complaint ({feedback_type}{', ' + agent if agent else ''})"
            events += [InboundEvent(kind, r, reason) for r in recipients]
    return events


def _tokens(parsed: Message) -> tuple[str, ...]:
    """Return-path tokens in the addresses the message was sent to, then in the report.

    A report (DSN or ARF) returns our message's headers: its Return-Path holds the bounce
    token, its List-Unsubscribe the subscriber's unsubscribe token, and an ARF report's
    Original-Mail-From the bounce token again. Tokens are signed, so finding one in a
    report's body is as safe as in the address it came to; without VERP they still tie a
    bounce to the subscriber when the failed address is one their mail was forwarded to.
    """
    places = [str(v) for name in _ADDRESS_HEADERS for v in parsed.get_all(name, [])]
    for block in _parts(parsed, "message/feedback-report")[:1]:
        places += [str(f.get("Original-Mail-From", "")) for f in _fields(block)[:1]]
    if parsed.get_content_type() == "multipart/report":
        original = _original_headers(parsed)
        if original is not None:
            places += [str(original.get(name, "")) for name in ("Return-Path", "List-Unsubscribe")]
    found = (find_token(place) for place in places)
    return tuple(dict.fromkeys(t for t in found if t))


def _is_auto_submitted(parsed: Message) -> bool:
    """RFC 3834 ``Auto-Submitted`` other than ``no``, or one of the older conventions."""
    auto = str(parsed.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(parsed.get("Precedence", "")).strip().lower()
    return (
        not auto.startswith("no")
        or any(parsed.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"))
        or precedence in ("auto_reply", "bulk", "junk")
        or bool(_AUTO_REPLY_SUBJECT.match(str(parsed.get("Subject", "")).strip()))
    )


def _flufl_events(parsed: Message) -> list[InboundEvent]:
    try:
        temporary, permanent = all_failures(parsed)
    except Exception:  # its heuristic detectors index into odd mail without checking
        log.warning("flufl.bounce could not scan a message", exc_info=True)
        return []
    # Mailman's detectors name the address and whether the failure is permanent, no more.
    events = [
        InboundEvent(
            InboundKind.HARD,
            a.decode("utf-8", "replace"),
            "non-standard bounce",
            cause="permanent failure",
        )
        for a in sorted(permanent)
    ]
    events += [
        InboundEvent(
            InboundKind.SOFT,
            a.decode("utf-8", "replace"),
            "non-standard bounce",
            cause="temporary failure",
        )
        for a in sorted(temporary - permanent)
    ]
    return events


def read_message(raw: bytes) -> InboundMessage:
    """Parse one message from a mailbox and say what it is; never raises on bad mail."""
    parsed = email.message_from_bytes(raw, policy=_POLICY)
    subject = " ".join(_decoded(parsed.get("Subject", "")).split())
    report_type = str(parsed.get_param("report-type", "", header="content-type")).lower()
    tokens = _tokens(parsed)
    events: list[InboundEvent] = []
    if parsed.get_content_type() == "multipart/report" and report_type == "feedback-report":
        events = _arf_events(parsed)
    elif parsed.get_content_type() == "multipart/report" and report_type == "delivery-status":
        events = _dsn_events(parsed)
    if not events:
        unsubscribe = find_token(subject) or next((t for t in tokens if t.startswith("u-")), None)
        # No Auto-Submitted test: a mail client's unsubscribe button may send the request
        # itself, and nothing we send comes from the mailto address for an auto-reply to quote.
        if unsubscribe and unsubscribe.startswith("u-"):
            tokens = (unsubscribe, *(t for t in tokens if t != unsubscribe))
            events = [InboundEvent(InboundKind.UNSUBSCRIBE, "", "unsubscribe request by email")]
    if not events:
        events = _flufl_events(parsed)
    if not events and _is_auto_submitted(parsed):
        events = [InboundEvent(InboundKind.AUTO_REPLY, "", f"auto-reply: {subject}"[:200])]
    if not events:
        events = [InboundEvent(InboundKind.UNKNOWN, "", f"not recognised: {subject}"[:200])]
    date = str(parsed.get("Date", ""))
    return InboundMessage(message_key(raw), subject, tokens, tuple(events), date)
