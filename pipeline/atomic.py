"""Atomic file writes: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["write_all_if_changed", "write_atomic", "write_if_changed", "write_new"]


def _durable_temporary(path: Path, data: bytes, mode: int) -> str:
    """A temporary file beside ``path`` holding ``data``, synced to disk; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return tmp_name


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over."""
    tmp_name = _durable_temporary(path, data, mode)
    try:
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Like ``write_atomic``, but raise ``FileExistsError`` rather than replace a file.

    A hard link to the finished temporary file fails if ``path`` exists, so two writers can
    never both succeed and nobody sees the file half written.
    """
    tmp_name = _durable_temporary(path, data, mode)
    try:
        os.link(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


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


def write_all_if_changed(files: Iterable[tuple[Path, bytes]], *, batch: int = 2048) -> list[Path]:
    """``write_if_changed`` for many files at once; returns the paths written.

    Same guarantee per file: the new bytes go to a temporary file beside the old one, are
    made durable, and only then renamed over it. The difference is how they are made
    durable: a whole batch of temporary files is written first, then synced together (one
    ``syncfs`` per file system on Linux, else one ``fsync`` each), then renamed.
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
    devices: dict[int, str] = {}  # file system -> one temporary file on it
    try:
        made: set[Path] = set()
        for path, data in files:
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporaries.append((tmp_name, path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                devices.setdefault(os.fstat(handle.fileno()).st_dev, tmp_name)
            os.chmod(tmp_name, 0o644)
        if _syncfs is not None:
            for tmp_name in devices.values():
                _sync_file_system(tmp_name)
        else:
            for tmp_name, _ in temporaries:
                _fsync_path(tmp_name)
        for tmp_name, path in temporaries:
            os.replace(tmp_name, path)
    except BaseException:
        for tmp_name, _ in temporaries:
            Path(tmp_name).unlink(missing_ok=True)
        raise
    return [path for _, path in temporaries]


def _find_syncfs() -> Callable[[int], int] | None:
    """Linux's ``syncfs(2)`` from the C library, or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # no C library to load by that name (Windows)
        return None
    function: Callable[[int], int] | None = getattr(libc, "syncfs", None)
    return function


# One syncfs costs about what one fsync does, and a batch of thousands of pages needs one.
_syncfs = _find_syncfs()


def _sync_file_system(path: str) -> None:
    """Flush every written file on the file system holding ``path`` to disk."""
    assert _syncfs is not None
    fd = os.open(path, os.O_RDONLY)
    try:
        if _syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", path)
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
