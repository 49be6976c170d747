"""A real, throw-away PostgreSQL server for tests and benchmarks.

``postgres_server()`` runs ``initdb`` and ``pg_ctl`` from the machine's PostgreSQL binaries
in a fresh temporary folder, listening on 127.0.0.1 and a free port only, and removes it
all at the end. PostgreSQL refuses to run as root: as root the server runs as ``nobody``
(through ``runuser``), which owns only the temporary data folder.

``PIPELINE_TEST_DATABASE_URL`` names an existing server instead (its database is used as
given; each test makes and drops its own database on it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["bin_dir", "postgres_server"]

# Where Debian puts the server binaries; `pg_config --bindir` names another install.
DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")


def bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None when none is found."""
    candidates = [DEBIAN_BIN, *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.insert(0, Path(found.stdout.strip()))
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server(*, fsync: bool = True) -> Iterator[str]:
    """Start PostgreSQL in a temporary folder; yield its URL (``postgresql://…/postgres``).

    ``fsync=False`` trades crash safety of the throw-away server for speed (tests only; the
    benchmark keeps it on). Raises ``RuntimeError`` when the binaries are missing or the
    server does not start, with its log.
    """
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_root = os.geteuid() == 0
    user = "nobody" if as_root else None
    prefix = ["runuser", "-u", "nobody", "--"] if as_root else []
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    data, log = workdir / "data", workdir / "server.log"
    if user:
        shutil.chown(workdir, user=user)
    os.chmod(workdir, 0o700)
    port = _free_port()
    db_user = "pipeline"
    try:
        subprocess.run(
            [
                *prefix,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                db_user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
        )
        options = f"-h 127.0.0.1 -p {port} -k {workdir} -c max_connections=100" + (
            "" if fsync else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = [*prefix, str(binaries / "pg_ctl"), "-w", "-t", "60", "-D", str(data)]
        started = subprocess.run(
            [*pg_ctl, "-l", str(log), "-o", options, "start"],
            capture_output=True,
            text=True,
        )
        if started.returncode != 0:
            text = log.read_text() if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start:\n{text}")
        try:
            yield f"postgresql://{db_user}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
            )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"initdb failed: {exc.stderr.decode(errors='replace')}") from exc
    finally:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                shutil.rmtree(workdir)
                break
            except OSError:
                time.sleep(0.1)
