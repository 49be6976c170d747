"""Article bundles: ``articles/<slug>/index.md`` with its images and files beside it.

An article is either one file, ``articles/<slug>.md``, or a folder (a *bundle*, as Hugo
calls it) holding ``index.md`` and the files it refers to by relative paths
(``![A chart of FVC decline](fvc-chart.png)``). Each bundle file is published as
``public/media/<slug>/<stem>.<hash8><suffix>``, where ``hash8`` is the first 8 hex digits
of the SHA-256 of its bytes: a changed file gets a new name, so browsers and mail clients
may cache a name forever. Every reference becomes that file's absolute URL.

A bundle's files are part of the article's content: their hashes join the article's
content hash, so replacing a figure makes the article *updated* (feeds move its
``updated`` date), as an edit of the text would.

``media_problems`` is what ``check`` and ``publish`` refuse: a referenced file that is not
in the bundle, an image without alternative text, an image over ``EMAIL_IMAGE_LIMIT`` bytes,
and an SVG that carries script.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from pipeline.errors import Problem
from pipeline.markdown import is_relative, markdown_to_html, references, sanitize_html
from pipeline.models import Article, Entry, MediaFile

__all__ = [
    "BUNDLE_INDEX",
    "EMAIL_IMAGE_LIMIT",
    "ArticleSource",
    "article_sources",
    "bundle_media",
    "media_outputs",
    "media_problems",
    "render_article",
    "with_media",
]

BUNDLE_INDEX = "index.md"
# Mail clients download every image when a message is opened, often over a phone's data:
# 500 KB is a generous ceiling for one figure (a 1200 px wide PNG chart is ~100 KB).
EMAIL_IMAGE_LIMIT = 500_000
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".avif"}
_IMG = re.compile(r"<img\b", re.IGNORECASE)
_RELATIVE_LINK = re.compile(r'href="(?![a-z][a-z0-9+.-]*:|#|/)', re.IGNORECASE)
# attributeName="on…": SVG animation (<set>, <animate>) can add an event handler at run time.
_SVG_ACTIVE = re.compile(
    rb"<script|<foreignObject|\son[a-z]+\s*=|javascript:|attributeName\s*=\s*[\"']?\s*on",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ArticleSource:
    """Where one article lives: ``articles/<slug>.md`` or ``articles/<slug>/index.md``."""

    slug: str
    path: Path  # the Markdown file
    folder: Path | None  # the bundle folder, or None for a single file


def article_sources(directory: Path) -> tuple[list[ArticleSource], list[Problem]]:
    """Every article file and bundle in ``directory``, by slug; a slug that is both a file
    and a folder is a problem (which one would be published is not clear)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return [], []
    files = {e.name[:-3]: Path(e.path) for e in entries if e.name.endswith(".md") and e.is_file()}
    folders = {
        e.name: Path(e.path)
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and (Path(e.path) / BUNDLE_INDEX).is_file()
    }
    problems = [
        Problem(
            f"{directory.name}/{slug}.md",
            None,
            None,
            f"both {slug}.md and the folder {slug}/ exist; keep one (a folder for an "
            "article with images)",
        )
        for slug in sorted(files.keys() & folders.keys())
    ]
    sources = [ArticleSource(s, p, None) for s, p in files.items() if s not in folders]
    sources += [ArticleSource(s, f / BUNDLE_INDEX, f) for s, f in folders.items()]
    return sorted(sources, key=lambda s: s.slug), problems


def bundle_media(folder: Path, slug: str) -> tuple[MediaFile, ...]:
    """The files of a bundle (everything but ``index.md`` and hidden files), hashed."""
    found: list[MediaFile] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            name = path.relative_to(folder).as_posix()
            if filename.startswith(".") or name == BUNDLE_INDEX:
                continue
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            stem, suffix = posixpath.splitext(name)
            public = f"media/{slug}/{stem}.{sha[:8]}{suffix.lower()}"
            found.append(MediaFile(name, public, sha, len(data)))
    return tuple(found)


def with_media(article: Article, media: Sequence[MediaFile]) -> Article:
    """The article with its bundle's files; their hashes join its content hash."""
    digest = hashlib.sha256(article.content_hash.encode("ascii"))
    for item in media:
        digest.update(f"\0{item.name}\0{item.sha256}".encode())
    # "v2:" as content_hash.canonical_hash marks hashes of the current scheme.
    return replace(
        article, media=tuple(media), content_hash="v2:" + digest.hexdigest(), bundle=True
    )


def _bundle_name(url: str) -> str | None:
    """The bundle path a relative URL names (``./a%20b.png`` -> ``a b.png``), or None when it
    climbs out of the bundle."""
    path = posixpath.normpath(unquote(urlsplit(url.strip()).path))
    if path.startswith("../") or path == ".." or path.startswith("/"):
        return None
    return path


