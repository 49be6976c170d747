"""What keeping subscribers in the ledger costs a publish.

Every publish reads the editors' lists and merges them into the ledger. The baseline is
reading and validating the lists alone (all a publish did before subscribers moved into the
ledger); the other rows add the ledger work on the same lists, and the ratio says how much
slower each is than the baseline.
"""

from __future__ import annotations

import csv
import io
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.table import Table
from pipeline.spreadsheet_csv import read_csv
from pipeline.store import Ledger
from pipeline.subscriber_plans import plan_lists
from pipeline.subscribers import (
    ListFiles,
    SubscriberList,
    SubscriberStore,
    load_subscribers,
)

TOPICS = ("scleroderma", "interstitial-lung-disease", "multiple-sclerosis")
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _write_list(directory: Path, count: int) -> None:
    lines = ["email,name,topics"]
    for n in range(count):
        topics = ";".join(TOPICS[: n % 3]) if n % 4 else ""
        lines.append(f"Reader.{n}@Example{n % 50}.org,Reader {n},{topics}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _best_of(repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def run(scale: float) -> Table:
    count = max(200, int(20_000 * scale))
    table = Table(
        f"subscribers: merging {count:,} list rows into the ledger (best of 3)",
        ["step", "seconds", "rows/s", "vs baseline"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_list(root / "subscribers", count)

        def read() -> SubscriberList:
            return load_subscribers(root / "subscribers", root, known_topics=TOPICS)

        lists = load_subscribers(root / "subscribers", root, known_topics=TOPICS)
        assert len(lists.entries) == count and not lists.problems

        def first_merge() -> object:
            with Ledger(Path(tempfile.mkdtemp(dir=tmp)) / "fresh.db") as ledger:
                store = SubscriberStore(ledger, "bench-key", TOPICS)
                return store.merge(read().entries, NOW)

        with Ledger(root / "steady.db") as ledger:
            store = SubscriberStore(ledger, "bench-key", TOPICS)
            store.merge(lists.entries, NOW)

            def steady_publish() -> object:
                files = ListFiles(root / "subscribers", root, TOPICS)
                files.check()
                plan_lists(ledger, files.entries(), "bench-key")
                return store.merge(files.entries(), NOW)

            raw = (root / "subscribers" / "list.csv").read_bytes()

            def fixed_dialect() -> object:  # what the reader did before dialect detection
                return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))

            def detected_dialect() -> object:  # BOM/UTF-16 check, csv.Sniffer, the header
                return list(read_csv(raw, "email").rows())

            baseline = _best_of(3, read)
            steps = [
                ("parse only: csv.reader, ',' assumed", _best_of(3, fixed_dialect)),
                ("parse only: read_csv, dialect detected", _best_of(3, detected_dialect)),
                ("read + validate the lists (baseline)", baseline),
                ("first publish: read + merge into a new ledger", _best_of(3, first_merge)),
                ("every later publish: read + preview + merge", _best_of(3, steady_publish)),
            ]
    for label, seconds in steps:
        table.add(label, f"{seconds:.3f}", f"{count / seconds:,.0f}", f"{seconds / baseline:.2f}x")
    table.notes.append(
        "python -m bench subscribers; rows are distinct addresses, validated with "
        "email-validator (no DNS)"
    )
    return table
