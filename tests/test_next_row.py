"""A connection's next rows: taken early without waiting, built ahead, handed back on a stop.

The drain-level behaviour (a row unsubscribed after it was built ahead is not sent) is in
``test_delivery.py``; these pin the pieces the drain relies on, with the drain's own queue.
"""

from __future__ import annotations

import asyncio

from pipeline.messages import OutgoingMessage
from pipeline.next_row import NextRow, Turn
from pipeline.store import OutboxRow

ROWS = [OutboxRow(i, 1, "*", f"r{i}@example.net", "R", 0) for i in range(1, 4)]


def _message(row: OutboxRow) -> OutgoingMessage:
    if row.id == 2:
        raise ValueError("cannot be built")
    return OutgoingMessage("news@example.org", row.email, f"<{row.id}@x>", b"data")


def _queue(*items: OutboxRow | None) -> asyncio.Queue[OutboxRow | None]:
    queue: asyncio.Queue[OutboxRow | None] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


def test_the_next_rows_are_built_and_checked_ahead_and_used_at_their_turn() -> None:
    async def run() -> None:
        queue = _queue(*ROWS, None)
        next_row = NextRow(queue, _message)
        first = await next_row.turn()
        assert first == Turn(ROWS[0], None, None)
        assert next_row.following() is None  # nothing built yet: nothing to open ahead
        next_row.build()  # what a send calls once the first message is written
        assert next_row.row == ROWS[1] and queue.qsize() == 1  # two taken, the end left
        assert next_row.following() is None  # the second row cannot be built
        next_row.checked(True)  # what the commit recording the first found
        second = await next_row.turn()
        assert second == Turn(ROWS[1], None, True)
        assert next_row.following() == _message(ROWS[2])  # built while the first was read
        next_row.build()
        next_row.checked(False)
        third = await next_row.turn()
        assert third == Turn(ROWS[2], _message(ROWS[2]), False)
        assert await next_row.turn() is None  # the end marker, left where it was

    asyncio.run(run())


def test_taking_early_never_waits_and_leaves_the_end_marker_for_the_loop() -> None:
    async def run() -> None:
        empty = NextRow(_queue(), _message)
        assert empty.take() is None  # nothing waiting: no wait either
        ending = _queue(None)
        next_row = NextRow(ending, _message)
        assert next_row.take() is None
        next_row.build()
        assert ending.qsize() == 1 and await next_row.turn() is None

    asyncio.run(run())


def test_rows_taken_early_go_back_to_the_queue_when_the_connection_stops() -> None:
    async def run() -> None:
        queue = _queue(ROWS[0], ROWS[2], None)
        next_row = NextRow(queue, _message)
        next_row.build()
        assert queue.qsize() == 1  # only the end marker left
        next_row.give_back()
        assert [queue.get_nowait() for _ in range(3)] == [None, ROWS[0], ROWS[2]]
        assert next_row.row is None
        next_row.give_back()  # nothing held: nothing put back
        assert queue.empty()

    asyncio.run(run())
