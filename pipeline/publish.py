"""One publish, end to end: ``plan_publish`` decides everything, ``execute`` does it.

The plan is pure (it reads files and the ledger, writes nothing), which is what
``--dry-run`` and ``pipeline status`` show. ``execute`` writes the public files first,
then records article versions, the digest and its outbox in one transaction, then drains
the outbox. A crash before the record changes nothing the next run cannot redo; a crash
after it leaves pending rows that the next run sends.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.atomic import write_all_if_changed, write_if_changed
from pipeline.cache import CachedLoad, load_articles_cached
from pipeline.config import Settings, secret_key
from pipeline.delivery import Transport
from pipeline.delivery_run import DeliveryReport
from pipeline.digest import DigestPlan, audience_key, plan_digest
from pipeline.disclaimer import load_disclaimer
from pipeline.drain import Progress
from pipeline.errors import ContentError, DeliveryError, Problem
from pipeline.feed_history import FeedDate
from pipeline.feeds import render_feeds
from pipeline.media import media_outputs
from pipeline.messages import check_email_settings
from pipeline.models import Changes
from pipeline.periodic import entry_card
from pipeline.site import SitePlan, digest_pages, output_stamps, plan_site, remove_stale
from pipeline.store import DigestCopy, KnownArticle, Ledger, PublishRecord, open_ledger
from pipeline.subscriber_plans import plan_lists
from pipeline.subscribers import ListFiles, SubscriberStore
from pipeline.vetting import locate, vet_articles
from pipeline.websub import WebSubReport, changed_feed_urls, notify_hub, owed_pings
from pipeline.workers import deliver_outbox

__all__ = [
    "PREVIEW_DIR",
    "PublishPlan",
    "PublishReport",
    "execute",
    "open_ledger",
    "plan_publish",
    "remove_public_preview",
]


@dataclass(frozen=True, slots=True)
class PublishPlan:
    now: datetime
    changes: Changes
    files: dict[str, bytes]  # path under public/ -> content
    digest: DigestPlan | None
    warnings: tuple[Problem, ...] = ()  # skipped subscriber rows and the like
    subscriber_lists: ListFiles | None = None  # merged into the ledger by execute()
    site: SitePlan | None = None  # article pages to track, stale pages to remove
    cache: CachedLoad | None = None  # articles parsed this time, to cache
    email: bool = True  # False: planned for a publish without email, so no digest planned
    feed_dates: tuple[FeedDate, ...] = ()  # feed scopes whose hash or date moved
    to_write: tuple[str, ...] = ()  # the files whose bytes differ on disk: what execute writes
    # List rows whose name or topics differ from the ledger's (kept): "file:line: addr: …"
    list_differences: tuple[str, ...] = ()

    @property
    def recipients(self) -> int:
        return self.digest.recipients if self.digest else 0


def _same(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


@dataclass(slots=True)
class PublishReport:
    plan: PublishPlan
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # stale pages (withdrawn, renamed)
    digest_id: int | None = None
    delivery: DeliveryReport | None = None  # None: no email, or left to the workers
    websub: WebSubReport | None = None  # None: no hub configured, or nothing to ping
    queued: int = 0  # messages left in the outbox for `pipeline worker` (deliver=False)


# Previews live in state/preview/; earlier versions wrote them to public/preview/.
PREVIEW_DIR = "preview"


def remove_public_preview(settings: Settings) -> bool:
    """Delete ``public/preview/`` if an earlier version left one there: its copies carry a
    subscriber's working links and must not be served or deployed. True if it existed."""
    legacy = settings.paths.public / PREVIEW_DIR
    if not legacy.is_dir():
        return False
    shutil.rmtree(legacy)
    return True


