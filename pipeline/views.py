"""How results look: rich tables for people, plain dicts for ``--json``. Nothing prints here.

Each command's result has one table-maker and one dict-maker beside each other, so the
text and the JSON always say the same thing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table

from pipeline.config import Settings
from pipeline.config_sections import ScheduleSettings
from pipeline.delivery_run import DeliveryReport
from pipeline.errors import Problem
from pipeline.models import Entry
from pipeline.periodic import ScheduledRun
from pipeline.publish import PublishPlan, PublishReport
from pipeline.status import AudienceCount, ProjectStatus, audience_counts
from pipeline.store import TRANSACTIONAL_DIGEST, DeliveryCounts

__all__ = [
    "audiences_table",
    "changes_table",
    "deliveries_table",
    "plan_dict",
    "problem_dict",
    "publish_dict",
    "schedule_dict",
    "schedule_table",
    "status_dict",
]


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "never"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _table(*columns: str, title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


# --- problems ------------------------------------------------------------------------------


def problem_dict(problem: Problem) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "field": problem.field,
        "message": problem.message,
        "text": str(problem),
    }


# --- the plan of a publish ----------------------------------------------------------------


def changes_table(plan: PublishPlan) -> Table:
    """One row per new, updated, withdrawn or scheduled article."""
    table = _table("change", "article", "title", title="Articles")
    changes = plan.changes
    for kind, style, entries in (
        ("new", "green", changes.new),
        ("updated", "cyan", changes.updated),
    ):
        for entry in entries:
            table.add_row(kind, entry.slug, entry.article.title, style=style)
    for entry in changes.renamed:
        table.add_row("renamed", entry.slug, f"{entry.article.title} (same id)", style="cyan")
    for entry in changes.corrected:
        table.add_row(
            "corrected", entry.slug, f"{entry.article.title} (not announced)", style="cyan"
        )
    for slug in changes.withdrawn:
        table.add_row("withdrawn", slug, "", style="red")
    for article in changes.scheduled:
        table.add_row("scheduled", article.slug, f"{article.title} (on {_when(article.published)})")
    if table.row_count == 0:
        table.add_row("none", "", "no new, updated or withdrawn articles", style="dim")
    return table


def _audience_label(audience: AudienceCount, settings: Settings) -> str:
    if not audience.topics:
        return "every topic"
    return ", ".join(settings.topic_label(t) for t in audience.topics)


def audiences_table(plan: PublishPlan, settings: Settings) -> Table:
    """The digest's audiences: the topics they chose, what they get, how many they are."""
    subject = plan.digest.subject if plan.digest else ""
    table = _table(
        "audience", "new", "updated", "recipients", title=f"Digest: {subject}" if subject else ""
    )
    for column in table.columns[1:]:
        column.justify = "right"
    for audience in audience_counts(plan):
        table.add_row(
            _audience_label(audience, settings),
            str(audience.new),
            str(audience.updated),
            str(audience.recipients),
        )
    table.add_section()
    table.add_row("total", "", "", str(plan.recipients), style="bold")
    return table


def _entry_dict(entry: Entry) -> dict[str, Any]:
    return {
        "slug": entry.slug,
        "title": entry.article.title,
        "id": entry.entry_id,
        "url": entry.url,
        "published": _iso(entry.published),
        "updated": _iso(entry.updated),
    }


def plan_dict(plan: PublishPlan) -> dict[str, Any]:
    """The plan as JSON; ``files`` are those it writes (their bytes differ on disk)."""
    changes = plan.changes
    digest = plan.digest
    return {
        "new": [_entry_dict(e) for e in changes.new],
        "updated": [_entry_dict(e) for e in changes.updated],
        "corrected": [_entry_dict(e) for e in changes.corrected],
        "withdrawn": list(changes.withdrawn),
        "scheduled": [
            {"slug": a.slug, "title": a.title, "published": _iso(a.published)}
            for a in changes.scheduled
        ],
        "unchanged": len(changes.unchanged),
        "files": list(plan.to_write),
        "digest": None
        if digest is None
        else {
            "subject": digest.subject,
            "recipients": plan.recipients,
            "audiences": [
                {
                    "topics": list(a.topics),
                    "new": a.new,
                    "updated": a.updated,
                    "recipients": a.recipients,
                }
                for a in audience_counts(plan)
            ],
        },
        "skipped": [problem_dict(p) for p in plan.warnings],
    }


# --- status --------------------------------------------------------------------------------


def _counts_dict(counts: DeliveryCounts) -> dict[str, int]:
    return {
        "pending": counts.pending,
        "deferred": counts.deferred,
        "failed": counts.failed,
        "sent": counts.sent,
    }


