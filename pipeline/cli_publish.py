"""The commands that publish and send: ``pipeline status``, ``publish`` and ``deliver``.

Also the shared summary of a delivery (:func:`render_delivery`), which ``pipeline digests``
and ``pipeline worker`` print too. Registered on the ``pipeline`` group when
:mod:`pipeline.cli` imports this module.
"""

from __future__ import annotations

import time
from datetime import UTC

import click

from pipeline import views
from pipeline.cli_app import App, ExitCode, command, stop
from pipeline.console import Verbosity
from pipeline.delivery_run import DeliveryReport
from pipeline.errors import DeliveryError
from pipeline.publish import PublishPlan, PublishReport, execute, open_ledger, plan_publish
from pipeline.status import ProjectStatus, destination, project_status, read_ledger
from pipeline.store import DeliveryCounts
from pipeline.workers import deliver_outbox

__all__ = ["deliver_command", "publish", "render_delivery", "status"]


# --- status --------------------------------------------------------------------------------


@command(json_output=True)
def status(app: App) -> None:
    """Show what the next publish would do; change nothing.

    Lists the new, updated, withdrawn and scheduled articles, the digest's audiences and
    their recipients, the messages still pending, deferred or failed, the last publish, and
    the next daily, weekly and monthly digests with how many readers each will reach.
    """
    with app.out.step("Reading the articles and the ledger…"):
        result = project_status(app.settings)
    _render_status(app, result)


def _render_status(app: App, result: ProjectStatus) -> None:
    app.out.data(views.status_dict(result))
    _render_plan(app, result.plan)
    app.out.show(views.deliveries_table(result))
    app.out.show(views.schedule_table(result.schedule, app.settings.schedule))
    per_digest = views.digests_table(result)
    if per_digest is not None:
        app.out.show(per_digest)


def _render_plan(app: App, plan: PublishPlan) -> None:
    """The plan of a publish, shared by status and publish."""
    out = app.out
    out.show(views.changes_table(plan))
    out.say(f"{len(plan.changes.unchanged)} article(s) unchanged.", level=Verbosity.VERBOSE)
    if plan.digest is not None:
        out.show(views.audiences_table(plan, app.settings))
    elif not plan.email and plan.changes.announced:
        out.say("No digest: --no-email; the changes count as published without one.")
    else:
        out.say("No digest: nothing new or updated to announce.")
    for warning in plan.warnings:
        out.warn(f"skipped {warning}")
    if plan.list_differences:
        out.say(
            f"{len(plan.list_differences)} subscriber list value(s) differ from the ledger and "
            "are ignored (a subscriber's own choices win); `pipeline subscribers set` changes them."
        )
        for note in plan.list_differences:
            out.say(f"  {note}", level=Verbosity.VERBOSE)


# --- publish -------------------------------------------------------------------------------


@command(json_output=True)
@click.option("--dry-run", is_flag=True, help="Show the plan; write, record and send nothing.")
@click.option(
    "--no-email",
    is_flag=True,
    help="Update the feeds and site only; the changes count as published but nobody is emailed.",
)
@click.option(
    "--deliver/--no-deliver",
    default=None,
    help="Send the digest now, or only record it for `pipeline worker` to send "
    '(default: [send] deliver, "publish").',
)
@click.option(
    "-y", "--yes", is_flag=True, help="Do not ask before emailing more than [send] confirm_above."
)
def publish(app: App, dry_run: bool, no_email: bool, deliver: bool | None, yes: bool) -> None:
    """Publish changed articles to the feeds and email the digest.

    Shows the plan first. On a terminal it asks before emailing more than [send]
    confirm_above subscribers; it never asks when its input is not a terminal.
    """
    settings = app.settings
    if deliver is None:
        deliver = settings.send.deliver == "publish"
    started = time.perf_counter()
    with read_ledger(settings) if dry_run else open_ledger(settings) as ledger:
        with app.out.step("Reading and rendering the articles…"):
            plan = plan_publish(settings, ledger, email=not no_email)
        queued = ledger.delivery_counts()
        _render_plan(app, plan)
        emails = 0 if no_email else plan.recipients + queued.pending + queued.deferred
        _render_queue(app, queued, no_email or not deliver)
        if dry_run:
            _render_publish(app, plan, None, time.perf_counter() - started)
            return
        if deliver and not _confirmed(app, emails, yes):
            app.out.say("Nothing published.", level=Verbosity.QUIET)
            stop(ExitCode.PROBLEMS)
        with app.out.delivery_progress() as progress:
            report = execute(
                plan,
                settings,
                ledger,
                send_email=not no_email,
                deliver=deliver,
                on_progress=progress,
            )
    _render_publish(app, plan, report, time.perf_counter() - started)
    if report.delivery is not None and not report.delivery.complete:
        stop(ExitCode.PARTIAL)


def _confirmed(app: App, emails: int, yes: bool) -> bool:
    """Ask before emailing many people, but only a person at a terminal, and only once."""
    if yes or emails <= app.settings.send.confirm_above or not app.out.interactive:
        return True
    return app.out.confirm(f"Email {emails} subscribers now?")


def _render_queue(app: App, queued: DeliveryCounts, no_email: bool) -> None:
    waiting = queued.pending + queued.deferred
    if waiting and not no_email:
        app.out.say(f"Also sends {waiting} message(s) left pending by an earlier publish.")


