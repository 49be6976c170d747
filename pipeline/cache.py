"""Load articles, reusing what the last publish parsed and rendered when a file is unchanged.

Parsing front matter and rendering Markdown cost about 0.6 ms an article (YAML and
sanitising are most of it); with thousands of articles that is most of a publish. Each valid article is cached in the ledger under its
slug with the hash of its file's bytes (and of everything else its parse depends on: the
site URL, the known topics, this module's version). A publish re-parses and re-renders only
the files whose hash changed; the rest come back from the cache exactly as before.

Like git's index, the cache also keeps each file's size, mtime, ctime and inode: a file
whose ``stat`` still gives exactly those is not even read. Any write moves the ctime (which
no tool can set back), so an edit is never missed; and a file whose times are within
``_RACY_NS`` of the moment they were recorded is always read, since a second write in the
same clock tick could leave its times unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.articles import LoadResult, parse_source
from pipeline.errors import Problem
from pipeline.media import article_sources, bundle_media
from pipeline.models import Article, MediaFile, Therapy
from pipeline.parallel import map_forked
from pipeline.store import CachedArticle

__all__ = ["CachedLoad", "decode_article", "encode_article", "load_articles_cached"]

# Bump when parsing, sanitising or rendering changes what an article turns into.
CACHE_VERSION = "5"
# How recent a file's times may be and still be trusted (file system clocks tick coarsely).
_RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class CachedLoad:
    """The loaded articles, and the cache rows to store once the publish is done."""

    result: LoadResult
    fresh: tuple[CachedArticle, ...]  # articles parsed this time
    slugs: tuple[str, ...]  # every valid article's slug: the cache keeps these
    restamped: tuple[tuple[str, str], ...] = ()  # (slug, file stat) of unchanged files re-read

    @property
    def hits(self) -> int:
        return len(self.slugs) - len(self.fresh)


def load_articles_cached(
    directory: Path,
    root: Path,
    cached: Mapping[str, CachedArticle],
    *,
    known_topics: Iterable[str],
    base_url: str,
) -> CachedLoad:
    """Like ``articles.load_articles`` followed by ``with_html``, skipping unchanged files.

    Files that did change are parsed and rendered in worker processes when there are many
    of them (a first publish, a template change), one per core (``pipeline.parallel``).
    """
    topics = frozenset(known_topics)
    salt = "\0".join([CACHE_VERSION, base_url, *sorted(topics)]).encode("utf-8")
    found: dict[str, Article] = {}
    misses: list[_Miss] = []
    folder = _relative(directory, root)
    prefix = os.fspath(directory) + os.sep
    stat_salt = hashlib.sha256(salt + b"\0" + folder.encode()).hexdigest()[:16]
    now_ns = time.time_ns()
    restamped: list[tuple[str, str]] = []
    sources, problems = article_sources(directory)
    for source in sources:
        slug = source.slug
        path = os.fspath(source.path)
        # before reading: a later write shows
        stat = _file_stat(path, stat_salt, now_ns)
        if stat and source.folder is not None:
            stat = _bundle_stat(source.folder, stat, now_ns)
        hit = cached.get(slug)
        if hit is not None and stat and hit.file_stat == stat:
            found[slug] = decode_article(hit)
            continue
        data = _read_bytes(path)
        relative = path[len(prefix) :].replace(os.sep, "/")
        relative = f"{folder}/{relative}"
        hashed = hashlib.sha256(salt + b"\0" + relative.encode() + b"\0" + data)
        if source.folder is not None:
            for item in bundle_media(source.folder, slug):
                hashed.update(f"\0{item.name}\0{item.sha256}".encode())
        source_hash = hashed.hexdigest()
        if hit is not None and hit.source_hash == source_hash:
            found[slug] = decode_article(hit)
            if stat != hit.file_stat:
                restamped.append((slug, stat))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                Problem(relative, None, None, f"not UTF-8 ({exc.reason}); save as UTF-8")
            )
            continue
        misses.append(
            _Miss(slug, relative, text, source_hash, stat, topics, base_url, source.folder)
        )

    fresh: list[CachedArticle] = []
    parsed = map_forked(_parse_one, misses, len(misses))
    for miss, (article, trouble) in zip(misses, parsed, strict=True):
        problems.extend(trouble)
        if article is not None and not trouble:
            found[miss.slug] = article
            fresh.append(encode_article(article, miss.source_hash, miss.file_stat))
    articles = tuple(found[slug] for slug in sorted(found))
    return CachedLoad(
        LoadResult(articles, tuple(sorted(problems, key=lambda p: p.file))),
        tuple(fresh),
        tuple(a.slug for a in articles),
        tuple(restamped),
    )


@dataclass(frozen=True, slots=True)
class _Miss:
    """A file the cache could not answer for: to parse and render."""

    slug: str
    source: str
    text: str
    source_hash: str
    file_stat: str
    topics: frozenset[str]
    base_url: str
    folder: Path | None = None  # the bundle folder, for a bundle


def _parse_one(misses: Sequence[_Miss], index: int) -> tuple[Article | None, list[Problem]]:
    miss = misses[index]
    return parse_source(miss.slug, miss.source, miss.text, miss.folder, miss.topics, miss.base_url)


def encode_article(article: Article, source_hash: str, file_stat: str = "") -> CachedArticle:
    """The cache row of a parsed, rendered article."""
    therapy = article.therapy
    fields: dict[str, Any] = {
        "source": article.source,
        "title": article.title,
        "summary": article.summary,
        "published": article.published.isoformat(),
        "updated": article.updated.isoformat() if article.updated else None,
        "topics": list(article.topics),
        "therapy": None
        if therapy is None
        else {"name": therapy.name, "maker": therapy.maker, "brands": list(therapy.brands)},
        "trials": list(article.trials),
        "draft": article.draft,
        "explicit_id": article.explicit_id,
        "content_hash": article.content_hash,
        "media": [[m.name, m.public_path, m.sha256, m.size] for m in article.media],
        "author": article.author,
        "reviewed": article.reviewed.isoformat() if article.reviewed else None,
        "bundle": article.bundle,
        "minor_edit": article.minor_edit,
        "former_hash": article.former_hash,
    }
    return CachedArticle(
        article.slug,
        source_hash,
        json.dumps(fields, ensure_ascii=False),
        article.html,
        file_stat,
        article.body_markdown,
    )


def decode_article(row: CachedArticle) -> Article:
    """The article a cache row stands for, exactly as it was parsed."""
    fields = json.loads(row.article)
    therapy = fields["therapy"]
    return Article(
        slug=row.slug,
        source=fields["source"],
        title=fields["title"],
        summary=fields["summary"],
        published=datetime.fromisoformat(fields["published"]),
        updated=datetime.fromisoformat(fields["updated"]) if fields["updated"] else None,
        topics=tuple(fields["topics"]),
        therapy=None
        if therapy is None
        else Therapy(therapy["name"], therapy["maker"], tuple(therapy["brands"])),
        trials=tuple(fields["trials"]),
        draft=fields["draft"],
        explicit_id=fields["explicit_id"],
        body_markdown=row.markdown,
        content_hash=fields["content_hash"],
        html=row.html,
        media=tuple(MediaFile(*m) for m in fields.get("media", ())),
        author=fields.get("author", ""),
        reviewed=datetime.fromisoformat(fields["reviewed"]) if fields.get("reviewed") else None,
        bundle=fields.get("bundle", False),
        minor_edit=fields.get("minor_edit", False),
        former_hash=fields.get("former_hash", ""),
    )


def _file_stat(path: str, salt: str, now_ns: int) -> str:
    """The file's identity as ``stat`` sees it, or "" when its times are too recent to trust."""
    info = os.stat(path)
    if now_ns - max(info.st_mtime_ns, info.st_ctime_ns) < _RACY_NS:
        return ""
    return f"{salt}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _bundle_stat(folder: Path, index_stat: str, now_ns: int) -> str:
    """``index_stat`` extended with every bundle file's name, size, times and inode, or ""
    when one of them is too recent to trust (so a replaced figure is never missed)."""
    parts = [index_stat]
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            info = os.stat(os.path.join(dirpath, name))
            if now_ns - max(info.st_mtime_ns, info.st_ctime_ns) < _RACY_NS:
                return ""
            parts.append(
                f"{name}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"
            )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest() if len(parts) > 1 else index_stat


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
