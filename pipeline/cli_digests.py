"""``pipeline digests``: the daily, weekly and monthly digests (run it from cron or a worker).

Registered on the ``pipeline`` group when :mod:`pipeline.cli` is imported. Without ``--due``
it shows the schedule; with it, it records the digests whose time has come and sends the
outbox, as ``publish`` does.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pipeline import views
from pipeline.cadence import period_label, previous_slot
from pipeline.cli_app import App, ExitCode, command, stop
from pipeline.cli_publish import render_delivery
from pipeline.config import Settings
from pipeline.delivery_run import DeliveryReport
from pipeline.errors import DeliveryError
from pipeline.periodic import DueRun, run_due, schedule
from pipeline.publish import open_ledger
from pipeline.status import read_ledger
from pipeline.workers import deliver_outbox

__all__ = ["digests", "parse_as_of"]

FIRST_YEAR, LAST_YEAR = 1970, 9998  # the instants --as-of accepts, in UTC


def parse_as_of(text: str, settings: Settings) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is read in ``[schedule] timezone``.
    (For the schedule alone, ``pipeline digests --as-of`` may look ahead; ``--due`` may not.)

    Raises ``click.BadParameter`` naming the option and the form to use.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is not a date and time; write it as 2026-11-30T08:00 "
            "(read in [schedule] timezone) or 2026-11-30T08:00+00:00",
            param_hint="--as-of",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=settings.schedule.zone)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # the first or last hours datetime can hold, moved to UTC
        moment = datetime.min.replace(tzinfo=UTC)
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        # The schedule steps a period either way from the instant; near year 1 or 9999 that
        # leaves what ``datetime`` can hold.
        raise click.BadParameter(
            f"{text!r} is out of range; give an instant between {FIRST_YEAR} and {LAST_YEAR}",
            param_hint="--as-of",
        )
    return moment


@command("digests", json_output=True)
@click.option(
    "--due", is_flag=True, help="Record and send the daily, weekly and monthly digests now due."
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIMESTAMP",
    help="Take this instant as now (ISO 8601; without an offset, in [schedule] timezone).",
)
@click.option(
    "--no-deliver", is_flag=True, help="Record the digests; leave sending to `pipeline deliver`."
)
def digests(app: App, due: bool, as_of: str | None, no_deliver: bool) -> None:
    """Show the periodic digests' schedule, or with --due record and send those due.

    Each reader's digest covers what is new or updated on their topics since their previous
    one. Running --due twice for the same slot records nothing more. Exits 3 when some
    messages were deferred, failed or left pending.
    """
    settings = app.settings
    now = datetime.now(UTC)
    if as_of is not None:
        moment = parse_as_of(as_of, settings)
        now = _not_future(moment, now, as_of) if due else moment
    if not due:
        with read_ledger(settings) as ledger:
            upcoming = schedule(settings, ledger, now)
        app.out.data({"schedule": views.schedule_dict(upcoming)})
        app.out.show(views.schedule_table(upcoming, settings.schedule))
        return
    with open_ledger(settings) as ledger:
        with app.out.step("Recording the digests that are due…"):
            runs = run_due(settings, ledger, now)
        latest = ledger.last_periods()
        report = None
        if not no_deliver:
            with app.out.delivery_progress() as progress:
                try:
                    report = deliver_outbox(settings, ledger, on_progress=progress)
                except DeliveryError as exc:
                    # The digests are recorded: a mail server that is down leaves them
                    # pending for `pipeline deliver`, a partial result (exit 3) as in
                    # `publish`, not an error that would hide what was recorded.
                    queued = ledger.delivery_counts()
                    report = DeliveryReport(
                        pending=queued.pending, deferred=queued.deferred, stopped=str(exc)
                    )
    app.out.data(
        {
            "runs": [_run_dict(run, settings) for run in runs],
            "delivery": views.delivery_dict(report),
        }
    )
    for run in runs:
        app.out.say(_run_line(run, settings, latest.get(run.frequency)))
    if report is not None:
        render_delivery(app, report)
        if not report.complete:
            stop(ExitCode.PARTIAL)


def _not_future(moment: datetime, now: datetime, text: str) -> datetime:
    """A slot is recorded once its time has come: recording one still to come would close
    readers' windows early."""
    if moment > now:
        raise click.BadParameter(
            f"{text} is still to come; give an instant up to now (it back-fills missed runs)",
            param_hint="--as-of",
        )
    return moment


def _period(run: DueRun, settings: Settings) -> str:
    return _slot_period(run.frequency, run.slot, settings)


def _slot_period(frequency: str, slot: datetime, settings: Settings) -> str:
    start = previous_slot(frequency, settings.schedule, slot)
    return period_label(start, slot, settings.schedule)


def _run_line(run: DueRun, settings: Settings, latest: datetime | None) -> str:
    """``latest``: the frequency's latest slot recorded, which may be after ``run.slot`` when
    an older instant is back-filled (that slot is then never recorded: see ``run_due``)."""
    head = f"{run.frequency.capitalize()} digest for {_period(run, settings)}"
    if not run.recorded and latest is not None and latest > run.slot:
        later = _slot_period(run.frequency, latest, settings)
        return f"{head}: not recorded, the later one for {later} covers it; nothing more to do."
    if not run.recorded:
        return f"{head}: recorded before; nothing more to do."
    if not run.recipients:
        return f"{head}: nothing new for the {run.readers} reader(s) it covers."
    return (
        f"{head}: {run.recipients} message(s) to {run.readers} reader(s) on this frequency"
        f" in {len(run.digests)} digest(s)."
    )


def _run_dict(run: DueRun, settings: Settings) -> dict[str, object]:
    return {
        "frequency": run.frequency,
        "slot": run.slot.isoformat(),
        "period": _period(run, settings),
        "recorded": run.recorded,
        "readers": run.readers,
        "digests": list(run.digests),
        "messages": run.recipients,
    }
