"""A drain connection's next outbox row, made ready while the server reads the current one.

A connection sends one message at a time and records each before the next one's content
leaves (``pipeline.drain``). Two steps of the next row need not wait for that record, and
are taken earlier here:

- **building its message**, right after the current message is written and before the
  server can have answered it (``Transport.send``'s ``meanwhile``): the server spends that
  time reading the message, so after its reply the connection only commits and sends;
- **asking whether it is still the drain's to send** (not unsubscribed, bounced or
  forgotten since it was claimed), in the very statement that records the current message
  (``OutboxStore.mark_sent``'s ``then_check``), rather than in a read transaction of its
  own: with two drain processes on one SQLite ledger each commit of one made the other
  re-read its pages for that look-up.

Neither sends anything. The next message goes out only after the current one is recorded,
and only if that record found its row still claimed, so the duplicate window and the
answer to "was it unsubscribed meanwhile" are what they were; only the time between the
check and the send is now the commit instead of the look-up.
"""

from __future__ import annotations

import asyncio
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


class NextRow:
    """The row a connection sends next, taken from the drain's queue early.

    ``queue`` is the drain's: rows, then one None per connection at the end of the run.
    ``build`` makes a row's message (``MessageFactory.build``).
    """

    def __init__(
        self,
        queue: asyncio.Queue[OutboxRow | None],
        build: Callable[[OutboxRow], OutgoingMessage],
    ) -> None:
        self._queue = queue
        self._build = build
        self.row: OutboxRow | None = None
        self._message: OutgoingMessage | None = None
        self._still_claimed: bool | None = None

    def take(self) -> OutboxRow | None:
        """The next row, taken from the queue now if none is held and one is waiting;
        never waits. None when the queue is empty or the run is ending."""
        if self.row is None and not self._queue.empty():
            row = self._queue.get_nowait()
            if row is None:  # the end of the run: the marker stays for this turn's loop
                self._queue.put_nowait(None)
            self.row = row
        return self.row

    def build(self) -> None:
        """Build the next row's message now (a send's ``meanwhile``).

        A row that cannot be built is left unbuilt: its own turn builds it again, and the
        error is raised there, after the current message is recorded.
        """
        row = self.take()
        if row is not None and self._message is None:
            try:
                self._message = self._build(row)
            except Exception:  # raised again, and handled, at the row's own turn
                self._message = None

    def checked(self, still_claimed: bool) -> None:
        """What the commit before the row's turn found (``mark_sent``'s ``then_check``)."""
        self._still_claimed = still_claimed

    async def turn(self) -> Turn | None:
        """The row to send now: the one held, with what was prepared for it, else the next
        from the queue (waiting for one). None at the end of the run."""
        row, message, still_claimed = self.row, self._message, self._still_claimed
        self.row, self._message, self._still_claimed = None, None, None
        if row is None:
            row = await self._queue.get()
            if row is None:
                return None
        return Turn(row, message, still_claimed)

    def give_back(self) -> None:
        """Return a row taken early to the queue, for another connection (this one stops)."""
        if self.row is not None:
            self._queue.put_nowait(self.row)
        self.row, self._message, self._still_claimed = None, None, None
