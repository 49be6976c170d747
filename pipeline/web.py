"""The web app behind ``pipeline serve``: the generated site and feeds from ``public/``.

Static files are served with the media types feed readers expect, a strong ``ETag`` (a
hash of the bytes, so an unchanged feed keeps its tag across publishes) and
``Last-Modified``; a conditional GET whose validators still match gets ``304 Not
Modified``; a client that accepts gzip gets the compressed bytes, under their own ETag,
with ``Vary: Accept-Encoding``. Subscriber pages (sign-up, confirm, unsubscribe,
preferences) are routes passed to ``create_app``; they take precedence over the files.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import hashlib
import mimetypes
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import ClassVar

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.types import Receive, Scope, Send

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.web_subscribers import retry_confirmations, subscriber_routes
from pipeline.webhooks import webhook_routes

__all__ = ["PublicFiles", "create_app", "media_type"]

_MEDIA_TYPES = {
    "rss.xml": "application/rss+xml",
    "atom.xml": "application/atom+xml",
    "feed.json": "application/feed+json",
}
_BY_SUFFIX = {
    ".html": "text/html; charset=utf-8",
    ".xml": "application/xml",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}
_COMPRESSIBLE = ("text/", "application/rss+xml", "application/atom+xml", "application/feed+json")
_COMPRESSIBLE_EXTRA = ("application/xml", "application/json", "image/svg+xml")
_MIN_GZIP_SIZE = 256  # smaller bodies grow when compressed


def media_type(path: Path) -> str:
    """The Content-Type for a file of the site: feeds by name, the rest by suffix."""
    if path.name in _MEDIA_TYPES:
        return _MEDIA_TYPES[path.name]
    known = _BY_SUFFIX.get(path.suffix.lower())
    if known:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class PublicFiles:
    """An ASGI app serving one directory: GET and HEAD, directory indexes, validators, gzip."""

    methods: ClassVar[tuple[str, ...]] = ("GET", "HEAD")

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.respond(scope)
        await response(scope, receive, send)

    def respond(self, scope: Scope) -> Response:
        if scope["method"] not in self.methods:
            return PlainTextResponse(
                "Method Not Allowed", status_code=405, headers={"Allow": ", ".join(self.methods)}
            )
        url_path: str = scope["path"]
        target = self._resolve(url_path)
        if target is None:
            return PlainTextResponse("Not Found", status_code=404)
        if target.is_dir():
            if not url_path.endswith("/"):
                query = scope.get("query_string", b"").decode("latin-1")
                # Rebuilt from the parts: a path starting "//" would name another host.
                local = "/" + "".join(p + "/" for p in url_path.split("/") if p)
                return RedirectResponse(local + (f"?{query}" if query else ""), 301)
            target = target / "index.html"
            if not target.is_file():
                return PlainTextResponse("Not Found", status_code=404)
        return self._file_response(target, Headers(scope=scope), head=scope["method"] == "HEAD")

    def _resolve(self, url_path: str) -> Path | None:
        parts = [p for p in url_path.split("/") if p]
        if any(p in (".", "..") or p.startswith(".") or "\\" in p for p in parts):
            return None  # no way out of public/, and no temporary or hidden files
        target = self.directory.joinpath(*parts)
        try:
            target.resolve().relative_to(self.directory)
        except ValueError:
            return None
        return target if target.exists() else None

    def _file_response(self, path: Path, request: Headers, *, head: bool) -> Response:
        body = path.read_bytes()
        modified = datetime.fromtimestamp(int(path.stat().st_mtime), UTC)
        content_type = media_type(path)
        compressible = content_type.startswith(_COMPRESSIBLE) or content_type in _COMPRESSIBLE_EXTRA
        tag = hashlib.sha256(body).hexdigest()[:20]
        headers = {
            "Last-Modified": format_datetime(modified, usegmt=True),
            "Cache-Control": "no-cache",  # may be stored, but revalidate every time
        }
        if path.is_relative_to(self.directory / "media"):
            # Bundle files are named by their content hash: a name never changes meaning.
            headers["Cache-Control"] = "public, max-age=31536000, immutable"
        if content_type == "image/svg+xml":
            # An SVG opened on its own runs no script and loads nothing, whatever it holds.
            headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        if compressible:
            headers["Vary"] = "Accept-Encoding"
        if compressible and len(body) >= _MIN_GZIP_SIZE and _accepts_gzip(request):
            tag += "-gzip"
            headers["Content-Encoding"] = "gzip"
            body = gzip.compress(body, compresslevel=6, mtime=0)
        headers["ETag"] = f'"{tag}"'
        if _not_modified(request, headers["ETag"], modified):
            headers.pop("Content-Encoding", None)
            return Response(status_code=304, headers=headers)
        response = Response(body, headers=headers, media_type=content_type)
        if head:
            response.body = b""
        return response


def _accepts_gzip(request: Headers) -> bool:
    """True if Accept-Encoding gives gzip a quality above 0 (RFC 9110 section 12.5.3).

    The order of the list does not matter: an explicit ``gzip`` (or its alias ``x-gzip``)
    decides, else ``*``; a coding the client does not name is not acceptable. A quality
    that is not a number from 0 to 1 makes its item void.
    """
    qualities: dict[str, float] = {}
    for item in request.get("accept-encoding", "").split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = -1.0
        if coding and 0.0 <= quality <= 1.0:
            name = coding.lower()
            qualities[name] = max(quality, qualities.get(name, 0.0))
    for name in ("gzip", "x-gzip", "*"):
        if name in qualities:
            return qualities[name] > 0
    return False


def _not_modified(request: Headers, etag: str, modified: datetime) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if_modified_since = request.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return modified <= since
    return False


def create_app(
    settings: Settings, routes: Sequence[BaseRoute] = (), *, retry_every: float = 60.0
) -> Starlette:
    """An ASGI app serving ``public/``; ``routes`` (subscriber pages) come before the files.

    While it runs, confirmation emails the mail server deferred are retried every
    ``retry_every`` seconds.
    """
    settings.paths.public.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(retry_confirmations(settings, every=retry_every))
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    return Starlette(
        routes=[
            *subscriber_routes(settings),
            *webhook_routes(settings),
            *routes,
            Mount("/", app=PublicFiles(settings.paths.public), name="public"),
        ],
        lifespan=lifespan,
    )


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening, for the server to take over.

    Bound here, before "Serving…" is printed, so a busy port or an unknown host is one
    clear ``PipelineError`` (exit 1) rather than uvicorn's startup failure (its exit 3,
    which this CLI reserves for a partial delivery).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise PipelineError(f"cannot listen on {host}:{port}: {exc}; check --host") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        raise PipelineError(
            f"cannot listen on {host}:{port}: {why}; stop the other server or choose another --port"
        ) from exc
    return sock
