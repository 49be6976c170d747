"""The rules each setting must satisfy beyond its type, one section at a time, each broken
rule a ``ConfigError`` naming ``pipeline.toml``, the section and key, and the fix.

:func:`pipeline.config.load_settings` calls them in order after reading the file;
``schedule_problems`` also serves ``pipeline check``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.config_sections import (
    CONFIG_FILE,
    WEEKDAYS,
    BounceSettings,
    FeedSettings,
    LedgerSettings,
    Paths,
    ScheduleSettings,
    SenderSettings,
    SendSettings,
    SiteSettings,
    SmtpSettings,
)
from pipeline.config_urls import check_mailbox_url, parse_ledger_url, parse_smtp_url
from pipeline.dns_names import why_not_dns_name
from pipeline.errors import ConfigError
from pipeline.text_rules import title_problems, unsafe_characters, valid_url

__all__ = [
    "check_bounces",
    "check_feeds",
    "check_ledger",
    "check_required",
    "check_schedule",
    "check_send",
    "check_sender",
    "check_site",
    "check_smtp",
    "check_text",
    "schedule_problems",
]


# Settings that must hold text (an empty one would print an empty site name, From name,
# postal address or subject): (section, key) -> an example of a value to write.
REQUIRED = {
    ("site", "title"): 'title = "Therapy News"',
    ("site", "base_url"): 'base_url = "https://news.example.org/"',
    ("site", "description"): 'description = "Plain-language news about therapies."',
    ("site", "language"): 'language = "en"',
    ("site", "author"): 'author = "The editors"',
    ("sender", "name"): 'name = "Therapy News"',
    ("sender", "address"): 'address = "newsletter@example.org"',
    # The law (CAN-SPAM, and most others) wants a postal address in every newsletter.
    ("sender", "postal_address"): 'postal_address = "1 Example Street, Springfield, USA"',
    ("digest", "subject"): 'subject = "{site}: {first}{more}"',
    ("digest", "periodic_subject"): 'periodic_subject = "Your {frequency} digest, {period}"',
    ("schedule", "weekday"): 'weekday = "monday"',
    ("schedule", "timezone"): 'timezone = "UTC"',
    ("bounces", "source"): 'source = "state/bounces"',
    ("bounces", "processed_folder"): 'processed_folder = "Processed"',
}


def check_required(sections: Mapping[str, Any], topics: Mapping[str, str]) -> None:
    """Every ``REQUIRED`` setting and every ``[topics]`` label holds more than blanks.

    Raises ``ConfigError`` naming the first empty one, its section and key, and an example;
    a key left out takes its default, so only a value written empty is refused.
    """
    for (name, key), example in REQUIRED.items():
        value = getattr(sections[name], key)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(
                f"{CONFIG_FILE}: [{name}] {key} is empty; write a value, e.g. {example}, "
                "or delete the line for the default"
            )
    for slug, label in topics.items():
        if not label.strip():
            raise ConfigError(
                f"{CONFIG_FILE}: [topics] {slug} has an empty label; name it, e.g. "
                f'{slug} = "{slug.replace("-", " ").capitalize()}"'
            )


def check_site(site: SiteSettings) -> None:
    """``[site] base_url`` is an absolute http(s) URL a feed may carry."""
    _validate_http_url("[site] base_url", site.base_url, "https://news.example.org/")


def check_sender(sender: SenderSettings) -> None:
    """``[sender] address`` is an email address."""
    if "@" not in sender.address:
        raise ConfigError(f"{CONFIG_FILE}: [sender] address must be an email address")


def check_send(send: SendSettings) -> None:
    """``[send]``: connections, counts, rates (per second, per hour), seconds and the mode."""
    if send.connections < 1:
        raise ConfigError(f"{CONFIG_FILE}: [send] connections must be at least 1")
    if send.confirm_above < 0:
        raise ConfigError(f"{CONFIG_FILE}: [send] confirm_above must be 0 or more")
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


def check_feeds(feeds: FeedSettings) -> None:
    """``[feeds]``: at least one entry; a WebSub hub, if any, an absolute http(s) URL."""
    if feeds.max_entries < 1:
        raise ConfigError(f"{CONFIG_FILE}: [feeds] max_entries must be at least 1")
    if feeds.websub_hub:
        _validate_http_url(
            "[feeds] websub_hub", feeds.websub_hub, "https://pubsubhubbub.appspot.com/"
        )


def check_smtp(smtp: SmtpSettings) -> None:
    """``[smtp] url``, if set, parses as an SMTP URL; ``local_hostname``, if set, is what
    EHLO may carry (RFC 5321, 4.1.1.1): a domain name or an address literal ``[192.0.2.1]``."""
    if smtp.url:
        parse_smtp_url(smtp.url, None)
    name = smtp.local_hostname
    if name and (why := why_not_dns_name(name)) and not _address_literal(name):
        raise ConfigError(
            f"{CONFIG_FILE}: [smtp] local_hostname {name!r} is not a host name ({why}); write one "
            'such as local_hostname = "mail.example.org", or delete the line to use this '
            "machine's name"
        )


def _address_literal(name: str) -> bool:
    if not (name.startswith("[") and name.endswith("]")):
        return False
    inner = name[1:-1]
    inner = inner[5:] if inner.lower().startswith("ipv6:") else inner
    try:
        ipaddress.ip_address(inner)
    except ValueError:
        return False
    return True


def check_ledger(ledger: LedgerSettings, paths: Paths) -> None:
    """``[ledger] url`` parses as a ledger URL and holds no password."""
    parse_ledger_url(ledger.url, paths)
    if urlsplit(ledger.url).password is not None:
        # pipeline.toml is committed with the project; as for [bounces] source, a secret in it
        # would travel with every copy of the repository.
        raise ConfigError(
            f"{CONFIG_FILE}: [ledger] url: keep the password out of the file; remove it from "
            "the URL and set PIPELINE_DATABASE_URL (or PGPASSWORD, or ~/.pgpass)"
        )


def check_bounces(bounces: BounceSettings) -> None:
    """``[bounces]``: the scores and breaker, then the return path, source and webhooks."""
    _validate_bounces(bounces)
    _validate_return_path(bounces)


def check_schedule(schedule: ScheduleSettings) -> None:
    """``[schedule]``: every problem ``schedule_problems`` finds, in one error."""
    problems = schedule_problems(schedule)
    if problems:
        raise ConfigError(f"{CONFIG_FILE}: [schedule] " + "; ".join(problems))


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
    try:
        check_mailbox_url(bounces.source)
    except ConfigError as exc:
        raise ConfigError(f"{CONFIG_FILE}: [bounces] source: {exc}") from exc
    if bounces.webhook_max_age <= 0 or not bounces.processed_folder.strip():
        raise ConfigError(
            f"{CONFIG_FILE}: [bounces] webhook_max_age must be more than 0 and "
            "processed_folder not empty"
        )


def check_text(sections: Mapping[str, Any], topics: Mapping[str, str], site: SiteSettings) -> None:
    """Text settings that reach feeds: no character XML cannot carry; names are plain text.

    ``sections`` maps each table's name to its value (``[site]`` to ``SiteSettings``, …).
    """
    texts = [
        (f"[{name}] {f.name}", getattr(section, f.name))
        for name, section in sections.items()
        for f in fields(section)
    ]
    labels = [(f"[topics] {slug}", label) for slug, label in topics.items()]
    for slug in topics:
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
    names = [
        ("[site] title", site.title),
        ("[site] author", site.author),
        ("[site] description", site.description),  # Atom subtitle: text, so the same rule
    ]
    for where, value in [*names, *labels]:
        for problem in title_problems(value):
            raise ConfigError(f"{CONFIG_FILE}: {where} {problem}")
