"""The subscriber pages over HTTP (Starlette's test client), with a real SMTP server and ledger."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pipeline import load_settings
from pipeline.config import Settings
from pipeline.subscribers import load_subscribers, open_store, sign_token
from pipeline.web import create_app
from pipeline.web_subscribers import RateLimit, subscriber_routes
from tests.conftest import Received
from tests.helpers import publish

DISCLAIMER_PHRASE = "does not give medical advice"
KEY = "test-secret-key"
ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


@pytest.fixture
def settings(project: Path, smtp_server: Received) -> Settings:
    with open_store(load_settings(project)) as store:  # the editors' list, as a publish would
        lists = load_subscribers(project / "subscribers", project, known_topics=store.known_topics)
        store.merge(lists.entries, datetime.now(UTC))
    return load_settings(project)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        yield test_client


def app_client(settings: Settings, **options: object) -> TestClient:
    """The subscriber pages alone, with a chosen clock or rate limit."""
    app = Starlette(routes=subscriber_routes(settings, **options))  # type: ignore[arg-type]
    return TestClient(app, follow_redirects=False)


def status_of(settings: Settings, email: str) -> str | None:
    with open_store(settings) as store:
        record = store.find(email)
    return None if record is None else record.status


def main_text(html: str) -> str:
    return html[html.index("<main>") : html.index("</main>")]


def text_part(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def link_path(text: str, page: str) -> str:
    found = re.search(rf"https?://\S+/{page}/[A-Za-z0-9_.\-]+", text)
    assert found, f"no /{page}/ link in {text!r}"
    return urlsplit(found.group(0)).path


def sign_up(client: TestClient, email: str, *topics: str, name: str = "") -> str:
    response = client.post(
        "/subscribe/", data={"email": email, "name": name, "topic": list(topics)}
    )
    assert response.status_code == 200, response.text
    return response.text


def test_the_form_offers_every_topic_and_ends_with_the_disclaimer(
    client: TestClient, settings: Settings
) -> None:
    for path in ("/subscribe/", "/subscribe"):
        response = client.get(path)
        assert response.status_code == 200
        for label in settings.topics.values():
            assert label in response.text
        footer = response.text[response.text.index("</main>") :]
        assert DISCLAIMER_PHRASE in " ".join(footer.split())
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "set-cookie" not in response.headers


def test_a_sign_up_is_confirmed_by_the_button_behind_the_emailed_link(
    client: TestClient, settings: Settings, smtp_server: Received
) -> None:
    sign_up(client, "New.Reader@Example.ORG", "scleroderma", name="Nora Reader")

    assert smtp_server.recipients() == ["New.Reader@example.org"]
    (message,) = smtp_server.parsed()
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["To"].addresses[0].display_name == "Nora Reader"
    html = str(message.get_body(("html",)).get_content())  # type: ignore[union-attr]
    for body in (text_part(message), html):
        assert DISCLAIMER_PHRASE in " ".join(body.split())
        assert "Scleroderma" in body
    path = link_path(text_part(message), "confirm")
    assert path in html
    assert status_of(settings, "new.reader@example.org") == "pending"

    page = client.get(path)
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert client.head(path).status_code == 200
    assert status_of(settings, "new.reader@example.org") == "pending"  # opening changes nothing

    done = client.post(path)
    assert done.status_code == 200 and "You are subscribed" in done.text
    with open_store(settings) as store:
        record = store.find("new.reader@example.org")
    assert record is not None
    assert (record.status, record.name, record.topics) == ("active", "Nora Reader", {"scleroderma"})
    assert "Already confirmed" in client.post(path).text


def test_an_active_address_gets_the_same_answer_and_no_email(
    client: TestClient, smtp_server: Received
) -> None:
    known = sign_up(client, "ANA.REYES@example.org")
    unknown = sign_up(client, "someone.new@example.org")
    assert smtp_server.recipients() == ["someone.new@example.org"]
    assert main_text(known).replace("ANA.REYES", "X") == main_text(unknown).replace(
        "someone.new", "X"
    )


def test_repeated_sign_ups_send_one_confirmation(client: TestClient, smtp_server: Received) -> None:
    sign_up(client, "twice@example.org")
    sign_up(client, "TWICE@example.org")
    assert smtp_server.recipients() == ["twice@example.org"]


def test_an_expired_confirmation_link_gets_410_and_changes_nothing(
    client: TestClient, settings: Settings, smtp_server: Received
) -> None:
    sign_up(client, "slow@example.org")
    path = link_path(text_part(smtp_server.parsed()[0]), "confirm")
    later = datetime.now(UTC) + timedelta(days=8)
    with app_client(settings, clock=lambda: later) as late:
        for method in ("GET", "POST"):
            response = late.request(method, path)
            assert response.status_code == 410
            assert "expired" in response.text
    assert status_of(settings, "slow@example.org") == "pending"


def _tampered(token: str) -> str:
    return token[:-2] + ("xy" if not token.endswith("xy") else "zz")


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "tampered": lambda email: _tampered(sign_token(email, KEY, "unsubscribe")),
    "foreign key": lambda email: sign_token(email, "another-sites-key", "unsubscribe"),
    "other purpose": lambda email: sign_token(email, KEY, "preferences"),
    "garbage": lambda email: "not-a-token",
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_unsubscribe_token_gets_a_4xx_page_and_changes_nothing(
    client: TestClient, settings: Settings, kind: str
) -> None:
    token = BAD_TOKENS[kind]("ana.reyes@example.org")
    for method in ("GET", "POST"):
        response = client.request(method, f"/unsubscribe/{token}", **ONE_CLICK)  # type: ignore[arg-type]
        assert response.status_code == 400
        assert "This link does not work" in response.text
    assert status_of(settings, "ana.reyes@example.org") == "active"


def test_bad_preference_and_confirmation_tokens_get_400(
    client: TestClient, settings: Settings
) -> None:
    unsubscribe = sign_token("ana.reyes@example.org", KEY, "unsubscribe")
    for path in (
        f"/preferences/{unsubscribe}",
        f"/preferences/{_tampered(sign_token('ana.reyes@example.org', KEY, 'preferences'))}",
        f"/confirm/{unsubscribe}",
        "/confirm/nothing",
    ):
        response = client.post(path, data={"action": "unsubscribe"})
        assert response.status_code == 400, path
    assert status_of(settings, "ana.reyes@example.org") == "active"


def test_unsubscribe_get_changes_nothing_and_one_click_post_unsubscribes_at_once(
    client: TestClient, settings: Settings
) -> None:
    path = f"/unsubscribe/{sign_token('ana.reyes@example.org', KEY)}"
    page = client.get(path)
    assert page.status_code == 200
    assert page.text.count("<form") == 1 and page.text.count("<button") == 1
    assert client.head(path).status_code == 200  # link checkers send HEAD too
    assert status_of(settings, "ana.reyes@example.org") == "active"

    client.cookies.clear()
    response = client.post(path, **ONE_CLICK)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert "You are unsubscribed" in response.text
    with open_store(settings) as store:
        record = store.find("ana.reyes@example.org")
    assert record is not None
    assert (record.status, record.reason) == ("unsubscribed", "one-click unsubscribe")
    assert client.post(path, **ONE_CLICK).status_code == 200  # type: ignore[arg-type]
    assert "is not subscribed" in client.get(path).text


def test_the_links_in_a_digest_are_these_pages(
    project: Path, client: TestClient, settings: Settings, smtp_server: Received
) -> None:
    publish(project)
    message = next(m for m in smtp_server.parsed() if m["To"].addresses[0].username == "ben.okafor")
    unsubscribe_url = re.match(r"<([^>]+)>", message["List-Unsubscribe"])
    assert unsubscribe_url
    preferences = client.get(link_path(text_part(message), "preferences"))
    assert preferences.status_code == 200 and "ben.okafor@example.org" in preferences.text

    response = client.post(urlsplit(unsubscribe_url.group(1)).path, **ONE_CLICK)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert status_of(settings, "ben.okafor@example.org") == "unsubscribed"


def test_preferences_change_topics_or_unsubscribe(client: TestClient, settings: Settings) -> None:
    path = f"/preferences/{sign_token('dev.patel@example.org', KEY, 'preferences')}"
    page = client.get(path)
    assert page.status_code == 200
    assert re.search(r'value="scleroderma" checked', page.text)
    assert not re.search(r'value="multiple-sclerosis" checked', page.text)

    saved = client.post(
        path, data={"action": "save", "name": "Dev", "topic": ["multiple-sclerosis"]}
    )
    assert saved.status_code == 200 and "Saved" in saved.text
    with open_store(settings) as store:
        record = store.find("dev.patel@example.org")
    assert record is not None and (record.name, record.topics) == ("Dev", {"multiple-sclerosis"})

    refused = client.post(path, data={"action": "save", "topic": ["astrology"]})
    assert refused.status_code == 422
    with open_store(settings) as store:
        unchanged = store.find("dev.patel@example.org")
    assert unchanged is not None and unchanged.topics == {"multiple-sclerosis"}

    gone = client.post(path, data={"action": "unsubscribe"})
    assert gone.status_code == 200 and "You are unsubscribed" in gone.text
    assert status_of(settings, "dev.patel@example.org") == "unsubscribed"
    assert "sign up" in client.get(path).text


def test_invalid_input_is_refused_and_shown_escaped(
    client: TestClient, settings: Settings, smtp_server: Received
) -> None:
    evil = "<script>alert(1)</script>"
    response = client.post("/subscribe/", data={"email": evil, "name": evil})
    assert response.status_code == 422
    assert evil not in response.text and "&lt;script&gt;" in response.text
    unknown_topic = client.post("/subscribe/", data={"email": "x@example.org", "topic": evil})
    assert unknown_topic.status_code == 422 and evil not in unknown_topic.text
    assert smtp_server.messages == []
    assert status_of(settings, "x@example.org") is None

    sign_up(client, "named@example.org", name='<img src=x onerror="alert(1)">')
    token = sign_token("named@example.org", KEY, "preferences")
    client.post(link_path(text_part(smtp_server.parsed()[0]), "confirm"))
    page = client.get(f"/preferences/{token}").text
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_no_page_redirects(client: TestClient, smtp_server: Received) -> None:
    token = sign_token("ana.reyes@example.org", KEY)
    for method, path in [
        ("GET", "/subscribe?next=https://evil.example/"),
        ("POST", "/subscribe/?next=https://evil.example/&redirect=//evil.example"),
        ("GET", f"/unsubscribe/{token}?next=https://evil.example/"),
        ("POST", f"/unsubscribe/{token}?return_to=https://evil.example/"),
    ]:
        response = client.request(method, path, data={"email": "r@example.org"})
        assert response.status_code < 300, (method, path)
        assert "location" not in response.headers
        assert "evil.example" not in response.text


def test_sign_ups_are_limited_per_client(settings: Settings, smtp_server: Received) -> None:
    with app_client(settings, signup_limit=RateLimit(limit=2)) as limited:
        for n in range(2):
            sign_up(limited, f"reader{n}@example.org")
        refused = limited.post("/subscribe/", data={"email": "reader9@example.org"})
    assert refused.status_code == 429
    assert sorted(smtp_server.recipients()) == ["reader0@example.org", "reader1@example.org"]


def test_the_rate_limit_counts_each_client_within_its_window() -> None:
    limit = RateLimit(limit=2, window=timedelta(minutes=10))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert limit.allow("10.0.0.1", start) and limit.allow("10.0.0.1", start)
    assert not limit.allow("10.0.0.1", start + timedelta(minutes=5))
    assert limit.allow("10.0.0.2", start + timedelta(minutes=5))
    assert limit.allow("10.0.0.1", start + timedelta(minutes=10, seconds=1))
