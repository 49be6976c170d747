"""Email messages: headers, a text and an HTML part, and the list headers of RFC 2369/8058.

``MessageFactory.build`` turns one outbox row into SMTP-ready bytes by filling the
audience's pre-encoded bodies (``pipeline.mime``) and writing the headers directly. The
``EmailMessage`` way of building the same message is kept as ``build_reference_message``:
tests prove both parse back equal, and the benchmark measures one against the other.
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from pipeline.config import CONFIG_FILE, Settings
from pipeline.digest import EVERY_TOPIC, SlotTemplate, edition_name, topics_phrase
from pipeline.dkim_sign import relaxed_piece
from pipeline.errors import ConfigError, Problem
from pipeline.mime import (
    AddressError,
    QuotedPrintableSlots,
    addr_spec,
    encode_address,
    encode_phrase,
    encode_unstructured,
    fold_header,
    header_safe,
    multipart_alternative,
    multipart_body,
)
from pipeline.return_path import ReturnPaths
from pipeline.signing import DkimSigner, dkim_problems, load_signer
from pipeline.store import TRANSACTIONAL_DIGEST, AudienceRecord, OutboxRow
from pipeline.subscribers import make_token, subscriber_ref

__all__ = [
    "TEST_PREFIX",
    "MessageFactory",
    "OutgoingMessage",
    "build_reference_message",
    "check_email_settings",
    "email_settings_problems",
    "header_safe",
]

TEST_PREFIX = "[TEST] "
# A URL in List-Unsubscribe goes in verbatim: printable ASCII without spaces or brackets.
_HEADER_URL = re.compile(r"[!#-;=?-~]+")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    sender: str
    recipient: str
    message_id: str
    data: bytes
    # Every line of ``data`` ends in CRLF and there is no bare CR or LF: true of what
    # ``MessageFactory`` builds, so the transport need not check (see ``wire_form``).
    crlf_only: bool = False


@dataclass(frozen=True, slots=True)
class _Audience:
    """One audience's parts, prepared once: encoded bodies and the folded Subject."""

    subject: str
    subject_header: bytes
    html: QuotedPrintableSlots
    text: QuotedPrintableSlots
    # The same bodies in DKIM's relaxed form, for a signer: canonicalised once per edition.
    relaxed_html: QuotedPrintableSlots | None
    relaxed_text: QuotedPrintableSlots | None


def _check_sender(settings: Settings) -> None:
    """Raise ``ConfigError`` if the List-Unsubscribe URL or a sender address cannot be a header."""
    if not _HEADER_URL.fullmatch(settings.base_url):
        raise ConfigError(
            f"{CONFIG_FILE}: [site] base_url must be plain ASCII for the List-Unsubscribe "
            "header: write an internationalised host in punycode, percent-encode the path"
        )
    for key, address in (
        ("address", settings.sender.address),
        ("reply_to", settings.sender.reply_to),
    ):
        try:
            if address or key == "address":
                addr_spec(address)
        except AddressError as exc:
            raise ConfigError(f"{CONFIG_FILE}: [sender] {key}: {exc}") from exc


def check_email_settings(settings: Settings) -> DkimSigner | None:
    """Raise ``ConfigError`` if messages cannot be built with these settings; the signer.

    Publishing calls it before recording anything, so a mistake here never leaves a
    recorded digest that cannot be sent.
    """
    _check_sender(settings)
    return load_signer(settings)


def email_settings_problems(settings: Settings) -> list[Problem]:
    """Everything ``check_email_settings`` would refuse, for ``pipeline check``: the first
    sender mistake and every ``[dkim]`` one."""
    messages: list[str] = []
    try:
        _check_sender(settings)
    except ConfigError as exc:
        messages.append(str(exc))
    problems = []
    for message in [*messages, *dkim_problems(settings)]:
        # Each message starts with where to look: the config file or an environment variable.
        where, _, what = message.partition(": ")
        problems.append(Problem(where, None, None, what))
    return problems


