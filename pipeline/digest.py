"""Digest emails: one body per audience, compiled once, personalised per subscriber.

Rendering happens in two stages. At publish time each audience's Jinja2 template is
rendered and its MJML compiled to HTML, with *slots* where per-subscriber values go
(name, personal links). The slotted HTML and text are stored in the ledger with the
digest. At send time each message only fills the slots, escaping the values: no template
engine runs per subscriber, and article text can never be mistaken for a placeholder
because slot markers carry a random nonce chosen per digest.
"""

from __future__ import annotations

import hashlib
import secrets
import textwrap
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urljoin

import jinja2
from markupsafe import Markup
from mjml import mjml2html

from pipeline.config import Settings
from pipeline.digest_layout import HTML_BUDGET, Layout, fit_layout, html_size
from pipeline.disclaimer import Disclaimer
from pipeline.errors import TemplateError
from pipeline.models import Audience, Changes, Entry, Subscriber
from pipeline.slots import SlotTemplate
from pipeline.store import AudienceRecord

__all__ = [
    "EVERY_TOPIC",
    "HTML_TEMPLATE",
    "SLOTS",
    "TEXT_TEMPLATE",
    "CompiledAudience",
    "DigestPlan",
    "Period",
    "SlotTemplate",
    "TemplateRenderError",
    "build_audiences",
    "compile_mjml",
    "digest_context",
    "digest_subject",
    "edition_name",
    "group_by_topics",
    "plan_digest",
    "public_slot_values",
    "render_audience",
    "render_sources",
    "template_environment",
    "template_line",
    "topics_phrase",
    "wrap_text",
]

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
# The per-subscriber values; each is a slot in the compiled templates.
SLOTS = ("greeting", "email", "unsubscribe_url", "preferences_url", "view_url", "topics")
EVERY_TOPIC = "*"


@dataclass(frozen=True, slots=True)
class Period:
    """What a periodic digest covers, for its subject and intro: ("weekly", "23-29 November")."""

    frequency: str
    label: str


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


