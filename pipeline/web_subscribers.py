"""Subscriber pages on ``pipeline serve``: sign-up, confirm, unsubscribe, preferences.

- ``/subscribe/``: the form; a POST queues a confirmation email (double opt-in) in the
  outbox, answers the same page whatever the address's state (so the page reveals nothing
  about it), then tries to send it; a mail server that is down delays it, and
  ``pipeline deliver`` (or the next publish) sends it.
- ``/confirm/<token>``: GET shows a button, POST activates (link scanners open links).
- ``/unsubscribe/<token>``: GET shows a button and changes nothing; any POST (the button, or
  RFC 8058 one-click with ``List-Unsubscribe=One-Click`` and no cookies) unsubscribes at
  once and answers 200, never a redirect.
- ``/preferences/<token>``: change name, topics and how often (see
  :func:`pipeline.periodic.change_frequency`), or unsubscribe.

A token that is altered, signed with another key, made for another page or expired gets a
4xx page and changes nothing. No page redirects, none sets a cookie, and every value a user
typed is escaped by the templates.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import jinja2
from markupsafe import Markup
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.bounce_scores import BouncePolicy
from pipeline.config import Settings, secret_key
from pipeline.confirmation import confirmation_message, queue_confirmation, send_queued
from pipeline.delivery import Transport, transport_for
from pipeline.digest import topics_phrase
from pipeline.disclaimer import load_disclaimer
from pipeline.errors import SubscriberError
from pipeline.periodic import IMMEDIATELY, change_frequency, frequency_choices
from pipeline.store import FREQUENCIES, Ledger, SubscriberRecord, open_ledger
from pipeline.subscribers import SubscriberStore, TokenError

__all__ = ["RateLimit", "retry_confirmations", "subscriber_routes"]

log = logging.getLogger(__name__)

PAGES_DIR = "subscribe"
_HEADERS = {
    # Tokens are in the URL: never leak them to another site through Referer.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass
class RateLimit:
    """At most ``limit`` sign-ups per client address within ``window`` (kept in memory)."""

    limit: int = 5
    window: timedelta = timedelta(minutes=10)
    _seen: dict[str, deque[datetime]] = field(default_factory=dict, repr=False)

    def allow(self, client: str, now: datetime) -> bool:
        """Count one attempt by ``client``; False once it is over the limit."""
        cutoff = now - self.window
        if len(self._seen) > 10_000:  # forget idle clients so memory stays bounded
            self._seen = {c: q for c, q in self._seen.items() if q and q[-1] > cutoff}
        recent = self._seen.setdefault(client, deque())
        while recent and recent[0] <= cutoff:
            recent.popleft()
        if len(recent) >= self.limit:
            return False
        recent.append(now)
        return True


class _Pages:
    """Renders the page templates with what every page shows (site, disclaimer, footer)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(settings.paths.templates / PAGES_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
        self._common = {
            "site": settings.site,
            "base_url": settings.base_url,
            "sender": settings.sender,
            "disclaimer_html": Markup(disclaimer.html),
            "topics": sorted(settings.topics.items()),
            "frequencies": frequency_choices(settings),
        }

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self._env.get_template(template).render({**self._common, **context})
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def message(
        self, title: str, *paragraphs: str, status: int = 200, link: tuple[str, str] | None = None
    ) -> HTMLResponse:
        return self.render(
            "message.html.j2",
            status,
            title=title,
            paragraphs=paragraphs,
            link={"url": link[0], "text": link[1]} if link else None,
        )


async def retry_confirmations(
    settings: Settings,
    *,
    every: float = 60.0,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    make_transport: Callable[[], Transport] | None = None,
) -> None:
    """While ``serve`` runs: every ``every`` seconds, send the confirmations whose next try
    has come, so a reader is not kept waiting for the next ``deliver`` or ``publish``."""
    while True:
        await asyncio.sleep(every)
        with open_ledger(settings) as ledger:
            for row_id in ledger.due_messages(clock()):
                await _try_confirmation(settings, ledger, row_id, clock, make_transport)


async def _try_confirmation(
    settings: Settings,
    ledger: Ledger,
    row_id: int,
    clock: Callable[[], datetime],
    make_transport: Callable[[], Transport] | None,
) -> None:
    """One try of a queued confirmation, with [send]'s back-off; logged unless sent."""
    outcome = await send_queued(
        ledger,
        row_id,
        make_transport or transport_for(settings)[0],
        now=clock,
        retry_after=settings.send.retry_after,
        max_attempts=settings.send.max_attempts,
        policy=BouncePolicy.from_settings(settings.bounces),
    )
    if outcome != "sent":
        log.warning("confirmation email (outbox row %d) %s; it stays queued", row_id, outcome)


def subscriber_routes(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    signup_limit: RateLimit | None = None,
    make_transport: Callable[[], Transport] | None = None,
) -> list[BaseRoute]:
    """The subscriber pages, for ``create_app`` to add before the static files."""
    pages = _Pages(settings)
    key = secret_key(settings)
    limit = signup_limit or RateLimit()
    known_topics = frozenset(settings.topics)
    disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
    signup_url = urljoin(settings.base_url, "subscribe/")

    def open_store() -> tuple[Ledger, SubscriberStore]:
        ledger = open_ledger(settings)
        return ledger, SubscriberStore(ledger, key, known_topics)

    def link_failed(exc: TokenError) -> HTMLResponse:
        if exc.expired:
            return pages.message(
                "This link has expired",
                "Links to confirm a subscription work for seven days. Sign up again to get a "
                "new one.",
                status=410,
                link=(signup_url, "Sign up again"),
            )
        return pages.message(
            "This link does not work",
            "It may have been cut short or changed when it was copied, or it belongs to "
            "another site or another page. Nothing was changed. Open the link from the "
            "email again, or sign up anew.",
            status=400,
            link=(signup_url, "Go to the sign-up form"),
        )

    async def send_confirmation(row_id: int) -> None:
        """After the answer: one try at once; a deferred row is retried later."""
        with open_ledger(settings) as ledger:
            await _try_confirmation(settings, ledger, row_id, clock, make_transport)

    async def subscribe(request: Request) -> Response:
        def form_page(status: int, errors: list[str], values: Mapping[str, Any]) -> Response:
            return pages.render(
                "signup.html.j2",
                status,
                title="Subscribe",
                action=request.url.path,
                errors=errors,
                email=values.get("email", ""),
                name=values.get("name", ""),
                chosen=values.get("chosen", []),
                frequency=values.get("frequency", IMMEDIATELY),
            )

        if request.method != "POST":  # GET and HEAD change nothing
            return form_page(200, [], {})
        now = clock()
        form = await request.form()
        email, name = str(form.get("email", "")).strip(), str(form.get("name", ""))
        chosen = [str(t) for t in form.getlist("topic")]
        frequency = str(form.get("frequency", IMMEDIATELY))
        values = {"email": email, "name": name, "chosen": chosen, "frequency": frequency}
        client = request.client.host if request.client else "unknown"
        if not limit.allow(client, now):
            return pages.message(
                "Too many sign-ups",
                "Too many sign-ups came from your network just now. Please try again in a "
                "few minutes.",
                status=429,
            )
        topics = frozenset(chosen)
        unknown = sorted(topics - known_topics)
        if unknown:
            return form_page(422, [f"{unknown[0]} is not one of our topics."], values)
        if frequency not in FREQUENCIES:
            return form_page(422, ["Choose how often among the choices listed."], values)
        ledger, store = open_store()
        task = None
        with ledger:
            try:
                signup = store.request_signup(email, name, topics, now, frequency=frequency)
            except SubscriberError:
                return form_page(422, ["Please enter a valid email address."], values)
            if signup.token is not None:
                message = confirmation_message(
                    settings,
                    disclaimer,
                    email=signup.email,
                    name=name,
                    topics=topics,
                    confirm_url=urljoin(settings.base_url, f"confirm/{signup.token}"),
                    now=now,
                )
                # Queued durably before the answer; sent after it, so the page and its
                # timing are the same for every address and say only what is true for all.
                row_id = queue_confirmation(ledger, message, name, now)
                task = BackgroundTask(send_confirmation, row_id)
        response = pages.message(
            "Confirm your address",
            f"We are sending a confirmation email to {signup.email}. It usually arrives "
            "within a few minutes; if our mail server is busy, we keep trying for a few "
            "hours. Open the link in it within seven days to start your subscription.",
            "If you were subscribed already, nothing changes and no email is sent. Nothing "
            "after a few hours? Look in your spam folder, then sign up again.",
        )
        response.background = task
        return response

    async def confirm(request: Request) -> Response:
        token, now = request.path_params["token"], clock()
        ledger, store = open_store()
        with ledger:
            try:
                signup = store.pending_signup(token, now)
                if request.method != "POST":  # GET and HEAD change nothing
                    if signup.confirmed_at is not None:
                        return pages.message("Already confirmed", "This address is subscribed.")
                    return pages.render(
                        "confirm.html.j2",
                        title="Confirm your subscription",
                        email=signup.email,
                        topics=topics_phrase(settings, signup.topics),
                    )
                record = store.confirm(token, now)
            except TokenError as exc:
                return link_failed(exc)
            if record is None:
                return pages.message("Already confirmed", "This address is subscribed.")
            change_frequency(settings, ledger, record.email_key, signup.frequency, now)
            how_often = dict(frequency_choices(settings))[signup.frequency]
            preferences = urljoin(
                settings.base_url, f"preferences/{store.token_for(record, 'preferences')}"
            )
        return pages.message(
            "You are subscribed",
            f"{record.email} will receive {settings.site.title} news about "
            f"{topics_phrase(settings, record.topics)}, "
            f"{how_often[:1].lower()}{how_often[1:]}. Every email has a link to change your "
            "topics, how often you hear from us, or unsubscribe.",
            link=(preferences, "Choose topics"),
        )

    async def unsubscribe(request: Request) -> Response:
        token, now = request.path_params["token"], clock()
        ledger, store = open_store()
        with ledger:
            try:
                record = store.from_token(token, "unsubscribe")
            except TokenError as exc:
                return link_failed(exc)
            if request.method != "POST":  # GET and HEAD change nothing
                preferences = urljoin(
                    settings.base_url, f"preferences/{store.token_for(record, 'preferences')}"
                )
                return pages.render(
                    "unsubscribe.html.j2",
                    title="Unsubscribe",
                    email=record.email,
                    already=record.suppressed,
                    preferences_url=preferences,
                )
            form = await request.form()
            one_click = form.get("List-Unsubscribe") == "One-Click"
            store.ledger.unsubscribe(
                record.email_key, "one-click unsubscribe" if one_click else "unsubscribe page", now
            )
        return _unsubscribed(record)

    def _unsubscribed(record: SubscriberRecord) -> Response:
        return pages.message(
            "You are unsubscribed",
            f"We will send no more emails to {record.email}. Anything already on its way "
            "has been stopped.",
            link=(signup_url, "Changed your mind? Sign up again"),
        )

    async def preferences(request: Request) -> Response:
        token, now = request.path_params["token"], clock()
        ledger, store = open_store()
        with ledger:
            try:
                record = store.from_token(token, "preferences")
            except TokenError as exc:
                return link_failed(exc)

            def page(status: int = 200, errors: tuple[str, ...] = (), notice: str = "") -> Response:
                current = store.find(record.email) or record
                return pages.render(
                    "preferences.html.j2",
                    status,
                    title="Your preferences",
                    email=current.email,
                    name=current.name,
                    chosen=sorted(current.topics),
                    frequency=current.frequency,
                    suppressed=current.suppressed,
                    signup_url=signup_url,
                    errors=errors,
                    notice=notice,
                )

            if request.method != "POST":  # GET and HEAD change nothing
                return page()
            form = await request.form()
            if form.get("action") == "unsubscribe":
                store.ledger.unsubscribe(record.email_key, "preferences page", now)
                return _unsubscribed(record)
            topics = frozenset(str(t) for t in form.getlist("topic"))
            if not topics <= known_topics:
                return page(422, ("Choose among the topics listed.",))
            frequency = str(form.get("frequency", record.frequency))
            if frequency not in FREQUENCIES:
                return page(422, ("Choose how often among the choices listed.",))
            # A form without the field (a script, an older page) keeps the name as it is.
            name = form.get("name")
            kept = record.name if name is None else str(name)
            if not store.save_preferences(record, kept, topics, now):
                return page(409, ("This address is unsubscribed; sign up again first.",))
            change_frequency(settings, ledger, record.email_key, frequency, now)
            return page(notice="Saved. The next email follows your new choices.")

    methods = ["GET", "POST"]
    return [
        Route("/subscribe", subscribe, methods=methods),
        Route("/subscribe/", subscribe, methods=methods),
        Route("/confirm/{token}", confirm, methods=methods),
        Route("/unsubscribe/{token}", unsubscribe, methods=methods),
        Route("/preferences/{token}", preferences, methods=methods),
    ]