def _list_name(title: str) -> str:
    """The site's title as a List-Id label: ASCII letters and digits joined by hyphens."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-") or "digest"


class MessageFactory:
    """Turns an outbox row into the message for that subscriber.

    Audience templates are read from the ledger once and reused for every row; a DKIM
    signature is added when ``[dkim]`` is configured.
    """

    def __init__(
        self,
        settings: Settings,
        key: str,
        load_audience: Callable[[int, str], AudienceRecord],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        web_copy_url: Callable[[int, str], str] | None = None,
        load_stored: Callable[[int], tuple[str, str, bytes]] | None = None,
    ) -> None:
        self.settings = settings
        self._load_stored = load_stored  # prepared messages (confirmations) by outbox row
        self._key = key
        self._load_audience = load_audience
        self._clock = clock
        self._cache: dict[tuple[int, str], _Audience] = {}
        self._topic_labels: dict[str, str] = {}
        self._last_date: tuple[datetime | None, bytes] = (None, b"")
        self._signer: DkimSigner | None = check_email_settings(settings)
        base = settings.base_url
        # "View in browser" opens the reader's own edition: the digest their topic set got.
        self._web_copy_url = web_copy_url or (
            lambda n, key: f"{base}digests/{n}/{edition_name(key)}/"
        )
        sender = settings.sender
        self._sender = addr_spec(sender.address)
        self._domain = self._sender.rpartition("@")[2].lower()
        list_name = _list_name(settings.site.title)
        self.list_id = f"{list_name}.{self._domain}"
        self.return_paths = ReturnPaths(key, self._sender, settings.bounces.return_path)
        fixed = [
            fold_header("From", encode_address(sender.name, sender.address)),
            fold_header("List-Id", [*encode_phrase(settings.site.title), f"<{self.list_id}>"]),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        ]
        if sender.reply_to:
            fixed.append(fold_header("Reply-To", encode_address("", sender.reply_to)))
        self._fixed_headers = b"".join(fixed)

    def _audience(self, digest_id: int, audience_key: str) -> _Audience:
        cache_key = (digest_id, audience_key)
        prepared = self._cache.get(cache_key)
        if prepared is None:
            record = self._load_audience(digest_id, audience_key)
            html_slots = SlotTemplate(record.html, record.slot_nonce)
            text_slots = SlotTemplate(record.text, record.slot_nonce)
            html = QuotedPrintableSlots(html_slots.literals, html_slots.names)
            text = QuotedPrintableSlots(text_slots.literals, text_slots.names)
            signed = self._signer is not None
            prepared = _Audience(
                record.subject,
                fold_header("Subject", encode_unstructured(record.subject)),
                html,
                text,
                html.transformed(relaxed_piece) if signed else None,
                text.transformed(relaxed_piece) if signed else None,
            )
            self._cache[cache_key] = prepared
        return prepared

    def message_id(self, row: OutboxRow) -> str:
        """Stable per (digest, subscriber): a retried message keeps its id, so duplicates collapse."""
        tag = hashlib.sha256(
            f"{self._key}\0{row.digest_id}\0{row.email.lower()}".encode()
        ).hexdigest()[:20]
        return f"<digest{row.digest_id}.{tag}@{self._domain}>"

    def unsubscribe_mailto(self, row: OutboxRow) -> str:
        """The List-Unsubscribe ``mailto:``, with the subscriber's opaque token."""
        return self.return_paths.unsubscribe_mailto(row.email)

    def _topics(self, audience_key: str) -> str:
        label = self._topic_labels.get(audience_key)
        if label is None:
            topics = (
                frozenset() if audience_key == EVERY_TOPIC else frozenset(audience_key.split(";"))
            )
            label = self._topic_labels[audience_key] = topics_phrase(self.settings, topics)
        return label

    def slot_values(self, row: OutboxRow, audience_key: str) -> dict[str, str]:
        """The per-subscriber values, unescaped: name, address, topics and signed links."""
        name = header_safe(row.name)
        base = self.settings.base_url  # ends in "/", so joining is concatenating
        ref = subscriber_ref(row.email, self._key)  # one keyed hash for both links
        return {
            "greeting": f"Hello {name}," if name else "Hello,",
            "email": row.email,
            "unsubscribe_url": f"{base}unsubscribe/{make_token(ref, self._key, 'unsubscribe')}",
            "preferences_url": f"{base}preferences/{make_token(ref, self._key, 'preferences')}",
            "view_url": self._web_copy_url(row.digest_id, audience_key),
            "topics": self._topics(audience_key),
        }

    def _date(self) -> bytes:
        """The Date header, formatted once per second rather than once per message."""
        now = self._clock().astimezone(UTC).replace(microsecond=0)
        if now != self._last_date[0]:
            self._last_date = (now, b"Date: %s\r\n" % format_datetime(now).encode("ascii"))
        return self._last_date[1]

    def build(self, row: OutboxRow, *, test: bool = False) -> OutgoingMessage:
        """The message for ``row``; ``test`` marks the subject "[TEST]" and gives a fresh id.

        A row of the reserved digest 0 is a prepared message (a sign-up confirmation),
        sent as it was queued.
        """
        if row.digest_id == TRANSACTIONAL_DIGEST and self._load_stored is not None:
            sender, message_id, data = self._load_stored(row.id)
            return OutgoingMessage(sender, addr_spec(row.email), message_id, data)
        audience = self._audience(row.digest_id, row.audience_key)
        values = self.slot_values(row, row.audience_key)
        unsubscribe_url = values["unsubscribe_url"]
        if not _HEADER_URL.fullmatch(unsubscribe_url):
            raise ConfigError(f"unsubscribe URL {unsubscribe_url!r} cannot go in a header")
        if test:
            message_id = f"<test.{secrets.token_hex(10)}@{self._domain}>"
            subject = fold_header("Subject", encode_unstructured(TEST_PREFIX + audience.subject))
        else:
            message_id = self.message_id(row)
            subject = audience.subject_header
        headers = (
            self._fixed_headers,
            fold_header("To", encode_address(row.name, row.email)),
            subject,
            self._date(),
            b"Message-ID: %s\r\n" % message_id.encode("ascii"),
            fold_header(
                "List-Unsubscribe", [f"<{unsubscribe_url}>,", f"<{self.unsubscribe_mailto(row)}>"]
            ),
        )
        escaped = {name: html.escape(value) for name, value in values.items()}
        boundary = "=_" + message_id[1:].partition("@")[0]
        text_pieces = audience.text.encode(values)
        html_pieces = audience.html.encode(escaped)
        data = multipart_alternative(
            headers, boundary, audience.text.join(text_pieces), audience.html.join(html_pieces)
        )
        if self._signer is not None:
            assert audience.relaxed_text is not None and audience.relaxed_html is not None
            relaxed_body = multipart_body(
                boundary,
                audience.relaxed_text.join(text_pieces),
                audience.relaxed_html.join(html_pieces),
            )
            data = self._signer.sign(data, relaxed_body=relaxed_body)
        recipient = addr_spec(row.email)
        sender = self.return_paths.envelope_sender(row.digest_id, recipient)
        return OutgoingMessage(sender, recipient, message_id, data, crlf_only=True)


# Fold only past 998 octets: folding at 78 would RFC 2047-encode the long List-Unsubscribe URL.
_REFERENCE_POLICY = policy.SMTP.clone(max_line_length=998)


def build_reference_message(
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
    """The same message built the straightforward way, with ``EmailMessage``.

    Not used to send: it is the yardstick ``MessageFactory.build`` is tested and
    benchmarked against.
    """
    message = EmailMessage(policy=_REFERENCE_POLICY)
    message["From"] = Address(header_safe(sender_name), addr_spec=sender_address)
    message["List-Id"] = list_id
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["To"] = Address(header_safe(to_name), addr_spec=to_address)
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(date.astimezone(UTC))
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>, <{unsubscribe_mailto}>"
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return message.as_bytes()
