"""Commands that change subscribers change only what they were told, say what changed,
and show people as the rest of the pipeline counts them; one person's data can be
exported and erased. Real ledger (SQLite), the CLI through click's CliRunner."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from tests.conftest import Received
from tests.helpers import publish

ANA = "ana.reyes@example.org"


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--root", str(root), "subscribers", *args])


def listed(root: Path) -> dict[str, list[str]]:
    result = run(root, "list")
    assert result.exit_code == 0, result.output
    return {
        # status, topics, name (the frequency after them is checked in test_cadence.py)
        line.split("\t")[0]: line.split("\t")[1:4]
        for line in result.output.splitlines()
        if "\t" in line
    }


def test_add_on_an_existing_subscriber_changes_nothing(project: Path) -> None:
    assert run(project, "import", str(project / "subscribers" / "subscribers.csv")).exit_code == 0
    result = run(project, "add", ANA)
    assert result.exit_code == 0
    assert "already active; nothing changed" in result.output
    assert listed(project)[ANA] == ["active", "scleroderma", "Ana Reyes"]


def test_add_with_different_values_refuses_and_names_set(project: Path) -> None:
    run(project, "import", str(project / "subscribers" / "subscribers.csv"))
    result = run(project, "add", ANA, "--name", "Ana R.")
    assert result.exit_code == 1
    assert "name: 'Ana Reyes' -> 'Ana R.'" in result.output
    assert "pipeline subscribers set" in result.output
    assert listed(project)[ANA] == ["active", "scleroderma", "Ana Reyes"]


def test_add_with_a_different_frequency_refuses_and_names_set(project: Path) -> None:
    # A known reader's frequency is theirs: `add` must not drop the option silently either.
    run(project, "import", str(project / "subscribers" / "subscribers.csv"))
    result = run(project, "add", ANA, "--frequency", "weekly")
    assert result.exit_code == 1
    assert "frequency: immediately -> weekly" in result.output
    assert "pipeline subscribers set" in result.output
    assert run(project, "add", ANA, "--frequency", "immediately").exit_code == 0


def test_set_changes_only_what_it_is_given_and_says_so(project: Path) -> None:
    run(project, "import", str(project / "subscribers" / "subscribers.csv"))
    result = run(project, "set", ANA, "--topics", "scleroderma;lupus-nephritis")
    assert result.exit_code == 2 and "lupus-nephritis" in result.output  # typed wrongly
    result = run(project, "set", ANA, "--topics", "scleroderma;interstitial-lung-disease")
    assert result.exit_code == 0, result.output
    assert "topics: scleroderma -> interstitial-lung-disease;scleroderma" in result.output
    assert listed(project)[ANA] == ["active", "interstitial-lung-disease;scleroderma", "Ana Reyes"]
    result = run(project, "set", ANA, "--name", "Ana R.")
    assert "name: 'Ana Reyes' -> 'Ana R.'" in result.output
    assert listed(project)[ANA] == ["active", "interstitial-lung-disease;scleroderma", "Ana R."]
    assert run(project, "set", ANA).exit_code == 2  # nothing to set is a usage error
    assert run(project, "set", "nobody@example.org", "--name", "X").exit_code == 1


def test_a_re_import_that_would_change_name_or_topics_says_so(project: Path) -> None:
    run(project, "import", str(project / "subscribers" / "subscribers.csv"))
    changed = project / "changed.csv"
    changed.write_text(f"email,name,topics\n{ANA},Ana Maria Reyes,\n", encoding="utf-8")
    result = run(project, "import", str(changed))
    assert result.exit_code == 0
    assert f"changed.csv:2: {ANA}: name: 'Ana Reyes' -> 'Ana Maria Reyes'" in result.output
    assert "topics: scleroderma -> every topic" in result.output
    assert listed(project)[ANA] == ["active", "scleroderma", "Ana Reyes"]  # kept
    # A publish merges the lists too: it says the file's values are not taken.
    (project / "subscribers" / "changed.csv").write_bytes(changed.read_bytes())
    published = CliRunner().invoke(cli, ["--root", str(project), "publish", "--dry-run"])
    assert "2 subscriber list value(s) differ from the ledger and are ignored" in published.output


def test_list_on_a_fresh_project_shows_the_lists_people(project: Path) -> None:
    people = listed(project)
    assert len(people) == 5
    assert people[ANA] == ["active", "scleroderma", "Ana Reyes"]
    assert not (project / "state").exists()


def test_show_exports_one_persons_data_as_json(project: Path, tmp_path: Path) -> None:
    publish(project)  # Ana gets the first digest (into the Maildir)
    result = run(project, "show", ANA, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["email"] == ANA
    assert data["subscriber"]["name"] == "Ana Reyes"
    assert data["subscriber"]["topics"] == ["scleroderma"]
    assert [m["status"] for m in data["messages"]] == ["sent"]
    assert data["list_rows"][0]["source"] == "subscribers/subscribers.csv:2"


def test_forget_erases_the_person_and_a_re_import_never_brings_them_back(project: Path) -> None:
    publish(project)
    database = project / "state" / "pipeline.db"
    with sqlite3.connect(database) as db:  # one failed row to her: it must never be retried
        db.execute("UPDATE outbox SET status = 'failed' WHERE email = ?", (ANA,))
    result = run(project, "forget", ANA)
    assert result.exit_code == 0, result.output
    assert f"{ANA} forgotten" in result.output
    assert "subscribers/subscribers.csv:2: still names" in result.output
    retried = CliRunner().invoke(cli, ["--root", str(project), "deliver", "--retry-failed"])
    assert "0 failed message(s) made pending again" in retried.output
    with sqlite3.connect(database) as db:
        dump = "\n".join(db.iterdump())
    assert "ana.reyes" not in dump.lower() and "Ana Reyes" not in dump
    # The list file still has her line: neither a publish, an import nor `add` re-adds her.
    assert run(project, "import", str(project / "subscribers" / "subscribers.csv")).exit_code == 0
    assert ANA not in listed(project)
    refused = run(project, "add", ANA)
    assert refused.exit_code == 1 and "asked to be forgotten" in refused.output
    publish(project)
    with sqlite3.connect(database) as db:
        assert "ana.reyes" not in "\n".join(db.iterdump()).lower()


def test_a_preferences_post_without_the_name_field_keeps_the_name(
    project: Path, smtp_server: object
) -> None:
    from starlette.testclient import TestClient

    from pipeline import load_settings
    from pipeline.subscribers import sign_token
    from pipeline.web import create_app

    run(project, "import", str(project / "subscribers" / "subscribers.csv"))
    token = sign_token(ANA, "test-secret-key", "preferences")
    with TestClient(create_app(load_settings(project))) as client:
        answer = client.post(
            f"/preferences/{token}", data={"action": "save", "topic": ["multiple-sclerosis"]}
        )
    assert answer.status_code == 200
    assert listed(project)[ANA] == ["active", "multiple-sclerosis", "Ana Reyes"]


def test_check_warns_when_forgotten_addresses_were_hashed_under_another_key(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(project, "forget", ANA).exit_code == 0
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1  # her line is still in the list file
    assert "subscribers/subscribers.csv:2: email: this address asked to be forgotten" in (
        result.output
    )
    csv_file = project / "subscribers" / "subscribers.csv"
    csv_file.write_text(
        "".join(x for x in csv_file.read_text().splitlines(True) if ANA not in x), "utf-8"
    )
    assert CliRunner().invoke(cli, ["--root", str(project), "check"]).exit_code == 0
    monkeypatch.setenv("PIPELINE_SECRET_KEY", "a-new-key")
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1
    assert "hashed under an earlier secret key" in result.output


def test_a_confirmed_sign_up_by_a_forgotten_address_brings_it_back(
    project: Path, smtp_server: Received
) -> None:
    import re

    from starlette.testclient import TestClient

    from pipeline import load_settings
    from pipeline.web import create_app

    assert run(project, "forget", ANA).exit_code == 0
    with TestClient(create_app(load_settings(project))) as client:
        client.post("/subscribe/", data={"email": ANA, "name": "Ana", "topic": ["scleroderma"]})
        (message,) = smtp_server.parsed()
        text = message.get_body(("plain",))
        assert text is not None
        link = re.search(r"/confirm/\S+", str(text.get_content()))
        assert link is not None
        assert client.post(link.group(0)).status_code == 200
    assert listed(project)[ANA] == ["active", "scleroderma", "Ana"]
    assert run(project, "add", "ana.reyes@example.org").exit_code == 0  # no longer refused


def test_commands_on_a_list_person_not_imported_yet_act_on_their_list_row(
    project: Path, smtp_server: Received
) -> None:
    """`list` shows the CSV's people before any publish, so `add`, `set` and `remove` on
    one of them must act on that person as listed: `add` keeping their name and topics,
    `remove` unsubscribing them so the next publish does not mail them."""
    assert listed(project)[ANA] == ["active", "scleroderma", "Ana Reyes"]  # not imported yet
    result = run(project, "add", ANA)
    assert result.exit_code == 0, result.output
    assert "already active; nothing changed" in result.output
    assert listed(project)[ANA] == ["active", "scleroderma", "Ana Reyes"]
    ben = "ben.okafor@example.org"
    result = run(project, "set", ben, "--name", "Ben O.")
    assert result.exit_code == 0, result.output
    assert "name: 'Ben Okafor' -> 'Ben O.'" in result.output
    assert listed(project)[ben] == ["active", "multiple-sclerosis", "Ben O."]
    emma = "emma.schulz@example.org"
    result = run(project, "remove", emma)
    assert result.exit_code == 0, result.output
    assert f"{emma} unsubscribed" in result.output
    assert listed(project)[emma][0] == "unsubscribed"
    publish(project)  # PIPELINE_SMTP_URL points at smtp_server
    assert emma not in smtp_server.recipients()
    assert ANA in smtp_server.recipients() and ben in smtp_server.recipients()
