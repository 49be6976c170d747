"""WebSub (W3C Recommendation, 2018): tell the hub which feeds changed, without ever
holding up or failing a publish.

Every feed advertises the hub and itself (``rel="hub"``, ``rel="self"``, see feeds.py).
After a publish has written its files and recorded the run, ``notify_hub`` sends the hub
one publish ping per changed feed (``hub.mode=publish&hub.url=<feed>``, form-encoded, as
PubSubHubbub 0.4 and every public hub take it): only the subscription feeds whose bytes
changed, never archive pages (they are stable) and nothing at all when nothing changed.

Delivery: each ping is tried up to ``attempts`` times (0.5 s, then 1 s apart) with a
``timeout`` per try, and the whole round stops after ``budget`` seconds whatever the hub
does; once one ping has failed every try, the rest are not tried. A ping that failed is recorded in the ledger and sent again, with that run's
own, at the next publish (``websub_pending``): a hub that is down delays the ping, never
the publish, and never loses it.

Owed pings are owed to the hub now configured, for the feeds the site now has
(``owed_pings``): with no ``[feeds] websub_hub`` none is owed (the next publish drops them; a
hub added later fetches each feed when a reader subscribes), and a ping for a feed URL that is
no longer under ``[site] base_url`` is dropped too.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin

from pipeline.feeds import FEED_FORMATS

__all__ = ["WebSubReport", "changed_feed_urls", "notify_hub", "owed_pings"]

_USER_AGENT = "therapy-news-pipeline (WebSub publisher)"


@dataclass(frozen=True, slots=True)
class WebSubReport:
    """What one round of pings did: feed URLs the hub accepted, and those still owed."""

    notified: tuple[str, ...]
    pending: dict[str, str]  # feed URL -> the last error, to retry at the next publish


def changed_feed_urls(written: Iterable[str], base_url: str) -> list[str]:
    """Absolute URLs of the subscription feeds among ``written`` (paths under public/)."""
    names = {name for name, _, _ in FEED_FORMATS}
    return sorted(
        urljoin(base_url, path)
        for path in written
        if path.rsplit("/", 1)[-1] in names and "archive/" not in path
    )


def owed_pings(recorded: Iterable[str], hub: str, base_url: str) -> tuple[list[str], list[str]]:
    """``(owed, dropped)``: the recorded feed URLs still owed a ping to ``hub`` (none without
    a hub, none outside ``base_url``), and the rest, no longer owed to anyone."""
    owed: list[str] = []
    dropped: list[str] = []
    for url in recorded:
        (owed if hub and url.startswith(base_url) else dropped).append(url)
    return owed, dropped


def notify_hub(
    hub: str,
    topics: Sequence[str],
    *,
    timeout: float = 5.0,
    attempts: int = 3,
    budget: float = 15.0,
) -> WebSubReport:
    """Ping ``hub`` once per URL in ``topics``; never raises for anything the hub does.

    ``timeout`` and ``budget`` are seconds: per try, and for the whole round.
    """
    deadline = time.monotonic() + budget
    notified: list[str] = []
    pending: dict[str, str] = {}
    for topic in topics:
        error = ""
        for attempt in range(attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                error = error or "no time left in this publish"
                break
            error = _ping(hub, topic, min(timeout, left))
            if not error:
                break
            if attempt + 1 < attempts:
                time.sleep(min(0.5 * 2**attempt, max(0.0, deadline - time.monotonic())))
        if error:
            # A hub that failed every try is down for now: owe it the rest without waiting.
            pending.update((t, error) for t in topics[len(notified) + len(pending) :])
            break
        else:
            notified.append(topic)
    return WebSubReport(tuple(notified), pending)


def _ping(hub: str, topic: str, timeout: float) -> str:
    """One publish ping; "" when the hub answered 2xx, else what went wrong."""
    body = urlencode({"hub.mode": "publish", "hub.url": topic}).encode("ascii")
    request = urllib.request.Request(
        hub,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": _USER_AGENT,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"the hub answered {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException: a hub that answers something other than HTTP (BadStatusLine...)
        reason = getattr(exc, "reason", exc)
        return f"cannot reach the hub: {reason}"
    return "" if 200 <= status < 300 else f"the hub answered {status}"