def plan_publish(
    settings: Settings, ledger: Ledger, *, now: datetime | None = None, email: bool = True
) -> PublishPlan:
    """Load, validate, detect and render; raise ``ContentError`` listing every problem.

    ``email=False`` plans a publish without email (``--no-email``): the digest is neither
    rendered nor checked, and ``execute`` must then be called with ``send_email=False``.
    """
    now = now or datetime.now(UTC)
    paths = settings.paths
    topics = frozenset(settings.topics)
    cache = load_articles_cached(
        paths.articles,
        paths.root,
        ledger.cached_articles(),
        known_topics=topics,
        base_url=settings.base_url,
    )
    loaded = cache.result
    disclaimer = load_disclaimer(paths.templates, settings.base_url)
    changes, problems = vet_articles(
        loaded.articles,
        ledger.known_articles(),
        retired=ledger.retired_ids(),
        now=now,
        base_url=settings.base_url,
        root=paths.root,
    )
    if changes is None or loaded.problems:
        # All or nothing: a half publish would withdraw the broken article from every feed.
        raise ContentError(
            sorted(
                locate([*loaded.problems, *problems], paths.root),
                key=lambda p: (p.file, p.line or 0),
            )
        )
    feeds = render_feeds(
        changes.live,
        settings,
        disclaimer,
        previous=ledger.feed_dates(),
        now=now,
        present=lambda path: (paths.public / path).is_file(),
    )
    files = feeds.files
    files.update(media_outputs(changes.live, paths.articles))
    site = plan_site(
        changes.live,
        settings,
        disclaimer,
        stamps=ledger.site_outputs(),
        digests=ledger.digest_copies(),
        feed_paths=[*files, *feeds.kept],
    )
    files.update(site.files)

    # Recipients are the ledger's active subscribers once the lists are merged in (execute
    # merges them; the plan only counts them per audience, so --dry-run writes nothing and
    # no plan holds every subscriber: the lists are streamed, see ListFiles).
    lists = ListFiles(paths.subscribers, paths.root, tuple(sorted(topics)))
    subscriber_list = lists.check()
    if subscriber_list.unusable and email:
        # Mailing the rows that happened to parse would silently drop everyone else.
        unusable = subscriber_list.unusable
        raise ContentError(
            [*subscriber_list.problems, *(p for p in unusable if p not in subscriber_list.problems)]
        )
    warnings = subscriber_list.problems + tuple(
        p for p in subscriber_list.unusable if p not in subscriber_list.problems
    )
    # The key is needed only to match forgotten addresses; a dry run must not create one.
    secret = secret_key(paths) if ledger.erased_hashes() else ""
    merge = plan_lists(ledger, lists.entries(), secret)
    # The digest of a publish goes to the readers who chose "immediately"; the others get
    # the daily, weekly or monthly digests (pipeline digests --due) from the version log.
    digest = (
        plan_digest(changes, merge.topic_counts, settings, disclaimer, merge.standby_counts)
        if email
        else None
    )
    if digest is not None:
        check_email_settings(settings)  # a DKIM or sender mistake stops the run before recording
    return PublishPlan(
        now,
        changes,
        files,
        digest,
        warnings,
        subscriber_lists=lists,
        site=site,
        cache=cache,
        email=email,
        feed_dates=feeds.dates,
        list_differences=tuple(merge.differences),
        to_write=tuple(
            relative
            for relative, data in sorted(files.items())
            if not _same(paths.public / relative, data)
        ),
    )


