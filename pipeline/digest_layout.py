"""How much of a digest gets a full card, so the HTML part never crosses Gmail's clip line.

Gmail shows only the first ~102 KB of an HTML part and hides the rest behind "[Message
clipped]", footer included, so the disclaimer, unsubscribe link and postal address would
vanish. A digest is therefore laid out against ``HTML_BUDGET`` bytes of HTML (UTF-8, slots
filled): the first articles get full cards (title, therapy, summary, button); when those
do not all fit, the later ones collapse to one-line title links, and when even the links do
not fit, the last ones are only counted: "and N more on the site". The footer is outside
the cards, so it is always inside the budget.

The budget is 90,000 bytes: under the 102 KB line with room for the per-subscriber values
(``SLOT_ALLOWANCE``) and for the transfer encoding, which some clients count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HTML_BUDGET", "SLOT_ALLOWANCE", "Layout", "describe", "fit_layout", "html_size"]

HTML_BUDGET = 90_000  # bytes of the HTML part a digest may use
# Room for the slot values: an address (up to 254 bytes), two signed links, the topics, the
# name; the slot markers they replace already count about 30 bytes each.
SLOT_ALLOWANCE = 2_000


@dataclass(frozen=True, slots=True)
class Layout:
    """Of ``total`` articles in digest order: the first ``full`` get cards, the next
    ``links`` title links, and the rest are counted in "and N more on the site"."""

    total: int
    full: int
    links: int = 0

    @property
    def more(self) -> int:
        return self.total - self.full - self.links

    @property
    def collapsed(self) -> bool:
        return self.full < self.total


def html_size(html: str) -> int:
    """The bytes an HTML part counts towards the budget: UTF-8, plus the slot allowance."""
    return len(html.encode("utf-8")) + SLOT_ALLOWANCE


def fit_layout(
    total: int, render: Callable[[Layout], str], budget: int = HTML_BUDGET
) -> tuple[Layout, str]:
    """The layout with the most full cards (then the most links) whose HTML fits ``budget``,
    and that HTML. ``render`` turns a layout into the compiled HTML; it is called about
    2·log2(total) times. When not even the footer alone fits, the all-counted layout is
    returned (the template, not the articles, is too big then)."""
    every = Layout(total, total)
    html = render(every)
    if html_size(html) <= budget:
        return every, html

    def largest(make: Callable[[int], Layout], high: int) -> tuple[Layout, str] | None:
        """Binary search for the largest n in [0, high] whose layout fits."""
        best: tuple[Layout, str] | None = None
        low = 0
        while low <= high:
            middle = (low + high) // 2
            layout = make(middle)
            candidate = render(layout)
            if html_size(candidate) <= budget:
                best, low = (layout, candidate), middle + 1
            else:
                high = middle - 1
        return best

    found = largest(lambda n: Layout(total, n, total - n), total - 1)
    if found is None:
        found = largest(lambda n: Layout(total, 0, n), total - 1)
    if found is None:
        layout = Layout(total, 0, 0)
        return layout, render(layout)
    return found


def describe(size: int, layout: Layout, budget: int = HTML_BUDGET) -> str:
    """One line for ``preview`` and ``check``: the HTML part's size against the budget and
    how the articles were laid out."""
    line = (
        f"HTML part: {size:,} bytes of the {budget:,}-byte budget "
        f"(Gmail clips past about 102 KB); {layout.total} article(s)"
    )
    if not layout.collapsed:
        return line + ", all as full cards"
    return (
        line + f": {layout.full} as full cards, {layout.links} as title links"
        f", {layout.more} counted as more on the site"
    )
