"""Click parameter types for values typed on the ``pipeline`` command line.

A value typed wrongly is a usage error: click prints ``Error: Invalid value for '--since':
...`` naming the option and the forms it accepts, and exits 2, before any work is done.
(A *file* or *setting* that is wrong is a problem in the project instead: exit 1.)

- :class:`NonEmpty` wraps a type and refuses ``''`` and whitespace-only text; ``command()`` in
  :mod:`pipeline.cli` puts it around every text and path option and argument, so an empty
  value is never read as "not given".
- :data:`MOMENT` an ISO 8601 date or date-time (naive means UTC);
- :data:`ADDRESS` an email address (RFC 5322 addr-spec, checked with email-validator);
- :data:`TOPICS` / :data:`TOPIC` topic slugs from ``[topics]`` in pipeline.toml;
- :data:`LEDGER_URL` a ledger URL as ``[ledger] url`` takes it;
- :data:`SLUG` an article's file name as ``pipeline new`` makes it (``tocilizumab-ssc-ild``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

import click

from pipeline.addresses import normalise_email, parse_topics
from pipeline.authoring import slugify
from pipeline.config import Settings
from pipeline.config_urls import parse_ledger_url
from pipeline.errors import PipelineError

__all__ = [
    "ADDRESS",
    "LEDGER_URL",
    "MOMENT",
    "SLUG",
    "TOPIC",
    "TOPICS",
    "NonEmpty",
    "refuse_empty",
]


class _HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


def _settings(ctx: click.Context | None) -> Settings:
    """The project's settings from the command's ``App`` (``ctx.obj`` of the root group)."""
    assert ctx is not None, "parameter types are converted inside a command"
    app: _HasSettings = ctx.find_root().obj
    return app.settings


class NonEmpty(click.ParamType[Any, Any]):
    """``inner``, except that ``''`` or blanks are refused rather than read as a value."""

    def __init__(self, inner: click.ParamType[Any, Any]) -> None:
        self.inner = inner
        self.name = inner.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            leave_out = ", or leave the option out" if isinstance(param, click.Option) else ""
            self.fail(f"{value!r} is empty; give a value{leave_out}", param, ctx)
        return self.inner.convert(value, param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return self.inner.get_metavar(param, ctx)

    def to_info_dict(self) -> click.types.ParamTypeInfoDict:
        return self.inner.to_info_dict()


class _Moment(click.ParamType[datetime, Any]):
    name = "date"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not a date; write YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC unless "
                "an offset such as +02:00 follows)",
                param,
                ctx,
            )
        if not moment.tzinfo:
            return moment.replace(tzinfo=UTC)
        try:
            moment.astimezone(UTC)  # the ledger compares instants in UTC
        except OverflowError:
            self.fail(
                f"{value!r} is out of range once read in UTC; give a date between "
                "0001-01-02 and 9999-12-30",
                param,
                ctx,
            )
        return moment


class _Address(click.ParamType[str, Any]):
    """Checked, then passed on as typed: the library normalises it as it stores it."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        try:
            normalise_email(text)
        except PipelineError as exc:
            self.fail(f"{str(exc).rstrip('.')}; write it as name@example.org", param, ctx)
        return text


class _Topics(click.ParamType[str, Any]):
    """``single``: one slug (``new --topic``); otherwise a ';'-separated list, '*' or ''."""

    def __init__(self, *, single: bool) -> None:
        self.single = single
        self.name = "topic" if single else "topics"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        known = _settings(ctx).topics
        if self.single:
            if known and text not in known:
                self.fail(
                    f"unknown topic {text!r}; use one of {', '.join(sorted(known))} "
                    "or add it under [topics] in pipeline.toml",
                    param,
                    ctx,
                )
            return text
        if text != "*":
            try:
                parse_topics(text, known)
            except PipelineError as exc:
                self.fail(str(exc), param, ctx)
        return text


class _LedgerUrl(click.ParamType[str, Any]):
    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        try:
            parse_ledger_url(text, _settings(ctx).paths)
        except PipelineError as exc:
            self.fail(str(exc), param, ctx)
        return text


class _Slug(click.ParamType[str, Any]):
    """Taken only as ``slugify`` would write it, so the file is named exactly as typed."""

    name = "slug"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if slugify(text) != text:
            self.fail(
                f"{text!r} is not a file name for an article; use lower-case letters, digits "
                f"and hyphens, such as {slugify(text) or 'tocilizumab-ssc-ild'!r}",
                param,
                ctx,
            )
        return text


MOMENT = _Moment()
ADDRESS = _Address()
TOPICS = _Topics(single=False)
TOPIC = _Topics(single=True)
LEDGER_URL = _LedgerUrl()
SLUG = _Slug()


_TEXT_TYPES = (
    click.types.StringParamType,
    click.Path,
    _Moment,
    _Address,
    _Topics,
    _LedgerUrl,
    _Slug,
)


def refuse_empty(params: list[click.Parameter], *, allowed: tuple[str, ...] = ()) -> None:
    """Wrap every text-like parameter's type in :class:`NonEmpty`, except those ``allowed``."""
    for param in params:
        if param.name in allowed or (isinstance(param, click.Option) and param.is_flag):
            continue
        if isinstance(param.type, _TEXT_TYPES):
            param.type = NonEmpty(param.type)
