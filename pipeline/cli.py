"""The ``pipeline`` command: parses options, calls the library, prints what happened.

Exit codes: 0 done; 1 problems found (invalid input, configuration or template);
2 usage error; 3 delivered only in part (some messages deferred or failed).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from pipeline.articles import load_articles
from pipeline.config import Settings, load_settings
from pipeline.delivery import DeliveryReport
from pipeline.drain import Progress
from pipeline.errors import ContentError, PipelineError
from pipeline.publish import PublishPlan, execute, open_ledger, plan_publish
from pipeline.subscribers import load_subscribers
from pipeline.workers import deliver_outbox

EXIT_PROBLEMS = 1
EXIT_PARTIAL = 3


class Context:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.root)
        return self._settings


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Project folder holding pipeline.toml, articles/ and subscribers/.",
)
@click.pass_context
def cli(ctx: click.Context, root: Path) -> None:
    """Publish therapy articles as feeds and an email digest."""
    ctx.obj = Context(root)


def _print_plan(plan: PublishPlan) -> None:
    changes = plan.changes
    for label, entries in (("new", changes.new), ("updated", changes.updated)):
        for entry in entries:
            click.echo(f"  {label:<9} {entry.slug}  ({entry.article.title})")
    for slug in changes.withdrawn:
        click.echo(f"  {'withdrawn':<9} {slug}")
    for article in changes.scheduled:
        click.echo(
            f"  {'scheduled':<9} {article.slug}  (on {article.published:%Y-%m-%d %H:%M} UTC)"
        )
    if not changes.any:
        click.echo("  no new, updated or withdrawn articles")
    if plan.digest:
        click.echo(
            f"  digest    {plan.digest.subject!r} to {plan.recipients} subscriber(s) "
            f"in {len(plan.digest.audiences)} audience(s)"
        )
    for warning in plan.warnings:
        click.echo(f"  skipped   {warning}", err=True)


@cli.command()
@pass_context
def status(obj: Context) -> None:
    """Show what the next publish would do, and deliveries still pending."""
    settings = obj.settings
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger)
        counts = ledger.delivery_counts()
        deliveries = ledger.digest_deliveries()
        last = ledger.last_run()
    click.echo("Next publish:")
    _print_plan(plan)
    click.echo(
        f"Outbox: {counts.pending} pending, {counts.deferred} deferred, "
        f"{counts.sent} sent, {counts.failed} failed"
    )
    for digest in deliveries:
        c = digest.counts
        if c.pending or c.deferred or c.failed:
            click.echo(
                f"  digest {digest.digest_id} ({digest.created_at:%Y-%m-%d}): {c.pending} pending, "
                f"{c.deferred} deferred, {c.failed} failed, {c.sent} sent"
            )
    click.echo(f"Last publish: {last[0]:%Y-%m-%d %H:%M} UTC" if last else "Last publish: never")


@cli.command()
@pass_context
def check(obj: Context) -> None:
    """Validate the configuration, articles and subscriber lists; list every problem."""
    settings = obj.settings
    topics = frozenset(settings.topics)
    paths = settings.paths
    problems = [
        *load_articles(paths.articles, paths.root, known_topics=topics).problems,
        *load_subscribers(paths.subscribers, paths.root, known_topics=topics).problems,
    ]
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem(s) found.", err=True)
        sys.exit(EXIT_PROBLEMS)
    click.echo("Everything checks out.")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")
@click.option(
    "--no-email", is_flag=True, help="Update feeds and site only; announce nothing by email."
)
@pass_context
def publish(obj: Context, dry_run: bool, no_email: bool) -> None:
    """Detect changed articles, write the feeds, and email the digest."""
    settings = obj.settings
    started = time.perf_counter()
    with open_ledger(settings) as ledger:
        plan = plan_publish(settings, ledger)
        click.echo("Plan:")
        _print_plan(plan)
        if dry_run:
            click.echo("Dry run: nothing written, recorded or sent.")
            return
        with _delivery_progress() as progress:
            report = execute(plan, settings, ledger, send_email=not no_email, on_progress=progress)
    for path in report.written:
        click.echo(f"wrote public/{path}")
    if not report.written:
        click.echo("feeds unchanged")
    delivery = report.delivery
    if delivery is not None:
        _print_delivery(settings, delivery)
    click.echo(f"done in {time.perf_counter() - started:.2f} s")
    if delivery is not None and not delivery.complete:
        sys.exit(EXIT_PARTIAL)


# --- delivery: the deliver command, the progress display, the summary ----------------------


@cli.command("deliver")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="First make failed messages pending again (suppressed addresses stay failed).",
)
@pass_context
def deliver_command(obj: Context, retry_failed: bool) -> None:
    """Send what the outbox holds: pending messages, and deferred ones whose time has come."""
    settings = obj.settings
    with open_ledger(settings) as ledger, _delivery_progress() as progress:
        report = deliver_outbox(settings, ledger, retry_failed=retry_failed, on_progress=progress)
    if retry_failed:
        click.echo(f"{report.retried} failed message(s) made pending again")
    _print_delivery(settings, report)
    if not report.complete:
        sys.exit(EXIT_PARTIAL)


@contextlib.contextmanager
def _delivery_progress() -> Iterator[Progress]:
    """A progress bar with rate and ETA on a terminal; a plain line every 5 s otherwise."""
    started = time.perf_counter()
    if sys.stdout.isatty():
        from rich import progress as bars

        columns = (
            bars.TextColumn("delivering"),
            bars.BarColumn(),
            bars.MofNCompleteColumn(),
            bars.TextColumn("{task.fields[rate]:,.0f}/s"),
            bars.TimeRemainingColumn(),
        )
        with bars.Progress(*columns, transient=True) as bar:
            task = bar.add_task("delivery", total=None, rate=0.0)

            def draw(report: DeliveryReport) -> None:
                rate = report.sent / max(time.perf_counter() - started, 1e-6)
                bar.update(task, total=report.total, completed=report.done, rate=rate)

            yield draw
        return

    last_line = started

    def log(report: DeliveryReport) -> None:
        nonlocal last_line
        now = time.perf_counter()
        if now - last_line >= 5.0:
            last_line = now
            click.echo(
                f"delivering: {report.done}/{report.total} ({report.sent} sent, "
                f"{report.deferred} deferred, {report.failed} failed), "
                f"{report.sent / (now - started):,.0f}/s"
            )

    yield log


def _print_delivery(settings: Settings, report: DeliveryReport) -> None:
    target = settings.smtp_target()
    where = f"SMTP {target}" if target else f"the local Maildir {settings.paths.maildir}"
    click.echo(
        f"delivered to {where}: {report.sent} sent, {report.deferred} deferred, "
        f"{report.failed} failed, {report.suppressed} suppressed "
        f"({report.rate:,.0f} messages/s)"
    )
    if report.skipped:
        click.echo(f"{report.skipped} not sent: the address was suppressed since the digest")
    if report.interrupted:
        click.echo(f"interrupted: {report.pending} message(s) left pending; run pipeline deliver")
    elif report.stopped:
        click.echo(f"stopped early: {report.stopped}", err=True)
    elif report.pending:
        click.echo(f"{report.pending} message(s) still pending (another delivery holds them)")
    if report.deferred:
        click.echo("deferred messages are retried by the next pipeline deliver or publish")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ContentError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_PROBLEMS)
