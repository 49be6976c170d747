"""A plain-text table for benchmark results."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append(
            [
                c if isinstance(c, str) else f"{c:,.2f}" if isinstance(c, float) else str(c)
                for c in cells
            ]
        )

    def render(self) -> str:
        widths = [
            max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
            for i, h in enumerate(self.columns)
        ]
        line = "  ".join("-" * w for w in widths)
        out = [
            self.title,
            line,
            "  ".join(h.ljust(w) for h, w in zip(self.columns, widths, strict=True)),
            line,
        ]
        out += [
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in self.rows
        ]
        out.append(line)
        out += self.notes
        return "\n".join(out)
