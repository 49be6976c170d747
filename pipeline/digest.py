"""Digest emails: one body per audience, compiled once, personalised per subscriber.

Rendering happens in two stages. At publish time each audience's Jinja2 template is
rendered and its MJML compiled to HTML, with *slots* where per-subscriber values go
(name, personal links). The slotted HTML and text are stored in the ledger with the
digest. At send time each message only fills the slots, escaping the values: no template
engine runs per subscriber, and article text can never be mistaken for a placeholder
because slot markers carry a random nonce chosen per digest.

This module groups readers into audiences and compiles each; what the templates see is in
:mod:`pipeline.digest_context`, the Jinja2 and MJML machinery in
:mod:`pipeline.digest_templates`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin

import jinja2

from pipeline.config import Settings
from pipeline.digest_context import Period, digest_context
from pipeline.digest_layout import HTML_BUDGET, Layout, fit_layout, html_size
from pipeline.digest_templates import (
    DISCLAIMER_MISSING,
    HTML_TEMPLATE,
    TEXT_TEMPLATE,
    compile_mjml,
    missing_disclaimer,
    render_template,
    template_environment,
)
from pipeline.disclaimer import Disclaimer
from pipeline.errors import TemplateError
from pipeline.models import Audience, Changes, Entry, Subscriber
from pipeline.slots import SlotTemplate
from pipeline.store import AudienceRecord

__all__ = [
    "EVERY_TOPIC",
    "SLOTS",
    "CompiledAudience",
    "DigestPlan",
    "SlotTemplate",
    "build_audiences",
    "edition_name",
    "group_by_topics",
    "plan_digest",
    "public_slot_values",
    "render_audience",
    "topics_phrase",
]

# The per-subscriber values; each is a slot in the compiled templates.
SLOTS = ("greeting", "email", "unsubscribe_url", "preferences_url", "view_url", "topics")
EVERY_TOPIC = "*"


@dataclass(frozen=True, slots=True)
class CompiledAudience:
    audience: Audience
    subject: str
    html: SlotTemplate
    text: SlotTemplate
    layout: Layout = field(default_factory=lambda: Layout(0, 0))
    web_html: str = ""  # the same edition with no personal slot: the "view in browser" page

    @property
    def html_bytes(self) -> int:
        """What the HTML part counts against the clipping budget (slots allowed for)."""
        return html_size(self.html.source)

    def record(self) -> AudienceRecord:
        return AudienceRecord(
            self.audience.key,
            self.subject,
            self.html.nonce,
            self.html.source,
            self.text.source,
            self.web_html,
        )


def edition_name(audience_key: str) -> str:
    """The folder of an audience's web edition under ``digests/<n>/``: a hash of its topic
    set, the same for every reader of that set, so it names no one."""
    return hashlib.sha256(audience_key.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class DigestPlan:
    """The digest of one publish: compiled audiences and who gets which."""

    subject: str
    audiences: tuple[CompiledAudience, ...]
    # Audience key -> how many "immediately" readers get that audience (no audience: none).
    members: dict[str, int]
    web_html: str  # the "view in browser" copy: every change, no personal data
    everyone: CompiledAudience  # every change, for previews and test sends
    # Audience key -> how many readers on a periodic frequency it was rendered for too: one
    # who moves to "immediately" between the plan and the record still gets this publish
    # (the ledger decides, by the frequencies at record time, who of both is sent it).
    standby: dict[str, int] = field(default_factory=dict)

    @property
    def recipients(self) -> int:
        """How many messages the digest sends."""
        return sum(self.members.values())


def topics_phrase(settings: Settings, topics: frozenset[str]) -> str:
    """ "every topic", or the chosen topics' labels in slug order."""
    if not topics:
        return "every topic"
    return ", ".join(settings.topic_label(t) for t in sorted(topics))


def audience_key(topics: frozenset[str]) -> str:
    return ";".join(sorted(topics)) if topics else EVERY_TOPIC


# A group's members: how many they are, or who.
_Members = TypeVar("_Members", int, list[Subscriber])


def group_by_topics(subscribers: Iterable[Subscriber]) -> dict[frozenset[str], list[Subscriber]]:
    """``subscribers`` grouped by the set of topics they chose, for ``build_audiences``."""
    groups: dict[frozenset[str], list[Subscriber]] = defaultdict(list)
    for subscriber in subscribers:
        groups[subscriber.topics].append(subscriber)
    return groups


