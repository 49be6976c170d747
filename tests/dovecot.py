"""A throw-away Dovecot IMAP server (Debian's dovecot-imapd) for tests.

Started in its own temporary folder with its own configuration: plain IMAP on 127.0.0.1
and a free port, one user from a passwd-file, mail in Maildirs there. Run by an ordinary
user, every process runs as that user; run by root (as CI does), the login and internal
processes take Debian's unprivileged ``dovenull`` and ``dovecot`` users, since Dovecot
refuses to run those as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port, require_tool

USER, PASSWORD = "bounces", "imap-test-password"


@dataclass(frozen=True)
class Dovecot:
    port: int
    user: str = USER
    password: str = PASSWORD

    @property
    def url(self) -> str:
        return f"imap://{self.user}@127.0.0.1:{self.port}/INBOX"


def _config(base: Path, port: int) -> str:
    if os.geteuid() == 0:
        internal, login = "dovecot", "dovenull"
        mail_user = pwd.getpwnam("dovecot")
    else:
        mail_user = pwd.getpwuid(os.getuid())
        internal = login = mail_user.pw_name
    group = grp.getgrgid(mail_user.pw_gid).gr_name if os.geteuid() != 0 else "dovecot"
    for folder in ("mail", "home"):
        (base / folder).mkdir()
        os.chown(base / folder, mail_user.pw_uid, mail_user.pw_gid)
    return f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{base}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={base}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@contextmanager
def dovecot_server() -> Iterator[Dovecot]:
    """A running Dovecot for the block; skips (fails under CI) when it is not installed."""
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    binary = require_tool(binary, why="the IMAP bounce-mailbox test runs a real Dovecot")
    base = Path(tempfile.mkdtemp(prefix="pipeline-dovecot-"))
    base.chmod(0o755)  # the unprivileged login process must reach its sockets in run/
    port = free_port()
    (base / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n", encoding="utf-8")
    (base / "dovecot.conf").write_text(_config(base, port), encoding="utf-8")
    process = subprocess.Popen(
        [binary, "-F", "-c", str(base / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_greeting(port, process, base)
        yield Dovecot(port)
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(base, ignore_errors=True)


def _wait_for_greeting(port: int, process: subprocess.Popen[bytes], base: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (
                (base / "dovecot.log").read_text(errors="replace")
                if (base / "dovecot.log").exists()
                else ""
            )
            raise RuntimeError(
                f"dovecot stopped: {process.stderr.read() if process.stderr else ''!r} {log}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("dovecot did not greet within 20 s")
