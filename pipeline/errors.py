"""The one exception tree of the pipeline.

    PipelineError                 anything an editor can act on; the CLI prints it in one line
    ├── ConfigError               pipeline.toml or the environment is wrong
    ├── ContentError              articles, subscribers or templates have problems (carries them all)
    ├── TemplateError             a template does not render or compile
    ├── DeliveryError             the mail server cannot be reached or refuses the whole run
    ├── LedgerError               the ledger database cannot be reached, or refuses a login
    └── SubscriberError           an address is invalid, or a subscriber cannot change as asked

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ContentError",
    "DeliveryError",
    "LedgerError",
    "PipelineError",
    "Problem",
    "SubscriberError",
    "TemplateError",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in one input, and what to do about it."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PipelineError(Exception):
    """Base of every error an editor can fix; its message says what to do."""


class ConfigError(PipelineError):
    """The configuration file or an environment variable is invalid."""


class ContentError(PipelineError):
    """One or more inputs are invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{len(problems)} {noun} found; nothing was published")


class TemplateError(PipelineError):
    """A template failed to render; the message names the file and line."""


class DeliveryError(PipelineError):
    """Delivery could not start at all (for example the SMTP server is unreachable)."""


class LedgerError(PipelineError):
    """The ledger's database cannot be opened or used (unreachable server, bad URL, login
    refused, connection lost); the message names the database, its password hidden."""


class SubscriberError(PipelineError):
    """An address is not valid, or a subscriber cannot be changed as asked."""