def build_audiences(
    changes: Changes, groups: Mapping[frozenset[str], _Members]
) -> dict[str, tuple[Audience, _Members]]:
    """One audience per set of topics chosen, with its members as given in ``groups``: how
    many chose that set (a publish, which reads who they are only when recording) or who
    they are (``group_by_topics``: a periodic digest). Empty groups, and groups none of whose
    topics changed, are dropped."""
    audiences: dict[str, tuple[Audience, _Members]] = {}
    for topics, members in groups.items():
        if not members:
            continue
        new = tuple(e for e in changes.new if _chosen(topics, e))
        updated = tuple(e for e in changes.updated if _chosen(topics, e))
        if new or updated:
            key = audience_key(topics)
            audiences[key] = (Audience(key, topics, new, updated), members)
    return audiences


def _chosen(topics: frozenset[str], entry: Entry) -> bool:
    return not topics or bool(topics.intersection(entry.article.topics))


def render_audience(
    audience: Audience,
    settings: Settings,
    disclaimer: Disclaimer,
    env: jinja2.Environment,
    nonce: str,
    period: Period | None = None,
    *,
    budget: int = HTML_BUDGET,
) -> CompiledAudience:
    """Render one audience's digest to slotted HTML (MJML compiled once) and text, laid out
    to fit ``budget`` bytes of HTML, and its web edition (same layout, no personal slot)."""
    slot = {name: SlotTemplate.marker(nonce, name) for name in SLOTS}
    total = len(audience.new) + len(audience.updated)

    def compiled(layout: Layout) -> str:
        context = digest_context(audience, settings, disclaimer, slot, period, layout)
        return compile_mjml(render_template(env, HTML_TEMPLATE, context))

    layout, html = fit_layout(total, compiled, budget)
    context = digest_context(audience, settings, disclaimer, slot, period, layout)
    text = render_template(env, TEXT_TEMPLATE, context)
    for file in missing_disclaimer(html, text, disclaimer):
        raise TemplateError(f"{file}: {DISCLAIMER_MISSING}")
    public = digest_context(audience, settings, disclaimer, slot, period, layout, personal=False)
    web_html = compile_mjml(render_template(env, HTML_TEMPLATE, public))
    if nonce in web_html:
        raise TemplateError(
            f"templates/{HTML_TEMPLATE}: the web copy (personal false) still uses a slot; "
            "keep every slot.* inside {% if personal %}"
        )
    return CompiledAudience(
        audience,
        str(context["subject"]),
        SlotTemplate(html, nonce),
        SlotTemplate(text, nonce),
        layout,
        web_html,
    )


def plan_digest(
    changes: Changes,
    topic_counts: Mapping[frozenset[str], int],
    settings: Settings,
    disclaimer: Disclaimer,
    standby: Mapping[frozenset[str], int] | None = None,
) -> DigestPlan | None:
    """Everything needed to send this publish's digest, or None when nothing is announced.

    ``topic_counts`` says how many "immediately" readers chose each set of topics and
    ``standby`` how many periodic readers did (audiences are rendered for both; see
    ``DigestPlan.standby``); who they are is read when the outbox is recorded, so no plan
    holds a list of every subscriber.
    """
    if not changes.announced:
        return None
    env = template_environment(str(settings.paths.templates))
    nonce = secrets.token_hex(6)
    periodic = standby or {}
    everybody = {t: topic_counts.get(t, 0) + periodic.get(t, 0) for t in {*topic_counts, *periodic}}
    groups = build_audiences(changes, everybody)
    compiled = tuple(
        render_audience(audience, settings, disclaimer, env, nonce)
        for audience, _ in groups.values()
    )

    def counted(counts: Mapping[frozenset[str], int]) -> dict[str, int]:
        found = {key: counts.get(audience.topics, 0) for key, (audience, _) in groups.items()}
        return {key: count for key, count in found.items() if count > 0}

    everyone = Audience(EVERY_TOPIC, frozenset(), changes.new, changes.updated)
    web = render_audience(everyone, settings, disclaimer, env, nonce)
    return DigestPlan(
        web.subject, compiled, counted(topic_counts), web.web_html, web, counted(periodic)
    )


def public_slot_values(settings: Settings) -> dict[str, str]:
    """Neutral slot values (no personal data), for benchmarks that fill a copy directly."""
    base = settings.base_url
    return {
        "greeting": "Hello,",
        "email": "",
        "unsubscribe_url": urljoin(base, "subscribe/"),
        "preferences_url": urljoin(base, "subscribe/"),
        "view_url": base,
        "topics": "the topics you chose",
    }
