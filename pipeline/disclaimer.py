"""The site's medical disclaimer, written once in ``templates/disclaimer.md``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.articles import render_markdown
from pipeline.errors import TemplateError

__all__ = ["Disclaimer", "load_disclaimer"]

DISCLAIMER_FILE = "disclaimer.md"


@dataclass(frozen=True, slots=True)
class Disclaimer:
    markdown: str
    html: str

    @property
    def text(self) -> str:
        """Plain text for the text part of emails: the Markdown with its emphasis removed."""
        return " ".join(self.markdown.replace("*", "").replace("_", " ").split())


def load_disclaimer(templates_dir: Path, base_url: str) -> Disclaimer:
    path = templates_dir / DISCLAIMER_FILE
    try:
        markdown = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as exc:
        raise TemplateError(
            f"{path}: missing; every feed entry and email ends with the medical disclaimer, "
            "so write it there"
        ) from exc
    if not markdown:
        raise TemplateError(f"{path}: is empty; write the site's medical disclaimer there")
    return Disclaimer(markdown=markdown, html=render_markdown(markdown, base_url))
