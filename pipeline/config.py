"""Typed settings: ``pipeline.toml`` at the project root read into ``Settings``, secrets
from the environment.

Secrets never live in the file: ``PIPELINE_SMTP_URL`` overrides ``[smtp] url``,
``PIPELINE_DATABASE_URL`` overrides ``[ledger] url``,
``PIPELINE_SMTP_PASSWORD`` supplies the SMTP password and ``PIPELINE_SECRET_KEY`` the key
that signs unsubscribe links (a random key is generated once into ``state/`` otherwise).

The sections' dataclasses are in :mod:`pipeline.config_sections`, the URLs' parsing in
:mod:`pipeline.config_urls`, the rules each value must satisfy in
:mod:`pipeline.config_checks`; this module reads the file, checks each value's TOML type and
builds the whole.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from pipeline import config_checks as checks
from pipeline.atomic import write_atomic
from pipeline.config_sections import (
    CONFIG_FILE,
    BounceSettings,
    DigestSettings,
    DkimSettings,
    FeedSettings,
    LedgerSettings,
    Paths,
    ScheduleSettings,
    SenderSettings,
    SendSettings,
    SiteSettings,
    SmtpSettings,
)
from pipeline.config_urls import SmtpTarget, parse_ledger_url, parse_smtp_url
from pipeline.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "Settings",
    "load_project",
    "load_settings",
    "require_project",
    "secret_key",
]


@dataclass(frozen=True, slots=True)
class Settings:
    paths: Paths
    site: SiteSettings = field(default_factory=SiteSettings)
    sender: SenderSettings = field(default_factory=SenderSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    send: SendSettings = field(default_factory=SendSettings)
    feeds: FeedSettings = field(default_factory=FeedSettings)
    digest: DigestSettings = field(default_factory=DigestSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    bounces: BounceSettings = field(default_factory=BounceSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    topics: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The site's URL, always ending in a slash so relative joins behave."""
        url = self.site.base_url
        return url if url.endswith("/") else url + "/"

    def topic_label(self, slug: str) -> str:
        return self.topics.get(slug, slug.replace("-", " ").capitalize())

    def smtp_target(self) -> SmtpTarget | None:
        """The SMTP server to send through, or None for the local Maildir."""
        url = os.environ.get("PIPELINE_SMTP_URL", self.smtp.url).strip()
        if not url:
            return None
        return parse_smtp_url(url, os.environ.get("PIPELINE_SMTP_PASSWORD"))

    def database_url(self) -> str:
        """The ledger's URL: ``PIPELINE_DATABASE_URL``, else ``[ledger] url``; empty for
        the SQLite file under ``state/``."""
        return os.environ.get("PIPELINE_DATABASE_URL", self.ledger.url).strip()

    def ledger_location(self) -> Path | str:
        """The SQLite file (a path) or the PostgreSQL URL the ledger lives at.

        Raises ``ConfigError`` for a URL of another kind.
        """
        return parse_ledger_url(self.database_url(), self.paths)


_SECTIONS: dict[str, type] = {
    "site": SiteSettings,
    "sender": SenderSettings,
    "smtp": SmtpSettings,
    "send": SendSettings,
    "feeds": FeedSettings,
    "digest": DigestSettings,
    "dkim": DkimSettings,
    "ledger": LedgerSettings,
    "bounces": BounceSettings,
    "schedule": ScheduleSettings,
}


def load_settings(root: Path) -> Settings:
    """Read ``pipeline.toml`` under ``root``; a missing file means the embedded defaults."""
    paths = Paths(root.resolve())
    config_path = paths.root / CONFIG_FILE
    if not config_path.exists():
        return Settings(paths=paths)
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts the place at the end: "… (at line 3, column 7)"; lead with it instead.
        found = re.search(r" \(at line (\d+), column \d+\)$", str(exc))
        where = f"{CONFIG_FILE}:{found[1]}" if found else CONFIG_FILE
        reason = str(exc)[: found.start()] if found else str(exc)
        raise ConfigError(f"{where}: not valid TOML: {reason}") from exc

    unknown = sorted(set(data) - set(_SECTIONS) - {"topics"})
    if unknown:
        names = ", ".join(f"[{name}]" for name in unknown)
        raise ConfigError(
            f"{CONFIG_FILE}: unknown section{'s' if len(unknown) > 1 else ''} {names}; "
            f"known sections are {', '.join(sorted([*_SECTIONS, 'topics']))}"
        )
    sections = {name: _section(name, cls, data.get(name, {})) for name, cls in _SECTIONS.items()}
    topics = data.get("topics", {})
    if not isinstance(topics, dict):
        raise ConfigError(f'{CONFIG_FILE}: [topics]: write each topic as slug = "Label"')
    for slug, label in topics.items():
        if not isinstance(label, str):
            raise ConfigError(
                f"{CONFIG_FILE}: [topics] {slug}'s label must be text in quotes, e.g. "
                f'{slug} = "{slug.replace("-", " ").capitalize()}"'
            )
    settings = Settings(paths=paths, topics=dict(topics), **sections)
    _validate(settings)
    return settings


