"""Required settings written empty or blank are refused by `check` and `publish`, each
naming the section, the key and a value to write (pipeline.toml of the sample project)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config_checks import REQUIRED


def write_setting(root: Path, section: str, key: str, value: str) -> None:
    config = root / "pipeline.toml"
    text = config.read_text(encoding="utf-8")
    header = re.compile(rf"(?m)^\[{re.escape(section)}\]\n")
    if header.search(text):
        text = re.sub(rf"(?m)^{re.escape(key)} = .*\n", "", text)
    else:
        text += f"\n[{section}]\n"
    config.write_text(header.sub(lambda m: f"{m.group()}{key} = {value}\n", text, count=1), "utf-8")


@pytest.mark.parametrize("value", ['""', '"   "'])
@pytest.mark.parametrize(("section", "key"), sorted(REQUIRED))
def test_an_empty_required_setting_is_refused_by_check_and_publish(
    project: Path, section: str, key: str, value: str
) -> None:
    write_setting(project, section, key, value)
    for command in ("check", "publish"):
        result = CliRunner().invoke(cli, ["--root", str(project), command])
        assert result.exit_code == 1, (command, result.output)
        assert f"pipeline.toml: [{section}] {key} is empty; write a value, e.g. " in (result.output)
    assert not (project / "public").exists()


@pytest.mark.parametrize(
    ("label", "said"),
    [
        ('" "', "[topics] scleroderma has an empty label; name it, e.g. scleroderma = "),
        ("3", "[topics] scleroderma's label must be text in quotes, e.g. scleroderma = "),
    ],
)
def test_a_topic_label_that_is_empty_or_not_text_is_refused_naming_the_topic(
    project: Path, label: str, said: str
) -> None:
    write_setting(project, "topics", "scleroderma", label)
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1
    assert said + '"Scleroderma"' in result.output


@pytest.mark.parametrize(
    ("section", "key", "value", "words"),
    [
        # EHLO carries it (RFC 5321): blank or not a host name, the relay refuses every send.
        ("smtp", "local_hostname", '" "', "[smtp] local_hostname ' ' is not a host name"),
        ("smtp", "local_hostname", '"my laptop"', "is not a host name"),
        ("smtp", "local_hostname", f'"{"a" * 64}.example.org"', "a label of 64 characters"),
        # TOML has nan and inf: a rate of nan compared false with everything, so no limit.
        ("send", "rate_per_second", "nan", "rate_per_second must be a finite number, not nan"),
        ("smtp", "timeout", "inf", "timeout must be a finite number, not inf"),
        (
            "smtp",
            "timeout",
            '"inf"',
            "not text in quotes; write it like the default: timeout = 30.0",
        ),
        ("smtp", "timeout", '"45"', "as a number that is timeout = 45.0; the default is timeout"),
        # A port that is not one made `pipeline bounces` end in a traceback.
        ("bounces", "source", '"imaps://u@mail.example.org:99999/INBOX"', "invalid port"),
        ("bounces", "source", '"ftp://mail.example.org/bounces"', "imaps://user@host/INBOX"),
    ],
)
def test_a_setting_written_wrongly_is_refused_by_check_and_publish(
    project: Path, section: str, key: str, value: str, words: str
) -> None:
    write_setting(project, section, key, value)
    for command in ("check", "publish", "bounces"):
        result = CliRunner().invoke(cli, ["--root", str(project), command])
        assert result.exit_code == 1, (command, result.output)
        assert f"pipeline.toml: [{section}] " in result.output and words in result.output
        assert "Traceback" not in result.output
    assert not (project / "public").exists()


@pytest.mark.parametrize(
    "local_hostname", ["mail.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]"]
)
def test_a_host_name_or_address_literal_is_a_local_hostname(
    project: Path, local_hostname: str
) -> None:
    write_setting(project, "smtp", "local_hostname", f'"{local_hostname}"')
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 0, result.output


def test_a_password_in_a_wrong_smtp_url_is_not_printed(project: Path) -> None:
    for url in ("smtp://editor:s3cret@relay.example.org:smtp", "ftp://editor:s3cret@relay"):
        result = CliRunner().invoke(
            cli, ["--root", str(project), "check"], env={"PIPELINE_SMTP_URL": url}
        )
        assert result.exit_code == 1, result.output
        assert "SMTP URL" in result.output and "editor:***@relay" in result.output
        assert "s3cret" not in result.output
