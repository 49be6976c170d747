"""The ``pipeline`` command: parses options, calls the library, hands the result to a renderer.

This module assembles the command: the group, the ``App`` and the ``command`` decorator live
in :mod:`pipeline.cli_app`; each ``cli_*`` module registers its commands on the group when
imported here. Exit codes and error handling: see :mod:`pipeline.cli_app`.

Adding a command takes two short pieces, side by side, in the ``cli_*`` module of its kind
(a group of commands such as ``pipeline subscribers add`` is ``@cli.group()`` and
``@command("add", group=subscribers)``)::

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

# Each command module registers its commands on ``cli`` when imported.
from pipeline import (  # noqa: F401
    cli_bounces,
    cli_digests,
    cli_editing,
    cli_inbound,
    cli_publish,
    cli_scale,
    cli_subscribers,
)
from pipeline.cli_app import App, ExitCode, cli, command

__all__ = ["App", "ExitCode", "cli", "command", "main"]


def main() -> None:
    """The console script ``pipeline`` (also ``python -m pipeline``)."""
    cli(prog_name="pipeline")
