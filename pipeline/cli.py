"""The ``pipeline`` command: parses options, calls the library, hands the result to a renderer.

Exit codes (documented in ``pipeline --help`` and the README):

    0  done
    1  problems found: invalid articles, lists, templates or configuration, an unreachable
       mail server, or a publish declined at the prompt
    2  usage error: unknown command or option, missing argument
    3  delivered only in part: some messages deferred or failed (the next publish retries)

A ``PipelineError`` prints one line saying what to fix (an invalid input lists every
problem first) and exits 1; anything else is a bug and keeps its traceback.

Adding a command takes two short pieces, side by side (a group of commands such as
``pipeline subscribers add`` is ``@cli.group()`` and ``@command("add", group=subscribers)``)::

    @command(json_output=True)              # --quiet, --verbose (and --json) come with it
    @click.option("--to", required=True, help="...")
    def send_test(app: App, to: str) -> None:
        \"\"\"One line of help: what the command does.\"\"\"
        _render_send_test(app, library_call(app.settings, to))

    def _render_send_test(app: App, result: Result) -> None:
        app.out.data({...})                  # the --json document
        app.out.say(f"Sent to {result.to}")  # the human report
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import UTC, date
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click

from pipeline import views
from pipeline.authoring import create_article
from pipeline.check import check_project, digest_size_line, load_checked
from pipeline.cli_types import ADDRESS, TOPIC, NonEmpty, refuse_empty
from pipeline.config import Settings, load_project
from pipeline.console import Output, Verbosity
from pipeline.delivery import DeliveryReport
from pipeline.errors import ContentError, DeliveryError, PipelineError, Problem
from pipeline.preview import send_test, write_preview
from pipeline.publish import PublishPlan, PublishReport, execute, open_ledger, plan_publish
from pipeline.status import ProjectStatus, destination, project_status, read_ledger
from pipeline.store import DeliveryCounts
from pipeline.workers import deliver_outbox

__all__ = ["App", "ExitCode", "cli", "command", "main"]


class ExitCode(IntEnum):
    DONE = 0
    PROBLEMS = 1
    USAGE = 2
    PARTIAL = 3


class App:
    """What every command gets: the project folder, its settings (loaded on first use), output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = Output()
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_project(self.root)
        return self._settings


def stop(code: ExitCode) -> NoReturn:
    """End the command with ``code`` (click's way, so tests and the shell see the same)."""
    raise click.exceptions.Exit(int(code))


class PipelineGroup(click.Group):
    """Turns an editor-fixable ``PipelineError`` into one line and exit 1, in every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            app = ctx.find_object(App) or App(Path("."))
            _render_error(app, exc)
            stop(ExitCode.PROBLEMS)


def _render_error(app: App, exc: PipelineError) -> None:
    problems: list[Problem] = list(exc.problems) if isinstance(exc, ContentError) else []
    app.out.data(
        {"ok": False, "error": str(exc), "problems": [views.problem_dict(p) for p in problems]}
    )
    for problem in problems:
        app.out.problem(str(problem))
    app.out.error(str(exc))


EPILOG = """\b
Exit codes:
  0  done
  1  problems found (input, configuration, templates, mail server) or publish declined
  2  usage error
  3  delivered only in part: messages deferred, failed or left pending; `pipeline deliver`
     (or the next publish) sends them
