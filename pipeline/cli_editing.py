"""The editor's commands before a publish: ``pipeline check``, ``new``, ``preview``,
``send-test`` and ``serve``.

Registered on the ``pipeline`` group when :mod:`pipeline.cli` imports this module; each is a
few lines over :mod:`pipeline.check`, :mod:`pipeline.authoring`, :mod:`pipeline.preview` and
:mod:`pipeline.web`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from pipeline import views
from pipeline.authoring import create_article
from pipeline.check import check_project, digest_size_line, load_checked
from pipeline.cli_app import App, ExitCode, command, stop
from pipeline.cli_types import ADDRESS, SLUG, TOPIC
from pipeline.console import Verbosity
from pipeline.errors import PipelineError, Problem
from pipeline.preview import send_test, write_preview
from pipeline.status import destination, read_ledger

__all__ = ["check", "new", "preview", "send_test_command", "serve"]


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
@click.option(
    "--slug",
    type=SLUG,
    help="The file name to use instead of one made from the title: lower-case letters, "
    "digits and hyphens.",
)
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
