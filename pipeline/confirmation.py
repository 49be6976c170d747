"""The confirmation email of a web sign-up: ``templates/confirm.mjml.j2`` and ``confirm.txt.j2``.

It is transactional mail to one person who just asked for it, so it carries no list
headers; it ends with the disclaimer and the postal address like every email of the site.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import jinja2
from markupsafe import Markup
from mjml import mjml2html

from pipeline.config import Settings
from pipeline.digest import template_environment
from pipeline.disclaimer import Disclaimer
from pipeline.errors import TemplateError
from pipeline.messages import OutgoingMessage
from pipeline.subscribers import CONFIRM_MAX_AGE, clean_name

__all__ = ["confirmation_message", "topics_phrase"]

HTML_TEMPLATE = "confirm.mjml.j2"
TEXT_TEMPLATE = "confirm.txt.j2"


def topics_phrase(settings: Settings, topics: frozenset[str]) -> str:
    """ "every topic", or the chosen topics' labels."""
    if not topics:
        return "every topic"
    return ", ".join(settings.topic_label(t) for t in sorted(topics))


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
        html = mjml2html(env.get_template(HTML_TEMPLATE).render(context), disable_comments=True)
        text = env.get_template(TEXT_TEMPLATE).render(context)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"templates/{HTML_TEMPLATE} or {TEXT_TEMPLATE}: {exc}") from exc
    except Exception as exc:  # mrml raises a bare error type; name the file
        raise TemplateError(f"templates/{HTML_TEMPLATE}: MJML does not compile: {exc}") from exc

    domain = sender.address.rpartition("@")[2].lower()
    message = EmailMessage(policy=policy.SMTP.clone(max_line_length=998))
    message["From"] = Address(clean_name(sender.name), addr_spec=sender.address)
    message["To"] = Address(name, addr_spec=email)
    message["Subject"] = subject
    message["Date"] = format_datetime(now.astimezone(UTC))
    message_id = make_msgid("confirm", domain=domain)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # no out-of-office replies, please
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return OutgoingMessage(sender.address, email, message_id, message.as_bytes())
