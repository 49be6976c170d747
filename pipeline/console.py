"""The command line's voice: the one object through which ``pipeline`` commands print.

Results go to stdout, warnings, errors, questions and progress to stderr, so a script can
read a command's output (``--json``) while a person still sees what went wrong. Colour
only on a terminal and never when ``NO_COLOR`` is set (https://no-color.org); progress
bars and spinners only on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from pipeline.delivery_run import DeliveryReport

if TYPE_CHECKING:
    from pipeline.delivery_run import DeliveryReport

__all__ = ["Output", "Verbosity"]


class Verbosity(IntEnum):
    QUIET = 0  # warnings and errors only
    NORMAL = 1  # plus what was planned and done
    VERBOSE = 2  # plus each file, each step, the details


class Output:
    """Prints for one command run, at one verbosity, as text or as one JSON document."""

    def __init__(
        self,
        *,
        verbosity: Verbosity = Verbosity.NORMAL,
        as_json: bool = False,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.verbosity = verbosity
        self.as_json = as_json
        no_color = bool(environ.get("NO_COLOR"))
        common: dict[str, Any] = {
            "highlight": False,
            "markup": False,
            "emoji": False,
            "no_color": no_color,
        }
        if no_color:  # no escapes at all: bold and italic are noise in a plain terminal too
            common["color_system"] = None
        self._out = Console(**common)
        self._err = Console(stderr=True, **common)

    # --- results (stdout) -----------------------------------------------------------------

    def say(
        self, text: str | Text, *, style: str | None = None, level: Verbosity = Verbosity.NORMAL
    ) -> None:
        """A line of the human report, shown from ``level`` up; never in JSON mode."""
        if self._shows(level):
            self._out.print(text, style=style, soft_wrap=True)

    def show(self, renderable: RenderableType) -> None:
        """A table or other rich renderable, in the human report."""
        if self._shows(Verbosity.NORMAL):
            self._out.print(renderable)

    def data(self, value: Mapping[str, Any]) -> None:
        """The command's result as one JSON document, printed only in JSON mode."""
        if self.as_json:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False))

    def _shows(self, level: Verbosity) -> bool:
        return not self.as_json and self.verbosity >= level

    # --- warnings and errors (stderr) -----------------------------------------------------

    def warn(self, text: str) -> None:
        """Something skipped or doubtful; shown even with --quiet."""
        self._err.print(Text.assemble(("warning: ", "yellow bold"), text), soft_wrap=True)

    def error(self, text: str) -> None:
        """Why the command failed, in one line saying what to fix."""
        self._err.print(Text.assemble(("error: ", "red bold"), text), soft_wrap=True)

    def problem(self, text: str) -> None:
        """One ``file:line: field: what to fix`` line, for errors that carry several."""
        self._err.print(text, soft_wrap=True)

    # --- interaction ----------------------------------------------------------------------

    @property
    def interactive(self) -> bool:
        """True when a person can answer a question: stdin is a terminal."""
        return sys.stdin.isatty()

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question on stderr (default no)."""
        return click.confirm(question, default=False, err=True)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """A spinner on a terminal while a long step runs; a log line with --verbose."""
        if self._err.is_terminal and self._shows(Verbosity.NORMAL):
            with self._err.status(label):
                yield
            return
        if self.verbosity >= Verbosity.VERBOSE:
            self._err.print(label, soft_wrap=True)
        yield

    @contextmanager
    def delivery_progress(self) -> Iterator[Callable[[DeliveryReport], None]]:
        """Follow a delivery: a bar with rate and ETA on a terminal, else a line every 5 s.

        Yields the callback delivery calls with its running report.
        """
        started = time.perf_counter()
        if self._err.is_terminal and self._shows(Verbosity.NORMAL):
            columns = (
                TextColumn("Sending"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:,.0f}/s"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=self._err, transient=True) as bar:
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
            if now - last_line >= 5.0 and self._shows(Verbosity.NORMAL):
                last_line = now
                self._err.print(
                    f"sending: {report.done}/{report.total} ({report.sent} sent, "
                    f"{report.deferred} deferred, {report.failed} failed), "
                    f"{report.sent / (now - started):,.0f}/s",
                    soft_wrap=True,
                )

        yield log

    def progress(self, label: str, total: int | None) -> Iterator[Callable[[str], None]]:
        """A progress bar on a terminal; yields a callback to call once per item done."""
        if not (self._err.is_terminal and self._shows(Verbosity.NORMAL)) or not total:
            yield lambda outcome: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self._err, transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda outcome: bar.advance(task)