"""


@click.group(
    cls=PipelineGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--root",
    type=NonEmpty(click.Path(file_okay=False, path_type=Path)),
    default=Path("."),
    show_default=True,
    help="Project folder holding pipeline.toml, articles/ and subscribers/.",
)
@click.version_option(package_name="therapy-news-pipeline", message="pipeline %(version)s")
@click.pass_context
def cli(ctx: click.Context, root: Path) -> None:
    """Publish therapy articles as feeds and an email digest.

    Run it in the project folder (or give --root). Start with `pipeline check`, see what
    would happen with `pipeline status`, then `pipeline publish`.
    """
    ctx.obj = App(root)


Handler = Callable[..., None]


def command(
    name: str | None = None,
    *,
    json_output: bool = False,
    group: click.Group | None = None,
    empty_ok: tuple[str, ...] = (),
) -> Callable[[Handler], click.Command]:
    """Register ``handler(app, **options)`` as a subcommand with the shared output options.

    ``group`` puts it under a command group (``pipeline subscribers add``) instead of the top.
    Every text or path value must not be empty (usage error, exit 2) except the parameters
    named in ``empty_ok``, whose help says what ``''`` means.
    """

    def decorate(handler: Handler) -> click.Command:
        @functools.wraps(handler)
        @click.pass_obj
        def run(app: App, /, quiet: bool, verbose: bool, **options: Any) -> None:
            if quiet and verbose:
                raise click.UsageError("--quiet and --verbose contradict each other; give one")
            as_json = bool(options.pop("as_json", False))
            level = Verbosity.QUIET if quiet else Verbosity.VERBOSE if verbose else Verbosity.NORMAL
            app.out = Output(verbosity=level, as_json=as_json)
            handler(app, **options)

        registered = (group or cli).command(name)(run)
        refuse_empty(registered.params, allowed=empty_ok)
        registered.params.extend(_shared_options(json_output))  # after the command's own
        return registered

    return decorate


def _shared_options(json_output: bool) -> list[click.Parameter]:
    options: list[click.Parameter] = [
        click.Option(["-q", "--quiet"], is_flag=True, help="Print only warnings and errors."),
        click.Option(["-v", "--verbose"], is_flag=True, help="Say more: each file, each step."),
    ]
    if json_output:
        options.append(
            click.Option(["--json", "as_json"], is_flag=True, help="Print the result as JSON.")
        )
    return options


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


# --- check ---------------------------------------------------------------------------------


@command(json_output=True)
def check(app: App) -> None:
    """Validate the config, templates, articles and subscriber lists.

    Prints every problem at once, one per line as file:line: field: what to fix, and exits
    1 if there is any. Writes nothing.
    """
    settings, problems = load_checked(app.root)
    size = None
    if settings is not None:
        with app.out.step("Checking…"):
            problems += check_project(settings)
            size = digest_size_line(settings) if not problems else None
    _render_check(app, problems, size)
    if problems:
        stop(ExitCode.PROBLEMS)


def _render_check(app: App, problems: list[Problem], size: str | None = None) -> None:
    document: dict[str, object] = {
        "ok": not problems,
        "problems": [views.problem_dict(p) for p in problems],
    }
    if size:
        document["largest_digest"] = size
    app.out.data(document)
    for problem in problems:
        app.out.say(str(problem), level=Verbosity.QUIET)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        app.out.error(f"{len(problems)} {noun} found; fix each line above, then check again")
    else:
        app.out.say("Everything checks out.", style="green")
    if size:
        app.out.say(size)


# --- new -----------------------------------------------------------------------------------


@command()
@click.argument("title")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="SLUG",
    type=TOPIC,
    help="A topic from [topics] in pipeline.toml; repeat for several.",
)
@click.option("--slug", help="The file name to use instead of one made from the title.")
def new(app: App, title: str, topics: tuple[str, ...], slug: str | None) -> None:
    """Start an article: a draft articles/<slug>.md dated today.

    The slug comes from TITLE (or --slug); an existing file is never overwritten.
    """
    path = create_article(app.settings, title, today=date.today(), topics=topics, slug=slug)
    _render_new(app, path)


def _render_new(app: App, path: Path) -> None:
    relative = path.relative_to(app.settings.paths.root)
    app.out.say(str(relative), level=Verbosity.QUIET)
    app.out.say(
        "Write it, set 'draft: false' when it is ready, then run `pipeline check`.", style="dim"
    )


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
        _render_delivery(app, report.delivery)
    out.say(f"Done in {seconds:.2f} s.", level=Verbosity.VERBOSE)


def _render_delivery(app: App, delivery: DeliveryReport) -> None:
    """The summary of a delivery, shared by publish and deliver."""
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
        out.warn(
            f"interrupted: {delivery.pending} message(s) left pending; `pipeline deliver` sends them"
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


# --- preview and send-test -----------------------------------------------------------------


@command()
@click.option(
    "--subscriber",
    metavar="ADDR",
    type=ADDRESS,
    help="Preview the copy this subscriber would get (default: every change).",
)
def preview(app: App, subscriber: str | None) -> None:
    """Write the next digest to state/preview/ as HTML, text and .eml; record nothing."""
    settings = app.settings
    with read_ledger(settings) as ledger:
        result = write_preview(settings, ledger, subscriber=subscriber)
    app.out.say(f"Subject: {result.subject}")
    app.out.say(result.size_line())
    for path in result.files:
        app.out.say(f"wrote {path}", level=Verbosity.QUIET)


@command("send-test")
@click.option(
    "--to", "to", required=True, metavar="ADDR", type=ADDRESS, help="Where to send the test copy."
)
def send_test_command(app: App, to: str) -> None:
    """Send the next digest to ADDR with "[TEST]" in the subject; record nothing.

    Right after a publish, with nothing new, the latest digest is sent as the test.
    """
    settings = app.settings
    with read_ledger(settings) as ledger:
        result, reply = send_test(settings, ledger, to)
    if result.published_digest is not None:
        app.out.say(
            f"Nothing new since the last publish: resending digest {result.published_digest}, "
            "the latest, as the test."
        )
    app.out.say(f"Sent {result.subject!r} to {to} through {destination(settings)}: {reply}")


# --- serve ---------------------------------------------------------------------------------


@command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on.",
)
def serve(app: App, host: str, port: int) -> None:
    """Serve the site, its feeds and the subscriber pages over HTTP until interrupted."""
    import uvicorn  # only this command needs the server

    from pipeline.web import create_app, listen

    settings = app.settings
    sock = listen(host, port)  # a busy port is a clear error (exit 1), before "Serving"
    app.out.say(f"Serving {settings.paths.public} on http://{host}:{port}/ (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn's startup failure is its exit 3, ours is "partial"
        raise PipelineError(f"the server on {host}:{port} did not start: see above") from exc
    if not server.started:
        raise PipelineError(f"the server on {host}:{port} did not start: see above")


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
    _render_delivery(app, report)
    if not report.complete:
        stop(ExitCode.PARTIAL)


# Commands kept in their own modules (the subscribers group, bounces) register on import.
from pipeline import cli_bounces, cli_inbound, cli_subscribers  # noqa: E402, F401


def main() -> None:
    """The console script ``pipeline`` (also ``python -m pipeline``)."""
    cli(prog_name="pipeline")


# Commands kept in modules of their own register themselves on ``cli`` when imported.
from pipeline import cli_digests, cli_scale  # noqa: E402,F401
