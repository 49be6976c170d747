"""Bounce, complaint, unsubscribe and auto-reply samples (tests/data/inbound), filled in.

The files are written in the formats real systems send (Postfix's RFC 3464 DSN, qmail's
QSBMF, Exim's bounce with X-Failed-Recipients, an RFC 5965 ARF report); placeholders stand
for what depends on the test's secret key: ``@@VERP@@`` the VERP return path of digest 1 to
``@@RCPT@@``, ``@@RETURN_PATH@@`` the bare return path, ``@@MAILTO@@`` and
``@@UNSUB_ADDRESS@@``/``@@UNSUB_SUBJECT@@`` the recipient's List-Unsubscribe mailto.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.return_path import ReturnPaths

SAMPLES = Path(__file__).parent / "data" / "inbound"
KEY = "test-secret-key"
RETURN_PATH = "bounces@news.example.org"
SENDER = "newsletter@example.org"


def sample(
    name: str,
    rcpt: str,
    *,
    digest_id: int = 1,
    return_path: str = RETURN_PATH,
    key: str = KEY,
    message_id: str | None = None,
) -> bytes:
    """The sample ``name`` about ``rcpt``, as it arrives for a project with ``return_path``."""
    paths = ReturnPaths(key, SENDER, return_path)
    mailto = paths.unsubscribe_mailto(rcpt)
    parts = urlsplit(mailto)
    text = (SAMPLES / name).read_text(encoding="utf-8")
    for placeholder, value in {
        "@@VERP@@": paths.envelope_sender(digest_id, rcpt),
        "@@RETURN_PATH@@": return_path or SENDER,
        "@@MAILTO@@": mailto,
        "@@UNSUB_ADDRESS@@": unquote(parts.path),
        "@@UNSUB_SUBJECT@@": parse_qs(parts.query)["subject"][0],
        "@@RCPT@@": rcpt,
    }.items():
        text = text.replace(placeholder, value)
    if message_id is not None:
        lines = text.split("\n")
        at = next(i for i, line in enumerate(lines) if line.lower().startswith("message-id:"))
        lines[at] = f"Message-ID: {message_id}"
        text = "\n".join(lines)
    return text.encode("utf-8")
