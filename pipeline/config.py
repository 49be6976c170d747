"""Typed settings: ``pipeline.toml`` at the project root, secrets from the environment.

Secrets never live in the file: ``PIPELINE_SMTP_URL`` overrides ``[smtp] url``,
``PIPELINE_DATABASE_URL`` overrides ``[ledger] url``,
``PIPELINE_SMTP_PASSWORD`` supplies the SMTP password and ``PIPELINE_SECRET_KEY`` the key
that signs unsubscribe links (a random key is generated once into ``state/`` otherwise).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.atomic import write_atomic
from pipeline.errors import ConfigError
from pipeline.text_rules import title_problems, unsafe_characters, valid_url

__all__ = [
    "CONFIG_FILE",
    "BounceSettings",
    "DigestSettings",
    "DkimSettings",
    "FeedSettings",
    "LedgerSettings",
    "Paths",
    "ScheduleSettings",
    "SendSettings",
    "SenderSettings",
    "Settings",
    "SiteSettings",
    "SmtpSettings",
    "SmtpTarget",
    "load_project",
    "load_settings",
    "parse_ledger_url",
    "parse_smtp_url",
    "redact_url",
    "require_project",
    "schedule_problems",
    "secret_key",
]

CONFIG_FILE = "pipeline.toml"


@dataclass(frozen=True, slots=True)
class SiteSettings:
    title: str = "Therapy News"
    base_url: str = "http://localhost:8000/"
    description: str = "News about therapies and their clinical trials."
    language: str = "en"
    author: str = "The editors"


@dataclass(frozen=True, slots=True)
class SenderSettings:
    name: str = "Therapy News"
    address: str = "newsletter@example.org"
    postal_address: str = "1 Example Street, Springfield, USA"
    reply_to: str = ""


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    url: str = ""
    timeout: float = 30.0  # seconds to wait for each reply
    local_hostname: str = ""
    connect_timeout: float = 10.0  # seconds to open a connection (TLS and login included)


@dataclass(frozen=True, slots=True)
class SendSettings:
    connections: int = 4
    rate_per_second: float = 0.0
    max_attempts: int = 5
    confirm_above: int = 100  # on a terminal, publish asks before emailing more people
    rate_per_hour: int = 0  # 0: no hourly cap
    retry_after: float = 60.0  # seconds before the first retry; doubles with each attempt
    processes: int = 0  # sending processes; 0: one, or one per core for large lists
    deliver: str = "publish"  # "publish": publish sends; "workers": `pipeline worker` does
    workers: int = 1  # `pipeline worker`s sharing the rate limits; each takes 1/workers
    lease: float = 120.0  # seconds a claim holds rows; a dead worker's rows return after it


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """Where the ledger lives: empty means the SQLite file ``state/pipeline.db``."""

    url: str = ""  # postgresql://user@host/db or sqlite:///path; the environment's wins


@dataclass(frozen=True, slots=True)
class FeedSettings:
    max_entries: int = 50
    websub_hub: str = ""  # a WebSub hub's URL: advertised in every feed and pinged on change


@dataclass(frozen=True, slots=True)
class DigestSettings:
    subject: str = "{site}: {first}{more}"
    # The daily, weekly and monthly digests: {site}, {frequency}, {period}, {count}
    periodic_subject: str = "Your {frequency} digest, {period}"


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """When the periodic digests go out, in ``timezone`` (an IANA name): daily at ``hour``,
    weekly on ``weekday`` at ``hour``, monthly on ``day_of_month`` at ``hour``."""

    hour: int = 8
    weekday: str = "monday"
    day_of_month: int = 1
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class DkimSettings:
    """DKIM signing: on when ``selector`` is set; the key from PIPELINE_DKIM_KEY or key_file."""

    selector: str = ""
    domain: str = ""  # empty: the sender's domain
    key_file: str = ""  # path to the PEM key, relative to the root; the env var wins
    # Ed25519 co-signing (RFC 8463): on when ed25519_selector is set; the key from
    # PIPELINE_DKIM_ED25519_KEY or ed25519_key_file.
    ed25519_selector: str = ""
    ed25519_key_file: str = ""


@dataclass(frozen=True, slots=True)
class BounceSettings:
    """``[bounces]``: bounce scores (Mailman 3 style) and the in-run circuit breaker; where
    late bounces arrive (``source``) and the VERP return path.

    A hard bounce (the address does not exist) adds ``hard_score``, a soft one (mailbox
    full, message too large, any 4xx about the mailbox) ``soft_score``; each UTC day counts
    once, by its worst bounce. A score with no bounce for ``stale_after_days`` starts again
    from zero, a delivered message clears it, and reaching ``threshold`` suppresses the
    address. ``soft_score`` must stay below ``threshold``: a soft bounce alone never
    suppresses. The breaker stops a run when ``breaker_recipients`` different recipients in
    a row, in at least ``breaker_domains`` domains, got the same refusal.
    """

    hard_score: float = 5.0
    soft_score: float = 1.0
    threshold: float = 5.0
    stale_after_days: int = 7
    breaker_recipients: int = 10
    breaker_domains: int = 3

    # VERP: the envelope sender becomes local+<token>@domain; empty: the From address.
    return_path: str = ""
    # What `pipeline bounces` reads: a Maildir or mbox path (relative to the root) or an
    # imap:// / imaps:// URL; the password comes from PIPELINE_BOUNCES_PASSWORD.
    source: str = "state/bounces"
    processed_folder: str = "Processed"  # where handled mail is moved (Maildir, IMAP)
    webhook_max_age: float = 300.0  # seconds a signed webhook request stays acceptable


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and how to connect, parsed from an ``smtp://`` or ``smtps://`` URL."""

    host: str
    port: int
    use_tls: bool
    start_tls: bool
    username: str | None
    password: str | None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Paths:
    root: Path

    @property
    def articles(self) -> Path:
        return self.root / "articles"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def subscribers(self) -> Path:
        return self.root / "subscribers"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def public(self) -> Path:
        return self.root / "public"

    @property
    def ledger(self) -> Path:
        return self.state / "pipeline.db"

    @property
    def maildir(self) -> Path:
        return self.state / "maildir"


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
    if not isinstance(topics, dict) or not all(isinstance(v, str) for v in topics.values()):
        raise ConfigError(f'{CONFIG_FILE}: [topics]: write each topic as slug = "Label"')
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
        if not isinstance(value, expected) or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(
                f"{CONFIG_FILE}: [{name}] {key} must be {_TOML_KINDS[expected]}, "
                f"not {_TOML_KINDS.get(type(value), type(value).__name__)}; "
                f"write it like the default: {key} = {_toml_value(default)}"
            )
    return cls(**raw)


