"""Slotted templates: compiled digest HTML and text with ``__SLOT_<nonce>_<name>__`` markers
where per-subscriber values go, split once so each message only fills them.

The nonce is random per digest, so article text can never pose as a slot.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

__all__ = ["SlotTemplate"]


class SlotTemplate:
    """A compiled template with ``__SLOT_<nonce>_<name>__`` markers, split once for filling."""

    __slots__ = ("_names", "_parts", "nonce", "source")

    def __init__(self, source: str, nonce: str) -> None:
        self.source = source
        self.nonce = nonce
        pieces = re.split(rf"__SLOT_{re.escape(nonce)}_([a-z_]+)__", source)
        self._parts = pieces[0::2]
        self._names = pieces[1::2]

    @staticmethod
    def marker(nonce: str, name: str) -> str:
        return f"__SLOT_{nonce}_{name}__"

    @property
    def literals(self) -> tuple[str, ...]:
        """The text between the slots: one more piece than there are slots."""
        return tuple(self._parts)

    @property
    def names(self) -> tuple[str, ...]:
        """The slot names in the order they occur."""
        return tuple(self._names)

    def fill(self, values: Mapping[str, str], *, escape: bool) -> str:
        """Substitute each slot; ``escape`` HTML-escapes the values (for the HTML part)."""
        quote = html.escape if escape else str
        out = [self._parts[0]]
        for name, literal in zip(self._names, self._parts[1:], strict=True):
            out.append(quote(values[name]))
            out.append(literal)
        return "".join(out)
