"""The circuit breaker: the same refusal for many recipients in a row is about the sender.

A relay that refuses every recipient alike (``550 5.1.1 user unknown`` from a relay that
takes every address for a local one, a bare ``550`` from a relay that dislikes the
sender) would otherwise cost the editors their whole list, one bounce at a time. The
breaker watches one drain's refusals in the order they come back. It trips when

- ``recipients`` different recipients in a row, in at least ``domains`` domains, or
- five times as many in a row, in any number of domains,

got the same refusal: the same code, enhanced status and words once addresses, bracketed
parts and anything holding a digit (queue ids, IP addresses) are blanked out. Any message
accepted ends the streak, and so does a different refusal.

While a streak is undecided the breaker holds its rows' outcomes back (the caller writes
nothing for them); the rows held are handed back to be written when the streak ends, or
to stay pending, with nobody suppressed, when it trips.
"""

from __future__ import annotations

import re
from typing import Generic, TypeVar

from pipeline.bounce_rules import Verdict

__all__ = ["SINGLE_DOMAIN_FACTOR", "Breaker", "signature"]

T = TypeVar("T")

# In one domain a streak needs this many times the recipients: a few dead addresses of
# one big provider in a row are common, a hundred are the relay.
SINGLE_DOMAIN_FACTOR = 5

# Addresses, bracketed parts and any word holding a digit (queue ids, IPs, timestamps)
# differ from one recipient to the next in the same refusal.
_VARIABLE = re.compile(r"<[^>]*>|\S+@\S+|\[[^\]]*\]|\S*\d\S*")
_SPACE = re.compile(r"\s+")


def signature(verdict: Verdict) -> str:
    """What makes two refusals "the same": code, enhanced status and the constant words."""
    code, _, text = verdict.reply.partition(" ")
    words = _SPACE.sub(" ", _VARIABLE.sub(" ", text.lower())).strip()
    return f"{code} {verdict.status or '-'} {words}"


class Breaker(Generic[T]):
    """One drain's streak of identical refusals and the outcomes held back meanwhile."""

    def __init__(self, recipients: int = 10, domains: int = 3) -> None:
        self.recipients = recipients
        self.domains = domains
        self.tripped: str | None = None  # why it tripped, once it has
        self._signature: str | None = None
        self._streak: dict[str, None] = {}  # different recipients, in order
        self._held: list[T] = []

    def refused(self, email: str, verdict: Verdict, item: T) -> list[T]:
        """Hold ``item`` (one row's outcome) in the streak this refusal belongs to.

        Returns the items of the streak it ended, to be written now. If the streak trips,
        ``tripped`` says why and ``take_held`` hands back the items to leave pending.
        """
        released: list[T] = []
        mark = signature(verdict)
        if mark != self._signature:
            released = self.release()
            self._signature = mark
        self._streak[email.lower()] = None
        self._held.append(item)
        count = len(self._streak)
        domains = len({address.rpartition("@")[2] for address in self._streak})
        if (count >= self.recipients and domains >= self.domains) or (
            count >= self.recipients * SINGLE_DOMAIN_FACTOR
        ):
            self.tripped = (
                f"{count} different recipients in a row, in {domains} domain(s), "
                f"were refused the same way ({verdict.reply})"
            )
        return released

    @property
    def held(self) -> int:
        return len(self._held)

    def release(self) -> list[T]:
        """End the streak (a message went through, or the run ends): its held items."""
        held, self._held = self._held, []
        self._signature, self._streak = None, {}
        return held

    def take_held(self) -> list[T]:
        """After a trip: the items held, which must stay pending."""
        return self.release()
