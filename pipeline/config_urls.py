"""The URLs in the settings: the SMTP server's (``smtp://``, ``smtps://``) parsed into an
``SmtpTarget``, the ledger's (``postgresql://``, ``sqlite:``) into a file or a server, the
bounce mailbox's (``imaps://``) checked, and any of them with its password hidden for
messages and logs.

Raises ``ConfigError`` naming the URL (its password redacted) and the form to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.config_sections import Paths
from pipeline.errors import ConfigError

__all__ = [
    "SmtpTarget",
    "check_mailbox_url",
    "parse_ledger_url",
    "parse_smtp_url",
    "redact_url",
]


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


def parse_smtp_url(url: str, password: str | None) -> SmtpTarget:
    """``smtp://[user[:pass]@]host[:port][?starttls=true]`` or ``smtps://…`` (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(
            f"SMTP URL {redact_url(url)!r} is not valid; write smtp://host:port, "
            "smtp://host:port?starttls=true or smtps://host:port"
        )
    use_tls = parts.scheme == "smtps"
    query = parse_qs(parts.query)
    start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    try:
        port = parts.port or (465 if use_tls else 25)
    except ValueError as exc:
        raise ConfigError(
            f"SMTP URL {redact_url(url)!r} has an invalid port; {_PORT}, such as "
            "smtp://relay.example.org:587"
        ) from exc
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
        if "," not in parts.netloc and not _port_ok(url):  # libpq's host1,host2 lists aside
            raise ConfigError(
                f"ledger URL {redact_url(url)!r} has an invalid port; {_PORT}, such as "
                "postgresql://user@host:5432/db"
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


_PORT = "a port is a number from 1 to 65535"


def _port_ok(url: str) -> bool:
    try:
        port = urlsplit(url).port  # raises on a port that is not a number or out of range
    except ValueError:
        return False
    return port is None or port > 0


def check_mailbox_url(spec: str) -> None:
    """A bounce source written as a URL (``scheme://``) is ``imap://`` or ``imaps://`` with a
    valid port; a path (or ``maildir:``/``mbox:`` and a path) is left to the mailbox reader.

    Raises ``ConfigError`` naming the source (its password redacted) and the forms to write.
    """
    spec = spec.strip()
    scheme = urlsplit(spec).scheme.lower()
    if "://" not in spec or scheme in ("maildir", "mbox"):
        return
    if scheme not in ("imap", "imaps"):
        raise ConfigError(
            f"bounce source {redact_url(spec)!r} is not a mailbox this reads; give a Maildir "
            "or mbox path, or imaps://user@host/INBOX"
        )
    if not _port_ok(spec):
        raise ConfigError(
            f"bounce source {redact_url(spec)!r} has an invalid port; {_PORT}, such as "
            "imaps://user@host:993/INBOX"
        )


def redact_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
