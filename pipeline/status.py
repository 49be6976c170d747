"""What the next publish would do, and how earlier deliveries stand: ``pipeline status``.

Reading the status never writes: the ledger is opened read-only (an empty one in memory
when none exists yet), so looking at a fresh project does not create ``state/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.config import Settings
from pipeline.periodic import ScheduledRun, schedule
from pipeline.publish import PublishPlan, plan_publish
from pipeline.store import DeliveryCounts, DigestDelivery, Ledger, open_ledger
from pipeline.websub import owed_pings

__all__ = ["AudienceCount", "ProjectStatus", "audience_counts", "project_status", "read_ledger"]


@dataclass(frozen=True, slots=True)
class AudienceCount:
    """One audience of the next digest: the topics chosen, what it announces, to how many."""

    key: str
    topics: tuple[str, ...]  # slugs; empty means every topic
    new: int
    updated: int
    recipients: int


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    plan: PublishPlan
    deliveries: DeliveryCounts
    last_publish: datetime | None
    last_digest: int | None
    destination: str  # where email goes: "SMTP host:port" or the local Maildir
    digests: tuple[DigestDelivery, ...] = ()  # per digest, oldest first
    causes: dict[int, dict[str, int]] = field(default_factory=dict)  # digest -> cause -> rows
    schedule: tuple[ScheduledRun, ...] = ()  # the next daily, weekly and monthly digests
    websub_pending: tuple[str, ...] = ()  # feed URLs whose hub ping the next publish resends


def read_ledger(settings: Settings) -> Ledger:
    """The project's ledger opened read-only; creates nothing on disk."""
    return open_ledger(settings, read_only=True)


def audience_counts(plan: PublishPlan) -> tuple[AudienceCount, ...]:
    """The next digest's audiences with their recipient counts, largest first."""
    if plan.digest is None:
        return ()
    members = plan.digest.members
    counts = [
        AudienceCount(
            key=compiled.audience.key,
            topics=tuple(sorted(compiled.audience.topics)),
            new=len(compiled.audience.new),
            updated=len(compiled.audience.updated),
            recipients=members.get(compiled.audience.key, 0),
        )
        for compiled in plan.digest.audiences
        if members.get(compiled.audience.key)  # not those rendered for periodic readers alone
    ]
    return tuple(sorted(counts, key=lambda a: (-a.recipients, a.key)))


def destination(settings: Settings) -> str:
    """Where delivered email goes, in words."""
    target = settings.smtp_target()
    if target is None:
        return f"the local Maildir {settings.paths.maildir.relative_to(settings.paths.root)}/"
    return f"SMTP {target}"


def project_status(settings: Settings, *, now: datetime | None = None) -> ProjectStatus:
    """Plan the next publish against the ledger and gather the outbox counts; change nothing.

    Raises ``ContentError`` (every problem listed) when an article is invalid, as publish would.
    """
    now = now or datetime.now(UTC)
    with read_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger, now=now)
        upcoming = schedule(settings, ledger, now)
        deliveries = ledger.delivery_counts()
        digests = tuple(ledger.digest_deliveries())
        causes = ledger.cause_counts()
        last = ledger.last_run()
        websub_pending = tuple(
            owed_pings(ledger.websub_pending(), settings.feeds.websub_hub, settings.base_url)[0]
        )
    return ProjectStatus(
        plan=plan,
        deliveries=deliveries,
        last_publish=last[0] if last else None,
        last_digest=last[1] if last else None,
        destination=destination(settings),
        digests=digests,
        causes=causes,
        schedule=upcoming,
        websub_pending=websub_pending,
    )
