"""Planning one audience's digest: laying it out against the clipping budget.

Baseline (same run): the one Jinja render + MJML compile of every article as a full card,
which is what a digest cost before the budget. Ours: ``render_audience``, which compiles
once when everything fits and otherwise searches for the layout (about 2·log2(n) compiles),
then compiles the web edition. Both are per audience, not per message: messages only fill
slots (see ``python -m bench render``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from bench.table import Table
from pipeline import load_settings
from pipeline.digest import EVERY_TOPIC, SLOTS, SlotTemplate, render_audience
from pipeline.digest_context import digest_context
from pipeline.digest_templates import compile_mjml, render_sources, template_environment
from pipeline.disclaimer import load_disclaimer
from pipeline.models import Article, Audience, Entry, Therapy
from tests.conftest import REPO

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _entries(count: int) -> tuple[Entry, ...]:
    entries = []
    for n in range(count):
        article = Article(
            slug=f"therapy-{n}",
            source=f"articles/therapy-{n}.md",
            title=f"Therapy number {n}: a descriptive title about an antibody studied in scleroderma",
            summary="Two plain sentences on what the therapy is, who makes it and how it is "
            "given. A second sentence on what its pivotal trial found, for patients.",
            published=NOW - timedelta(days=n),
            updated=None,
            topics=("scleroderma",),
            therapy=Therapy("Examplimab", "Example Pharmaceuticals", ("Examplo",)),
            trials=(),
            draft=False,
            explicit_id=None,
            body_markdown="Text.\n",
            content_hash=str(n),
        )
        url = f"http://localhost:8000/articles/therapy-{n}/"
        entries.append(Entry(article, url, url, article.published, article.published))
    return tuple(entries)


def _cpu_ms(work: object, repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        work()  # type: ignore[operator]
    return (time.process_time() - started) / repeat * 1e3


def run(scale: float) -> Table:
    settings = load_settings(REPO)
    disclaimer = load_disclaimer(settings.paths.templates, settings.base_url)
    env = template_environment(str(settings.paths.templates))
    repeat = max(2, int(10 * scale))
    table = Table(
        "Plan one audience's digest (CPU ms, mean of "
        f"{repeat}); baseline: one compile, every article a full card",
        ["articles", "baseline ms", "ours ms", "ours / baseline", "full cards kept"],
    )
    slot = {name: SlotTemplate.marker("bench", name) for name in SLOTS}
    for count in (5, 30, 60, 120):
        audience = Audience(EVERY_TOPIC, frozenset(), _entries(count), ())

        def baseline(audience: Audience = audience) -> str:
            context = digest_context(audience, settings, disclaimer, slot)
            return compile_mjml(render_sources(env, context)[0])

        def ours(audience: Audience = audience) -> object:
            return render_audience(audience, settings, disclaimer, env, "bench")

        base_ms, ours_ms = _cpu_ms(baseline, repeat), _cpu_ms(ours, repeat)
        full = render_audience(audience, settings, disclaimer, env, "bench").layout.full
        table.add(str(count), base_ms, ours_ms, f"{ours_ms / base_ms:.1f}x", str(full))
    return table