def render_article(article: Article, base_url: str, raw_html: str | None = None) -> Article:
    """The article with its body rendered to sanitised HTML, bundle files mapped to their
    published URLs and everything else absolute against the article's page. ``raw_html``:
    cmark-gfm's output for the body when the caller has it already."""
    page_url = urljoin(base_url, f"articles/{article.slug}/")
    by_name = {m.name: urljoin(base_url, m.public_path) for m in article.media}

    def media_url(url: str) -> str | None:
        name = _bundle_name(url)
        return by_name.get(name) if name is not None else None

    raw = markdown_to_html(article.body_markdown) if raw_html is None else raw_html
    return replace(article, html=sanitize_html(raw, page_url, media_url))


def media_problems(
    article: Article, text: str, folder: Path | None, raw_html: str | None = None
) -> list[Problem]:
    """What is wrong with the article's images and bundle files, each with its line in
    ``text`` (the whole file): missing file, no alt text, too large for email, active SVG.
    ``raw_html``: cmark-gfm's output for the body when the caller has it already."""
    problems: list[Problem] = []
    names = {m.name: m for m in article.media}
    seen: set[tuple[str, str]] = set()
    raw = markdown_to_html(article.body_markdown) if raw_html is None else raw_html
    # Most articles have no image and only absolute links: nothing to check, no HTML parse.
    found = references(raw) if _IMG.search(raw) or _RELATIVE_LINK.search(raw) else []
    for ref in found:
        line = _line_of(text, ref.url, ref.alt)

        def problem(message: str, line: int | None = line) -> None:
            problems.append(Problem(article.source, line, "body", message))

        if ref.tag == "img" and not (ref.alt or "").strip():
            problem(
                f"the image {ref.url} has no alternative text; describe it between the "
                f"brackets: ![what the image shows]({ref.url})"
            )
        if ref.tag == "img" and urlsplit(ref.url.strip()).netloc:
            # A picture fetched from another site is a third-party request from every page,
            # feed reader and inbox that shows it: a way to track readers.
            problem(
                f"the image {ref.url} is on another site, which would see every reader who "
                "opens the page, feed or email; save it into the article's folder and refer "
                "to it by its name"
            )
            continue
        if not is_relative(ref.url) or (ref.tag, ref.url) in seen:
            continue
        seen.add((ref.tag, ref.url))
        name = _bundle_name(ref.url)
        item = names.get(name) if name is not None else None
        if item is None:
            if ref.tag != "img" and posixpath.splitext(name or "")[1] == "":
                continue  # a relative link to a page, such as ../other-article/
            where = f"the folder {folder.name}/" if folder is not None else "a bundle folder"
            if name is None:
                problem(
                    f"{ref.url} is outside the article's folder; copy the file into {where} "
                    "and refer to it by its name"
                )
                continue
            fix = (
                f"put {name} in {where}"
                if folder is not None
                else f"make the article a folder articles/{article.slug}/index.md and put "
                f"{name} beside it"
            )
            problem(f"{ref.url} is not there; {fix}")
            continue
        if ref.tag == "img" and item.size > EMAIL_IMAGE_LIMIT:
            problem(
                f"{item.name} is {item.size:,} bytes, over the {EMAIL_IMAGE_LIMIT // 1000} KB "
                "an image may have for email readers; save it smaller (fewer pixels, or "
                "JPEG/WebP for photographs)"
            )
    if folder is not None:
        for item in article.media:
            if item.name.lower().endswith(".svg") and _SVG_ACTIVE.search(
                (folder / item.name).read_bytes()
            ):
                problems.append(
                    Problem(
                        f"{article.source.rsplit('/', 1)[0]}/{item.name}",
                        None,
                        None,
                        "the SVG contains script, an event handler or foreignObject; "
                        "export it again as a plain drawing",
                    )
                )
    return problems


def media_outputs(entries: Iterable[Entry], articles_dir: Path) -> dict[str, bytes]:
    """Each published bundle file's bytes by its path under public/ (read from the bundle)."""
    files: dict[str, bytes] = {}
    for entry in entries:
        for item in entry.article.media:
            files[item.public_path] = (articles_dir / entry.slug / item.name).read_bytes()
    return files


def is_image(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in _IMAGE_SUFFIXES


def _line_of(text: str, url: str, alt: str | None = None) -> int | None:
    """The 1-based line of ``text`` where ``url`` first appears as a link target (with that
    alt text, for an image written ``![alt](url)``, when there is such a line)."""
    lines = text.split("\n")
    if alt is not None:
        for number, line in enumerate(lines, start=1):
            if f"![{alt}]({url}" in line:
                return number
    for number, line in enumerate(lines, start=1):
        if f"({url}" in line or f'"{url}"' in line or f"]: {url}" in line:
            return number
    return None
