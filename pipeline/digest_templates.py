"""The digest's templates as code sees them: the Jinja2 environment (``wrap`` filter,
strict undefined values), rendering with errors that name the template file and line, MJML
compiled to HTML, and the check that every rendered part carries the medical disclaimer.

Used for the digest and the confirmation email alike; what the templates are given is
:mod:`pipeline.digest_context`'s job.
"""

from __future__ import annotations

import textwrap

import jinja2
from mjml import mjml2html

from pipeline.disclaimer import Disclaimer
from pipeline.errors import TemplateError

__all__ = [
    "DISCLAIMER_MISSING",
    "HTML_TEMPLATE",
    "TEXT_TEMPLATE",
    "TemplateRenderError",
    "compile_mjml",
    "missing_disclaimer",
    "render_sources",
    "render_template",
    "template_environment",
    "template_line",
    "wrap_text",
]

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"


def wrap_text(text: str, width: int = 72, indent: str = "") -> str:
    """Wrap at spaces only: a long URL or word stays whole on a line of its own (a URL
    split across lines no longer works when clicked). Lines after the first get ``indent``."""
    return "\n".join(
        textwrap.wrap(
            " ".join(str(text).split()),
            width=width,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def template_environment(templates_dir: str) -> jinja2.Environment:
    """The Jinja2 environment over ``templates_dir``: HTML-escaped for ``.mjml.j2`` and
    ``.html.j2``, an undefined value an error, and the ``wrap`` filter (``wrap_text``)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=jinja2.select_autoescape(enabled_extensions=("mjml.j2", "html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["wrap"] = wrap_text
    return env


def render_sources(env: jinja2.Environment, context: dict[str, object]) -> tuple[str, str]:
    """Both templates rendered: the MJML source (not yet compiled) and the text part."""
    return render_template(env, HTML_TEMPLATE, context), render_template(
        env, TEXT_TEMPLATE, context
    )


DISCLAIMER_MISSING = (
    "the medical disclaimer is missing from the output; every email part must carry it: "
    "keep {{ disclaimer_html }} in the MJML and {{ disclaimer_text }} in the text template"
)


def missing_disclaimer(html: str, text: str, disclaimer: Disclaimer) -> list[str]:
    """The digest templates whose rendered output lacks the disclaimer (white space aside)."""

    def has(output: str, part: str) -> bool:
        return " ".join(part.split()) in " ".join(output.split())

    return [
        f"templates/{name}"
        for name, output, part in (
            (HTML_TEMPLATE, html, disclaimer.html),
            (TEXT_TEMPLATE, text, disclaimer.text),
        )
        if not has(output, part)
    ]


def compile_mjml(source: str, template: str = HTML_TEMPLATE) -> str:
    """MJML to HTML: no comments, and no web-font imports (a font request is a tracker)."""
    try:
        return mjml2html(source, disable_comments=True, fonts={})
    except Exception as exc:  # mrml raises a bare error type; name the file
        raise TemplateError(f"templates/{template}: MJML does not compile: {exc}") from exc


def template_line(exc: BaseException, name: str) -> int | None:
    """The line of template ``name`` where ``exc`` was raised, from Jinja's rewritten traceback."""
    line = None
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename.endswith(name):
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


class TemplateRenderError(TemplateError):
    """A template failed to render; carries the file, line and what went wrong."""

    def __init__(self, file: str, line: int | None, detail: str) -> None:
        self.file, self.line, self.detail = file, line, detail
        super().__init__(f"{file}:{line}: {detail}" if line else f"{file}: {detail}")


def render_template(env: jinja2.Environment, name: str, context: dict[str, object]) -> str:
    """Template ``name`` rendered with ``context``; raises ``TemplateRenderError`` naming
    ``templates/<name>`` and, where Jinja knows it, the line."""
    file = f"templates/{name}"
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(file, exc.lineno, exc.message or "syntax error") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateRenderError(file, None, "missing") from exc
    except jinja2.UndefinedError as exc:
        detail = exc.message or "undefined value"
        raise TemplateRenderError(file, template_line(exc, name), detail) from exc
