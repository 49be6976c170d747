"""What recording the weekly digests costs, and whether readers' different windows multiply it.

``pipeline digests --due`` reads each reader's window from the version log, renders one
digest per group of readers who see the same versions, and records one outbox row each.
The baseline is every reader sharing one window start (all joined before the week began);
the other row gives each reader a window start of their own (each joined at a different
instant during the week, before the week's publishes): the digest content is the same for
all, so the cost should stay close to the baseline rather than grow with one render per
reader. Nothing is delivered.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.table import Table
from pipeline import execute, load_settings, plan_publish
from pipeline.periodic import change_frequency, run_due
from pipeline.store import Ledger

REPO = Path(__file__).resolve().parent.parent
WEEK_STARTS = datetime(2026, 11, 23, 8, tzinfo=UTC)  # a Monday slot ([schedule] defaults)
SLOT = WEEK_STARTS + timedelta(days=7)


def _project(root: Path, count: int) -> None:
    for name in ("articles", "templates"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pipeline.toml", root / "pipeline.toml")
    (root / "subscribers").mkdir()
    lines = ["email,name,topics,frequency"]
    topics = ("", "scleroderma", "multiple-sclerosis", "scleroderma;interstitial-lung-disease")
    lines += [f"reader{n}@example.org,Reader {n},{topics[n % 4]}," for n in range(count)]
    (root / "subscribers" / "list.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _prepared(root: Path, count: int, *, spread: bool) -> Path:
    """A ledger whose ``count`` weekly readers joined before the week (or, with ``spread``,
    each at its own instant in the week's first day) and a publish in the week."""
    settings = load_settings(root)
    ledger_path = settings.paths.ledger
    if ledger_path.parent.exists():
        shutil.rmtree(ledger_path.parent)
    first = WEEK_STARTS - timedelta(days=1)
    with Ledger(ledger_path) as ledger:
        plan = plan_publish(settings, ledger, now=first)
        execute(plan, settings, ledger, send_email=False)
        # Each reader moves to weekly before the week, or at an instant of their own in it.
        step = timedelta(days=1) / count if spread else timedelta(0)
        joined = WEEK_STARTS if spread else first + timedelta(hours=1)
        for n in range(count):
            change_frequency(
                settings, ledger, f"reader{n}@example.org", "weekly", joined + step * n
            )
    (root / "articles" / "ocrelizumab.md").write_text(
        (REPO / "articles" / "ocrelizumab.md")
        .read_text(encoding="utf-8")
        .replace("published: 2026-11-09", "published: 2026-11-25"),
        encoding="utf-8",
    )
    with Ledger(ledger_path) as ledger:
        plan = plan_publish(settings, ledger, now=WEEK_STARTS + timedelta(days=2))
        # announced (no immediate reader is left to mail: the outbox gets no row)
        report = execute(plan, settings, ledger)
        assert report.delivery is not None and report.delivery.total == 0
    saved = root / f"prepared-{spread}.db"
    shutil.copy(ledger_path, saved)
    return saved


def _best_of_due(root: Path, prepared: Path, repeats: int = 3) -> tuple[float, int, int]:
    settings = load_settings(root)
    best, digests, rows = float("inf"), 0, 0
    for _ in range(repeats):
        shutil.copy(prepared, settings.paths.ledger)
        for suffix in ("-wal", "-shm"):
            settings.paths.ledger.with_name(settings.paths.ledger.name + suffix).unlink(
                missing_ok=True
            )
        with Ledger(settings.paths.ledger) as ledger:
            started = time.perf_counter()
            runs = run_due(settings, ledger, SLOT + timedelta(minutes=5))
            best = min(best, time.perf_counter() - started)
        weekly = next(r for r in runs if r.frequency == "weekly")
        digests, rows = len(weekly.digests), weekly.recipients
    return best, digests, rows


def run(scale: float) -> Table:
    count = max(200, int(20_000 * scale))
    table = Table(
        f"digests --due: the weekly digests of {count:,} readers, recorded (best of 3)",
        ["window starts", "seconds", "digests", "outbox rows", "rows/s", "vs baseline"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _project(root, count)
        baseline = None
        for label, spread in (
            ("one, shared (baseline)", False),
            (f"{count:,}, one a reader", True),
        ):
            prepared = _prepared(root, count, spread=spread)
            seconds, digests, rows = _best_of_due(root, prepared)
            assert rows == count // 2, (rows, count)  # the two audiences with the updated article
            baseline = baseline or seconds
            table.add(
                label,
                f"{seconds:.3f}",
                digests,
                rows,
                f"{rows / seconds:,.0f}",
                f"{seconds / baseline:.2f}",
            )
    table.notes.append("python -m bench cadence [--scale S]; nothing is delivered")
    return table
