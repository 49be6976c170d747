"""The confirmation email of a web sign-up: ``templates/confirm.mjml.j2`` and ``confirm.txt.j2``.

It is transactional mail to one person who just asked for it, so it carries no list
headers; it ends with the disclaimer and the postal address like every email of the site.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, make_msgid

import jinja2
from markupsafe import Markup

from pipeline.bounce_scores import BouncePolicy
from pipeline.config import Settings
from pipeline.delivery import PermanentFailure, Refused, TemporaryFailure, Transport
from pipeline.digest import topics_phrase
from pipeline.digest_templates import compile_mjml, template_environment
from pipeline.disclaimer import Disclaimer
from pipeline.drain import backoff, lease_owner
from pipeline.errors import DeliveryError, TemplateError
from pipeline.messages import OutgoingMessage
from pipeline.mime import (
    addr_spec,
    encode_address,
    encode_unstructured,
    fold_header,
    multipart_alternative,
    quoted_printable,
)
from pipeline.refusals import write_refusal
from pipeline.store import Ledger
from pipeline.subscribers import CONFIRM_MAX_AGE, clean_name

__all__ = ["confirmation_message", "queue_confirmation", "send_queued"]

HTML_TEMPLATE = "confirm.mjml.j2"
TEXT_TEMPLATE = "confirm.txt.j2"


def confirmation_message(
    settings: Settings,
    disclaimer: Disclaimer,
    *,
    email: str,
    name: str,
    topics: frozenset[str],
    confirm_url: str,
    now: datetime,
    valid_for: timedelta = CONFIRM_MAX_AGE,
) -> OutgoingMessage:
    """The confirmation email for one sign-up, as SMTP-ready bytes."""
    name = clean_name(name)  # no CR/LF can reach a header
    sender = settings.sender
    subject = f"Confirm your subscription to {clean_name(settings.site.title)}"
    context = {
        "site": settings.site,
        "base_url": settings.base_url,
        "sender": sender,
        "subject": subject,
        "greeting": f"Hello {name}," if name else "Hello,",
        "email": email,
        "topics": topics_phrase(settings, topics),
        "confirm_url": confirm_url,
        "valid_days": valid_for.days,
        "disclaimer_html": Markup(disclaimer.html),
        "disclaimer_text": disclaimer.text,
    }
    env = template_environment(str(settings.paths.templates))
    try:
        mjml_source = env.get_template(HTML_TEMPLATE).render(context)
        text = env.get_template(TEXT_TEMPLATE).render(context)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"templates/{HTML_TEMPLATE} or {TEXT_TEMPLATE}: {exc}") from exc
    html = compile_mjml(mjml_source, HTML_TEMPLATE)

    domain = sender.address.rpartition("@")[2].lower()
    message_id = make_msgid("confirm", domain=domain)
    headers = (
        fold_header("From", encode_address(clean_name(sender.name), sender.address)),
        fold_header("To", encode_address(name, email)),
        fold_header("Subject", encode_unstructured(subject)),
        b"Date: %s\r\n" % format_datetime(now.astimezone(UTC)).encode("ascii"),
        b"Message-ID: %s\r\n" % message_id.encode("ascii"),
        b"Auto-Submitted: auto-generated\r\n",  # no out-of-office replies, please
    )
    boundary = "=_" + message_id[1:].partition("@")[0]
    data = multipart_alternative(headers, boundary, quoted_printable(text), quoted_printable(html))
    return OutgoingMessage(addr_spec(sender.address), addr_spec(email), message_id, data)


def queue_confirmation(ledger: Ledger, message: OutgoingMessage, name: str, now: datetime) -> int:
    """Put a confirmation in the outbox (committed before anyone is told it is coming), so a
    mail server that is down delays it but never loses it. Returns the outbox row id."""
    return ledger.queue_message(
        message.recipient, clean_name(name), message.sender, message.message_id, message.data, now
    )


async def send_queued(
    ledger: Ledger,
    row_id: int,
    make_transport: Callable[[], Transport],
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    retry_after: float = 60.0,
    max_attempts: int = 5,
    policy: BouncePolicy | None = None,
) -> str:
    """Try once, now, to send the queued message ``row_id``; record its fate like the drain.

    Returns "sent", "deferred", "failed", "held" (the relay refused for a reason of the
    sender: the row stays pending) or "taken" (another delivery holds the row). A deferred
    or held row is retried by the next ``pipeline deliver`` or ``publish``. A refusal is
    judged as in a run: a bounce scores by ``policy`` (``[bounces]``).
    """
    owner = lease_owner()
    row = ledger.claim_row(row_id, owner, now(), now() + timedelta(minutes=2))
    if row is None:
        return "taken"
    sender, message_id, data = ledger.stored_message(row.id)
    transport = make_transport()
    try:
        await transport.open()
        reply = await transport.send(OutgoingMessage(sender, row.email, message_id, data))
    except TemporaryFailure as exc:
        return _defer_or_fail(
            ledger, row.id, row.attempts, exc.reply, now(), retry_after, max_attempts
        )
    except Refused as exc:
        verdict = exc.verdict
        if verdict.bounce is None and not verdict.retry:
            ledger.mark_held(row.id, verdict.reply, verdict.label)
            return "held"
        outcome, _ = write_refusal(
            ledger,
            row,
            verdict,
            now(),
            policy=policy or BouncePolicy(),
            retry_base=retry_after,
            max_attempts=max_attempts,
        )
        return outcome
    except PermanentFailure as exc:
        ledger.mark_failed(row.id, exc.reply, cause="local: cannot send to it")
        return "failed"
    except (DeliveryError, OSError) as exc:  # the sender refused or no server: try later
        return _defer_or_fail(
            ledger, row.id, row.attempts, str(exc), now(), retry_after, max_attempts
        )
    finally:
        await transport.close()
    ledger.mark_sent(row.id, message_id, reply, now())
    return "sent"


def _defer_or_fail(
    ledger: Ledger,
    row_id: int,
    attempts: int,
    reply: str,
    now: datetime,
    retry_after: float,
    max_attempts: int,
) -> str:
    if attempts + 1 >= max_attempts:
        ledger.mark_failed(row_id, reply)
        return "failed"
    ledger.mark_deferred(row_id, reply, now + backoff(attempts, base=retry_after))
    return "deferred"
