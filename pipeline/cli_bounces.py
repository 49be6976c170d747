"""``pipeline subscribers bounces`` and ``pipeline subscribers reactivate``.

Registered under the ``subscribers`` group of ``pipeline.cli_subscribers`` when
``pipeline.cli`` imports this module; each command is a few lines over
``pipeline.bounce_scores``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from pipeline.addresses import email_key
from pipeline.bounce_scores import reactivate
from pipeline.cli_app import App, command
from pipeline.cli_subscribers import subscribers
from pipeline.cli_types import ADDRESS, MOMENT
from pipeline.status import read_ledger
from pipeline.store import open_ledger
from pipeline.store.bounces import BounceEvent

__all__ = ["subscribers_bounces", "subscribers_reactivate"]


@command("bounces", group=subscribers, json_output=True)
@click.argument("address", required=False, type=ADDRESS)
def subscribers_bounces(app: App, address: str | None) -> None:
    """List bounce scores and bounce suppressions; with ADDRESS, that address's bounces.

    Columns (tab-separated): address, status, score, last bounce, reason; for one address:
    time, kind, points, digest, cause, the server's reply.
    """
    with read_ledger(app.settings) as ledger:
        if address is not None:
            _render_events(app, ledger.bounce_events(email_key(address)))
            return
        stale = timedelta(days=app.settings.bounces.stale_after_days)
        scored = ledger.bounce_listing(fresh_since=datetime.now(UTC) - stale)
    app.out.data(
        {
            "addresses": [
                {
                    "email": s.email,
                    "status": s.status,
                    "score": s.score,
                    "last_bounce": None
                    if s.last_bounce_at is None
                    else s.last_bounce_at.isoformat(),
                    "events": s.events,
                    "reason": s.reason,
                }
                for s in scored
            ],
            "threshold": app.settings.bounces.threshold,
        }
    )
    if not app.out.as_json:
        for s in scored:
            when = "-" if s.last_bounce_at is None else s.last_bounce_at.strftime("%Y-%m-%d %H:%M")
            # tab-separated for scripts, as `subscribers list`
            click.echo(f"{s.email}\t{s.status}\t{s.score:g}\t{when}\t{s.reason}")
    app.out.say(
        f"{len(scored)} address(es); suppression at score {app.settings.bounces.threshold:g}",
        style="dim",
    )


def _render_events(app: App, events: list[BounceEvent]) -> None:
    app.out.data(
        {
            "events": [
                {
                    "at": e.created_at.isoformat(),
                    "kind": e.kind,
                    "points": e.points,
                    "digest": e.digest_id,
                    "cause": e.cause,
                    "reply": e.reply,
                    "source": e.source,
                }
                for e in events
            ]
        }
    )
    if not app.out.as_json:
        for e in events:
            digest = "-" if e.digest_id is None else str(e.digest_id)
            reply = " ".join(e.reply.split())  # one line, however many the server sent
            click.echo(
                f"{e.created_at:%Y-%m-%d %H:%M}\t{e.kind}\t{e.points:g}\t{digest}\t"
                f"{e.cause}\t{reply}"
            )
    app.out.say(f"{len(events)} bounce(s)", style="dim")


@command("reactivate", group=subscribers, json_output=True)
@click.argument("addresses", nargs=-1, metavar="[ADDR]...", type=ADDRESS)
@click.option(
    "--cause", metavar="TEXT", help="Every address bounced with TEXT in its reason (any case)."
)
@click.option(
    "--since",
    metavar="DATE",
    type=MOMENT,
    help="Every address suppressed by bounces on or after DATE (YYYY-MM-DD, or an ISO time).",
)
def subscribers_reactivate(
    app: App, addresses: tuple[str, ...], cause: str | None, since: datetime | None
) -> None:
    """Bring back addresses suppressed by bounces (never unsubscribed or complained ones)."""
    if not addresses and cause is None and since is None:
        raise click.UsageError(
            "name the addresses to reactivate, or choose them with --cause or --since"
        )
    with open_ledger(app.settings) as ledger:
        result = reactivate(ledger, addresses, cause=cause, since=since, now=datetime.now(UTC))
    app.out.data({"reactivated": list(result.reactivated), "refused": dict(result.refused)})
    for email in result.reactivated:
        app.out.say(f"{email} is active again")
    for address, why in result.refused:
        app.out.warn(f"{address}: {why}")
    app.out.say(
        f"{len(result.reactivated)} address(es) reactivated"
        + (
            "; `pipeline deliver --retry-failed` sends what they missed"
            if result.reactivated
            else ""
        )
    )
