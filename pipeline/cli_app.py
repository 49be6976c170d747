"""The ``pipeline`` command group itself: the ``App`` each command gets, the ``command`` decorator,
exit codes, and the translation of a ``PipelineError`` into one line and exit 1.

The commands live in ``cli_*`` modules that import this one; :mod:`pipeline.cli` imports them
all, so importing ``pipeline.cli`` gives the whole command.

Exit codes (documented in ``pipeline --help`` and the README):

    0  done
    1  problems found: invalid articles, lists, templates or configuration, an unreachable
       mail server, or a publish declined at the prompt
    2  usage error: unknown command or option, missing argument
    3  delivered only in part: some messages deferred or failed (the next publish retries)

A ``PipelineError`` prints one line saying what to fix (an invalid input lists every
problem first) and exits 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import click

from pipeline import views
from pipeline.cli_types import NonEmpty, refuse_empty
from pipeline.config import Settings, load_project
from pipeline.console import Output, Verbosity
from pipeline.errors import ContentError, PipelineError, Problem

__all__ = ["App", "ExitCode", "cli", "command", "stop"]


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
    type=NonEmpty(click.Path(exists=True, file_okay=False, path_type=Path)),
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
