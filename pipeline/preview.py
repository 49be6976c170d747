"""Editors' tools: look at the next digest before it goes out, or mail a test copy.

Both build the digest the next ``publish`` would send (or, for a subscriber on a daily,
weekly or monthly frequency, their next periodic digest as it stands), through the same
code, and record nothing: no article versions, no digest, no outbox rows. A preview is
written to ``state/preview/`` as ``digest.html``, ``digest.txt`` (the two parts, decoded
back from the message) and ``digest.eml`` (the message exactly as it would be sent, DKIM signature
included when configured). Never under ``public/``: a subscriber's preview carries their
working unsubscribe and preferences links, and ``public/`` is what ``serve`` serves and
what gets deployed. Their "view in browser" link points at the local ``digest.html``,
since the digest has no number until it is published.
"""

from __future__ import annotations

import asyncio
import email
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

from pipeline.atomic import write_atomic
from pipeline.config import Settings, secret_key
from pipeline.delivery import PermanentFailure, Refused, TemporaryFailure, Transport, transport_for
from pipeline.digest import EVERY_TOPIC, CompiledAudience, DigestPlan, audience_key
from pipeline.digest_layout import Layout, describe
from pipeline.errors import DeliveryError, PipelineError
from pipeline.messages import MessageFactory, OutgoingMessage
from pipeline.mime import addr_spec
from pipeline.periodic import IMMEDIATELY, plan_windows
from pipeline.publish import PREVIEW_DIR, plan_publish, remove_public_preview
from pipeline.refusals import advice
from pipeline.store import AudienceRecord, Ledger, OutboxRow
from pipeline.subscriber_plans import planned_subscriber
from pipeline.subscribers import ListFiles, email_key

__all__ = [
    "PREVIEW_DIR",
    "NothingToSend",
    "Preview",
    "build_preview",
    "preview_folder",
    "remove_public_preview",
    "send_test",
    "write_preview",
]

_PREVIEW_DIGEST = 0  # not a real digest number: nothing is recorded


class NothingToSend(PipelineError):
    """The next publish would send no digest (or none to the subscriber asked about)."""


@dataclass(frozen=True, slots=True)
class Preview:
    """One copy of the next digest: the message and its two parts, decoded."""

    message: OutgoingMessage
    subject: str
    html: str
    text: str
    files: tuple[Path, ...] = ()
    layout: Layout | None = None  # how the articles were fitted to the clipping budget

    @property
    def html_bytes(self) -> int:
        """The HTML part's size in bytes (UTF-8, as the reader's client decodes it)."""
        return len(self.html.encode("utf-8"))

    def size_line(self) -> str:
        """The HTML part's size against the clipping budget, for the editor."""
        layout = self.layout or Layout(0, 0)
        return describe(self.html_bytes, layout)

    published_digest: int | None = None  # set when a test resends an already sent digest


def _next_digest(
    settings: Settings, ledger: Ledger, now: datetime | None
) -> tuple[DigestPlan, ListFiles]:
    plan = plan_publish(settings, ledger, now=now)
    digest = plan.digest
    if digest is None or not digest.audiences or plan.subscriber_lists is None:
        raise NothingToSend(
            "the next publish sends no digest: no new or updated article reaches a subscriber"
        )
    return digest, plan.subscriber_lists


def _row(
    digest: DigestPlan,
    settings: Settings,
    subscriber: str | None,
    to: str | None,
    planned: tuple[Ledger, ListFiles],
) -> tuple[OutboxRow, CompiledAudience]:
    """The row to build: a subscriber's own copy, or every change addressed to ``to``."""
    if subscriber is None:
        address = to or settings.sender.address
        return OutboxRow(0, _PREVIEW_DIGEST, EVERY_TOPIC, address, "", 0), digest.everyone
    ledger, lists = planned
    secret = secret_key(settings.paths) if ledger.erased_hashes() else ""
    member = planned_subscriber(ledger, lists.entries(), subscriber, secret)
    key = audience_key(member.topics) if member is not None else ""
    audience = next((a for a in digest.audiences if a.audience.key == key), None)
    # A periodic reader not in the ledger yet (a list row) gets their first digest at the
    # next slot, not at this publish.
    if member is None or audience is None or member.frequency != IMMEDIATELY:
        raise NothingToSend(
            f"{subscriber} gets nothing in the next digest: not in subscribers/*.csv, "
            f"suppressed, or none of their topics changed ({digest.recipients} recipients)"
        )
    row = OutboxRow(0, _PREVIEW_DIGEST, key, to or member.email, member.name, 0)
    return row, audience


def _periodic_row(
    settings: Settings, ledger: Ledger, subscriber: str, to: str | None, now: datetime | None
) -> tuple[OutboxRow, AudienceRecord] | None:
    """The row and audience of an active periodic reader's next digest so far; None for
    anyone else. Raises ``NothingToSend`` when their window holds nothing on their topics."""
    reader = ledger.subscriber(email_key(subscriber))
    if reader is None or reader.status != "active" or reader.frequency == IMMEDIATELY:
        return None
    windows = ledger.reader_windows(reader.frequency, reader.email_key)
    end = now or datetime.now(UTC)
    planned = plan_windows(settings, ledger, windows, end, reader.frequency, at_slot=False)
    if not planned:
        raise NothingToSend(
            f"{subscriber}'s {reader.frequency} digest holds nothing yet: no news on their "
            "topics since their last one"
        )
    key, _ = planned[0].recipients[0]
    audience = next(a for a in planned[0].audiences if a.key == key)
    return OutboxRow(0, _PREVIEW_DIGEST, key, to or reader.email, reader.name, 0), audience


