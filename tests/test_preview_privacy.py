"""Nothing personal is written where the site is served from: previews go to state/preview/.

Real parts: the CLI through CliRunner, the served site through a real uvicorn server.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from pipeline import load_settings
from pipeline.cli import cli
from pipeline.web import create_app
from tests.conftest import free_port, served
from tests.helpers import publish

BEN = "ben.okafor@example.org"


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_a_subscribers_preview_never_lands_in_public(project: Path) -> None:
    result = CliRunner().invoke(cli, ["--root", str(project), "preview", "--subscriber", BEN])
    assert result.exit_code == 0, result.output
    assert "state/preview/digest.eml" in result.output
    eml = (project / "state" / "preview" / "digest.eml").read_text(encoding="ascii")
    assert "/unsubscribe/" in eml  # Ben's working link: exactly why it must stay private
    leaked = [
        p for p in files_under(project / "public") if "unsubscribe/" in p.read_text("latin-1")
    ]
    assert leaked == []
    assert not (project / "public" / "preview").exists()

    publish(project)
    port = free_port()
    with served(create_app(load_settings(project)), port):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/preview/digest.eml")
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
    assert status == 404


def test_a_preview_left_in_public_by_an_earlier_version_is_removed_at_publish(
    project: Path,
) -> None:
    legacy = project / "public" / "preview"
    legacy.mkdir(parents=True)
    (legacy / "digest.eml").write_text("List-Unsubscribe: <http://x/unsubscribe/T>\n")
    report = publish(project)
    assert not legacy.exists()
    assert "preview/" in report.removed


def test_an_export_is_never_written_under_public(project: Path) -> None:
    target = project / "public" / "subscribers.csv"
    result = CliRunner().invoke(
        cli, ["--root", str(project), "subscribers", "export", "--output", str(target)]
    )
    assert result.exit_code == 1
    assert "refusing to write subscribers under public/" in result.output
    assert not target.exists()
