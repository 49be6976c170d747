"""What the site generator wrote last time, so an unchanged page is neither rendered nor
written again.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.store.database import Database
from pipeline.store.records import OutputStamp

__all__ = ["SiteStore"]


class SiteStore:
    """Stamps of generated files under ``public/``."""

    _db: Database

    def site_outputs(self) -> dict[str, OutputStamp]:
        rows = self._db.execute("SELECT path, input_key, size, mtime_ns FROM site_outputs")
        return {row[0]: OutputStamp(*row) for row in rows}

    def record_site_outputs(self, stamps: Iterable[OutputStamp], removed: Iterable[str]) -> None:
        with self._db.transaction():
            self._db.executemany(
                """INSERT INTO site_outputs (path, input_key, size, mtime_ns) VALUES (?, ?, ?, ?)
                   ON CONFLICT (path) DO UPDATE SET input_key = excluded.input_key,
                       size = excluded.size, mtime_ns = excluded.mtime_ns""",
                ((s.path, s.input_key, s.size, s.mtime_ns) for s in stamps),
            )
            self._db.executemany("DELETE FROM site_outputs WHERE path = ?", ((p,) for p in removed))