def build_preview(
    settings: Settings,
    ledger: Ledger,
    *,
    subscriber: str | None = None,
    to: str | None = None,
    test: bool = False,
    now: datetime | None = None,
    view_url: str | None = None,
) -> Preview:
    """The next digest as ``subscriber`` would get it (default: every change), unrecorded.
    For a reader on a daily, weekly or monthly frequency, their next digest as it stands at
    ``now``: what their window holds so far.

    Its "view in browser" link is ``view_url``, by default the local preview file."""
    periodic = _periodic_row(settings, ledger, subscriber, to, now) if subscriber else None
    layout = None
    if periodic is not None:
        row, record = periodic
    else:
        digest, lists = _next_digest(settings, ledger, now)
        row, compiled = _row(digest, settings, subscriber, to, (ledger, lists))
        record, layout = compiled.record(), compiled.layout
    preview_url = view_url or (preview_folder(settings) / "digest.html").absolute().as_uri()
    factory = MessageFactory(
        settings,
        secret_key(settings),
        lambda _digest, _key: record,
        web_copy_url=lambda _digest, _key: preview_url,
    )
    message = factory.build(row, test=test)
    html, text = _parts(message)
    return Preview(message, _subject(message), html, text, layout=layout)


def _parsed(message: OutgoingMessage) -> EmailMessage:
    parsed = email.message_from_bytes(message.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _subject(message: OutgoingMessage) -> str:
    return str(_parsed(message)["Subject"])


def _parts(message: OutgoingMessage) -> tuple[str, str]:
    """The HTML and text parts, decoded, with LF line ends."""
    parsed = _parsed(message)
    parts = {}
    for subtype in ("html", "plain"):
        part = parsed.get_body((subtype,))
        assert part is not None, "a digest always has both parts"
        parts[subtype] = str(part.get_content()).replace("\r\n", "\n")
    return parts["html"], parts["plain"]


def write_preview(
    settings: Settings,
    ledger: Ledger,
    *,
    subscriber: str | None = None,
    now: datetime | None = None,
) -> Preview:
    """Write ``state/preview/digest.{html,txt,eml}``; record nothing.

    A ``public/preview/`` left by an earlier version (which wrote there) is removed first.
    """
    preview = build_preview(settings, ledger, subscriber=subscriber, now=now)
    remove_public_preview(settings)
    folder = preview_folder(settings)
    contents = {
        "digest.html": preview.html.encode("utf-8"),
        "digest.txt": preview.text.encode("utf-8"),
        "digest.eml": preview.message.data,
    }
    for name, data in contents.items():
        write_atomic(folder / name, data)
    return Preview(
        preview.message,
        preview.subject,
        preview.html,
        preview.text,
        tuple(folder / name for name in contents),
        layout=preview.layout,
    )


def preview_folder(settings: Settings) -> Path:
    return settings.paths.state / PREVIEW_DIR


def send_test(
    settings: Settings,
    ledger: Ledger,
    to: str,
    *,
    subscriber: str | None = None,
    transport: Transport | None = None,
    now: datetime | None = None,
) -> tuple[Preview, str]:
    """Send the next digest to ``to`` with "[TEST]" in the subject; record nothing.

    With nothing new to announce (right after a publish), the latest digest sent is
    resent as the test instead, so a relay can be tried at any time; ``published_digest``
    then names it. Returns the message sent and the server's reply; a refusal raises
    ``DeliveryError``, and ``NothingToSend`` means no digest was ever sent and none is due.
    """
    addr_spec(to)  # a clear error for a malformed address, before any work
    try:
        preview = build_preview(
            settings,
            ledger,
            subscriber=subscriber,
            to=to,
            test=True,
            now=now,
            view_url=settings.base_url,  # a test reader cannot open a local preview file
        )
    except NothingToSend:
        if subscriber is not None:
            raise
        preview = _latest_digest(settings, ledger, to)
    chosen = transport if transport is not None else transport_for(settings)[0]()
    reply = asyncio.run(_send_one(chosen, preview.message))
    return preview, reply


def _latest_digest(settings: Settings, ledger: Ledger, to: str) -> Preview:
    """The latest digest sent, addressed to ``to`` as a test: its every-topic copy if it
    had one, else the copy of the audience with the most topics."""
    digest_id = ledger.latest_digest()
    if digest_id is None:
        raise NothingToSend(
            "nothing to send: no digest was sent yet and no new or updated article is "
            "waiting; publish an article first"
        )
    audiences = ledger.audiences(digest_id)
    chosen = next((a for a in audiences if a.key == EVERY_TOPIC), None) or max(
        audiences, key=lambda a: len(a.key.split(";"))
    )
    factory = MessageFactory(settings, secret_key(settings), lambda _d, _k: chosen)
    message = factory.build(OutboxRow(0, digest_id, chosen.key, to, "", 0), test=True)
    html, text = _parts(message)
    return Preview(message, _subject(message), html, text, published_digest=digest_id)


async def _send_one(transport: Transport, message: OutgoingMessage) -> str:
    await transport.open()
    try:
        return await transport.send(message)
    except Refused as exc:
        verdict = exc.verdict
        hint = f"; {advice(verdict)}" if verdict.bounce is None else ""
        raise DeliveryError(
            f"the server refused the test message to {message.recipient} "
            f"({verdict.label}): {verdict.reply}{hint}"
        ) from exc
    except (TemporaryFailure, PermanentFailure) as exc:
        raise DeliveryError(
            f"the server refused the test message to {message.recipient}: {exc.reply}"
        ) from exc
    finally:
        await transport.close()