def execute(
    plan: PublishPlan,
    settings: Settings,
    ledger: Ledger,
    *,
    send_email: bool = True,
    deliver: bool = True,
    make_transport: Callable[[], Transport] | None = None,
    connections: int | None = None,
    on_progress: Progress | None = None,
) -> PublishReport:
    """Write the files, record the run, deliver the outbox.

    ``deliver=False`` records the digest and its outbox and sends nothing: ``pipeline
    worker`` processes deliver it (``--no-deliver``, ``[send] deliver = "workers"``).
    """
    if send_email and not plan.email:
        # Recording the changes without their digest would drop them for every subscriber.
        raise ValueError("this plan was made with email=False; execute it with send_email=False")
    report = PublishReport(plan)
    if remove_public_preview(settings):
        report.removed.append(f"{PREVIEW_DIR}/")
    if plan.subscriber_lists is not None:
        store = SubscriberStore(ledger, secret_key(settings), settings.topics)
        store.merge(plan.subscriber_lists.entries(), plan.now)
    public = settings.paths.public
    ordered = sorted(plan.files.items())
    written = set(write_all_if_changed((public / relative, data) for relative, data in ordered))
    report.written += [relative for relative, _ in ordered if public / relative in written]
    if plan.site is not None:
        report.removed += remove_stale(public, plan.site.stale)
        ledger.record_site_outputs(
            output_stamps(public, plan.site.keys, plan.files), plan.site.forget
        )
    if plan.feed_dates:
        ledger.record_feed_dates(plan.feed_dates)
    if plan.cache is not None:
        ledger.store_cached_articles(
            plan.cache.fresh, plan.cache.slugs, restamped=plan.cache.restamped
        )

    changes = plan.changes
    if changes.any:
        digest = plan.digest if send_email else None
        record = PublishRecord(
            articles=tuple(
                KnownArticle(
                    e.slug, e.entry_id, e.article.content_hash, e.published, e.updated, True
                )
                for e in (*changes.announced, *changes.renamed, *changes.corrected)
            ),
            withdrawn=changes.withdrawn,
            digest_subject=digest.subject if digest else None,
            web_html=digest.web_html if digest else "",
            audiences=tuple(a.record() for a in digest.audiences) if digest else (),
            recipients=_recipients(ledger, digest) if digest else (),
            new_count=len(changes.new),
            versions=(
                # --no-email: the changes count as published, and periodic digests keep
                # quiet about them too
                *(entry_card(e, "published" if digest else "quiet") for e in changes.announced),
                *(entry_card(e, "quiet") for e in (*changes.renamed, *changes.corrected)),
            ),
        )
        report.digest_id = ledger.record_publish(record, plan.now)
        if report.digest_id is not None and digest is not None:
            copy = DigestCopy(
                report.digest_id,
                plan.now,
                digest.subject,
                digest.web_html,
                tuple((a.audience.key, a.web_html) for a in digest.audiences),
            )
            for relative, data in digest_pages(copy, settings).items():
                if write_if_changed(public / relative, data):
                    report.written.append(relative)

    hub = settings.feeds.websub_hub
    owed, dropped = owed_pings(ledger.websub_pending(), hub, settings.base_url)
    if dropped:  # the hub or base_url was changed: these are owed to nobody now
        ledger.record_websub(dropped, {}, plan.now)
    if hub:
        # After the files and the record, before the (possibly long) delivery.
        changed = changed_feed_urls(report.written, settings.base_url)
        topics = sorted({*owed, *changed})
        if topics:
            report.websub = notify_hub(hub, topics)
            ledger.record_websub(report.websub.notified, report.websub.pending, plan.now)

    if send_email and not deliver:
        counts = ledger.delivery_counts()
        report.queued = counts.pending + counts.deferred
    elif send_email:
        try:
            report.delivery = deliver_outbox(
                settings,
                ledger,
                make_transport=make_transport,
                connections=connections,
                on_progress=on_progress,
            )
        except DeliveryError as exc:
            # The feeds, site and digest are done and recorded: a mail server that is down
            # leaves the messages pending for `pipeline deliver`, a partial result, not an
            # error that would hide what was published.
            queued = ledger.delivery_counts()
            report.delivery = DeliveryReport(
                pending=queued.pending, deferred=queued.deferred, stopped=str(exc)
            )
    return report


def _recipients(ledger: Ledger, digest: DigestPlan) -> Iterator[tuple[str, str, str]]:
    """``(audience key, email, name)`` of every active subscriber an audience is planned for.

    Read from the ledger while the outbox is recorded, a chunk at a time, after the lists
    are merged: whoever unsubscribed since the plan is left out, and no list of every
    subscriber is ever held. A subscriber whose topics have no planned audience (none of
    them changed, or they changed them since the plan) gets nothing this time. Readers on
    a periodic frequency are yielded too (their audiences are rendered as standby); the
    ledger leaves out whoever is on one when it records (``DigestStore.record_publish``).
    """
    planned = {compiled.audience.key for compiled in digest.audiences}
    for email, name, topics in ledger.active_subscribers():
        key = audience_key(topics)
        if key in planned:
            yield key, email, name