# What a TOML value of each Python type is called, as an editor writing the file sees it.
_TOML_KINDS: dict[type, str] = {
    bool: "true or false",
    int: "a whole number (no quotes)",
    float: "a number (no quotes)",
    str: "text in quotes",
    list: "a list",
    dict: "a table",
}


def _toml_value(value: object) -> str:
    """``value`` as it is written in TOML (the defaults are booleans, numbers and strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    return str(value)


def _validate(settings: Settings) -> None:
    _validate_http_url("[site] base_url", settings.site.base_url, "https://news.example.org/")
    _check_text(settings)
    if "@" not in settings.sender.address:
        raise ConfigError(f"{CONFIG_FILE}: [sender] address must be an email address")
    if settings.send.connections < 1:
        raise ConfigError(f"{CONFIG_FILE}: [send] connections must be at least 1")
    if settings.send.confirm_above < 0:
        raise ConfigError(f"{CONFIG_FILE}: [send] confirm_above must be 0 or more")
    send = settings.send
    if send.rate_per_second < 0 or send.rate_per_hour < 0 or send.retry_after < 0:
        raise ConfigError(
            f"{CONFIG_FILE}: [send] rate_per_second, rate_per_hour and retry_after "
            "must be 0 or more"
        )
    if send.max_attempts < 1 or send.processes < 0:
        raise ConfigError(
            f"{CONFIG_FILE}: [send] max_attempts must be at least 1, processes 0 or more"
        )
    if send.deliver not in ("publish", "workers"):
        raise ConfigError(
            f'{CONFIG_FILE}: [send] deliver must be "publish" (publish sends the digest) or '
            f'"workers" (`pipeline worker` sends it), not {send.deliver!r}'
        )
    if send.workers < 1:
        raise ConfigError(f"{CONFIG_FILE}: [send] workers must be at least 1")
    if send.lease < 5:
        raise ConfigError(
            f"{CONFIG_FILE}: [send] lease must be at least 5 seconds (it is renewed every "
            "third of it while a worker runs)"
        )
    if settings.feeds.max_entries < 1:
        raise ConfigError(f"{CONFIG_FILE}: [feeds] max_entries must be at least 1")
    if settings.feeds.websub_hub:
        _validate_http_url(
            "[feeds] websub_hub", settings.feeds.websub_hub, "https://pubsubhubbub.appspot.com/"
        )
    if settings.smtp.url:
        parse_smtp_url(settings.smtp.url, None)
    parse_ledger_url(settings.ledger.url, settings.paths)
    if urlsplit(settings.ledger.url).password is not None:
        # pipeline.toml is committed with the project; as for [bounces] source, a secret in it
        # would travel with every copy of the repository.
        raise ConfigError(
            f"{CONFIG_FILE}: [ledger] url: keep the password out of the file; remove it from "
            "the URL and set PIPELINE_DATABASE_URL (or PGPASSWORD, or ~/.pgpass)"
        )
    _validate_bounces(settings.bounces)
    _validate_return_path(settings.bounces)
    schedule = schedule_problems(settings.schedule)
    if schedule:
        raise ConfigError(f"{CONFIG_FILE}: [schedule] " + "; ".join(schedule))


def _validate_http_url(setting: str, url: str, example: str) -> None:
    # Feeds and pages carry these URLs in hrefs, so each must be one a feed may carry
    # (RFC 3986) and one urllib can parse: a bad bracket or port is refused here, not
    # found as a traceback later.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{CONFIG_FILE}: {setting} {url!r} is not an absolute http(s) URL; "
            f"write one such as {example}"
        )
    if url != valid_url(url):
        raise ConfigError(
            f"{CONFIG_FILE}: {setting} {url!r} holds characters a URL may not; "
            f"write it percent-encoded: {valid_url(url)}"
        )


def _validate_bounces(bounces: BounceSettings) -> None:
    if not 0 < bounces.soft_score < bounces.threshold or bounces.hard_score <= 0:
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] needs 0 < soft_score < threshold and hard_score > 0 "
            f"(a soft bounce alone must never suppress); found soft_score = "
            f"{bounces.soft_score}, hard_score = {bounces.hard_score}, "
            f"threshold = {bounces.threshold}"
        )
    if bounces.stale_after_days < 1:
        raise ConfigError(f"{CONFIG_FILE}: [bounces] stale_after_days must be at least 1")
    if bounces.breaker_recipients < 2 or bounces.breaker_domains < 1:
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] breaker_recipients must be at least 2 and "
            "breaker_domains at least 1"
        )


def parse_ledger_url(url: str, paths: Paths) -> Path | str:
    """``""`` (``state/pipeline.db``), ``sqlite:///abs.db`` or ``sqlite:rel.db`` (a path,
    relative to the project), or ``postgresql://user[:pass]@host[:port]/db`` (kept as is)."""
    if not url:
        return paths.ledger
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError(
                f"ledger URL {redact_url(url)!r} names no server; write postgresql://user@host/db"
            )
        return url
    if parts.scheme == "sqlite" and parts.path:
        path = Path(unquote(parts.path))
        return path if path.is_absolute() else paths.root / path
    raise ConfigError(
        f"ledger URL {redact_url(url)!r} is not valid; write postgresql://user@host/db "
        "(PIPELINE_DATABASE_URL or [ledger] url), sqlite:///path/to/file.db, or nothing "
        "for state/pipeline.db"
    )


