"""``pipeline subscribers …``: list, show, add, set, remove, forget, import, export.

Registered on the ``pipeline`` group by importing this module from ``pipeline.cli``.
Every command that changes a subscriber says what changed; none changes a field it was not
given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pipeline.atomic import write_atomic
from pipeline.cli_app import App, ExitCode, cli, command, stop
from pipeline.cli_types import ADDRESS, TOPICS
from pipeline.config import Settings, secret_key
from pipeline.errors import PipelineError
from pipeline.periodic import change_frequency
from pipeline.personal_data import forget, person_data
from pipeline.status import read_ledger
from pipeline.store import FREQUENCIES, SUBSCRIBER_STATUSES, SubscriberRecord, open_ledger
from pipeline.subscriber_plans import listed_subscribers
from pipeline.subscribers import (
    SubscriberList,
    export_csv,
    load_subscribers,
    open_store,
    parse_topics,
)

__all__ = ["subscribers"]

TOPICS_HELP = "Topic slugs separated by ';'; '*' or '' for every topic."
FREQUENCY_HELP = "How often they get a digest: each publish (immediately), daily, weekly, monthly."


@cli.group()
def subscribers() -> None:
    """List, show, add, change, remove, forget, import and export subscribers."""


def _lists(settings: Settings) -> SubscriberList:
    paths = settings.paths
    return load_subscribers(paths.subscribers, paths.root, known_topics=settings.topics)


def _listed(app: App, status: str | None) -> list[SubscriberRecord]:
    """The ledger's subscribers with the list files merged in as the next publish will."""
    settings = app.settings
    lists = _lists(settings)
    for problem in lists.problems:
        app.out.warn(f"skipped {problem}")
    with read_ledger(settings) as ledger:  # listing creates nothing on disk
        secret = secret_key(settings) if ledger.erased_hashes() else ""
        records = listed_subscribers(ledger, lists, secret, datetime.now(UTC))
    return [r for r in records if status is None or r.status == status]


def _topics(text: str | None, app: App) -> frozenset[str] | None:
    if text is None:
        return None
    return frozenset() if text.strip() == "*" else parse_topics(text, app.settings.topics)


@command("list", group=subscribers)
@click.option("--status", type=click.Choice(SUBSCRIBER_STATUSES), help="Only this status.")
def subscribers_list(app: App, status: str | None) -> None:
    """Show subscribers: email, status, topics, name, frequency, tab-separated.

    Rows of subscribers/*.csv not imported yet are included (the next publish imports them).
    """
    records = _listed(app, status)
    for r in records:
        topics = ";".join(sorted(r.topics)) or "*"
        # tab-separated for scripts; frequency last, so existing scripts' columns stay put
        click.echo(f"{r.email}\t{r.status}\t{topics}\t{r.name}\t{r.frequency}")
    waiting = sum(1 for r in records if r.id == 0)
    note = f", {waiting} from subscribers/*.csv not imported yet" if waiting else ""
    app.out.say(f"{len(records)} subscriber(s){note}", style="dim")


@command("show", group=subscribers, json_output=True)
@click.argument("email", type=ADDRESS)
def subscribers_show(app: App, email: str) -> None:
    """Show everything held about one address (--json: a data export for its owner)."""
    with read_ledger(app.settings) as ledger:
        data = person_data(ledger, email, _lists(app.settings))
    app.out.data(data)
    if data["subscriber"] is None and not data["list_rows"] and not data["messages"]:
        app.out.warn(f"nothing is held about {data['email']}")
        return
    for line in _person_lines(data):
        app.out.say(line)


def _person_lines(data: dict[str, Any]) -> list[str]:
    """``person_data``'s document as a short report; ``--json`` gives it whole."""
    lines = [str(data["email"])]
    sub = data["subscriber"]
    if sub is not None:
        topics = ", ".join(sub["topics"]) or "every topic"
        lines += [
            f"  status:    {sub['status']}" + (f" ({sub['reason']})" if sub["reason"] else ""),
            f"  name:      {sub['name'] or '-'}",
            f"  topics:    {topics}",
            f"  frequency: {sub['frequency']}",
            f"  source:    {sub['source']}, since {sub['created_at']}",
        ]
    for row in data["list_rows"]:
        lines.append(f"  listed in {row['source']} ({row['status']})")
    for signup in data["signups"]:
        confirmed = signup["confirmed_at"] or "not confirmed"
        lines.append(f"  signed up {signup['requested_at']}, {confirmed}")
    lines.append(f"  messages:  {len(data['messages'])}")
    for message in data["messages"]:
        lines.append(f"    digest {message['digest']}: {message['status']} {message['subject']!r}")
    lines.append(f"  bounces:   {len(data['bounces'])}")
    for bounce in data["bounces"]:
        lines.append(f"    {bounce['at']} {bounce['kind']}: {bounce['cause']}")
    lines.append("(`--json` exports everything held, for the person it is about)")
    return lines