def deliveries_table(status: ProjectStatus) -> Table:
    """The outbox and the last publish, as label and value."""
    table = _table("", "", title="Deliveries")
    table.show_header = False
    counts = status.deliveries
    table.add_row("pending", str(counts.pending), style="yellow" if counts.pending else None)
    table.add_row("deferred", str(counts.deferred), style="yellow" if counts.deferred else None)
    table.add_row("failed", str(counts.failed), style="red" if counts.failed else None)
    table.add_row("sent", str(counts.sent))
    digest = f" (digest {status.last_digest})" if status.last_digest else ""
    table.add_row("last publish", _when(status.last_publish) + digest)
    table.add_row("email goes to", status.destination)
    if status.websub_pending:
        count = len(status.websub_pending)
        table.add_row("WebSub pings owed", f"{count} (sent at the next publish)", style="yellow")
    return table


def schedule_table(runs: tuple[ScheduledRun, ...], schedule: ScheduleSettings) -> Table:
    """The next daily, weekly and monthly digests: when (in ``[schedule] timezone``), and to
    how many readers."""
    table = _table("frequency", "next run", "readers", "with news so far", title="Periodic digests")
    for run in runs:
        local = f"{run.due.astimezone(schedule.zone):%Y-%m-%d %H:%M} {schedule.timezone}"
        when = local + (" (due now: run `pipeline digests --due`)" if run.overdue else "")
        table.add_row(
            run.frequency,
            when,
            str(run.readers),
            str(run.with_news),
            style="yellow" if run.overdue else None,
        )
    return table


def schedule_dict(runs: tuple[ScheduledRun, ...]) -> list[dict[str, Any]]:
    return [
        {
            "frequency": r.frequency,
            "due": _iso(r.due),
            "overdue": r.overdue,
            "readers": r.readers,
            "with_news": r.with_news,
        }
        for r in runs
    ]


def digests_table(status: ProjectStatus) -> Table | None:
    """One row per digest that still has messages pending, deferred or failed."""
    open_ones = [
        d for d in status.digests if d.counts.pending or d.counts.deferred or d.counts.failed
    ]
    if not open_ones:
        return None
    table = _table(
        "digest", "created", "pending", "deferred", "failed", "sent", "why", title="Digests"
    )
    for d in open_ones:
        c = d.counts
        why = status.causes.get(d.digest_id, {})
        confirmations = d.digest_id == TRANSACTIONAL_DIGEST  # sign-up confirmations
        table.add_row(
            "confirmations" if confirmations else str(d.digest_id),
            "" if confirmations else _when(d.created_at),
            str(c.pending),
            str(c.deferred),
            str(c.failed),
            str(c.sent),
            "\n".join(f"{n} {cause}" for cause, n in sorted(why.items(), key=lambda i: -i[1])),
        )
    return table


def status_dict(status: ProjectStatus) -> dict[str, Any]:
    return {
        "next_publish": plan_dict(status.plan),
        "deliveries": _counts_dict(status.deliveries),
        "last_publish": None
        if status.last_publish is None
        else {"at": _iso(status.last_publish), "digest": status.last_digest},
        "destination": status.destination,
        "websub_pending": list(status.websub_pending),
        "digests": [
            {
                "digest": d.digest_id,
                "subject": d.subject,
                "created": _iso(d.created_at),
                **_counts_dict(d.counts),
                "causes": status.causes.get(d.digest_id, {}),
            }
            for d in status.digests
        ],
        "schedule": schedule_dict(status.schedule),
    }


# --- publish -------------------------------------------------------------------------------


def delivery_dict(delivery: DeliveryReport | None) -> dict[str, Any] | None:
    if delivery is None:
        return None
    return {
        "sent": delivery.sent,
        "deferred": delivery.deferred,
        "failed": delivery.failed,
        "suppressed": delivery.suppressed,
        "held": delivery.held,
        "skipped": delivery.skipped,
        "pending": delivery.pending,
        "released": delivery.released,
        "waiting": delivery.waiting,  # deferred, their next try not come yet
        "next_try": _iso(delivery.next_try.astimezone(UTC) if delivery.next_try else None),
        "interrupted": delivery.interrupted,
        "stopped": delivery.stopped,
        "rate": round(delivery.rate, 1),
        "seconds": round(delivery.seconds, 3),
        "complete": delivery.complete,
    }


def publish_dict(plan: PublishPlan, report: PublishReport | None, seconds: float) -> dict[str, Any]:
    """A publish (``report`` None for a dry run): the plan, then what was done."""
    return {
        "dry_run": report is None,
        "plan": plan_dict(plan),
        "written": list(report.written) if report else [],
        "removed": list(report.removed) if report else [],
        "digest": report.digest_id if report else None,
        "delivery": delivery_dict(report.delivery) if report else None,
        "queued_for_workers": report.queued if report else 0,
        "websub": {
            "notified": list(report.websub.notified),
            "pending": sorted(report.websub.pending),
        }
        if report and report.websub
        else None,
        "seconds": round(seconds, 3),
    }
