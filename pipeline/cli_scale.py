"""The commands for running past one machine: ``pipeline worker`` and ``pipeline ledger copy``.

Registered on the ``pipeline`` group when :mod:`pipeline.cli` imports this module; the work
is done by :func:`pipeline.worker.run_worker` and :func:`pipeline.store.copy.copy_ledger`.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline import views
from pipeline.cli_app import App, ExitCode, cli, command, stop
from pipeline.cli_publish import render_delivery
from pipeline.cli_types import LEDGER_URL
from pipeline.config_urls import parse_ledger_url, redact_url
from pipeline.console import Verbosity
from pipeline.delivery_run import DeliveryReport
from pipeline.status import destination
from pipeline.store import open_database
from pipeline.store.copy import copy_ledger, database_identity
from pipeline.worker import POLL, run_worker

__all__ = ["ledger", "worker"]


@command("worker", json_output=True)
@click.option("--once", is_flag=True, help="Send what is due now, then exit (for cron).")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=POLL,
    show_default=True,
    help="Seconds between looks for new digests while the outbox is empty.",
)
def worker(app: App, once: bool, poll: float) -> None:
    """Deliver the outbox until stopped: claims, sends and records, as `deliver` does.

    Run any number of workers, on any number of machines, against one PostgreSQL ledger
    (PIPELINE_DATABASE_URL). SIGTERM or Ctrl-C finishes the messages in flight and exits 0.
    With --once it exits 3 when some messages were deferred or failed (rows other workers
    still hold are theirs to send, not a partial delivery).
    """
    settings = app.settings
    if not once:
        app.out.say(f"Worker delivering to {destination(settings)}; SIGTERM or Ctrl-C stops it.")

    def drained(report: DeliveryReport) -> None:
        if not once:
            render_delivery(app, report)

    result = run_worker(
        settings, once=once, poll=poll, on_drain=drained, on_error=lambda e: app.out.warn(e)
    )
    app.out.data(
        {
            "drains": result.drains,
            "errors": result.errors,
            "delivery": views.delivery_dict(result.delivery),
        }
    )
    if once:
        render_delivery(app, result.delivery)
        delivery = result.delivery
        if delivery.deferred or delivery.failed or delivery.stopped or delivery.interrupted:
            stop(ExitCode.PARTIAL)
    else:
        app.out.say(f"Worker stopped: {result.delivery.sent} message(s) sent in all.")


def _same_ledger(source: Path | str) -> str:
    return (
        f"--to names the ledger being copied ({redact_url(str(source))}); give another database "
        "(PIPELINE_DATABASE_URL or [ledger] url chooses the source: to move the SQLite ledger, "
        "run the copy with PIPELINE_DATABASE_URL unset, then set it)"
    )


@cli.group()
def ledger() -> None:
    """Move the ledger between databases (SQLite file, PostgreSQL)."""


@command("copy", group=ledger, json_output=True)
@click.option(
    "--to",
    "to",
    required=True,
    metavar="URL",
    type=LEDGER_URL,
    help="postgresql://user@host/db, or sqlite:///path/to/file.db to come back.",
)
@click.option("--replace", is_flag=True, help="Empty a target that already holds a ledger.")
def copy_command(app: App, to: str, replace: bool) -> None:
    """Copy the project's ledger (as configured) to the database at URL, verified by counts.

    Stop publishing and the workers while it runs; then point PIPELINE_DATABASE_URL or
    [ledger] url at the new database.
    """
    settings = app.settings
    target_location = parse_ledger_url(to, settings.paths)
    source_location = settings.ledger_location()
    if str(target_location) == str(source_location):
        # Most often PIPELINE_DATABASE_URL was exported before the move: it chooses the source.
        raise click.UsageError(_same_ledger(source_location))
    source = open_database(source_location, read_only=True)
    try:
        target = open_database(target_location)
        try:
            if database_identity(source) == database_identity(target):
                # The same ledger spelled another way (a relative path, a symlink, another
                # host name or parameters for one PostgreSQL database): copying would empty it.
                raise click.UsageError(_same_ledger(source_location))
            counts = copy_ledger(
                source,
                target,
                replace=replace,
                on_table=lambda t, n: app.out.say(f"{t}: {n} row(s)", level=Verbosity.VERBOSE),
            )
        finally:
            target.close()
    finally:
        source.close()
    app.out.data({"to": redact_url(str(to)), "tables": counts})
    app.out.say(
        f"Copied {sum(counts.values())} row(s) in {len(counts)} tables to {redact_url(to)}; "
        "every table's count matches."
    )
