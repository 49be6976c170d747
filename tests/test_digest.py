"""The digest: template checks, what reaches each part, and the editors' preview tools."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import load_settings, open_ledger
from pipeline.cli import cli
from pipeline.errors import TemplateError
from pipeline.preview import NothingToSend, build_preview, send_test, write_preview
from pipeline.template_check import check_templates
from tests.conftest import Received
from tests.helpers import FIRST_RUN, publish

MJML = "templates/digest.mjml.j2"
TEXT = "templates/digest.txt.j2"


def edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(root: Path, relative: str, fragment: str) -> int:
    lines = (root / relative).read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if fragment in line)


def test_the_shipped_templates_pass_every_check(project: Path) -> None:
    assert check_templates(load_settings(project)) == []


# (file, text to replace, replacement, a fragment of the line reported, words of the message)
BROKEN = [
    (MJML, "{{ item.summary }}", "{{ item.summary }}{{ sumary }}", "sumary", "unknown variable"),
    (MJML, "{{ item.summary }}", "{{ item.sumary }}", "item.sumary", "no attribute 'sumary'"),
    (TEXT, "{{ slot.greeting }}", "{{ slot.greeting }", "slot.greeting", "unexpected"),
    (MJML, 'padding="0 0 12px 0">{{ item', 'padding="0 0 12px 0" colour="red">{{ item', "colour", "unknown attribute 'colour'"),
    (MJML, '<mj-text css-class="meta" font-size="14px" color="#4a5663"', '<mj-text css-class="meta" font-size="12px" color="#4a5663"', "12px", "below 14px"),
    (MJML, 'color="#4a5663" padding="0 0 8px 0"', 'color="#9aa4ad" padding="0 0 8px 0"', "#9aa4ad", "contrast 2.5"),
    (MJML, 'style="color:#0b5cad">Unsubscribe', 'style="color:#8ab4e0">Unsubscribe', "#8ab4e0", "contrast"),
    (MJML, "{{ item.summary }}</mj-text>", '{{ item.summary }}<img src="https://example.org/x.png"></mj-text>', "x.png", "add alt"),
    (MJML, '<mj-text padding="0">{% if personal %}', '<mj-textt padding="0">{% if personal %}', "mj-textt", "unknown MJML tag"),
    (MJML, 'font-weight="700" border-radius="4px"', 'font-weight="heavy" border-radius="4px"', "heavy", "not valid"),
    (MJML, '<mjml lang="{{ site.language }}">', "<mjml>", "<mjml>", "set lang"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "old", "new", "fragment", "words"), BROKEN)
def test_a_broken_template_is_reported_with_file_and_line(
    project: Path, file: str, old: str, new: str, fragment: str, words: str
) -> None:
    edit(project, file, old, new)
    problems = check_templates(load_settings(project))
    matching = [p for p in problems if words in p.message]
    assert matching, [str(p) for p in problems]
    assert matching[0].file == file
    assert matching[0].line == line_of(project, file, fragment)


def test_nesting_is_checked_where_macros_place_the_tags(project: Path) -> None:
    # Inside the card macro the mj-text looks fine in the source; rendered, it sits in a section.
    edit(
        project,
        MJML,
        '      <mj-column>\n        <mj-text font-size="20px"',
        '      <mj-text font-size="20px"',
    )
    edit(project, MJML, "        </mj-button>\n      </mj-column>", "        </mj-button>")
    messages = [str(p) for p in check_templates(load_settings(project))]
    assert any("<mj-text>" in m and "inside <mj-section>" in m for m in messages), messages


def test_unclosed_tags_and_leftover_template_syntax_are_caught(project: Path) -> None:
    edit(project, MJML, "</mj-text>\n        {% endif %}", "\n        {% endif %}")
    edit(
        project,
        TEXT,
        "Unsubscribe:\n{{ slot.unsubscribe_url }}",
        "Unsubscribe:\n{% raw %}{{ url }}{% endraw %}",
    )
    messages = [str(p) for p in check_templates(load_settings(project))]
    assert any("MJML does not compile" in m or "closes no open tag" in m for m in messages)
    assert any(m.startswith(TEXT) and "'{{' is left in the output" in m for m in messages)


def test_a_bad_subject_template_is_a_problem_not_a_crash(project: Path) -> None:
    edit(
        project, "pipeline.toml", 'subject = "{site}: {first}{more}"', 'subject = "{site}: {titel}"'
    )
    problems = check_templates(load_settings(project))
    assert [p.field for p in problems] == ["[digest] subject"]
    assert "use {site}, {first}, {more} and {count}" in problems[0].message


def test_pipeline_check_lists_template_problems_and_exits_1(project: Path) -> None:
    edit(
        project, MJML, 'color="#4a5663" padding="0 0 8px 0"', 'color="#bbbbbb" padding="0 0 8px 0"'
    )
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1
    assert f"{MJML}:{line_of(project, MJML, '#bbbbbb')}: <mj-text>: text #bbbbbb" in result.output


# --- what reaches the message ---------------------------------------------------------------


def links(text: str, *, html: bool) -> list[str]:
    found = re.findall(r'href="([^"]+)"' if html else r"(?:https?|file)://\S+", text)
    ordered: list[str] = []
    for url in found:
        if not ordered or ordered[-1] != url:  # a title and its button share a link
            ordered.append(url.replace("&amp;", "&"))
    return ordered


def test_the_text_part_has_the_same_links_in_the_same_order(project: Path) -> None:
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        preview = build_preview(settings, ledger, subscriber="dev.patel@example.org", now=FIRST_RUN)
    html_links, text_links = links(preview.html, html=True), links(preview.text, html=False)
    assert len(html_links) >= 6
    assert html_links == text_links
    for part in (preview.html, preview.text):
        assert "does not give medical advice" in " ".join(part.split())
        assert "100 Example Avenue" in part
        assert "news about Interstitial lung disease, Scleroderma" in " ".join(part.split())


def test_subscriber_values_are_escaped_never_evaluated(project: Path) -> None:
    with (project / "subscribers" / "subscribers.csv").open("a", encoding="utf-8") as handle:
        handle.write('mallory@example.org,"{{ 7*7777 }} <b>Mal</b> __SLOT_x_email__",\n')
    edit(project, "articles/nintedanib.md", 'title: "', 'title: "{{ 6*9999 }} __SLOT_abc_email__ ')
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        preview = build_preview(settings, ledger, subscriber="mallory@example.org", now=FIRST_RUN)
    assert "Hello {{ 7*7777 }} &lt;b&gt;Mal&lt;/b&gt; __SLOT_x_email__," in preview.html
    assert "Hello {{ 7*7777 }} <b>Mal</b> __SLOT_x_email__," in preview.text
    assert "{{ 6*9999 }} __SLOT_abc_email__" in preview.html
    assert "54439" not in preview.html and "59994" not in preview.html


# --- preview and send-test ------------------------------------------------------------------


def assert_nothing_recorded(root: Path) -> None:
    settings = load_settings(root)
    with open_ledger(settings) as ledger:
        assert ledger.last_run() is None
        assert ledger.known_articles() == {}
        counts = ledger.delivery_counts()
        assert (counts.pending, counts.sent, counts.failed) == (0, 0, 0)


def test_preview_writes_three_files_and_records_nothing(
    project: Path, smtp_server: Received
) -> None:
    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        preview = write_preview(settings, ledger, now=FIRST_RUN)
    folder = project / "state" / "preview"
    assert sorted(p.name for p in folder.iterdir()) == ["digest.eml", "digest.html", "digest.txt"]
    message = email.message_from_bytes((folder / "digest.eml").read_bytes(), policy=policy.default)
    assert (
        message["Subject"] == preview.subject == "Scleroderma Therapy News: Ocrelizumab and 4 more"
    )
    assert (folder / "digest.html").read_text(encoding="utf-8") == preview.html
    assert f"View in your browser:\n{(folder / 'digest.html').as_uri()}" in preview.text
    assert_nothing_recorded(project)

    report = publish(project)  # the real publish still announces everything
    assert report.delivery is not None and report.delivery.sent == 5


def test_preview_of_one_subscriber_shows_only_their_topics(project: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--root", str(project), "preview", "--subscriber", "BEN.okafor@example.org"]
    )
    assert result.exit_code == 0, result.output
    assert "Subject: Scleroderma Therapy News: Ocrelizumab\n" in result.output
    html = (project / "state" / "preview" / "digest.html").read_text(encoding="utf-8")
    assert "/articles/ocrelizumab/" in html and "/articles/nintedanib/" not in html
    assert "Hello Ben Okafor," in html


def test_preview_says_why_there_is_nothing_to_show(project: Path) -> None:
    settings = load_settings(project)
    with open_ledger(settings) as ledger, pytest.raises(NothingToSend, match="nobody@"):
        build_preview(settings, ledger, subscriber="nobody@example.org", now=FIRST_RUN)
    publish(project, send_email=False)
    with open_ledger(settings) as ledger, pytest.raises(NothingToSend, match="no digest"):
        build_preview(settings, ledger, now=FIRST_RUN)


def test_send_test_mails_one_marked_copy_and_records_nothing(
    project: Path, smtp_server: Received
) -> None:
    result = CliRunner().invoke(
        cli, ["--root", str(project), "send-test", "--to", "editor@example.org"]
    )
    assert result.exit_code == 0, result.output
    assert smtp_server.recipients() == ["editor@example.org"]
    (message,) = smtp_server.parsed()
    assert message["Subject"].startswith("[TEST] Scleroderma Therapy News:")
    assert message["To"] == "editor@example.org"
    assert_nothing_recorded(project)

    settings = load_settings(project)
    with open_ledger(settings) as ledger:
        again, _ = send_test(settings, ledger, "editor@example.org")
    assert again.message.message_id != message["Message-ID"], "a fresh id, never collapsed"


@pytest.mark.parametrize(
    ("file", "old"),
    [(TEXT, "{{ disclaimer_text | wrap(72) }}"), (MJML, "{{ disclaimer_html }}")],
)
def test_a_digest_template_without_the_disclaimer_is_refused(
    project: Path, smtp_server: Received, file: str, old: str
) -> None:
    edit(project, file, old, "")
    problems = check_templates(load_settings(project))
    assert [(p.file, "disclaimer" in p.message) for p in problems] == [(file, True)]
    with pytest.raises(TemplateError, match="disclaimer"):
        publish(project)
    assert smtp_server.messages == []
    assert not (project / "state" / "pipeline.db").exists() or not publish_recorded(project)


def publish_recorded(root: Path) -> bool:
    import sqlite3

    with sqlite3.connect(root / "state" / "pipeline.db") as db:
        return bool(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
