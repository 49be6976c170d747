"""Compare the articles on disk with the ledger: what is new, updated, renamed, withdrawn.

How an entry gets its id (the id feed readers use to tell entries apart):

* An article without an ``id`` field gets one minted at its first publication,
  ``tag:<site host>,<published date>:articles/<slug>`` (RFC 4151), and the ledger keeps it.
  From then on the ledger is the source of truth: editing the title, the date or the body,
  or moving the site to another host, never changes it.
* An article with an explicit ``id`` (any absolute IRI) uses it. This is how a file is
  renamed without readers seeing a new entry: copy the id the feeds show into the front
  matter, then rename the file. The ledger finds the entry by id, keeps its id and its
  ``published`` date, and moves it to the new slug.
* An id never changes once published: giving a published article a different ``id``, or
  two files the same one, is a problem reported with the file and the fix.
* An id is never given to a different article. A deleted or drafted article that comes back
  under its file name *with the same ``published`` date* is the same entry (an update of
  it, or a silent restore when its content is unchanged). With another ``published`` date
  it is a different article: it gets a fresh id, and the old one is retired in the ledger
  (``retired`` here) so that no minted id ever repeats it; when the minted id is taken,
  ``/2``, ``/3``... is appended.

What counts as an update is a change of ``Article.content_hash``, a hash of what readers
see (``articles._canonical_hash``). Ledgers written before that hash existed hold the
former one (``Article.former_hash``): a match on it is no change, and the new hash is
recorded silently. ``minor_edit: true`` records a changed article without moving its
``updated`` date or announcing it. An entry's ``updated`` never goes back.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from datetime import datetime
from urllib.parse import urlsplit

from pipeline.articles import article_url
from pipeline.errors import ContentError, Problem
from pipeline.models import Article, Changes, Entry
from pipeline.store import KnownArticle

__all__ = ["detect_changes", "mint_entry_id"]


def mint_entry_id(base_url: str, article: Article, taken: AbstractSet[str] = frozenset()) -> str:
    """The article's explicit id, or a ``tag:`` URI (RFC 4151) minted from host, date, slug.

    It uses the site's host and the first publication date, not the URL, so moving the site
    or its URL scheme later does not make readers see every entry again. A minted id in
    ``taken`` (held or once held by another article) gets ``/2``, ``/3``... appended.
    """
    if article.explicit_id:
        return article.explicit_id
    host = urlsplit(base_url).hostname or "localhost"
    minted = f"tag:{host},{article.published:%Y-%m-%d}:articles/{article.slug}"
    candidate, number = minted, 1
    while candidate in taken:
        number += 1
        candidate = f"{minted}/{number}"
    return candidate


def _seconds(moment: datetime) -> datetime:
    """``moment`` as precise as the ledger keeps it, so the next run renders the same date."""
    return moment.replace(microsecond=0)


def detect_changes(
    articles: Iterable[Article],
    known: dict[str, KnownArticle],
    *,
    now: datetime,
    base_url: str,
    retired: AbstractSet[str] = frozenset(),
) -> Changes:
    """Classify each article against what the ledger last published.

    ``retired`` holds the ids of ledger rows that were replaced (see the module docstring).

    * new: never published (a withdrawn slug with another ``published`` date is new too);
    * updated: content hash changed; ``updated`` moves to the editor's ``updated`` date if
      given and later, else to ``now``, and never back; ``published`` and the id stay;
    * corrected: recorded, not announced, dates kept: a ``minor_edit``, a withdrawn article
      restored unchanged, a hash written by an older version;
    * renamed: same content, new slug, matched by explicit id (dates and id stay);
    * withdrawn: a live slug that is gone, became a draft or moved into the future;
    * scheduled: future-dated articles, published by a later run once their time comes.

    Raises ``ContentError`` when ids conflict (see the module docstring).
    """
    due = [a for a in articles if not a.draft]
    scheduled = tuple(a for a in due if a.published > now)
    due = [a for a in due if a.published <= now]
    rows, ids = _match_rows(due, known, base_url, retired)

    new: list[Entry] = []
    updated: list[Entry] = []
    renamed: list[Entry] = []
    corrected: list[Entry] = []
    unchanged: list[Entry] = []
    for article in due:
        # article_url() without urljoin's cost: Settings.base_url always ends with "/".
        url = (
            f"{base_url}articles/{article.slug}/"
            if base_url.endswith("/")
            else article_url(base_url, article.slug)
        )
        before = rows.get(article.slug)
        if before is None:
            last_change = max(article.published, article.updated or article.published)
            new.append(
                Entry(
                    article,
                    ids[article.slug],
                    url,
                    _seconds(article.published),
                    _seconds(last_change),
                )
            )
        elif article.minor_edit or before.content_hash in (
            article.content_hash,
            article.former_hash,
        ):
            entry = Entry(article, before.entry_id, url, before.published, before.updated)
            if before.slug != article.slug:
                renamed.append(entry)
            elif not before.live or before.content_hash != article.content_hash:
                corrected.append(entry)
            else:
                unchanged.append(entry)
        else:
            moved = article.updated if article.updated and article.updated > before.updated else now
            moved = max(_seconds(moved), before.updated)  # never back, whatever the clock says
            updated.append(Entry(article, before.entry_id, url, before.published, moved))

    def newest_first(entries: list[Entry]) -> tuple[Entry, ...]:
        return tuple(sorted(entries, key=lambda e: (e.published, e.slug), reverse=True))

    kept = {row.slug for row in rows.values()}
    withdrawn = sorted(slug for slug, k in known.items() if k.live and slug not in kept)
    return Changes(
        new=newest_first(new),
        updated=newest_first(updated),
        withdrawn=tuple(withdrawn),
        unchanged=tuple(unchanged),
        scheduled=scheduled,
        renamed=newest_first(renamed),
        corrected=newest_first(corrected),
    )


def _match_rows(
    due: list[Article], known: dict[str, KnownArticle], base_url: str, retired: AbstractSet[str]
) -> tuple[dict[str, KnownArticle], dict[str, str]]:
    """The ledger row each due article continues (by explicit id first, then by slug),
    and every due article's entry id."""
    by_id = {row.entry_id: row for row in known.values()}
    taken = by_id.keys() | retired  # held by a ledger row or retired: never minted again
    ids: dict[str, str] = {}
    due_slugs = {a.slug for a in due}
    problems: list[Problem] = []
    rows: dict[str, KnownArticle] = {}
    claimed: dict[str, str] = {}  # ledger slug -> the article slug that continues it
    first_with_id: dict[str, Article] = {}
    refused: set[str] = set()  # slugs with an id problem already: one problem each

    for article in due:
        if article.explicit_id is None:
            continue
        other = first_with_id.setdefault(article.explicit_id, article)
        if other is not article:
            problems.append(
                _id_problem(article, f"is also the id of {other.source}; ids are unique")
            )
            refused.add(article.slug)
            continue
        row = by_id.get(article.explicit_id)
        if row is None:
            continue
        if row.slug != article.slug and row.slug in due_slugs:
            problems.append(
                _id_problem(article, f"already belongs to articles/{row.slug}.md; choose another")
            )
            refused.add(article.slug)
            continue
        rows[article.slug] = row
        claimed[row.slug] = article.slug

    assigned: dict[str, str] = {}  # entry id -> article slug, to catch collisions
    for article in due:
        if article.slug in refused:
            continue
        row = rows.get(article.slug)
        if row is None and article.slug not in claimed:
            row = known.get(article.slug)
            if (
                row is not None
                and not row.live
                and article.explicit_id is None
                and _seconds(article.published) != row.published
            ):
                row = None  # another article on a withdrawn one's file name: a new entry
            if row is not None and article.explicit_id not in (None, row.entry_id):
                problems.append(
                    _id_problem(
                        article,
                        f"this article was published with the id {row.entry_id} and an id never "
                        f"changes; write 'id: {row.entry_id}' or remove the field",
                    )
                )
                continue
            if row is not None:
                rows[article.slug] = row
        entry_id = row.entry_id if row is not None else mint_entry_id(base_url, article, taken)
        ids[article.slug] = entry_id
        holder = by_id.get(entry_id)
        if row is None and holder is not None:
            problems.append(
                _id_problem(
                    article,
                    f"the id {entry_id} already belongs to articles/"
                    f"{claimed.get(holder.slug, holder.slug)}.md; "
                    "give this article an explicit 'id:' of its own",
                )
            )
        elif assigned.setdefault(entry_id, article.slug) != article.slug:
            problems.append(_id_problem(article, f"the id {entry_id} is used twice"))
    if problems:
        raise ContentError(problems)
    return rows, ids


def _id_problem(article: Article, message: str) -> Problem:
    return Problem(article.source, None, "id", message)
