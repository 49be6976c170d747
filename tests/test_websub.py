"""WebSub: feeds advertise the hub, publishes ping it for exactly the feeds that changed.

The hub is a **test double**: a small HTTP server on 127.0.0.1 that records each publish
ping and answers as told (a real hub would fetch the feed and push it to subscribers,
which cannot run here). Everything else is real: the publish, the files, the ledger.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import feedparser
import pytest
from click.testing import CliRunner
from lxml import etree

from pipeline.cli import cli
from tests.conftest import free_port
from tests.helpers import FIRST_RUN, edit_article, ledger_rows, publish

A = "{http://www.w3.org/2005/Atom}"


class HubDouble(ThreadingHTTPServer):
    """Stands in for a WebSub hub: records pings; answers ``failures`` of them with 503."""

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _HubHandler)
        self.pings: list[dict[str, list[str]]] = []
        self.failures = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hub"

    def topics(self) -> list[str]:
        return sorted(p["hub.url"][0] for p in self.pings if p.get("hub.mode") == ["publish"])


class _HubHandler(BaseHTTPRequestHandler):
    server: HubDouble

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode("ascii"))
        assert self.headers["Content-Type"] == "application/x-www-form-urlencoded"
        if self.server.failures > 0:
            self.server.failures -= 1
            self.send_response(503)
        else:
            self.server.pings.append(form)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(project: Path) -> Iterator[HubDouble]:
    server = HubDouble(free_port())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _set_hub(project, server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _set_hub(project: Path, url: str) -> None:
    config = project / "pipeline.toml"
    text = config.read_text("utf-8")
    config.write_text(text.replace("[feeds]\n", f'[feeds]\nwebsub_hub = "{url}"\n'), "utf-8")


def test_every_feed_advertises_the_hub_and_itself(project: Path, hub: HubDouble) -> None:
    publish(project, send_email=False)
    public = project / "public"
    for directory in ("", "topics/scleroderma/"):
        atom = etree.parse(str(public / directory / "atom.xml")).getroot()
        links = {link.get("rel"): link.get("href") for link in atom.findall(f"{A}link")}
        assert links["hub"] == hub.url
        assert links["self"] == f"http://localhost:8000/{directory}atom.xml"
        channel = etree.parse(str(public / directory / "rss.xml")).getroot().find("channel")
        rss_links = {link.get("rel"): link.get("href") for link in channel.iter(f"{A}link")}
        assert rss_links == {"self": f"http://localhost:8000/{directory}rss.xml", "hub": hub.url}
        assert channel.findtext("link") == "http://localhost:8000/" + directory  # still the site
        parsed = feedparser.parse((public / directory / "rss.xml").read_bytes())
        assert not parsed.bozo
        document = json.loads((public / directory / "feed.json").read_text("utf-8"))
        assert document["hubs"] == [{"type": "WebSub", "url": hub.url}]


def test_a_publish_pings_exactly_the_feeds_that_changed(project: Path, hub: HubDouble) -> None:
    publish(project, send_email=False)
    feeds = {"rss.xml", "atom.xml", "feed.json"}
    first = hub.topics()
    assert first == sorted(
        f"http://localhost:8000/{d}{name}"
        for d in (
            "",
            *(
                f"topics/{t}/"
                for t in ("interstitial-lung-disease", "multiple-sclerosis", "scleroderma")
            ),
        )
        for name in feeds
    )
    hub.pings.clear()
    assert publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1)).websub is None
    assert hub.pings == []  # nothing changed: nothing to tell

    # An edit to a multiple-sclerosis article changes the site's feeds and that topic's only.
    edit_article(project, "ocrelizumab", "---\n", "---\nupdated: 2026-11-21\n")
    publish(project, send_email=False, now=FIRST_RUN + timedelta(days=2))
    assert hub.topics() == sorted(
        f"http://localhost:8000/{d}{name}"
        for d in ("", "topics/multiple-sclerosis/")
        for name in feeds
    )


def test_a_hub_that_fails_never_fails_the_publish_and_gets_the_ping_later(
    project: Path, hub: HubDouble
) -> None:
    hub.failures = 1000
    report = publish(project, send_email=False)
    assert report.written and report.websub is not None
    assert report.websub.notified == () and len(report.websub.pending) == 12
    assert "503" in next(iter(report.websub.pending.values()))
    status = CliRunner().invoke(cli, ["--root", str(project), "status", "--json"])
    assert len(json.loads(status.output)["websub_pending"]) == 12
    hub.failures = 0
    again = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert again.written == []  # nothing changed, but the owed pings go out
    assert again.websub is not None and len(again.websub.notified) == 12
    assert publish(project, send_email=False, now=FIRST_RUN + timedelta(days=2)).websub is None


def test_a_transient_hub_error_is_retried_within_the_publish(project: Path, hub: HubDouble) -> None:
    hub.failures = 2  # the first ping fails twice, then the hub recovers
    report = publish(project, send_email=False)
    assert report.websub is not None and report.websub.pending == {}
    assert len(hub.topics()) == 12


def test_an_unreachable_hub_is_a_warning_on_the_command_line(project: Path) -> None:
    _set_hub(project, f"http://127.0.0.1:{free_port()}/hub")  # nothing listens there
    result = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-email"])
    assert result.exit_code == 0, result.output
    assert "WebSub hub: cannot reach the hub" in result.output
    assert "announced at the next publish" in result.output


def test_a_hub_url_that_is_not_http_is_refused(project: Path) -> None:
    _set_hub(project, "ftp://hub.example.org/")
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1 and "websub_hub" in result.output


class _GarbageHub(threading.Thread):
    """Test double: a "hub" that answers every request with a line that is not HTTP."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hub"

    def run(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                connection.sendall(b"HELLO this is not HTTP\r\n\r\n")


def test_a_hub_that_answers_garbage_is_a_warning_not_a_traceback(project: Path) -> None:
    server = _GarbageHub()
    server.start()
    try:
        _set_hub(project, server.url)
        result = CliRunner().invoke(cli, ["--root", str(project), "publish", "--no-email"])
    finally:
        server.sock.close()
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    assert "WebSub hub: " in result.output and "announced at the next publish" in result.output


@pytest.mark.parametrize(
    "url",
    [
        "http://hub example.org/",
        "http://[::1/hub",
        'https://hub.example.org/a"b',
        "http://hub.example.org:99999/",
    ],
)
def test_a_hub_url_a_feed_cannot_carry_is_refused_by_check_and_publish(
    project: Path, url: str
) -> None:
    _set_hub(project, url.replace('"', '\\"'))
    for command in (["check"], ["publish", "--no-email"]):
        result = CliRunner().invoke(cli, ["--root", str(project), *command])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "websub_hub" in result.output
    assert not (project / "public" / "atom.xml").exists()


def test_owed_pings_are_dropped_once_the_hub_is_removed(project: Path, hub: HubDouble) -> None:
    hub.failures = 1000
    assert len(publish(project, send_email=False).websub.pending) == 12  # type: ignore[union-attr]
    config = project / "pipeline.toml"
    config.write_text(config.read_text("utf-8").replace(f'websub_hub = "{hub.url}"\n', ""))
    status = CliRunner().invoke(cli, ["--root", str(project), "status", "--json"])
    assert json.loads(status.output)["websub_pending"] == []  # owed to no hub
    table = CliRunner().invoke(cli, ["--root", str(project), "status"])
    assert "WebSub" not in table.output
    assert publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1)).websub is None
    assert ledger_rows(project, "SELECT topic_url FROM websub_pending") == []  # dropped


def test_owed_pings_for_feeds_outside_a_new_base_url_are_dropped(
    project: Path, hub: HubDouble
) -> None:
    hub.failures = 1000
    publish(project, send_email=False)
    config = project / "pipeline.toml"
    text = config.read_text("utf-8").replace("http://localhost:8000/", "https://news.example.org/")
    config.write_text(text, "utf-8")
    hub.failures, hub.pings = 0, []
    report = publish(project, send_email=False, now=FIRST_RUN + timedelta(days=1))
    assert report.websub is not None
    assert all(url.startswith("https://news.example.org/") for url in hub.topics())
    assert ledger_rows(project, "SELECT topic_url FROM websub_pending") == []
