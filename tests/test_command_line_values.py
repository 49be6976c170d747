"""Values typed on the command line (click's CliRunner, the shipped sample project).

A value typed wrongly (a date, an address, a topic, a URL, a mailbox) is a usage error:
exit 2 and one line naming the option and the forms it takes, never exit 1 or a traceback.
An empty value is refused, never read as "not given". Output is for people unless --json.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from pipeline.cli import cli
from tests.test_cli import all_commands

# Options whose help gives '' a meaning ("'' for none", "'' for every topic").
EMPTY_MEANS_SOMETHING = {
    ("subscribers add", "--name"),
    ("subscribers add", "--topics"),
    ("subscribers set", "--name"),
    ("subscribers set", "--topics"),
}


def run(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--root", str(root), *args])


def usage_line(result: Result) -> str:
    """The one ``Error:`` line click prints for a usage error."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "option", "hint"),
    [
        (["subscribers", "reactivate", "--since", "yesterday"], "'--since'", "YYYY-MM-DD"),
        (["subscribers", "reactivate", "--since", "2026-13-01"], "'--since'", "YYYY-MM-DD"),
        # Past year 9999 once in UTC: was an OverflowError traceback.
        (["subscribers", "reactivate", "--since", "9999-12-31T23:00-05:00"], "'--since'", "9999"),
        (["subscribers", "reactivate", "--since", "0001-01-01T00:00+05:00"], "'--since'", "0001"),
        (["subscribers", "add", "not-an-address"], "'EMAIL'", "name@example.org"),
        (["subscribers", "set", "a@", "--name", "A"], "'EMAIL'", "name@example.org"),
        (["subscribers", "show", "nobody"], "'EMAIL'", "name@example.org"),
        (["subscribers", "remove", "nobody"], "'EMAIL'", "name@example.org"),
        (["subscribers", "forget", "nobody"], "'EMAIL'", "name@example.org"),
        (["subscribers", "bounces", "nobody"], "ADDRESS", "name@example.org"),
        (["subscribers", "reactivate", "nobody"], "ADDR", "name@example.org"),
        (["subscribers", "add", "a@example.org", "--topics", "cats"], "'--topics'", "separated"),
        (["subscribers", "set", "a@example.org", "--topics", "x;y"], "'--topics'", "separated"),
        (["send-test", "--to", "me"], "'--to'", "name@example.org"),
        (["preview", "--subscriber", "me"], "'--subscriber'", "name@example.org"),
        (["new", "A title", "--topic", "cats"], "'--topic'", "[topics]"),
        (["ledger", "copy", "--to", "mysql://db/x"], "'--to'", "postgresql://"),
        (["bounces", "--from", "imaps://"], "--from", "imaps://user@host/INBOX"),
        (["bounces", "--from", "no/such/maildir"], "--from", "a Maildir, an mbox file"),
        (["bounces", "--from", "imaps://u@mail.example.org:99999/INBOX"], "--from", "993"),
        (["bounces", "--from", "imaps://u@mail.example.org:imap/INBOX"], "--from", "993"),
        (["bounces", "--from", "ftp://mail.example.org/x"], "--from", "imaps://user@host"),
        (["ledger", "copy", "--to", "postgresql://u@db.example.org:pg/x"], "'--to'", ":5432/"),
        (["new", "A title", "--slug", "../elsewhere"], "'--slug'", "'elsewhere'"),
        (["new", "A title", "--slug", "Mixed Case"], "'--slug'", "'mixed-case'"),
        (["digests", "--as-of", "soon"], "--as-of", "2026-11-30T08:00"),
        (["serve", "--port", "70000"], "'--port'", "0<=x<=65535"),
        (["subscribers", "reactivate"], "--cause", "--since"),
    ],
)
def test_a_value_typed_wrongly_is_a_usage_error_naming_option_and_forms(
    project: Path, args: list[str], option: str, hint: str
) -> None:
    before = sorted(p.name for p in project.rglob("*"))
    result = run(project, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = usage_line(result)
    assert option in line and hint in line, line
    assert sorted(p.name for p in project.rglob("*")) == before  # nothing done


def test_a_root_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    """``--root`` is typed like ``--from``: a folder that is not there is exit 2, not 1."""
    for root in (tmp_path / "nope", tmp_path / "file.txt"):
        if root.name == "file.txt":
            root.write_text("not a folder", encoding="utf-8")
        result = CliRunner().invoke(cli, ["--root", str(root), "check"])
        assert result.exit_code == 2, result.output
        line = usage_line(result)
        assert "'--root'" in line and str(root) in line, line


def value_parameters() -> list[tuple[str, str]]:
    """Every (command, option or argument) that takes a typed value, across the CLI."""
    found = [("", "--root")]
    for name, command in all_commands(cli):
        if isinstance(command, click.Group):
            continue
        for param in command.params:
            if isinstance(param, click.Option) and param.is_flag:
                continue
            spelled = param.opts[0] if isinstance(param, click.Option) else ""
            found.append((name, spelled))
    return found


@pytest.mark.parametrize(
    ("name", "spelled"), [p for p in value_parameters() if p not in EMPTY_MEANS_SOMETHING]
)
def test_an_empty_value_is_refused_not_read_as_missing(
    project: Path, name: str, spelled: str
) -> None:
    command = name.split()
    # The empty value comes first, so click converts it before anything else is needed.
    args = ["--root", "", "status"] if spelled == "--root" else [*command, spelled, ""]
    if not spelled:  # an argument
        args = [*command, ""]
    result = CliRunner().invoke(
        cli, args if spelled == "--root" else ["--root", str(project), *args]
    )
    assert result.exit_code == 2, (name, spelled, result.output)
    assert usage_line(result).startswith("Error: Invalid value for")


def test_the_empty_values_with_a_documented_meaning_are_taken(project: Path) -> None:
    """``--name ''`` means no name and ``--topics ''`` every topic: both are accepted."""
    import json

    assert set(value_parameters()) >= EMPTY_MEANS_SOMETHING  # still options of these commands
    added = run(project, "subscribers", "add", "ana@example.org", "--name", "", "--topics", "")
    assert added.exit_code == 0, added.output
    run(project, "subscribers", "remove", "ana@example.org")
    named = run(project, "subscribers", "add", "ben@example.org", "--name", "Ben", "--topics",
                "scleroderma")  # fmt: skip
    assert named.exit_code == 0, named.output
    changed = run(project, "subscribers", "set", "ben@example.org", "--name", "", "--topics", "")
    assert changed.exit_code == 0, changed.output
    shown = json.loads(run(project, "subscribers", "show", "ben@example.org", "--json").output)
    assert (shown["subscriber"]["name"], shown["subscriber"]["topics"]) == ("", [])


def test_as_of_empty_is_not_now(project: Path) -> None:
    """`--as-of ''` used to run the due digests as of now."""
    result = run(project, "digests", "--due", "--as-of", "")
    assert result.exit_code == 2, result.output
    assert "'--as-of'" in usage_line(result)
    assert not (project / "state").exists()


def test_subscribers_show_is_for_people_unless_json(project: Path) -> None:
    assert run(project, "subscribers", "add", "ann@example.org", "--name", "Ann").exit_code == 0
    shown = run(project, "subscribers", "show", "ann@example.org")
    assert shown.exit_code == 0, shown.output
    with pytest.raises(json.JSONDecodeError):
        json.loads(shown.stdout)
    assert shown.stdout.splitlines()[0] == "ann@example.org"
    assert "  status:    active" in shown.stdout
    assert "  name:      Ann" in shown.stdout
    exported = run(project, "subscribers", "show", "ann@example.org", "--json")
    assert json.loads(exported.stdout)["subscriber"]["name"] == "Ann"


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["check"],
        ["digests"],
        ["deliver"],
        ["bounces"],
        ["subscribers", "bounces"],
        ["subscribers", "reactivate", "--cause", "nothing matches this"],
        ["subscribers", "show", "someone@example.com"],
    ],
)
def test_every_json_command_prints_text_by_default_and_only_json_with_json(
    project: Path, args: list[str]
) -> None:
    text = run(project, *args)
    assert text.exit_code == 0, text.output
    if text.stdout.strip():
        with pytest.raises(json.JSONDecodeError):
            json.loads(text.stdout)
    document = run(project, *args, "--json")
    assert document.exit_code == 0, document.output
    assert isinstance(json.loads(document.stdout), dict)


def test_bounces_on_a_new_project_has_nothing_to_read_yet(project: Path) -> None:
    result = run(project, "bounces")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Nothing to read yet: no bounce mail has arrived at {project / 'state' / 'bounces'} "
        "(set [bounces] source or use --from to read elsewhere).\n"
    )
    document = json.loads(run(project, "bounces", "--json").stdout)
    assert document["read"] == 0 and document["nothing_yet"] is True
