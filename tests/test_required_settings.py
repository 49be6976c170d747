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


def test_an_empty_topic_label_is_refused(project: Path) -> None:
    write_setting(project, "topics", "scleroderma", '" "')
    result = CliRunner().invoke(cli, ["--root", str(project), "check"])
    assert result.exit_code == 1
    assert "[topics] scleroderma has an empty label; name it, e.g. scleroderma = " in result.output
