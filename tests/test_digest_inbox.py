"""The digest as inboxes show it: never clipped, the same links in both parts, URLs whole in
the text part, and "view in browser" pages that name no one.

Messages go through a real SMTP server (aiosmtpd) and are parsed with the stdlib ``email``
package; sizes are the bytes of the decoded HTML part, as a mail client holds it.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path

from lxml import html as lxml_html

from pipeline import load_settings, open_ledger
from pipeline.digest_layout import HTML_BUDGET
from pipeline.digest_templates import wrap_text
from pipeline.preview import build_preview
from tests.conftest import Received
from tests.helpers import FIRST_RUN, publish

GMAIL_CLIP = 102_000
URL = re.compile(r"https?://[^\s<>\"]+")


def add_articles(root: Path, count: int, *, slug_prefix: str = "therapy") -> None:
    for n in range(count):
        (root / "articles" / f"{slug_prefix}-{n:02d}.md").write_text(
            "---\n"
            f"title: 'Therapy number {n}: a long and descriptive title about a monoclonal "
            "antibody studied in systemic sclerosis'\n"
            "summary: A summary of two sentences that says what the therapy is, who makes it, "
            "how it is given and what its pivotal trial found, in plain words for patients. "
            "It goes on a little to be as long as the summaries editors really write.\n"
            f"published: 2026-10-{1 + n % 28:02d}\n"
            "topics: [scleroderma]\n"
            "therapy:\n  name: Examplimab\n  maker: Example Pharmaceuticals\n"
            "  brands: [Examplo, Exemplar]\n"
            "---\nText.\n",
            encoding="utf-8",
        )


def parts(message: EmailMessage) -> tuple[str, str, bytes]:
    """The decoded HTML and text parts, and the HTML part as sent (transfer-encoded)."""
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    raw = html_part.as_bytes()
    text = str(text_part.get_content()).replace("\r\n", "\n")
    return str(html_part.get_content()), text, raw


def hrefs(html: str) -> set[str]:
    return {str(h) for h in lxml_html.fromstring(html).xpath("//a/@href")}


def test_sixty_articles_stay_under_the_clip_line_with_the_footer_intact(
    project: Path, smtp_server: Received
) -> None:
    add_articles(project, 60)
    publish(project)
    messages = smtp_server.parsed()
    assert messages
    postal = load_settings(project).sender.postal_address
    long_ones = 0
    for message in messages:
        html, text, raw = parts(message)
        size = len(html.encode("utf-8"))
        assert size <= HTML_BUDGET, size
        assert len(raw) < GMAIL_CLIP, len(raw)  # quoted-printable, as Gmail receives it
        unsubscribe = str(message["List-Unsubscribe"]).split(",")[0].strip("<> ")
        for needle in (unsubscribe, "does not give medical advice", postal):
            offset = html.encode("utf-8").find(needle.encode("utf-8"))
            assert 0 <= offset < HTML_BUDGET, needle
            assert needle in " ".join(text.split())
        if len(re.findall(r"/articles/therapy-", html)) < 60:
            continue  # a reader of other topics: a short digest
        long_ones += 1
        assert "Also in this digest" in html and "ALSO IN THIS DIGEST" in text
        more = re.search(r"And (\d+) more on the site", html)
        if more:
            assert f"And {more.group(1)} more on the site: http://localhost:8000/" in text
    assert long_ones >= 3


def test_the_preview_reports_the_size_and_layout(project: Path) -> None:
    add_articles(project, 60)
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        preview = build_preview(settings, ledger, now=FIRST_RUN)
    assert preview.layout is not None and preview.layout.total == 65
    assert preview.layout.collapsed and preview.layout.full > 0
    line = preview.size_line()
    assert f"{preview.html_bytes:,} bytes of the 90,000-byte budget" in line
    assert f"{preview.layout.full} as full cards" in line


def test_both_parts_carry_the_same_links_and_the_text_keeps_urls_whole(
    project: Path, smtp_server: Received
) -> None:
    add_articles(
        project, 40, slug_prefix="a-very-long-slug-that-makes-the-article-url-longer-than-a-line"
    )
    publish(project)
    for message in smtp_server.parsed():
        html, text, _ = parts(message)
        text_urls = set(URL.findall(text))
        assert hrefs(html) == text_urls
        # The same articles, by title, and the same summaries for the full cards.
        flat = " ".join(text.split())
        document = lxml_html.fromstring(html)
        for link in document.xpath("//a[contains(@href, '/articles/')]"):
            title = " ".join(link.text_content().split())
            if title and title != "Read the article":
                assert title in flat, title
        assert flat.count("A summary of two sentences") == html.count("A summary of two sentences")
        for line in text.splitlines():
            found = URL.search(line)
            if found is None:
                assert len(line) <= 80, line
            else:  # a URL is whole, alone on its line or after a short label that fits
                assert URL.fullmatch(line.strip()) or len(line) <= 72, line


def test_wrap_text_breaks_at_spaces_only() -> None:
    url = "https://clinicaltrials.gov/study/NCT02597933?term=nintedanib&cond=scleroderma&rank=1"
    wrapped = wrap_text(f"See the record at {url} for the trial's design and results.", 40, "  ")
    assert url in wrapped.splitlines()[1]
    assert all(len(line) <= 40 for line in wrapped.splitlines() if url not in line)
    assert "antibody-drug" in wrap_text("an antibody-drug conjugate " * 3, 20)


def test_web_copy_and_editions_carry_no_personal_slot_or_link(
    project: Path, smtp_server: Received
) -> None:
    report = publish(project)
    assert report.digest_id == 1
    public = project / "public"
    archive = (public / "digests" / "1" / "index.html").read_text("utf-8")
    subscribers = (project / "subscribers" / "subscribers.csv").read_text("utf-8")
    addresses = [line.split(",")[0] for line in subscribers.splitlines()[1:]]
    seen_editions = set()
    for message in smtp_server.parsed():
        html, text, _ = parts(message)
        view = next(h for h in hrefs(html) if "/digests/1/" in h)
        assert f"View in your browser:\n{view}\n" in text
        edition_path = public / view.removeprefix("http://localhost:8000/") / "index.html"
        edition = edition_path.read_text("utf-8")
        seen_editions.add(view)

        # Same articles as the email, in the same order.
        def articles(page: str) -> list[str]:
            return [h for h in re.findall(r'href="([^"]+/articles/[^"]+)"', page)]

        assert articles(edition) == articles(html)
        for page in (edition, archive):
            assert "You receive this email because" not in page
            assert "/unsubscribe/" not in page and "/preferences/" not in page
            assert "__SLOT_" not in page
            assert not any(address in page for address in addresses)
            assert "http://localhost:8000/subscribe/" in page
    assert len(seen_editions) > 1  # readers of different topic sets get different editions


def test_check_refuses_a_personal_value_in_the_web_copy(project: Path) -> None:
    from pipeline.template_check import check_templates

    template = project / "templates" / "digest.mjml.j2"
    source = template.read_text("utf-8")
    source = source.replace(
        "{% if personal %}{{ slot.greeting }} here{% else %}Here{% endif %}",
        "{{ slot.greeting }} here",
    )
    template.write_text(source, "utf-8")
    problems = check_templates(load_settings(project))
    assert [p.message for p in problems if "personal" in p.message] == [
        "the web copy (personal false) shows a personal value; keep every slot.* inside "
        "{% if personal %}"
    ]


def test_the_confirmation_text_keeps_its_link_and_long_words_whole(project: Path) -> None:
    """A sibling of the digest's text part: the sign-up confirmation's."""
    import email as email_parser
    from datetime import UTC, datetime
    from email import policy

    from pipeline.confirmation import confirmation_message
    from pipeline.disclaimer import load_disclaimer

    long_url = "https://example.org/" + "a" * 90 + "?term=scleroderma&rank=1"
    (project / "templates" / "disclaimer.md").write_text(
        f"**Medical disclaimer.** Read the full policy at {long_url} before anything else.",
        "utf-8",
    )
    settings = load_settings(project)
    confirm = "http://localhost:8000/confirm/" + "t" * 120
    message = confirmation_message(
        settings,
        load_disclaimer(settings.paths.templates, settings.base_url),
        email="ana.reyes@example.org",
        name="Ana",
        topics=frozenset({"scleroderma"}),
        confirm_url=confirm,
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )
    parsed = email_parser.message_from_bytes(message.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    plain = parsed.get_body(("plain",))
    assert plain is not None
    lines = str(plain.get_content()).replace("\r\n", "\n").splitlines()
    assert confirm in lines and long_url in lines
    assert all(len(line) <= 72 or URL.fullmatch(line) for line in lines), lines
