"""Atomic file writes: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["write_all_if_changed", "write_atomic", "write_if_changed"]


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds exactly ``data``; True if written.

    Leaving unchanged files alone keeps their mtime, so HTTP caches and rsync stay quiet.
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, data)
    return True


def write_all_if_changed(files: Iterable[tuple[Path, bytes]], *, batch: int = 256) -> list[Path]:
    """``write_if_changed`` for many files at once; returns the paths written.

    Same guarantee per file (a temporary file, synced, renamed over the old one), but the
    syncs come after a whole batch is written: the first one commits the batch to the
    journal and the rest find little left to do, instead of one commit per file.
    """
    written: list[Path] = []
    pending: list[tuple[Path, bytes]] = []
    for path, data in files:
        try:
            if path.read_bytes() == data:
                continue
        except FileNotFoundError:
            pass
        pending.append((path, data))
        if len(pending) >= batch:
            written += _write_batch(pending)
            pending = []
    written += _write_batch(pending)
    return written


def _write_batch(files: list[tuple[Path, bytes]]) -> list[Path]:
    temporaries: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporaries.append((tmp_name, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp_name, 0o644)
        for tmp_name, _ in temporaries:
            fd = os.open(tmp_name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp_name, path in temporaries:
            os.replace(tmp_name, path)
    except BaseException:
        for tmp_name, _ in temporaries:
            Path(tmp_name).unlink(missing_ok=True)
        raise
    return [path for _, path in temporaries]