def require_project(root: Path) -> Path:
    """``root`` resolved, if it is a project: it holds ``pipeline.toml`` or ``articles/``.

    Without the file the embedded defaults apply; a folder with neither is most likely a
    mistyped path, and publishing there would only create an empty site.
    """
    resolved = root.resolve()
    if not resolved.is_dir():
        raise ConfigError(f"{resolved} does not exist; give the project folder with --root DIR")
    if not (resolved / CONFIG_FILE).is_file() and not (resolved / "articles").is_dir():
        raise ConfigError(
            f"{resolved} is not a pipeline project: it has neither {CONFIG_FILE} nor an "
            "articles/ folder; run the command in your project folder or give it with --root DIR"
        )
    return resolved


def load_project(root: Path) -> Settings:
    """``load_settings`` for a folder the user named, refusing one that is not a project."""
    return load_settings(require_project(root))


def _section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = [key for key in raw if key not in known]
    if unknown:
        raise ConfigError(
            f"{CONFIG_FILE}: [{name}] unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; known keys are {', '.join(known)}"
        )
    for key, value in raw.items():
        default = known[key].default
        expected = float if isinstance(default, float) else type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            raw = {**raw, key: value}
        if isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf; a limit of nan would silently turn the limit off.
            raise ConfigError(
                f"{CONFIG_FILE}: [{name}] {key} must be a finite number, not {value}; "
                f"write it like the default: {key} = {_toml_value(default)}"
            )
        if not isinstance(value, expected) or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(
                f"{CONFIG_FILE}: [{name}] {key} must be {_TOML_KINDS[expected]}, "
                f"not {_GIVEN_KINDS.get(type(value)) or _TOML_KINDS.get(type(value), 'that')}; "
                f"{_suggestion(key, value, expected, default)}"
            )
    return cls(**raw)


def _suggestion(key: str, value: object, expected: type, default: object) -> str:
    """How to write ``key``: the value given in the kind expected when it converts
    (``2026`` in quotes, ``"5"`` without, ``9.0`` as ``9``), and the default."""
    fixed: object = None
    if expected is str and isinstance(value, int | float) and not isinstance(value, bool):
        fixed = _toml_value(value)
    elif expected in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = expected(value.strip())
            fixed = number if math.isfinite(number) else None
    elif expected is int and isinstance(value, float) and value.is_integer():
        fixed = int(value)
    like_default = f"{key} = {_toml_value(default)}"
    if fixed is None:
        return f"write it like the default: {like_default}"
    if fixed == default:
        return f"write {like_default}"
    return (
        f"{_AS_KIND[expected]} that is {key} = {_toml_value(fixed)}; the default is {like_default}"
    )


_AS_KIND: dict[type, str] = {str: "in quotes", int: "as a whole number", float: "as a number"}

# What a TOML value of each Python type is called, as an editor writing the file sees it.
_TOML_KINDS: dict[type, str] = {
    bool: "true or false",
    int: "a whole number (no quotes)",
    float: "a number (no quotes)",
    str: "text in quotes",
    list: "a list",
    dict: "a table",
}


# What a value given is called where it differs from the name of a kind expected.
_GIVEN_KINDS: dict[type, str] = {
    float: "a decimal number",
    datetime: "a date and time",
    date: "a date",
    time: "a time of day",
}


def _toml_value(value: object) -> str:
    """``value`` as it is written in TOML (the defaults are booleans, numbers and strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    return str(value)


def _validate(settings: Settings) -> None:
    sections = {name: getattr(settings, name) for name in _SECTIONS}
    checks.check_required(sections, settings.topics)
    checks.check_site(settings.site)
    checks.check_text(sections, settings.topics, settings.site)
    checks.check_sender(settings.sender)
    checks.check_send(settings.send)
    checks.check_feeds(settings.feeds)
    checks.check_smtp(settings.smtp)
    checks.check_ledger(settings.ledger, settings.paths)
    checks.check_bounces(settings.bounces)
    checks.check_schedule(settings.schedule)


def secret_key(where: Settings | Paths) -> str:
    """The key that signs links: the environment's, else one generated once into state/.

    Given the settings of a project whose ledger is PostgreSQL, the environment must supply
    it: workers on other machines sign links that the web server checks, so each machine
    generating its own key would break them. Raises ``ConfigError`` then.
    """
    from_env = os.environ.get("PIPELINE_SECRET_KEY", "").strip()
    if from_env:
        return from_env
    if isinstance(where, Settings):
        if isinstance(where.ledger_location(), str):
            # A site moving from SQLite already signed links (and keyed the hashes of
            # forgotten addresses) with its generated key: a new one would break them all.
            existing = where.paths.state / "secret_key"
            source = (
                f"the key in {existing} (the one this site has signed with so far)"
                if existing.exists()
                else "the output of `openssl rand -base64 32`"
            )
            raise ConfigError(
                "PIPELINE_SECRET_KEY is not set: with a PostgreSQL ledger every machine must "
                "sign links with the same key; set the same PIPELINE_SECRET_KEY everywhere "
                f"(for example {source})"
            )
        where = where.paths
    key_file = where.state / "secret_key"
    if key_file.exists():
        return key_file.read_text(encoding="utf-8").strip()
    key = secrets.token_urlsafe(32)
    write_atomic(key_file, key.encode("ascii"), mode=0o600)
    return key
