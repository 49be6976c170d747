"""A drain connection's next outbox rows, made ready while the server reads the current one.

A connection sends one message at a time and records each before the next one's data
leaves (``pipeline.drain``). Three steps for the rows after it need not wait for that
record, and are taken earlier here:

- **building their messages**, right after the current message is written and before the
  server can have answered it (``Transport.send``'s ``meanwhile``): the next two rows are
  held, so that the next message is always built when the current one goes;
- **opening the next message's transaction** (MAIL, RCPT, DATA) behind the current data
  in the same write (``following``), which saves its round trip;
- **asking whether the next row is still the drain's to send** (not unsubscribed, bounced
  or forgotten since it was claimed), in the very statement that records the current
  message (``OutboxStore.mark_sent``'s ``then_check``), rather than in a read transaction
  of its own: with two drain processes on one SQLite ledger each commit of one made the
  other re-read its pages for that look-up.

None of them sends a message. The next data goes out only after the current message is
recorded, and only if that record found its row still claimed; otherwise the transport
closes the connection, which ends an opened transaction without delivering anything. So
the duplicate window and the answer to "was it unsubscribed meanwhile" are what they were.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from pipeline.messages import OutgoingMessage
from pipeline.store import OutboxRow

__all__ = ["NextRow", "Turn"]


class Turn(NamedTuple):
    """One row's turn on a connection: its message if built ahead, and whether the commit
    before it found the row still claimed (None: nobody asked yet)."""

    row: OutboxRow
    message: OutgoingMessage | None
    still_claimed: bool | None


class _Held:
    __slots__ = ("message", "row", "still_claimed")

    def __init__(self, row: OutboxRow) -> None:
        self.row = row
        self.message: OutgoingMessage | None = None
        self.still_claimed: bool | None = None


class NextRow:
    """The rows a connection sends next (at most ``AHEAD``), taken from the drain's queue
    early.

    ``queue`` is the drain's: rows, then one None per connection at the end of the run.
    ``build`` makes a row's message (``MessageFactory.build``).
    """

    AHEAD = 2  # the next row, whose transaction may be opened, and the one after it

    def __init__(
        self,
        queue: asyncio.Queue[OutboxRow | None],
        build: Callable[[OutboxRow], OutgoingMessage],
    ) -> None:
        self._queue = queue
        self._build = build
        self._held: deque[_Held] = deque()

    @property
    def row(self) -> OutboxRow | None:
        """The next row, if one is held."""
        return self._held[0].row if self._held else None

    def _take_one(self) -> bool:
        if self._queue.empty():
            return False
        row = self._queue.get_nowait()
        if row is None:  # the end of the run: the marker stays for the loop's next turn
            self._queue.put_nowait(None)
            return False
        self._held.append(_Held(row))
        return True

    def take(self) -> OutboxRow | None:
        """The next row, taken from the queue now if none is held and one is waiting;
        never waits. None when the queue is empty or the run is ending."""
        if not self._held:
            self._take_one()
        return self.row

    def build(self) -> None:
        """Take up to ``AHEAD`` rows and build their messages now (a send's ``meanwhile``).

        A row that cannot be built is left unbuilt: its own turn builds it again, and the
        error is raised there, after the messages before it are recorded.
        """
        while len(self._held) < self.AHEAD and self._take_one():
            pass
        for held in self._held:
            if held.message is None:
                try:
                    held.message = self._build(held.row)
                except Exception:  # raised again, and handled, at the row's own turn
                    held.message = None

    def following(self) -> OutgoingMessage | None:
        """The next row's message if it is built: the one a transport may open ahead."""
        return self._held[0].message if self._held else None

    def checked(self, still_claimed: bool) -> None:
        """What the commit before the next row's turn found (``mark_sent``'s
        ``then_check`` for :attr:`row`)."""
        if self._held:
            self._held[0].still_claimed = still_claimed

    async def turn(self) -> Turn | None:
        """The row to send now: the next one held, with what was prepared for it, else the
        next from the queue (waiting for one). None at the end of the run."""
        if self._held:
            held = self._held.popleft()
            return Turn(held.row, held.message, held.still_claimed)
        row = await self._queue.get()
        return None if row is None else Turn(row, None, None)

    def give_back(self) -> None:
        """Return the rows taken early to the queue, for other connections (this one stops)."""
        while self._held:
            self._queue.put_nowait(self._held.popleft().row)
