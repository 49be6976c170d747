"""``pipeline serve``: public/ over a real uvicorn server on 127.0.0.1, spoken to with httpx2."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.web import create_app
from tests.conftest import free_port, served
from tests.helpers import publish


@pytest.fixture
def site(project: Path) -> Iterator[httpx2.Client]:
    """The sample project published and served by uvicorn; a client pointed at it."""
    publish(project, send_email=False)

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("a route of its own")

    app = create_app(load_settings(project), [Route("/articles/", hello)])
    port = free_port()
    # No automatic decompression: the tests look at the bytes on the wire.
    with (
        served(app, port),
        httpx2.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Accept-Encoding": "identity"}
        ) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/rss.xml", "application/rss+xml"),
        ("/atom.xml", "application/atom+xml"),
        ("/feed.json", "application/feed+json"),
        ("/topics/scleroderma/atom.xml", "application/atom+xml"),
        ("/topics/scleroderma/feed.json", "application/feed+json"),
        ("/", "text/html; charset=utf-8"),
        ("/articles/nintedanib/", "text/html; charset=utf-8"),
    ],
)
def test_files_are_served_with_their_media_type(
    site: httpx2.Client, project: Path, path: str, content_type: str
) -> None:
    response = site.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    on_disk = project / "public" / path.lstrip("/")
    if path.endswith("/"):
        on_disk = on_disk / "index.html"
    assert response.content == on_disk.read_bytes()


def test_conditional_get_answers_304(site: httpx2.Client) -> None:
    first = site.get("/atom.xml")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('"') and etag.endswith('"')
    parsedate_to_datetime(modified)  # a valid HTTP date

    by_tag = site.get("/atom.xml", headers={"If-None-Match": etag})
    assert by_tag.status_code == 304 and by_tag.content == b""
    assert by_tag.headers["etag"] == etag
    assert site.get("/atom.xml", headers={"If-None-Match": '"other"'}).status_code == 200

    assert site.get("/atom.xml", headers={"If-Modified-Since": modified}).status_code == 304
    earlier = format_datetime(parsedate_to_datetime(modified).replace(year=2000), usegmt=True)
    assert site.get("/atom.xml", headers={"If-Modified-Since": earlier}).status_code == 200
    # If-None-Match decides when both are sent.
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert site.get("/atom.xml", headers=both).status_code == 200


def test_an_unchanged_republish_keeps_the_etag(site: httpx2.Client, project: Path) -> None:
    from datetime import timedelta

    from tests.helpers import FIRST_RUN

    before = site.get("/rss.xml").headers["etag"]
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert site.get("/rss.xml").headers["etag"] == before


def test_gzip_when_asked(site: httpx2.Client, project: Path) -> None:
    plain = site.get("/atom.xml")
    with site.stream("GET", "/atom.xml", headers={"Accept-Encoding": "gzip, deflate"}) as zipped:
        raw = b"".join(zipped.iter_raw())  # the bytes on the wire, not decoded by httpx2
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert len(raw) < len(plain.content)
    assert gzip.decompress(raw) == (project / "public" / "atom.xml").read_bytes()
    assert zipped.headers["etag"] != plain.headers["etag"]
    again = site.get(
        "/atom.xml", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]}
    )
    assert again.status_code == 304
    refused = site.get("/atom.xml", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("*;q=0, gzip", True),  # the explicit coding wins over the wildcard, wherever it is
        ("gzip;q=0, *", False),
        ("*, gzip;q=0", False),
        ("deflate, *;q=0.5", True),
        ("identity;q=1, *;q=0", False),
        ("br;q=1.0, GZIP ; Q=0.2", True),
        ("x-gzip", True),
        ("gzip;q=0.000", False),
        ("gzip;q=high", False),  # a void quality voids its item
        ("gzip;q=2", False),
        ("deflate, br", False),
        ("", False),
    ],
)
def test_accept_encoding_is_judged_by_quality_not_order(
    site: httpx2.Client, accept_encoding: str, gzipped: bool
) -> None:
    response = site.get("/atom.xml", headers={"Accept-Encoding": accept_encoding})
    assert ("content-encoding" in response.headers) is gzipped, accept_encoding
    assert response.headers["vary"] == "Accept-Encoding"


def test_head_sends_headers_only(site: httpx2.Client, project: Path) -> None:
    response = site.head("/feed.json")
    assert response.status_code == 200 and response.content == b""
    size = (project / "public" / "feed.json").stat().st_size
    assert response.headers["content-length"] == str(size)


def test_paths_outside_public_and_missing_files_are_not_found(site: httpx2.Client) -> None:
    assert site.get("/nothing-here.xml").status_code == 404
    assert site.get("/articles/withdrawn-long-ago/").status_code == 404
    assert site.get("/../pipeline.toml").status_code == 404
    assert site.get("/%2e%2e/pipeline.toml").status_code == 404
    assert site.get("/.rss.xml.tmp").status_code == 404
    assert site.post("/rss.xml").status_code == 405


def test_a_directory_without_its_slash_redirects(site: httpx2.Client) -> None:
    response = site.get("/articles/nintedanib")
    assert response.status_code == 301
    assert response.headers["location"] == "/articles/nintedanib/"


def test_the_slash_redirect_never_leaves_the_site(site: httpx2.Client) -> None:
    # "//topics/scleroderma/" would be a link to the host "topics": an open redirect.
    for path in ("//topics/scleroderma", "///topics//scleroderma"):
        response = site.get(str(site.base_url).rstrip("/") + path)  # the path as it is
        assert response.status_code == 301
        assert response.headers["location"] == "/topics/scleroderma/"


def test_extra_routes_come_before_the_files(site: httpx2.Client) -> None:
    response = site.get("/articles/")  # a folder of public/ too: the route wins
    assert response.status_code == 200 and response.text == "a route of its own"


def test_serve_command_has_help_with_its_options() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output
    assert "127.0.0.1" in result.output and "8000" in result.output
