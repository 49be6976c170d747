"""The files of the site on disk: which pages are up to date, which are stale, and removing
the stale ones.

A page written by a publish is *stamped* in the ledger with its input key and the size and
mtime of the file written; a page whose key and file both still match is not rendered
again. Directories under ``articles/``, ``media/`` and ``topics/`` (and files in topic
folders, and RFC 5005 archive pages) that no page, feed or bundle file of the publish claims are *stale*.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.store import OutputStamp

__all__ = ["output_stamps", "remove_stale", "stale_paths", "unchanged_on_disk"]


def output_stamps(
    public: Path, keys: Mapping[str, str], written: Iterable[str]
) -> list[OutputStamp]:
    """Stamps for the pages just written (or checked), to skip them next time."""
    stamps = []
    for path in written:
        key = keys.get(path)
        if key is None:
            continue
        info = (public / path).stat()
        stamps.append(OutputStamp(path, key, info.st_size, info.st_mtime_ns))
    return stamps


def remove_stale(public: Path, stale: Iterable[str]) -> list[str]:
    """Delete stale pages: each directory is renamed away first, so it vanishes at once."""
    removed = []
    for relative in stale:
        target = public / relative
        if target.is_dir():
            graveyard = target.with_name(f".{target.name}.removed-{os.getpid()}")
            target.rename(graveyard)
            shutil.rmtree(graveyard)
        elif target.exists():
            target.unlink()
        else:
            continue
        removed.append(relative)
    return removed


def unchanged_on_disk(path: str, stamp: OutputStamp) -> bool:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    return info.st_size == stamp.size and info.st_mtime_ns == stamp.mtime_ns


def stale_paths(public: Path, claimed: set[str]) -> list[str]:
    """Paths under articles/, media/ and topics/ that nothing in this publish claims."""
    stale: list[str] = []
    live_dirs = {p.split("/")[1] for p in claimed if p.startswith("articles/")}
    articles = public / "articles"
    if articles.is_dir():
        stale += sorted(
            f"articles/{d.name}"
            for d in os.scandir(articles)
            if d.is_dir() and not d.name.startswith(".") and d.name not in live_dirs
        )
    # A bundle's files stay while its article is published, older versions too: a feed
    # reader's stored copy of the entry keeps its images. A withdrawn article's go.
    media = public / "media"
    if media.is_dir():
        live_media = {p.split("/")[1] for p in claimed if p.startswith("media/")}
        stale += sorted(
            f"media/{d.name}"
            for d in os.scandir(media)
            if d.is_dir() and not d.name.startswith(".") and d.name not in live_media
        )
    topics = public / "topics"
    if topics.is_dir():
        for folder in sorted(os.scandir(topics), key=lambda d: d.name):
            relative = f"topics/{folder.name}"
            if not any(c.startswith(relative + "/") for c in claimed):
                stale.append(relative)
            elif folder.is_dir():
                stale += sorted(
                    f"{relative}/{f.name}"
                    for f in os.scandir(folder.path)
                    if f.is_file() and f"{relative}/{f.name}" not in claimed
                )
    return stale + _stale_archives(public, claimed)


def _stale_archives(public: Path, claimed: set[str]) -> list[str]:
    """RFC 5005 archive pages (``[topics/<t>/]archive/<n>/``) no feed claims any more."""
    live = {path.rsplit("/", 1)[0] for path in claimed if "archive/" in path}
    parents = ["archive", *(str(p.relative_to(public)) for p in public.glob("topics/*/archive"))]
    stale: list[str] = []
    for parent in parents:
        if (public / parent).is_dir():
            stale += sorted(
                f"{parent}/{page.name}"
                for page in os.scandir(public / parent)
                if page.is_dir() and f"{parent}/{page.name}" not in live
            )
    return stale
