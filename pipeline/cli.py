"""The ``pipeline`` command: parses options, calls the library, prints what happened.

Exit codes: 0 done; 1 problems found (invalid input, configuration or template);
2 usage error; 3 delivered only in part (some messages deferred or failed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from pipeline.articles import load_articles
from pipeline.config import Settings, load_settings
from pipeline.errors import ContentError, PipelineError
from pipeline.publish import PublishPlan, execute, open_ledger, plan_publish
from pipeline.subscribers import load_subscribers

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
    for entry in changes.renamed:
        click.echo(f"  {'renamed':<9} {entry.slug}  (same id: {entry.entry_id})")
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
        last = ledger.last_run()
    click.echo("Next publish:")
    _print_plan(plan)
    click.echo(
        f"Outbox: {counts.pending} pending, {counts.deferred} deferred, "
        f"{counts.sent} sent, {counts.failed} failed"
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
        report = execute(plan, settings, ledger, send_email=not no_email)
    for path in report.written:
        click.echo(f"wrote public/{path}")
    for path in report.removed:
        click.echo(f"removed public/{path}")
    if not report.written:
        click.echo("feeds unchanged")
    delivery = report.delivery
    target = settings.smtp_target()
    where = f"SMTP {target}" if target else f"the local Maildir {settings.paths.maildir}"
    if delivery is not None:
        click.echo(
            f"delivered to {where}: {delivery.sent} sent, {delivery.deferred} deferred, "
            f"{delivery.failed} failed"
        )
    click.echo(f"done in {time.perf_counter() - started:.2f} s")
    if delivery is not None and not delivery.complete:
        sys.exit(EXIT_PARTIAL)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@pass_context
def serve(obj: Context, host: str, port: int) -> None:
    """Serve public/ (the site and its feeds) over HTTP until interrupted."""
    import uvicorn

    from pipeline.web import create_app

    settings = obj.settings
    click.echo(f"serving {settings.paths.public} on http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


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
