"""Publishing many articles: a full rebuild, a no-op publish, and one edited article.

Generates 10,000 articles (times ``scale``) in a temporary project and publishes them with
``send_email=False`` through the library, as ``pipeline publish --no-email`` would:

* full rebuild: empty ledger, empty caches, empty ``public/``;
* no-op: the same articles again (the best of three runs); the caches skip reading,
  parsing, rendering and page writing;
* no-op without caches (the baseline): the same no-op with the article cache and the page
  stamps dropped first, so every article is parsed, rendered and compared again;
* one edit: one article changed, so one page, the index pages and the feeds are rewritten.

Targets at 10,000 articles: no-op under 1.5 s, full rebuild under 30 s.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.table import Table
from pipeline import execute, load_settings, open_ledger, plan_publish

REPO = Path(__file__).resolve().parent.parent
ARTICLES = 10_000
TOPICS = ("scleroderma", "interstitial-lung-disease", "multiple-sclerosis")
START = datetime(2020, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CONFIG = """\
[site]
title = "Benchmark Therapy News"
base_url = "https://news.example.org/"

[topics]
scleroderma = "Scleroderma"
interstitial-lung-disease = "Interstitial lung disease"
multiple-sclerosis = "Multiple sclerosis"
"""
PARAGRAPH = (
    "The antibody binds a protein found on the surface of mature immune cells and flags those\n"
    "cells for removal. The stem cells that produce new cells do not carry the protein, so\n"
    "they are left alone and can rebuild the immune system afterwards. The hope in autoimmune\n"
    "disease is that the rebuilt system no longer attacks the body's own tissue, and that the\n"
    "benefit lasts for *years* rather than months, as **early reports** suggested.\n"
)


def article_text(number: int) -> str:
    """An article shaped like the sample ones: about 3 KB, five sections, one trial link."""
    published = START + timedelta(hours=5 * number)
    topics = ", ".join(TOPICS[number % 3 : number % 3 + 1 + number % 2])
    nct = f"NCT{number:08d}"
    sections = "".join(f"## Section {n}\n\n{PARAGRAPH}\n" for n in range(1, 6))
    return (
        "---\n"
        f'title: "Therapy {number}: what the trials of drug {number} show"\n'
        f"summary: Drug {number} is studied in {topics}. This profile explains how it works.\n"
        f"published: {published:%Y-%m-%dT%H:%M:%SZ}\n"
        f"topics: [{topics}]\n"
        f"therapy: {{name: Drug {number}, maker: Maker {number % 40}, brands: [Brand{number}]}}\n"
        f"trials: [{nct}]\n"
        "---\n\n"
        f"{sections}The trial [{nct}](https://clinicaltrials.gov/study/{nct}) follows it.\n"
    )


def make_project(root: Path, count: int) -> None:
    (root / "articles").mkdir(parents=True)
    (root / "subscribers").mkdir()
    shutil.copytree(REPO / "templates", root / "templates")
    (root / "pipeline.toml").write_text(CONFIG, encoding="utf-8")
    for number in range(count):
        text = article_text(number)
        (root / "articles" / f"therapy-{number:05d}.md").write_text(text, encoding="utf-8")


def timed_publish(root: Path, now: datetime, before: Callable[[], None] | None = None) -> float:
    """Seconds for one publish (plan and execute), without email."""
    settings = load_settings(root)
    if before is not None:
        before()
    started = time.perf_counter()
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=now, email=False)
        execute(plan, settings, ledger, send_email=False)
    return time.perf_counter() - started


def drop_caches(root: Path) -> None:
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        ledger.store_cached_articles([], keep=[])
        ledger.record_site_outputs([], removed=list(ledger.site_outputs()))


def run(scale: float) -> Table:
    count = max(10, int(ARTICLES * scale))
    table = Table(
        f"publish, {count:,} articles (--no-email)", ["run", "seconds", "ms / article", "target"]
    )
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        root = Path(tmp) / "site"
        make_project(root, count)

        full = timed_publish(root, NOW)
        noop = timed_publish(root, NOW + timedelta(hours=1))
        baseline = timed_publish(root, NOW + timedelta(hours=2), lambda: drop_caches(root))
        # The best of three no-op runs: other processes on the machine only ever add time.
        noop = min(
            noop, *(timed_publish(root, NOW + timedelta(hours=3, minutes=m)) for m in (0, 1))
        )

        edited = root / "articles" / "therapy-00007.md"
        edited.write_text(edited.read_text("utf-8") + "\nOne more line.\n", encoding="utf-8")
        edit = timed_publish(root, NOW + timedelta(hours=4))

    per = 1000 / count
    table.add("full rebuild (cold)", full, full * per, "< 30 s at 10,000")
    table.add("no-op publish", noop, noop * per, "< 1.5 s at 10,000")
    table.add("no-op, caches dropped (baseline)", baseline, baseline * per, "")
    table.add("one article edited", edit, edit * per, "")
    table.notes.append(f"no-op with caches is {baseline / noop:.1f}x faster than without")
    return table