def redact_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def schedule_problems(schedule: ScheduleSettings) -> list[str]:
    """What is wrong with ``[schedule]``, one phrase per key, each saying the fix."""
    problems = []
    if not 0 <= schedule.hour <= 23:
        problems.append(f"hour {schedule.hour} is not an hour of the day; use 0 to 23")
    if schedule.weekday.lower() not in WEEKDAYS:
        problems.append(
            f"weekday {schedule.weekday!r} is not a day of the week; use one of "
            + ", ".join(WEEKDAYS)
        )
    if not 1 <= schedule.day_of_month <= 28:
        problems.append(
            f"day_of_month {schedule.day_of_month} is not 1 to 28 (every month has those days)"
        )
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            f"timezone {schedule.timezone!r} is not a known IANA time zone; "
            'write one such as "Europe/Paris" or "America/Chicago"'
        )
    return problems


def _validate_return_path(bounces: BounceSettings) -> None:
    # The token takes 1 + 48 characters of the 64 a local part may have (RFC 5321).
    local, at, domain = bounces.return_path.rpartition("@")
    if bounces.return_path and (not at or not local or "." not in domain or "+" in local):
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] return_path {bounces.return_path!r} must be a plain "
            "address such as bounces@news.example.org (no '+': the token goes there)"
        )
    if len(local) > 15:
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] return_path: the part before '@' may have at most 15 "
            "characters, since the token added to it must fit the 64 a mailbox name may have; "
            "use a shorter one such as bounces@"
        )
    source = urlsplit(bounces.source)
    if source.scheme in ("imap", "imaps") and source.password is not None:
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] source: keep the password out of the file; remove it "
            "from the URL and set PIPELINE_BOUNCES_PASSWORD"
        )
    if bounces.webhook_max_age <= 0 or not bounces.processed_folder.strip():
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] webhook_max_age must be more than 0 and "
            "processed_folder not empty"
        )


