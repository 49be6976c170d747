"""What relay webhooks report, as ``InboundEvent`` values: Mailgun, SendGrid, Postmark.

Pure: each function takes the provider's decoded JSON (already authenticated by
``pipeline.webhooks``) and returns ``(key, event, digest id)`` triples. The key is the
provider's own id for the event, under which the ledger records it, so a retried delivery
of the same event is applied once. The digest comes from our Message-ID
(``<digest<N>.…@…>``) when the provider passes it back. Failures are judged like a DSN's
recipients (``inbound.judge_failure``, hence ``bounce_rules.judge``) from the reply the
provider quotes; complaints and unsubscribes map directly; everything else (delivered,
opened, clicked, dropped by the provider's own suppression list …) is ignored.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.inbound import InboundEvent, InboundKind, judge_failure

__all__ = ["Keyed", "mailgun_events", "postmark_events", "sendgrid_events"]

# (key under which the event is recorded, the event, the digest its Message-ID names)
Keyed = tuple[str, InboundEvent, int | None]
_DIGEST_MESSAGE_ID = re.compile(r"<?digest(\d+)\.")


def _digest_of(message_id: object) -> int | None:
    found = _DIGEST_MESSAGE_ID.match(str(message_id or ""))
    return int(found[1]) if found else None


def mailgun_events(body: dict[str, Any], token: str) -> list[Keyed]:
    """Mailgun's ``event-data`` as an event: failed (permanent or temporary), complained,
    unsubscribed; anything else (delivered, opened …) is ignored."""
    data = body.get("event-data")
    if not isinstance(data, dict):
        return []
    name, recipient = str(data.get("event", "")), str(data.get("recipient", ""))
    status = data.get("delivery-status") if isinstance(data.get("delivery-status"), dict) else {}
    assert isinstance(status, dict)
    text = " ".join(f"{status.get('code', '')} {status.get('message', '')}".split())
    reason, cause = text or str(data.get("reason", "")), ""
    if name == "failed" and data.get("severity") == "temporary":
        kind = InboundKind.DELAYED  # Mailgun keeps retrying; its final verdict follows
    elif name == "failed" and data.get("reason") == "suppress-bounce":
        kind, cause = InboundKind.HARD, "on Mailgun's suppression list"
    elif name == "failed" and str(status.get("code", "")).startswith("4"):
        # given up after retrying a temporary refusal, as a DSN's 4.x.x
        kind, cause = InboundKind.SOFT, "the relay gave up retrying"
    elif name == "failed":
        kind, cause = judge_failure("failed", str(status.get("enhanced-code", "")), text)
    elif name == "complained":
        kind, reason = InboundKind.COMPLAINT, "complaint (reported to Mailgun)"
    elif name == "unsubscribed":
        kind, reason = InboundKind.UNSUBSCRIBE, "unsubscribed at Mailgun"
    else:
        return []
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers", {}) if isinstance(message, dict) else {}
    digest = _digest_of(headers.get("message-id") if isinstance(headers, dict) else None)
    key = f"mailgun:{data.get('id') or token}"
    return [(key, InboundEvent(kind, recipient, f"mailgun: {reason}", cause=cause), digest)]


_SENDGRID_KINDS = {
    "spamreport": InboundKind.COMPLAINT,
    "unsubscribe": InboundKind.UNSUBSCRIBE,
    "group_unsubscribe": InboundKind.UNSUBSCRIBE,
    "deferred": InboundKind.DELAYED,
}


def sendgrid_events(body: Any) -> list[Keyed]:
    """SendGrid's array of events: bounce (judged by its status), spamreport, unsubscribe,
    deferred; the rest (processed, delivered, dropped, opens …) are ignored."""
    events: list[Keyed] = []
    for item in body if isinstance(body, list) else []:
        if not isinstance(item, dict):
            continue
        name, recipient = str(item.get("event", "")), str(item.get("email", ""))
        reason, cause = " ".join(str(item.get("reason", "")).split()), ""
        if name == "bounce":
            kind, cause = judge_failure("failed", str(item.get("status", "")), reason)
        elif name in _SENDGRID_KINDS:
            kind = _SENDGRID_KINDS[name]
        else:
            continue
        key = f"sendgrid:{item.get('sg_event_id') or item.get('sg_message_id')}:{name}"
        digest = _digest_of(item.get("smtp-id"))
        event = InboundEvent(kind, recipient, f"sendgrid {name}: {reason}", cause=cause)
        events.append((key, event, digest))
    return events


# Postmark's bounce Type: a few name their cause outright; the rest are judged by Details.
_POSTMARK_TYPES = {
    "SpamComplaint": InboundKind.COMPLAINT,
    "Unsubscribe": InboundKind.UNSUBSCRIBE,
    "AutoResponder": InboundKind.AUTO_REPLY,
    "SoftBounce": InboundKind.SOFT,
    "Transient": InboundKind.DELAYED,
    "DnsError": InboundKind.SOFT,
    "Blocked": InboundKind.SENDER,
    "SpamNotification": InboundKind.SENDER,
    "DMARCPolicy": InboundKind.SENDER,
}
_POSTMARK_JUDGED = frozenset({"HardBounce", "BadEmailAddress", "Unknown"})


def postmark_events(body: Any) -> list[Keyed]:
    """One Postmark record: ``Bounce`` (by its Type, and the reply in Details) or
    ``SpamComplaint``; other record types (Delivery, Open, Click …) are ignored."""
    if not isinstance(body, dict):
        return []
    record, bounce_type = str(body.get("RecordType", "")), str(body.get("Type", ""))
    recipient = str(body.get("Email", ""))
    details = " ".join(str(body.get("Details", "")).split())
    details = details.partition(";")[2].strip() if details.lower().startswith("smtp;") else details
    cause = ""
    if record == "SpamComplaint":
        kind = InboundKind.COMPLAINT
    elif record != "Bounce":
        return []
    elif bounce_type in _POSTMARK_TYPES:
        kind = _POSTMARK_TYPES[bounce_type]
    elif bounce_type in _POSTMARK_JUDGED:
        kind, cause = judge_failure("failed", "", details)
        if bounce_type != "Unknown" and kind is InboundKind.SOFT:
            # Postmark found the address bad; the reply said no more
            kind, cause = InboundKind.HARD, f"{bounce_type} (Postmark)"
    else:
        return []
    reason = f"postmark {bounce_type or record}: {details or body.get('Description', '')}"
    key = f"postmark:{record}:{body.get('ID')}"
    event = InboundEvent(kind, recipient, reason.strip(), cause=cause)
    return [(key, event, None)]  # Postmark's MessageID is its own, not ours