def wrap_text(text: str, width: int = 72, indent: str = "") -> str:
    """Wrap at spaces only: a long URL or word stays whole on a line of its own (a URL
    split across lines no longer works when clicked). Lines after the first get ``indent``."""
    return "\n".join(
        textwrap.wrap(
            " ".join(str(text).split()),
            width=width,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


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


def template_environment(templates_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2", "html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = wrap_text
    return env


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


def digest_subject(settings: Settings, entries: Sequence[Entry]) -> str:
    """The subject from ``[digest] subject``, e.g. "Therapy news: Alemtuzumab and 2 more"."""
    first = entries[0].article
    others = len(entries) - 1
    try:
        subject = settings.digest.subject.format(
            site=settings.site.title,
            first=first.therapy.name if first.therapy else first.title,
            more=f" and {others} more" if others else "",
            count=len(entries),
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(
            f"pipeline.toml: [digest] subject: {exc!s} is not a known field; "
            "use {site}, {first}, {more} and {count}"
        ) from exc
    return " ".join(subject.split())  # a newline in a title must never reach a header


def periodic_subject(settings: Settings, period: Period, count: int) -> str:
    """The subject from ``[digest] periodic_subject``, e.g. "Your weekly digest, 23-29 November"."""
    try:
        subject = settings.digest.periodic_subject.format(
            site=settings.site.title, frequency=period.frequency, period=period.label, count=count
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(
            f"pipeline.toml: [digest] periodic_subject: {exc!s} is not a known field; "
            "use {site}, {frequency}, {period} and {count}"
        ) from exc
    return " ".join(subject.split())


def _card(entry: Entry, settings: Settings) -> dict[str, object]:
    article = entry.article
    therapy = article.therapy
    return {
        "title": article.title,
        "url": entry.url,
        "summary": article.summary,
        "therapy": therapy.name if therapy else "",
        "maker": therapy.maker if therapy else "",
        "brands": list(therapy.brands) if therapy else [],
        "topics": [settings.topic_label(t) for t in article.topics],
        "published": entry.published,
        "updated": entry.updated,
    }


def _preheader(entries: Sequence[Entry], limit: int = 140) -> str:
    """The inbox preview line: the titles, cut at a word, never mid-word."""
    text = "; ".join(e.article.title for e in entries)
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0].rstrip(";,:") + "…"


def digest_context(
    audience: Audience,
    settings: Settings,
    disclaimer: Disclaimer,
    slot: Mapping[str, str],
    period: Period | None = None,
    layout: Layout | None = None,
    *,
    personal: bool = True,
) -> dict[str, object]:
    """What both templates see; ``slot`` holds slot markers, or real values when rendering
    a single copy directly (the benchmark's straightforward way). ``period`` is set for a
    daily, weekly or monthly digest and None for the one sent at a publish. ``layout``
    says how many articles get full cards (default: all); ``personal`` False renders the
    web edition, whose footer has no personal value or link."""
    entries = [*audience.new, *audience.updated]
    if period is None:
        subject = digest_subject(settings, entries)
    else:
        subject = periodic_subject(settings, period, len(entries))
    layout = layout or Layout(len(entries), len(entries))
    fresh = len(audience.new)
    linked = range(layout.full, layout.full + layout.links)
    return {
        "personal": personal,
        "collapsed": [
            {"title": entries[i].article.title, "url": entries[i].url, "updated": i >= fresh}
            for i in linked
        ],
        "more_count": layout.more,
        "more_url": settings.base_url,
        "subscribe_url": urljoin(settings.base_url, "subscribe/"),
        "site": settings.site,
        "base_url": settings.base_url,
        "sender": settings.sender,
        "subject": subject,
        "preheader": _preheader(entries),
        "new": [_card(e, settings) for e in audience.new[: layout.full]],
        "updated": [_card(e, settings) for e in audience.updated[: max(0, layout.full - fresh)]],
        "disclaimer_html": Markup(disclaimer.html),
        "disclaimer_text": disclaimer.text,
        "slot": slot,
        "period": period,
    }


def render_sources(env: jinja2.Environment, context: dict[str, object]) -> tuple[str, str]:
    """Both templates rendered: the MJML source (not yet compiled) and the text part."""
    return _render(env, HTML_TEMPLATE, context), _render(env, TEXT_TEMPLATE, context)


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
        return compile_mjml(_render(env, HTML_TEMPLATE, context))

    layout, html = fit_layout(total, compiled, budget)
    context = digest_context(audience, settings, disclaimer, slot, period, layout)
    text = _render(env, TEXT_TEMPLATE, context)
    for file in missing_disclaimer(html, text, disclaimer):
        raise TemplateError(f"{file}: {DISCLAIMER_MISSING}")
    public = digest_context(audience, settings, disclaimer, slot, period, layout, personal=False)
    web_html = compile_mjml(_render(env, HTML_TEMPLATE, public))
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


DISCLAIMER_MISSING = (
    "the medical disclaimer is missing from the output; every email part must carry it: "
    "keep {{ disclaimer_html }} in the MJML and {{ disclaimer_text }} in the text template"
)


def missing_disclaimer(html: str, text: str, disclaimer: Disclaimer) -> list[str]:
    """The digest templates whose rendered output lacks the disclaimer (white space aside)."""

    def has(output: str, part: str) -> bool:
        return " ".join(part.split()) in " ".join(output.split())

    return [
        f"templates/{name}"
        for name, output, part in (
            (HTML_TEMPLATE, html, disclaimer.html),
            (TEXT_TEMPLATE, text, disclaimer.text),
        )
        if not has(output, part)
    ]


def compile_mjml(source: str, template: str = HTML_TEMPLATE) -> str:
    """MJML to HTML: no comments, and no web-font imports (a font request is a tracker)."""
    try:
        return mjml2html(source, disable_comments=True, fonts={})
    except Exception as exc:  # mrml raises a bare error type; name the file
        raise TemplateError(f"templates/{template}: MJML does not compile: {exc}") from exc


def template_line(exc: BaseException, name: str) -> int | None:
    """The line of template ``name`` where ``exc`` was raised, from Jinja's rewritten traceback."""
    line = None
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename.endswith(name):
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


class TemplateRenderError(TemplateError):
    """A template failed to render; carries the file, line and what went wrong."""

    def __init__(self, file: str, line: int | None, detail: str) -> None:
        self.file, self.line, self.detail = file, line, detail
        super().__init__(f"{file}:{line}: {detail}" if line else f"{file}: {detail}")


def _render(env: jinja2.Environment, name: str, context: dict[str, object]) -> str:
    file = f"templates/{name}"
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(file, exc.lineno, exc.message or "syntax error") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateRenderError(file, None, "missing") from exc
    except jinja2.UndefinedError as exc:
        detail = exc.message or "undefined value"
        raise TemplateRenderError(file, template_line(exc, name), detail) from exc


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
