"""A private Postfix instance (Debian's postfix) acting as the relay that bounces later.

It listens on 127.0.0.1 and a free port, accepts every recipient, delivers mail for
``mx.example.com`` itself (where no user exists, so each such message bounces after it
was accepted, as real relays do) and passes everything else, the DSNs it writes included,
to ``[127.0.0.1]:<sink port>``: a test SMTP server standing for the rest of the Internet.
Its configuration, queue and log live in a temporary folder; the system's Postfix (if any)
is not touched. Postfix's master runs as root and its daemons as the ``postfix`` user, so
the fixture needs root (CI runs as root) and skips otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, require_tool

UNKNOWN_DOMAIN = "mx.example.com"  # delivered here, and nobody lives here

_MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
local     unix  - n n -  - local
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@dataclass(frozen=True)
class PostfixRelay:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


def _postfix(config: Path, command: str) -> subprocess.CompletedProcess[str]:
    # postfix-script reports to a terminal or syslog only; `script` gives it a terminal so
    # a failure's reason reaches the test's output.
    return subprocess.run(
        ["script", "-qec", f"postfix -c {config} {command}", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def postfix_relay(sink_port: int) -> Iterator[PostfixRelay]:
    """A running private Postfix relaying to ``sink_port``; see the module docstring."""
    require_tool("postfix", why="the late-bounce test runs a real Postfix relay")
    require_tool("script", why="it starts Postfix")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root)")
    base = Path(tempfile.mkdtemp(prefix="pipeline-postfix-"))
    base.chmod(0o755)  # the postfix user's daemons must reach the queue and data folders
    config, data = base / "conf", base / "data"
    for folder in (config, base / "queue", data):
        folder.mkdir()
    shutil.chown(data, user="postfix")
    port = free_port()
    (config / "master.cf").write_text(_MASTER_CF.format(port=port), encoding="utf-8")
    (config / "main.cf").write_text(
        f"""\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {data}
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
myhostname = relay.example.org
mydomain = example.org
myorigin = relay.example.org
mydestination = {UNKNOWN_DOMAIN}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{sink_port}
smtputf8_enable = no
biff = no
""",
        encoding="utf-8",
    )
    started = _postfix(config, "start")
    if started.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"postfix did not start: {started.stdout.strip()}")
    try:
        yield PostfixRelay(port, base / "maillog")
    finally:
        _postfix(config, "stop")
        shutil.rmtree(base, ignore_errors=True)
