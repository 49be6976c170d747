"""DKIM settings as a site operator meets them: every mistake in ``[dkim]`` or its keys is
one line from ``pipeline check`` and from ``pipeline publish``, naming the setting and the
fix, and nothing is sent (signed or not) when signing was asked for and cannot happen.

Keys are made by ``openssl``, as the README tells operators to make them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.signing import DKIM_ED25519_KEY_ENV, DKIM_KEY_ENV
from tests.conftest import Received, require_tool


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the keys it means; none may leak in from the caller's shell."""
    monkeypatch.delenv(DKIM_KEY_ENV, raising=False)
    monkeypatch.delenv(DKIM_ED25519_KEY_ENV, raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of keys an operator might point ``[dkim]`` at, good and bad."""
    openssl = require_tool("openssl", why="makes the DKIM keys as the README says")
    folder = tmp_path_factory.mktemp("keys")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run("genrsa", "-out", "rsa2048.pem", "2048")
    run("genrsa", "-out", "rsa1024.pem", "1024")
    run("genrsa", "-aes256", "-passout", "pass:secret", "-out", "encrypted.pem", "2048")
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem")
    run("genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem")
    (folder / "notes.txt").write_text("the DKIM key is in the password manager\n")
    (folder / "huge.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 2_000_000)
    (folder / "a-folder").mkdir()
    return folder


def cli_run(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--root", str(root), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.stdout, result.stderr


def configure_dkim(project: Path, keys: Path, lines: str) -> None:
    config = project / "pipeline.toml"
    config.write_text(config.read_text() + "\n[dkim]\n" + lines.replace("KEYS", str(keys)))


# (the [dkim] lines, the RSA key in the environment or None, what the line must name)
MISTAKES = {
    "not a PEM file": ('selector = "s1"\nkey_file = "KEYS/notes.txt"', None, ["[dkim] key_file", "openssl genrsa"]),
    "an encrypted key": ('selector = "s1"\nkey_file = "KEYS/encrypted.pem"', None, ["[dkim] key_file", "passphrase", "openssl pkey"]),
    "an RSA-1024 key": ('selector = "s1"', "rsa1024.pem", [DKIM_KEY_ENV, "1024-bit", "openssl genrsa -out dkim.pem 2048"]),
    "an EC key": ('selector = "s1"\nkey_file = "KEYS/ec.pem"', None, ["[dkim] key_file", "ECDSA", "openssl genrsa"]),
    "an Ed25519 key as the RSA key": ('selector = "s1"\nkey_file = "KEYS/ed25519.pem"', None, ["[dkim] key_file", "ed25519_key_file"]),
    "a missing file": ('selector = "s1"\nkey_file = "KEYS/missing.pem"', None, ["[dkim] key_file", "No such file"]),
    "a folder": ('selector = "s1"\nkey_file = "KEYS/a-folder"', None, ["[dkim] key_file", "directory"]),
    "a huge file": ('selector = "s1"\nkey_file = "KEYS/huge.pem"', None, ["[dkim] key_file", "bytes", "openssl genrsa"]),
    "an escaped PEM that is not a key": ('selector = "s1"', "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----", [DKIM_KEY_ENV, "openssl genrsa"]),
    "a selector with spaces": ('selector = "news 2026"', "rsa2048.pem", ["[dkim] selector", "DNS name"]),
    "a selector label over 63 characters": (f'selector = "{"s" * 64}"', "rsa2048.pem", ["[dkim] selector", "DNS name", "at most 63"]),
    "a selector whose DNS record is too long": (f'selector = "{".".join(["s" * 63] * 3 + ["s" * 50])}"', "rsa2048.pem", ["[dkim] selector", "over DNS's 253", "shorter selector"]),
    "a selector written as a number": ("selector = 2026", "rsa2048.pem", ["[dkim] selector", 'in quotes that is selector = "2026"']),
    "two selectors differing in case only": ('selector = "news"\ned25519_selector = "News"\ned25519_key_file = "KEYS/ed25519.pem"', "rsa2048.pem", ["[dkim] ed25519_selector must differ from selector"]),
    "a domain that is no DNS name": ('selector = "s1"\ndomain = "exa mple"', "rsa2048.pem", ["[dkim] domain", "not a DNS name"]),
    "a domain not aligned": ('selector = "s1"\ndomain = "example.com"', "rsa2048.pem", ["[dkim] domain", "align"]),
    "an RSA key as the Ed25519 key": ('selector = "s1"\ned25519_selector = "e1"\ned25519_key_file = "KEYS/rsa2048.pem"', "rsa2048.pem", ["[dkim] ed25519_key_file", "openssl genpkey -algorithm ed25519"]),
    "an encrypted Ed25519 key": ('selector = "s1"\ned25519_selector = "e1"\ned25519_key_file = "KEYS/encrypted.pem"', "rsa2048.pem", ["[dkim] ed25519_key_file", "passphrase"]),
}  # fmt: skip


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_dkim_mistake_is_one_line_from_check_and_publish_and_nothing_is_sent(
    mistake: str,
    project: Path,
    keys: Path,
    smtp_server: Received,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines, rsa_env, named = MISTAKES[mistake]
    monkeypatch.delenv(DKIM_ED25519_KEY_ENV, raising=False)
    if rsa_env is None:
        monkeypatch.delenv(DKIM_KEY_ENV, raising=False)
    else:
        key_path = keys / rsa_env
        monkeypatch.setenv(DKIM_KEY_ENV, key_path.read_text() if key_path.is_file() else rsa_env)
    configure_dkim(project, keys, lines)

    code, out, err = cli_run(project, "check")
    reported = [line for line in out.splitlines() if "dkim" in line.lower()]
    assert code == 1 and len(reported) == 1, out + err
    for part in named:
        assert part in reported[0], (part, reported[0])
    assert "Traceback" not in out + err

    code, out, err = cli_run(project, "publish", "--yes")
    assert code == 1 and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err
    for part in named:
        assert part in err, (part, err)
    assert smtp_server.messages == []
    assert not (project / "public").exists()  # refused before anything was written


def test_check_reports_every_dkim_mistake_at_once(
    project: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``publish`` stops at the first; ``check`` names them all, so one edit fixes them."""
    configure_dkim(
        project,
        keys,
        'selector = "news 2026"\ndomain = "example.com"\nkey_file = "KEYS/ec.pem"\n'
        'ed25519_selector = "e1"\ned25519_key_file = "KEYS/missing.pem"\n',
    )
    code, out, _ = cli_run(project, "check")
    reported = [line for line in out.splitlines() if "dkim" in line.lower()]
    assert code == 1
    for setting in ("selector", "domain", "key_file", "ed25519_key_file"):
        assert any(f"[dkim] {setting}" in line for line in reported), (setting, out)
    assert len(reported) == 4, out


def test_a_good_rsa_key_from_key_file_and_ed25519_pem_sign_every_message(
    project: Path, keys: Path, smtp_server: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's recipe end to end: both signatures on every message sent."""
    configure_dkim(
        project,
        keys,
        'selector = "news2026"\nkey_file = "KEYS/rsa2048.pem"\n'
        'ed25519_selector = "ed2026"\ned25519_key_file = "KEYS/ed25519.pem"\n',
    )
    assert cli_run(project, "check")[0] == 0
    code, _, err = cli_run(project, "publish", "--yes")
    assert code == 0, err
    assert smtp_server.messages
    for _, raw in smtp_server.messages:
        assert raw.count(b"DKIM-Signature:") == 2
        assert b"a=rsa-sha256" in raw and b"a=ed25519-sha256" in raw
