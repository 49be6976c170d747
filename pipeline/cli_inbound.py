"""``pipeline bounces``: read the bounce mailbox and act on what came back.

Registered by ``pipeline.cli`` (one import at its end); a thin layer over
``pipeline.bounce_inbox.process_mailbox``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pipeline.bounce_inbox import InboxReport, process_mailbox
from pipeline.cli_app import App, command
from pipeline.config import secret_key
from pipeline.errors import ConfigError
from pipeline.mailboxes import MailboxError, NoMailboxYet, open_mailbox
from pipeline.publish import open_ledger

__all__ = ["bounces_command"]

_WORDS = {
    "hard": "hard bounce(s)",
    "soft": "soft bounce(s)",
    "complaint": "complaint(s)",
    "unsubscribe": "unsubscribe request(s)",
    "sender": "refusal(s) about the sender or relay (nobody touched)",
    "delayed": "delay warning(s)",
    "auto_reply": "auto-reply(s)",
}


@command("bounces", json_output=True)
@click.option(
    "--from",
    "source",
    metavar="SOURCE",
    help="A Maildir or mbox path, or imaps://user@host/INBOX (password in "
    "PIPELINE_BOUNCES_PASSWORD). Default: [bounces] source, state/bounces/.",
)
def bounces_command(app: App, source: str | None) -> None:
    """Process bounces, complaints and unsubscribe mail not processed before.

    Hard and soft bounces add to the subscriber's bounce score, a spam complaint or an
    unsubscribe request unsubscribes at once. Handled mail is moved to the processed
    folder; mail nothing recognised stays in the mailbox, unread, for a person.
    """
    settings = app.settings
    try:
        mailbox = open_mailbox(settings.bounces.source if source is None else source, settings)
    except NoMailboxYet as exc:
        if source is not None:  # typed on the command line: a usage error
            raise click.BadParameter(str(exc), param_hint="--from") from exc
        # A new project: the MTA has not delivered any bounce yet (README, "Bounces").
        app.out.data({"source": str(exc.path), "read": 0, "nothing_yet": True})
        app.out.say(
            f"Nothing to read yet: no bounce mail has arrived at {exc.path} "
            "(set [bounces] source or use --from to read elsewhere)."
        )
        return
    except ConfigError as exc:
        if source is None:
            raise
        raise click.BadParameter(str(exc), param_hint="--from") from exc
    with open_ledger(settings) as ledger:
        try:
            report = process_mailbox(settings, ledger, mailbox, secret_key(settings))
        except OSError as exc:
            raise MailboxError(f"{mailbox.name}: {exc}") from exc
        finally:
            mailbox.close()
    _render(app, report, datetime.now(UTC))


def _render(app: App, report: InboxReport, now: datetime) -> None:
    counts = report.counts
    app.out.data(
        {
            "source": report.source,
            "read": report.read,
            "already_processed": report.already_processed,
            "counts": dict(counts),
            "outcomes": [
                {"kind": str(o.kind), "address": o.address, "action": o.action}
                for o in report.outcomes
            ],
            "unrecognised": report.unrecognised,
            "still_unread": report.still_unread,
            "at": now.isoformat(timespec="seconds"),
        }
    )
    new = report.read - report.already_processed
    app.out.say(
        f"{report.source}: {report.read} message(s), {new} new, "
        f"{report.already_processed} already processed"
    )
    parts = [f"{counts[kind]} {words}" for kind, words in _WORDS.items() if counts[kind]]
    if parts:
        app.out.say(", ".join(parts))
    for outcome in report.outcomes:
        if outcome.action != "ignored":
            app.out.say(f"  {outcome.kind}: {outcome.address or '(no address)'}: {outcome.action}")
    if report.unrecognised:
        app.out.warn(
            f"{len(report.unrecognised)} message(s) not recognised, left unread in the "
            "mailbox for a person: " + "; ".join(repr(s) for s in report.unrecognised[:5])
        )
    if report.still_unread:
        app.out.say(f"{report.still_unread} message(s) from earlier runs still wait for a person")
