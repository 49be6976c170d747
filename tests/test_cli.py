"""The ``pipeline`` command through click's CliRunner: exact exit codes, what is printed, and
what is (not) written. Questions and colour need a real terminal: those tests run the
command in a subprocess on a pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import click
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner, Result

from pipeline.articles import parse_article
from pipeline.cli import cli
from tests.conftest import REPO, Received, RecordingHandler, free_port
from tests.helpers import publish as publish_with_library
from tests.terminal import STYLE_CODE, run_in_terminal

SLUGS = [
    "alemtuzumab",
    "nintedanib",
    "nintedanib-senscis-results",
    "ocrelizumab",
    "tocilizumab",
]
SUBSCRIBERS = 5  # in subscribers/subscribers.csv; the first publish reaches all of them


def run(root: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--root", str(root), *args], input=input)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def set_config(root: Path, section: str, line: str) -> None:
    config = root / "pipeline.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace(f"[{section}]\n", f"[{section}]\n{line}\n", 1), "utf-8")


# --- every command ---------------------------------------------------------------------------


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix}{name} "))
    return found


def test_every_command_and_option_has_help_text() -> None:
    commands = all_commands(cli)
    assert {"check", "new", "publish", "status"} <= {name for name, _ in commands}
    for name, command in commands:
        assert (command.help or "").strip(), f"`pipeline {name}` has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"`pipeline {name} {param.opts[0]}` has no help"
        result = CliRunner().invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0, result.output
        assert command.help.strip().splitlines()[0] in " ".join(result.output.split())


def test_top_level_help_lists_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for line in ("0  done", "1  problems found", "2  usage error", "3  delivered only in part"):
        assert line in result.output


@pytest.mark.parametrize(
    "args",
    [["no-such-command"], ["status", "--no-such-option"], ["new"], ["status", "-q", "-v"]],
)
def test_usage_errors_exit_2(project: Path, args: list[str]) -> None:
    result = run(project, *args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr


def test_a_folder_that_is_not_a_project_is_refused(tmp_path: Path) -> None:
    for command in ("status", "check", "publish", "new"):
        args = [command, "A title"] if command == "new" else [command]
        result = run(tmp_path, *args)
        assert result.exit_code == 1, (command, result.output)
        assert result.stderr == (
            f"error: {tmp_path} is not a pipeline project: it has neither pipeline.toml nor an "
            "articles/ folder; run the command in your project folder or give it with --root DIR\n"
        )
    assert tree(tmp_path) == []


def test_no_colour_when_not_a_terminal(project: Path) -> None:
    (project / "articles" / "broken.md").write_text("no front matter\n", encoding="utf-8")
    for args in (["status"], ["check"]):
        result = run(project, *args)
        assert not STYLE_CODE.search(result.output)


# --- check -----------------------------------------------------------------------------------


def test_check_passes_on_the_sample_project_and_writes_nothing(project: Path) -> None:
    before = tree(project)
    result = run(project, "check")
    assert result.exit_code == 0, result.output
    first, size = result.stdout.splitlines()
    assert first == "Everything checks out."
    assert re.fullmatch(
        r"Largest digest: HTML part: [\d,]+ bytes of the 90,000-byte budget "
        r"\(Gmail clips past about 102 KB\); 5 article\(s\), all as full cards",
        size,
    )
    assert tree(project) == before
    document = json.loads(run(project, "check", "--json").stdout)
    assert document["ok"] is True and document["largest_digest"] == size


def test_check_lists_every_problem_as_file_line_field(project: Path) -> None:
    (project / "articles" / "broken.md").write_text(
        "---\ntitle: Broken\npublished: someday\ntopics: [lupus]\n---\nText.\n", encoding="utf-8"
    )
    with (project / "subscribers" / "subscribers.csv").open("a", encoding="utf-8") as handle:
        handle.write("not-an-address,Someone,\n")

    result = run(project, "check")

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "articles/broken.md:1: summary: is required; add a line 'summary: …' to the front matter",
        "articles/broken.md:3: published: 'someday' is not a date; "
        "write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ",
        "articles/broken.md:4: topics: 'lupus' is not a known topic; use one of "
        "interstitial-lung-disease, multiple-sclerosis, scleroderma "
        "or add it under [topics] in pipeline.toml",
        "subscribers/subscribers.csv:7: email: 'not-an-address' is not a valid email address: An email address must have an @-sign.",
    ]
    assert result.stderr == "error: 4 problems found; fix each line above, then check again\n"


def test_check_json_is_one_document_with_every_problem(project: Path) -> None:
    (project / "articles" / "broken.md").write_text("no front matter\n", encoding="utf-8")
    result = run(project, "check", "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["problems"] == [
        {
            "file": "articles/broken.md",
            "line": 1,
            "field": None,
            "message": "the file must start with a '---' line opening the YAML front matter",
            "text": "articles/broken.md:1: the file must start with a '---' line opening "
            "the YAML front matter",
        }
    ]
    assert json.loads(run(project, "check", "--json").stdout)["ok"] is False
    (project / "articles" / "broken.md").unlink()
    clean = run(project, "check", "--json")
    assert clean.exit_code == 0
    assert {k: v for k, v in json.loads(clean.stdout).items() if k != "largest_digest"} == {
        "ok": True,
        "problems": [],
    }


def test_check_names_every_unknown_configuration_key(project: Path) -> None:
    set_config(project, "smtp", 'hots = "relay.example.org"\nprot = 587')
    result = run(project, "check")
    assert result.exit_code == 1
    assert result.stdout == (
        "pipeline.toml: [smtp] unknown keys 'hots', 'prot'; "
        "known keys are url, timeout, local_hostname, connect_timeout\n"
    )


def test_invalid_toml_is_reported_with_its_line(project: Path) -> None:
    config = project / "pipeline.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    config.write_text("\n".join([*lines, "title = = 'x'"]) + "\n", encoding="utf-8")
    for command in ("check", "status"):
        result = run(project, command)
        assert result.exit_code == 1
        assert f"pipeline.toml:{len(lines) + 1}: not valid TOML: " in result.output
        assert "Traceback" not in result.output


def test_template_errors_name_file_and_line(project: Path) -> None:
    template = project / "templates" / "digest.txt.j2"
    lines = template.read_text(encoding="utf-8").splitlines()
    lines[4] += " {{ no_such_variable }}"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(project, "check")
    assert result.exit_code == 1
    assert (
        result.stdout
        == "templates/digest.txt.j2:5: no_such_variable: unknown variable; use one of base_url, collapsed, disclaimer_html, disclaimer_text, more_count, more_url, new, period, personal, preheader, sender, site, slot, subject, subscribe_url, updated\n"
    )

    lines[4] += " {% if %}"
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(project, "publish")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: templates/digest.txt.j2:5: ")
    assert len(result.stderr.splitlines()) == 1
    assert not (project / "public").exists()


def test_check_flags_a_published_article_still_holding_the_placeholders(project: Path) -> None:
    assert run(project, "new", "Rituximab in scleroderma").exit_code == 0
    assert run(project, "check").exit_code == 0  # a draft may hold them
    path = project / "articles" / "rituximab-in-scleroderma.md"
    path.write_text(path.read_text("utf-8").replace("draft: true", "draft: false"), "utf-8")
    result = run(project, "check")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "articles/rituximab-in-scleroderma.md:3: summary: still the placeholder; "
        "summarise the article",
        "articles/rituximab-in-scleroderma.md:11: body: still says 'Write the article here, "
        "in Markdown.'; write the article",
    ]


# --- status ----------------------------------------------------------------------------------


def test_status_shows_the_plan_and_creates_nothing(project: Path) -> None:
    before = tree(project)
    result = run(project, "status")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert sorted(row[1] for row in rows if row[:1] == ["new"]) == SLUGS
    assert ["total", str(SUBSCRIBERS)] in rows
    assert ["pending", "0"] in rows
    assert ["last", "publish", "never"] in rows
    assert tree(project) == before  # no state/, no ledger, no secret key


def test_status_after_a_publish_reads_the_ledger_without_touching_it(
    project: Path, smtp_server: Received
) -> None:
    publish_with_library(project)
    state = project / "state"
    before = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}

    result = run(project, "status", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["next_publish"]["new"] == []
    assert document["next_publish"]["unchanged"] == len(SLUGS)
    assert document["next_publish"]["digest"] is None
    assert document["deliveries"] == {"pending": 0, "deferred": 0, "failed": 0, "sent": 5}
    assert document["last_publish"]["digest"] == 1
    assert document["destination"].startswith("SMTP 127.0.0.1:")
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()} == before


def test_status_of_an_invalid_article_lists_the_problems(project: Path) -> None:
    (project / "articles" / "broken.md").write_text("---\ntitle: x\n", encoding="utf-8")
    result = run(project, "status")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "articles/broken.md:1: the front matter is never closed; add a '---' line after it",
        "error: 1 problem found; nothing was published",
    ]


# --- publish ---------------------------------------------------------------------------------


def test_dry_run_changes_nothing_at_all(project: Path, smtp_server: Received) -> None:
    before = tree(project)
    result = run(project, "publish", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "Dry run: nothing written, recorded or sent."
    assert tree(project) == before
    assert smtp_server.messages == []


def test_dry_run_json_is_the_plan(project: Path, smtp_server: Received) -> None:
    result = run(project, "publish", "--dry-run", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["dry_run"] is True
    assert sorted(e["slug"] for e in document["plan"]["new"]) == SLUGS
    assert document["plan"]["digest"]["recipients"] == SUBSCRIBERS
    assert sum(a["recipients"] for a in document["plan"]["digest"]["audiences"]) == SUBSCRIBERS
    assert document["written"] == [] and document["delivery"] is None
    assert not (project / "state").exists()


def test_publish_sends_then_a_second_run_has_nothing_to_do(
    project: Path, smtp_server: Received
) -> None:
    first = run(project, "publish")
    assert first.exit_code == 0, first.output
    assert len(smtp_server.messages) == SUBSCRIBERS
    lines = first.stdout.splitlines()
    assert "Published 5 new, 0 updated and 0 withdrawn article(s)." in lines
    files = [p for p in (project / "public").rglob("*") if p.is_file()]
    assert f"Wrote {len(files)} file(s) under public/." in lines
    summary = re.compile(rf": {SUBSCRIBERS} sent, 0 deferred, 0 failed, [\d,]+ a second\.$")
    assert any(summary.search(line) for line in lines), lines

    second = run(project, "publish")
    assert second.exit_code == 0
    assert second.stdout.splitlines()[-3:] == [
        "Nothing new, updated or withdrawn.",
        "Files in public/ unchanged.",
        "No email to send.",
    ]
    assert len(smtp_server.messages) == SUBSCRIBERS


def test_publish_json_reports_what_was_done(project: Path, smtp_server: Received) -> None:
    result = run(project, "publish", "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["dry_run"] is False
    written = document["written"]
    assert {"atom.xml", "rss.xml", "index.html", "digests/1/index.html"} <= set(written)
    assert written == sorted(set(written), key=written.index)  # each file once
    assert document["digest"] == 1
    assert document["delivery"]["sent"] == len(smtp_server.messages) == SUBSCRIBERS
    assert document["delivery"]["complete"] is True


def test_quiet_publish_prints_nothing_and_verbose_lists_the_files(
    project: Path, smtp_server: Received
) -> None:
    quiet = run(project, "publish", "--no-email", "-q")
    assert quiet.exit_code == 0
    assert quiet.output == ""
    (project / "public" / "rss.xml").unlink()
    verbose = run(project, "publish", "--verbose")
    assert verbose.exit_code == 0
    assert "wrote public/rss.xml" in verbose.stdout.splitlines()


def test_no_email_updates_the_feeds_and_emails_nobody(project: Path, smtp_server: Received) -> None:
    result = run(project, "publish", "--no-email")
    assert result.exit_code == 0, result.output
    assert (project / "public" / "atom.xml").exists()
    assert smtp_server.messages == []
    assert "No email sent (--no-email)." in result.stdout.splitlines()
    assert "No digest: --no-email; the changes count as published without one." in result.stdout
    assert json.loads(run(project, "status", "--json").stdout)["next_publish"]["new"] == []


def test_an_unreachable_mail_server_is_named_in_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{port}")
    result = run(project, "publish", "--quiet")
    assert result.exit_code == 3  # published; the mail waits in the outbox
    assert result.stdout == ""
    reason, waiting = result.stderr.splitlines()
    assert f"cannot reach the SMTP server at 127.0.0.1:{port} (" in reason
    assert "5 message(s) wait in the outbox; `pipeline deliver` sends them" in waiting
    assert "Traceback" not in result.output


class RefusingHandler(RecordingHandler):
    """Refuses one recipient for good (550), like a mailbox that does not exist."""

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        if address.startswith("ben."):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"


def test_a_partial_delivery_exits_3(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received = Received()
    controller = Controller(RefusingHandler(received), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        monkeypatch.setenv("PIPELINE_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        result = run(project, "publish")
    finally:
        controller.stop()
    assert result.exit_code == 3, result.output
    assert len(received.messages) == SUBSCRIBERS - 1
    assert "warning: 1 message(s) failed for good; see `pipeline status`" in result.stderr


def test_an_unexpected_bug_keeps_its_traceback(project: Path) -> None:
    script = (
        "import pipeline.status\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('a bug, not an input problem')\n"
        "pipeline.status.project_status = broken\n"
        "import pipeline.cli\n"
        "import pipeline.cli_publish\n"
        "pipeline.cli_publish.project_status = broken\n"
        "pipeline.cli.main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "--root", str(project), "status"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.rstrip().endswith("RuntimeError: a bug, not an input problem")


# --- publish on a terminal: the question before a large send ---------------------------------


def terminal_env(smtp_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    return {**env, "TERM": "xterm-256color", "PIPELINE_SMTP_URL": smtp_url, **extra}


def smtp_url() -> str:
    return os.environ["PIPELINE_SMTP_URL"]


def test_publish_asks_on_a_terminal_and_a_no_sends_nothing(
    project: Path, smtp_server: Received
) -> None:
    set_config(project, "send", "confirm_above = 4")
    args = ["--root", str(project), "publish"]
    code, screen = run_in_terminal(args, terminal_env(smtp_url()), answer="n")
    assert "Email 5 subscribers now? [y/N]" in screen
    assert code == 1
    assert "Nothing published." in screen
    assert smtp_server.messages == []
    assert not (project / "public").exists()

    code, screen = run_in_terminal(args, terminal_env(smtp_url()), answer="y")
    assert code == 0, screen
    assert len(smtp_server.messages) == SUBSCRIBERS


def test_yes_or_a_small_list_or_no_terminal_never_asks(
    project: Path, smtp_server: Received
) -> None:
    set_config(project, "send", "confirm_above = 4")
    code, screen = run_in_terminal(
        ["--root", str(project), "publish", "--yes", "--dry-run"], terminal_env(smtp_url())
    )
    assert code == 0 and "[y/N]" not in screen
    result = run(project, "publish")  # CliRunner: stdin is not a terminal
    assert result.exit_code == 0
    assert "[y/N]" not in result.output
    assert len(smtp_server.messages) == SUBSCRIBERS


def test_colour_on_a_terminal_unless_no_color(project: Path, smtp_server: Received) -> None:
    args = ["--root", str(project), "status"]
    _, coloured = run_in_terminal(args, terminal_env(smtp_url()))
    _, plain = run_in_terminal(args, terminal_env(smtp_url(), NO_COLOR="1"))
    assert STYLE_CODE.search(coloured)
    assert not STYLE_CODE.search(plain)
    assert "alemtuzumab" in plain


# --- new -------------------------------------------------------------------------------------


def test_new_creates_a_draft_dated_today(project: Path) -> None:
    result = run(project, "new", "Rituximab: B-cell depletion in SSc-ILD", "--topic", "scleroderma")
    assert result.exit_code == 0, result.output
    path = project / "articles" / "rituximab-b-cell-depletion-in-ssc-ild.md"
    assert result.stdout.splitlines()[0] == "articles/rituximab-b-cell-depletion-in-ssc-ild.md"
    article, problems = parse_article(path.stem, "x.md", path.read_text(encoding="utf-8"))
    assert problems == [] and article is not None
    assert article.title == "Rituximab: B-cell depletion in SSc-ILD"
    assert article.published.date() == date.today()
    assert article.topics == ("scleroderma",)
    assert article.draft is True
    assert run(project, "check").exit_code == 0
    assert run(project, "status", "--json").exit_code == 0


def test_new_refuses_to_overwrite(project: Path) -> None:
    before = (project / "articles" / "nintedanib.md").read_bytes()
    result = run(project, "new", "Nintedanib")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: articles/nintedanib.md already exists; edit it, or choose another title or --slug\n"
    )
    assert (project / "articles" / "nintedanib.md").read_bytes() == before
    assert not [p for p in (project / "articles").iterdir() if p.name.startswith(".")]


def test_new_quiet_prints_only_the_path_and_takes_a_slug(project: Path) -> None:
    result = run(project, "new", "Élan: a trial", "--slug", "elan-trial", "-q")
    assert result.exit_code == 0
    assert result.output == "articles/elan-trial.md\n"
    assert 'title: "Élan: a trial"' in (project / "articles" / "elan-trial.md").read_text("utf-8")


def test_new_rejects_an_unknown_topic(project: Path) -> None:
    result = run(project, "new", "Lupus news", "--topic", "lupus")
    assert result.exit_code == 2  # a value typed wrongly is a usage error
    assert "Error: Invalid value for '--topic': unknown topic 'lupus'; use one of " in result.stderr
    assert not (project / "articles" / "lupus-news.md").exists()


def test_ledger_read_only_never_writes(project: Path) -> None:
    from pipeline.store import Ledger

    path = project / "state" / "pipeline.db"
    with Ledger.read_only(path) as ledger:
        assert ledger.known_articles() == {}
    assert not path.parent.exists()
    publish_with_library(project, send_email=False)
    with Ledger.read_only(path) as ledger, pytest.raises(sqlite3.OperationalError):
        ledger.suppress("someone@example.org", "test", datetime.now(UTC))


def test_an_error_in_json_mode_is_still_one_json_document(project: Path) -> None:
    (project / "articles" / "broken.md").write_text("---\ntitle: x\n", encoding="utf-8")
    for command in ("status", "publish"):
        result = run(project, command, "--json")
        assert result.exit_code == 1
        document = json.loads(result.stdout)
        assert document["ok"] is False
        assert document["error"] == "1 problem found; nothing was published"
        assert [p["file"] for p in document["problems"]] == ["articles/broken.md"]
