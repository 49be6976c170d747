"""The typed values ``pipeline.toml`` is made of: one frozen dataclass per table ([site],
[sender], [smtp], [send], [ledger], [feeds], [digest], [schedule], [dkim], [bounces]), each
field's default the value used when the file leaves it out, and the project's folders.

Pure values: reading and checking the file is :mod:`pipeline.config`'s job, the rules each
value must satisfy :mod:`pipeline.config_checks`'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

__all__ = [
    "CONFIG_FILE",
    "WEEKDAYS",
    "BounceSettings",
    "DigestSettings",
    "DkimSettings",
    "FeedSettings",
    "LedgerSettings",
    "Paths",
    "ScheduleSettings",
    "SendSettings",
    "SenderSettings",
    "SiteSettings",
    "SmtpSettings",
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
