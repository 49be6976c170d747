"""Email messages: headers, a text and an HTML part, and the list headers of RFC 2369/8058."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import urljoin

from pipeline.config import Settings
from pipeline.digest import SlotTemplate
from pipeline.ledger import AudienceRecord, OutboxRow
from pipeline.subscribers import sign_token

__all__ = ["MessageFactory", "OutgoingMessage", "build_message", "header_safe"]

# Fold only past 998 octets: folding at 78 would RFC 2047-encode the long List-Unsubscribe URL.
_POLICY = policy.SMTP.clone(max_line_length=998)
_LINE_BREAKS = re.compile(r"[\r\n\x00-\x1f\x7f]+")


def header_safe(value: str) -> str:
    """Collapse CR, LF and other controls to a space: no value can start a new header."""
    return " ".join(_LINE_BREAKS.sub(" ", value).split())


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    sender: str
    recipient: str
    message_id: str
    data: bytes


def build_message(
    *,
    sender_name: str,
    sender_address: str,
    to_name: str,
    to_address: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str,
) -> bytes:
    """A ``multipart/alternative`` message (text first, HTML last) as SMTP-ready bytes."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = Address(header_safe(sender_name), addr_spec=sender_address)
    message["To"] = Address(header_safe(to_name), addr_spec=to_address)
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(date.astimezone(UTC))
    message["Message-ID"] = message_id
    message["List-Id"] = list_id
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>, <{unsubscribe_mailto}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message.as_bytes()


class MessageFactory:
    """Turns an outbox row into the message for that subscriber.

    Audience templates are read from the ledger once and reused for every row.
    """

    def __init__(
        self,
        settings: Settings,
        key: str,
        load_audience: Callable[[int, str], AudienceRecord],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._key = key
        self._load_audience = load_audience
        self._clock = clock
        self._cache: dict[tuple[int, str], tuple[AudienceRecord, SlotTemplate, SlotTemplate]] = {}
        sender = settings.sender
        self._domain = sender.address.rpartition("@")[2].lower()
        list_name = re.sub(r"[^a-z0-9]+", "-", settings.site.title.lower()).strip("-") or "digest"
        self._list_id = f"{header_safe(settings.site.title)} <{list_name}.{self._domain}>"
        self._mailto = f"mailto:{sender.address}?subject=unsubscribe"

    def _templates(
        self, digest_id: int, audience_key: str
    ) -> tuple[AudienceRecord, SlotTemplate, SlotTemplate]:
        cache_key = (digest_id, audience_key)
        if cache_key not in self._cache:
            record = self._load_audience(digest_id, audience_key)
            self._cache[cache_key] = (
                record,
                SlotTemplate(record.html, record.slot_nonce),
                SlotTemplate(record.text, record.slot_nonce),
            )
        return self._cache[cache_key]

    def message_id(self, row: OutboxRow) -> str:
        """Stable per (digest, subscriber): a retried message keeps its id, so duplicates collapse."""
        tag = hashlib.sha256(
            f"{self._key}\0{row.digest_id}\0{row.email.lower()}".encode()
        ).hexdigest()[:20]
        return f"<digest{row.digest_id}.{tag}@{self._domain}>"

    def slot_values(self, row: OutboxRow, audience_key: str) -> dict[str, str]:
        base = self._settings.base_url
        name = header_safe(row.name)
        topics = (
            "every topic"
            if audience_key == "*"
            else ", ".join(self._settings.topic_label(t) for t in audience_key.split(";"))
        )
        return {
            "greeting": f"Hello {name}," if name else "Hello,",
            "email": row.email,
            "unsubscribe_url": urljoin(base, f"unsubscribe/{sign_token(row.email, self._key)}"),
            "preferences_url": urljoin(
                base, f"preferences/{sign_token(row.email, self._key, 'preferences')}"
            ),
            "view_url": urljoin(base, f"digests/{row.digest_id}/"),
            "topics": topics,
        }

    def build(self, row: OutboxRow, *, subject_prefix: str = "") -> OutgoingMessage:
        record, html_template, text_template = self._templates(row.digest_id, row.audience_key)
        values = self.slot_values(row, row.audience_key)
        message_id = self.message_id(row)
        sender = self._settings.sender
        data = build_message(
            sender_name=sender.name,
            sender_address=sender.address,
            to_name=row.name,
            to_address=row.email,
            subject=subject_prefix + record.subject,
            text=text_template.fill(values, escape=False),
            html=html_template.fill(values, escape=True),
            message_id=message_id,
            date=self._clock(),
            list_id=self._list_id,
            unsubscribe_url=values["unsubscribe_url"],
            unsubscribe_mailto=self._mailto,
        )
        return OutgoingMessage(sender.address, row.email, message_id, data)