def parse_smtp_url(url: str, password: str | None) -> SmtpTarget:
    """``smtp://[user[:pass]@]host[:port][?starttls=true]`` or ``smtps://…`` (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(
            f"SMTP URL {url!r} is not valid; write smtp://host:port, "
            "smtp://host:port?starttls=true or smtps://host:port"
        )
    use_tls = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    try:
        port = parts.port or (465 if use_tls else 25)
    except ValueError as exc:
        raise ConfigError(f"SMTP URL {url!r} has an invalid port") from exc
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        use_tls=use_tls,
        start_tls=start_tls and not use_tls,
        username=unquote(parts.username) if parts.username else None,
        password=password
        if password is not None
        else (unquote(parts.password) if parts.password else None),
    )


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


def _check_text(settings: Settings) -> None:
    """Text settings that reach feeds: no character XML cannot carry; names are plain text."""
    texts = [
        (f"[{section}] {f.name}", getattr(getattr(settings, section), f.name))
        for section, cls in _SECTIONS.items()
        for f in fields(cls)
    ]
    labels = [(f"[topics] {slug}", label) for slug, label in settings.topics.items()]
    for slug in settings.topics:
        if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", slug):
            # It becomes a URL path (topics/<slug>/) and the value articles list.
            raise ConfigError(
                f"{CONFIG_FILE}: [topics] {slug!r} is not a slug; use lower-case letters, "
                'digits and hyphens, e.g. lung-disease = "Lung disease"'
            )
    for where, value in [*texts, *labels]:
        if isinstance(value, str) and unsafe_characters(value):
            raise ConfigError(
                f"{CONFIG_FILE}: {where} contains {', '.join(unsafe_characters(value))}, "
                "which feeds cannot carry; delete it"
            )
    site = settings.site
    names = [
        ("[site] title", site.title),
        ("[site] author", site.author),
        ("[site] description", site.description),  # Atom subtitle: text, so the same rule
    ]
    for where, value in [*names, *labels]:
        for problem in title_problems(value):
            raise ConfigError(f"{CONFIG_FILE}: {where} {problem}")
