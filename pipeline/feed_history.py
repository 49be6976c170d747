"""A feed's history over time: its date never goes back, and older entries stay reachable.

* **The feed's date** (Atom ``<updated>``, RSS ``<lastBuildDate>``) is its newest entry's, so
  the same entries give the same bytes. When the feed changes without its newest entry
  moving forward (an article withdrawn, an entry corrected quietly) that date would stand
  still or go back, and readers that poll by date would miss the change; then the feed
  takes the publish's own time instead. The ledger keeps, per feed scope, a hash of the
  feed as rendered with its newest entry's date and the date it was given (``FeedDate``).
* **Archives (RFC 5005 section 4)**: a subscription feed holds the newest
  ``[feeds] max_entries`` entries; every older entry is in an archive document
  ``<scope>archive/<n>/atom.xml`` (and ``rss.xml``), oldest first, ``max_entries`` per page.
  Page 1 holds the oldest entries, so a full page only changes when one of its own entries
  is edited or withdrawn: pages are stable and written only when their bytes change. Each
  page links the one before it (``prev-archive``) and the subscription feed (``current``);
  not the next one, which would rewrite a full page whenever a new page opens.
  Pages follow the ``published`` order, so an article published late with a date older
  than archived entries (an import of old articles) shifts the pages after its place once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.models import Entry
from pipeline.store.records import FeedDate

__all__ = ["ArchivePage", "FeedDate", "archive_pages", "feed_date"]


def feed_date(
    newest: datetime, body_hash: str, previous: FeedDate | None, now: datetime
) -> datetime:
    """The date a feed gets: its newest entry's, never earlier than the date it had.

    ``newest`` is the newest entry's ``updated``; ``body_hash`` the hash of the feed rendered
    with that date; ``previous`` what the ledger recorded; ``now`` the publish's time.
    """
    if previous is None:
        return newest
    if previous.body_hash == body_hash or newest > previous.updated:
        return max(newest, previous.updated)
    # Changed, but the newest entry did not move the date: the change itself does.
    moment = now.replace(microsecond=0)
    return moment if moment > previous.updated else previous.updated + timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class ArchivePage:
    """One RFC 5005 archive document: its number (1 = oldest) and entries, newest first."""

    number: int
    entries: tuple[Entry, ...]


def archive_pages(older: Sequence[Entry], size: int) -> list[ArchivePage]:
    """Entries beyond a feed's cap (``older``, newest first) cut into pages of ``size``.

    Pages are cut from the oldest entry on, so adding entries to the feed only ever fills
    the newest page or opens a new one.
    """
    oldest_first = list(reversed(older))
    chunks = [oldest_first[i : i + size] for i in range(0, len(oldest_first), size)]
    return [
        ArchivePage(number, tuple(reversed(chunk))) for number, chunk in enumerate(chunks, start=1)
    ]