@command("add", group=subscribers, empty_ok=("name", "topics"))
@click.argument("email", type=ADDRESS)
@click.option("--name", default=None, help="The name used in the greeting (default: none).")
@click.option("--topics", type=TOPICS, default=None, help=TOPICS_HELP + " Default: every topic.")
@click.option("--frequency", type=click.Choice(FREQUENCIES), help=FREQUENCY_HELP)
def subscribers_add(
    app: App, email: str, name: str | None, topics: str | None, frequency: str | None
) -> None:
    """Add a subscriber, active at once. A known one is never changed: use `set`."""
    chosen = _topics(topics, app)
    now = datetime.now(UTC)
    with open_store(app.settings) as store:
        store.import_listed(email, _lists(app.settings).entries, now)
        record, changes = store.add(email, name, chosen, now, frequency)
        if frequency is not None and changes == ("added",):
            change_frequency(app.settings, store.ledger, record.email_key, frequency, now)
    if not changes:
        app.out.say(f"{record.email} is already {record.status}; nothing changed")
    elif changes == ("added",):
        app.out.say(f"{record.email} added, active")
    else:
        app.out.say(f"{record.email}: " + "; ".join(changes))


@command("set", group=subscribers, empty_ok=("name", "topics"))
@click.argument("email", type=ADDRESS)
@click.option("--name", default=None, help="A new name for the greeting ('' for none).")
@click.option("--topics", type=TOPICS, default=None, help=TOPICS_HELP)
@click.option("--frequency", type=click.Choice(FREQUENCIES), help=FREQUENCY_HELP)
def subscribers_set(
    app: App, email: str, name: str | None, topics: str | None, frequency: str | None
) -> None:
    """Change a subscriber's name, topics or frequency; prints each change.

    Only what is given changes.
    """
    if name is None and topics is None and frequency is None:
        raise click.UsageError("give --name, --topics or --frequency")
    chosen = _topics(topics, app)
    now = datetime.now(UTC)
    with open_store(app.settings) as store:
        store.import_listed(email, _lists(app.settings).entries, now)
        record, changes = store.change(email, name, chosen, now)
        wanted = record.frequency if frequency is None else frequency
        moved = wanted != record.frequency
        if moved and change_frequency(app.settings, store.ledger, record.email_key, wanted, now):
            changes = (*changes, f"frequency: {record.frequency} -> {wanted}")
    for change in changes:
        app.out.say(f"{record.email}: {change}")
    if not changes:
        app.out.say(f"{record.email}: nothing to change")


@command("remove", group=subscribers)
@click.argument("email", type=ADDRESS)
def subscribers_remove(app: App, email: str) -> None:
    """Unsubscribe an address for good: no list import brings it back."""
    now = datetime.now(UTC)
    with open_store(app.settings) as store:
        store.import_listed(email, _lists(app.settings).entries, now)  # as `list` shows them
        changed = store.remove(email, now)
    app.out.say(f"{email} unsubscribed" if changed else f"{email} was not subscribed")


@command("forget", group=subscribers)
@click.argument("email", type=ADDRESS)
def subscribers_forget(app: App, email: str) -> None:
    """Erase an address's personal data (GDPR erasure).

    A keyed hash of the address stays in the suppression list, so no list or editor adds
    it again; only a new sign-up confirmed by its owner does.
    """
    settings = app.settings
    with open_ledger(settings) as ledger:
        erasure = forget(ledger, email, secret_key(settings), _lists(settings), datetime.now(UTC))
    if erasure.found:
        app.out.say(f"{erasure.email} forgotten: its data is erased and it will not be mailed")
    else:
        app.out.say(f"nothing held about {erasure.email}; it will not be mailed or added")
    for row in erasure.list_rows:
        app.out.warn(f"{row}: still names {erasure.email}; delete that line from the file")


@command("import", group=subscribers)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def subscribers_import(app: App, file: Path) -> None:
    """Merge a CSV list (email,name,topics[,status]); exit 1 if rows were skipped."""
    with open_store(app.settings) as store:
        found = store.read_file(file, app.settings.paths.root)
        differences = store.differences(found.entries)
        counts = store.merge(found.entries, datetime.now(UTC))
    for problem in found.problems:
        app.out.warn(f"skipped {problem}")
    for note in differences:
        app.out.warn(f"kept the ledger's value: {note} (`pipeline subscribers set` changes it)")
    app.out.say(
        f"{counts.added} added, {counts.activated} activated, {counts.suppressed} suppressed, "
        f"{counts.unchanged} unchanged, {len(found.problems)} skipped"
    )
    if found.problems:
        stop(ExitCode.PROBLEMS)


@command("export", group=subscribers)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout."
)
def subscribers_export(app: App, output: Path | None) -> None:
    """Write every subscriber with status and source as CSV.

    Rows of subscribers/*.csv not imported yet are included.
    """
    public = app.settings.paths.public.resolve()
    if output is not None and output.resolve().is_relative_to(public):
        raise PipelineError(
            f"{output}: refusing to write subscribers under {public.name}/, which is served "
            "and deployed; choose a path outside it"
        )
    text = export_csv(_listed(app, None))
    if output is None:
        click.echo(text, nl=False)
    else:
        write_atomic(output, text.encode("utf-8"))
        app.out.say(f"wrote {output}")
