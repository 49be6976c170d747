"""What processing a bounce mailbox costs, per message, against parsing it alone.

A Maildir holds one bounce, complaint, auto-reply or human message per subscriber, in the
formats of tests/data/inbound (Postfix DSN, qmail, ARF, auto-reply, a reader's question),
with VERP tokens. The baseline reads and parses every message with the stdlib ``email``
parser (its default compat32 policy, as ``read_message`` uses): the least any bounce
processor does. The rows add recognising each message
(``read_message``: DSN and ARF parsing, tokens, flufl.bounce's detectors for the rest), the
whole ``pipeline bounces`` run (scores, unsubscribes, processed keys in the ledger, moving
each handled message), and a second run over an mbox holding the same messages, where
every one is already processed.
"""

from __future__ import annotations

import email
import mailbox
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.table import Table
from pipeline.bounce_inbox import process_mailbox
from pipeline.config import load_settings
from pipeline.inbound import read_message
from pipeline.mailboxes import MaildirMailbox, MboxMailbox
from pipeline.store import Ledger
from pipeline.subscribers import SubscriberStore, load_subscribers
from tests.inbound_samples import KEY, RETURN_PATH, sample

NOW = datetime(2026, 12, 9, tzinfo=UTC)
KINDS = (
    "postfix-user-unknown.eml",
    "postfix-mailbox-full.eml",
    "qmail-bounce.eml",
    "arf-complaint.eml",
    "auto-reply.eml",
    "human-reply.eml",
)


def _messages(count: int) -> list[bytes]:
    """One message a subscriber, each with a Message-ID of its own."""
    return [
        _unique_id(sample(KINDS[n % len(KINDS)], f"reader.{n}@example{n % 50}.org"), n)
        for n in range(count)
    ]


def _unique_id(raw: bytes, n: int) -> bytes:
    head, _, body = raw.partition(b"\n\n")
    lines = [
        f"Message-ID: <bench-{n}@example.net>".encode()
        if line.lower().startswith(b"message-id:")
        else line
        for line in head.split(b"\n")
    ]
    return b"\n".join(lines) + b"\n\n" + body


def _timed(work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def run(scale: float) -> Table:
    count = max(60, int(3_000 * scale))
    table = Table(
        f"bounces: processing a mailbox of {count:,} messages",
        ["step", "seconds", "messages/s", "vs baseline"],
    )
    messages = _messages(count)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pipeline.toml").write_text(f'[bounces]\nreturn_path = "{RETURN_PATH}"\n')
        (root / "subscribers").mkdir()
        rows = [f"reader.{n}@example{n % 50}.org,Reader {n}," for n in range(count)]
        (root / "subscribers" / "list.csv").write_text("email,name,topics\n" + "\n".join(rows))
        settings = load_settings(root)
        box = mailbox.Maildir(root / "bounces", create=True)
        mbox = mailbox.mbox(root / "bounces.mbox")
        for raw in messages:
            box.add(raw)
            mbox.add(raw)
        mbox.close()
        with Ledger(settings.paths.ledger) as ledger:
            store = SubscriberStore(ledger, KEY, ())
            store.merge(load_subscribers(root / "subscribers", root, known_topics=()).entries, NOW)

            def parse_only() -> None:
                for key in box.iterkeys():
                    email.message_from_bytes(box.get_bytes(key))

            def recognise() -> None:
                for key in box.iterkeys():
                    read_message(box.get_bytes(key))

            def first_run() -> None:
                maildir = MaildirMailbox(root / "bounces", "Processed")
                report = process_mailbox(settings, ledger, maildir, KEY, now=NOW)
                assert report.read == count and not report.already_processed

            def second_run() -> None:
                report = process_mailbox(
                    settings, ledger, MboxMailbox(root / "bounces.mbox"), KEY, now=NOW
                )
                assert report.already_processed == count

            baseline = _timed(parse_only)
            steps = [
                ("read + parse each message (baseline)", baseline),
                ("recognise each (read_message)", _timed(recognise)),
                ("pipeline bounces, first run (Maildir)", _timed(first_run)),
                ("again, all already processed (mbox)", _timed(second_run)),
            ]
    for name, seconds in steps:
        table.add(name, seconds, count / seconds, f"{seconds / baseline:.2f}x")
    table.notes.append("One run each; the ledger is SQLite in a temporary folder.")
    return table