def _render_publish(
    app: App, plan: PublishPlan, report: PublishReport | None, seconds: float
) -> None:
    out = app.out
    out.data(views.publish_dict(plan, report, seconds))
    if report is None:
        out.say("Dry run: nothing written, recorded or sent.", style="bold")
        return
    for path in report.written:
        out.say(f"wrote public/{path}", level=Verbosity.VERBOSE)
    for path in report.removed:
        out.say(f"removed public/{path}", level=Verbosity.VERBOSE)
    changes = plan.changes
    if changes.any:
        out.say(
            f"Published {len(changes.new)} new, {len(changes.updated)} updated and "
            f"{len(changes.withdrawn)} withdrawn article(s).",
            style="bold",
        )
    else:
        out.say("Nothing new, updated or withdrawn.")
    written = len(report.written)
    out.say(f"Wrote {written} file(s) under public/." if written else "Files in public/ unchanged.")
    if report.websub is not None:
        if report.websub.notified:
            out.say(f"Told the WebSub hub about {len(report.websub.notified)} changed feed(s).")
        if report.websub.pending:
            error = next(iter(report.websub.pending.values()))
            out.warn(
                f"WebSub hub: {error}; {len(report.websub.pending)} feed(s) will be "
                "announced at the next publish"
            )
    if report.digest_id is not None:
        out.say(f"Digest {report.digest_id} recorded.")
    if report.delivery is None and plan.email:
        out.say(
            f"{report.queued} message(s) in the outbox for the workers (`pipeline worker`)."
            if report.queued
            else "No email to send."
        )
    elif report.delivery is None:
        out.say("No email sent (--no-email).")
    else:
        render_delivery(app, report.delivery)
    out.say(f"Done in {seconds:.2f} s.", level=Verbosity.VERBOSE)


def render_delivery(app: App, delivery: DeliveryReport) -> None:
    """The summary of a delivery, shared by publish, deliver, digests --due and worker."""
    out = app.out
    if delivery.stopped and delivery.done == 0:
        waiting = delivery.pending + delivery.deferred
        out.warn(f"no email sent: {delivery.stopped}")
        out.warn(
            f"{waiting} message(s) wait in the outbox; `pipeline deliver` sends them "
            "once the server answers"
        )
        return
    if delivery.total == 0 and not delivery.pending:
        out.say("No email to send." if not delivery.waiting else "No email due now.")
        _render_waiting(app, delivery)
        return
    out.say(
        f"Email to {destination(app.settings)}: {delivery.sent} sent, "
        f"{delivery.deferred} deferred, {delivery.failed} failed"
        + (f" ({delivery.suppressed} address(es) suppressed)" if delivery.suppressed else "")
        + (f", {delivery.rate:,.0f} a second" if delivery.sent > 1 else "")
        + "."
    )
    if delivery.skipped:
        out.say(f"{delivery.skipped} not sent: the address was suppressed after the digest.")
    if delivery.interrupted:
        # Only the rows this run had claimed: others' claims are theirs to report.
        others = delivery.pending - delivery.released
        out.warn(
            f"interrupted: {delivery.released} message(s) it had claimed left pending; "
            "`pipeline deliver` sends them"
            + (f" ({others} more in the outbox were not its own)" if others > 0 else "")
        )
    elif delivery.stopped:
        out.warn(f"stopped early: {delivery.stopped}")
    elif delivery.pending:
        out.warn(f"{delivery.pending} message(s) still pending (another delivery holds them)")
    if delivery.deferred:
        out.warn(
            f"{delivery.deferred} message(s) deferred; `pipeline deliver` or `publish` retries them"
        )
    if delivery.failed:
        out.warn(f"{delivery.failed} message(s) failed for good; see `pipeline status`")
    if not delivery.deferred:
        _render_waiting(app, delivery)


def _render_waiting(app: App, delivery: DeliveryReport) -> None:
    """Deferred messages not due yet: how many, and when the first may go."""
    if delivery.waiting and delivery.next_try is not None:
        when = delivery.next_try.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        app.out.say(
            f"{delivery.waiting} deferred message(s) wait for their next try, the first at "
            f"{when}; `pipeline deliver` sends them from then on."
        )


# --- deliver -------------------------------------------------------------------------------


@command("deliver", json_output=True)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="First make failed messages pending again (suppressed addresses stay failed, "
    "but those an older run suppressed on a relay's refusal are reactivated).",
)
def deliver_command(app: App, retry_failed: bool) -> None:
    """Send what the outbox holds: pending messages, and deferred ones whose time has come.

    Exits 3 when some messages were deferred, failed or left pending.
    """
    settings = app.settings
    with open_ledger(settings) as ledger, app.out.delivery_progress() as progress:
        try:
            report = deliver_outbox(
                settings, ledger, retry_failed=retry_failed, on_progress=progress
            )
        except DeliveryError:
            queued = ledger.delivery_counts()
            app.out.warn(f"{queued.pending + queued.deferred} message(s) stay in the outbox")
            raise  # nothing could be sent: exit 1 with the reason
    app.out.data({"retried": report.retried, "delivery": views.delivery_dict(report)})
    if retry_failed:
        app.out.say(f"{report.retried} failed message(s) made pending again.")
        if report.reactivated:
            app.out.say(f"{report.reactivated} address(es) suppressed by an older run reactivated.")
    render_delivery(app, report)
    if not report.complete:
        stop(ExitCode.PARTIAL)
