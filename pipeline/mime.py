"""MIME bytes assembled directly: headers encoded by hand, bodies quoted-printable.

Building with ``email.message.EmailMessage`` costs many times what the rest of a message
costs (see ``bench/bench_render.py``), so digests are assembled here instead; tests prove the result parses back
with the standard parser, without defects, equal to what ``EmailMessage`` would build.

The rules kept here:

- Every line ends in CRLF and stays within 78 characters where a fold is possible
  (headers) and 76 in bodies (quoted-printable): far below SMTP's 998-octet limit.
- Header values pass through ``header_safe`` first: no CR, LF or other control character
  can reach a header, so a title or a name can never start a header of its own.
- Non-ASCII words in the subject and in display names become RFC 2047 encoded-words; an
  ASCII word that merely looks like one (``=?...?=``) is encoded too, so it reads as typed.
- Addresses are addr-specs (ASCII; an internationalised domain is IDNA-encoded).
- Bodies are pre-encoded once per audience in pieces (see ``QuotedPrintableSlots``): a soft
  line break between the pieces makes each piece's encoding independent of where it lands.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
from collections.abc import Callable, Mapping, Sequence

from pipeline.dns_names import is_dns_name
from pipeline.errors import PipelineError

__all__ = [
    "AddressError",
    "QuotedPrintableSlots",
    "addr_spec",
    "encode_address",
    "encode_phrase",
    "encode_unstructured",
    "fold_header",
    "header_safe",
    "multipart_alternative",
    "multipart_body",
    "quoted_printable",
]

CRLF = b"\r\n"
_SOFT_BREAK = b"=\r\n"
_FOLD_AT = 78
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # C0 and C1 controls
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# Characters an encoded-word may carry as themselves in any header (RFC 2047 section 5.3).
_Q_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
# Encoded-words may reach 75 characters; kept to 69 so that one fits on the first line
# after the longest header name that carries them ("Subject: ", "List-Id: ") within 78.
_ENCODED_WORD_PAYLOAD = 69 - len("=?utf-8?q??=")
_LONGEST_PLAIN_TOKEN = 68


class AddressError(PipelineError):
    """An address cannot be written in a header without SMTPUTF8."""


def header_safe(value: str) -> str:
    """Collapse CR, LF and every other control character to a space; trim the ends."""
    return " ".join(_CONTROLS.sub(" ", value).split())


# --- header values ------------------------------------------------------------------------


def _q_encode_char(char: str) -> str:
    if char == " ":
        return "_"
    data = char.encode("utf-8")
    if len(data) == 1 and data[0] in _Q_LITERAL:
        return char
    return "".join(f"={byte:02X}" for byte in data)


def _q_size(char: str) -> int:
    return len(_q_encode_char(char))


def _utf8_size(char: str) -> int:
    return len(char.encode("utf-8"))


def _chunks(text: str, size: Callable[[str], int], limit: int) -> list[str]:
    """``text`` cut into pieces whose summed character ``size`` stays within ``limit``.

    Cuts fall after a space where possible (the space stays inside the word, since
    decoders drop the whitespace between encoded-words), mid-word only when a word is
    too long for one encoded-word.
    """
    chunks: list[str] = []
    current = ""
    used = 0
    for char in text:
        cost = size(char)
        while current and used + cost > limit:
            cut = current.rfind(" ") + 1 or len(current)
            chunks.append(current[:cut])
            current = current[cut:]
            used = sum(map(size, current))
        current += char
        used += cost
    if current:
        chunks.append(current)
    return chunks


def _encoded_words(text: str) -> list[str]:
    """``text`` as RFC 2047 encoded-words: Q (readable) or B when B needs fewer words."""
    q_chunks = _chunks(text, _q_size, _ENCODED_WORD_PAYLOAD)
    b_chunks = _chunks(text, _utf8_size, _ENCODED_WORD_PAYLOAD // 4 * 3)
    if len(b_chunks) < len(q_chunks):
        return [
            "=?utf-8?b?" + base64.b64encode(c.encode("utf-8")).decode("ascii") + "?="
            for c in b_chunks
        ]
    return ["=?utf-8?q?" + "".join(map(_q_encode_char, c)) + "?=" for c in q_chunks]


def _tokens(words: Sequence[str], plain: Sequence[bool]) -> list[str]:
    """Header tokens: plain words as they are, each run of other words as encoded-words.

    A run is encoded as one text, spaces included, because the space between two adjacent
    encoded-words is dropped when decoding while the space beside a plain word is kept.
    """
    out: list[str] = []
    run: list[str] = []
    for word, is_plain in zip(words, plain, strict=True):
        if is_plain:
            if run:
                out += _encoded_words(" ".join(run))
                run = []
            out.append(word)
        else:
            run.append(word)
    if run:
        out += _encoded_words(" ".join(run))
    return out


def _plain_word(word: str) -> bool:
    return word.isascii() and "=?" not in word and len(word) <= _LONGEST_PLAIN_TOKEN


def encode_unstructured(value: str) -> list[str]:
    """Tokens of an unstructured header such as ``Subject``, ready for ``fold_header``."""
    words = header_safe(value).split(" ")
    if words == [""]:
        return []
    return _tokens(words, [_plain_word(w) for w in words])


def encode_phrase(value: str) -> list[str]:
    """Tokens of a display name: atoms, one quoted-string, or encoded-words."""
    words = header_safe(value).split(" ")
    if words == [""]:
        return []
    if all(_ATEXT.fullmatch(w) and _plain_word(w) for w in words):
        return words
    if value.isascii() and "=?" not in value:
        quoted = '"' + " ".join(words).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if len(quoted) <= _LONGEST_PLAIN_TOKEN:
            return [quoted]
    return _tokens(words, [bool(_ATEXT.fullmatch(w)) and _plain_word(w) for w in words])


def addr_spec(address: str) -> str:
    """``local@domain`` in ASCII: the domain IDNA-encoded, an unusual local part quoted."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or _CONTROLS.search(address) or " " in address:
        raise AddressError(f"{address!r} is not an email address")
    if not local.isascii():
        raise AddressError(
            f"{address!r}: a non-ASCII local part needs SMTPUTF8, which digests do not use"
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise AddressError(f"{address!r}: the domain is not a valid host name") from exc
    if not is_dns_name(ascii_domain):
        raise AddressError(f"{address!r}: the domain is not a valid host name")
    if not _DOT_ATOM.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{ascii_domain}"


def encode_address(name: str, address: str) -> list[str]:
    """Tokens of ``Display Name <addr-spec>``, or of the bare addr-spec without a name."""
    spec = addr_spec(address)
    phrase = encode_phrase(name)
    return [*phrase, f"<{spec}>"] if phrase else [spec]


def fold_header(name: str, tokens: Sequence[str]) -> bytes:
    """``Name: token token …`` folded between tokens before column 78, ending in CRLF."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > _FOLD_AT and line != f"{name}:":
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    folded = "\r\n".join(lines) + "\r\n"
    return folded.encode("ascii")


# --- bodies -------------------------------------------------------------------------------


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def quoted_printable(text: str) -> bytes:
    """UTF-8 ``text`` quoted-printable with CRLF line ends; lines at most 76 characters."""
    encoded = binascii.b2a_qp(_normalise_newlines(text).encode("utf-8"), istext=True)
    return _limit_lines(encoded.replace(b"\n", CRLF), last=76)


def _limit_lines(encoded: bytes, *, last: int) -> bytes:
    """Re-break lines longer than 76 (``last`` for the final one) with soft line breaks.

    ``b2a_qp`` lets a line reach 77 when it ends in an encoded space; the final line of a
    piece must leave room for the soft break that joins it to the next piece.
    """
    lines = encoded.split(CRLF)
    if max(map(len, lines[:-1]), default=0) <= 76 and len(lines[-1]) <= last:
        return encoded
    out: list[bytes] = []
    for index, line in enumerate(lines):
        limit = last if index == len(lines) - 1 else 76
        while len(line) > limit:
            cut = 75
            escape = line.rfind(b"=", cut - 2, cut)  # never split an "=XX" escape
            if escape != -1:
                cut = escape
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return CRLF.join(out)


def _piece(text: str) -> bytes:
    """One piece, encoded so a soft line break may follow it within 76 characters."""
    if text.isascii() and text.isprintable() and "=" not in text and not text.endswith(" "):
        # The common slot value (an address, a link, an ASCII name) encodes as itself.
        data = text.encode("ascii")
        if len(data) <= 75:
            return data
        return _SOFT_BREAK.join(data[i : i + 75] for i in range(0, len(data), 75))
    return _limit_lines(quoted_printable(text), last=75)


class QuotedPrintableSlots:
    """A slotted body whose literal pieces are quoted-printable encoded once.

    Filling encodes only the slot values and joins the pieces with soft line breaks,
    which decode to nothing: the decoded body equals the filled text exactly.
    """

    __slots__ = ("_format", "_literals", "_names", "_slot_pieces", "_transform")

    def __init__(
        self,
        literals: Sequence[str | bytes],
        names: Sequence[str],
        *,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """``literals`` as text (encoded here) or as pieces already encoded; ``transform``
        is applied to every encoded piece, literal or value (see :meth:`transformed`)."""
        if len(literals) != len(names) + 1:
            raise ValueError("a slotted body has one more literal piece than slots")
        if all(isinstance(t, str) for t in literals):
            text = [str(t) for t in literals]
            text[-1] = _with_final_newline(text[-1])
            encoded = [_piece(t) if t else b"" for t in text]
        else:
            encoded = [t if isinstance(t, bytes) else _piece(t) for t in literals]
        self._transform = transform
        self._literals = [transform(t) for t in encoded] if transform else encoded
        self._names = tuple(names)
        # Filling is one ``bytes % tuple``: the literals, each after a soft line break,
        # around one %s per slot (a Python loop over the pieces cost about 7 µs a body).
        first, *rest = (t.replace(b"%", b"%%") for t in self._literals)
        self._format = first + b"".join(b"%s" + (_SOFT_BREAK + t if t else b"") for t in rest)
        self._slot_pieces: Callable[[Mapping[str, bytes]], tuple[bytes, ...]] = lambda pieces: (
            tuple(pieces[name] for name in self._names)
        )
        if len(self._names) > 1:
            self._slot_pieces = operator.itemgetter(*self._names)

    def transformed(self, transform: Callable[[bytes], bytes]) -> QuotedPrintableSlots:
        """The same body with ``transform`` applied to each encoded piece, literals once
        here and values as they are filled.

        The pieces are joined by soft line breaks (``=`` CRLF), so a transform that works
        within lines and leaves ``=`` and CRLF alone (DKIM's relaxed body form:
        ``pipeline.dkim_sign.relaxed_piece``) gives the transform of the whole filled body.
        """
        return QuotedPrintableSlots(self._literals, self._names, transform=transform)

    def fill(self, values: Mapping[str, str]) -> bytes:
        """The encoded body with ``values`` in its slots (already escaped as the part needs)."""
        return self.join(self.encode(values))

    def encode(self, values: Mapping[str, str]) -> dict[str, bytes]:
        """``values`` encoded as slot pieces, each after its soft line break, for :meth:`join`."""
        return {
            name: _SOFT_BREAK + _piece(value) if value else b"" for name, value in values.items()
        }

    def join(self, pieces: Mapping[str, bytes]) -> bytes:
        """The body with encoded ``pieces`` (from :meth:`encode`) in its slots."""
        transform = self._transform
        if transform is not None:
            pieces = {name: transform(piece) for name, piece in pieces.items()}
        return self._format % self._slot_pieces(pieces)


def _with_final_newline(text: str) -> str:
    return text if text.endswith(("\n", "\r")) else text + "\n"


def multipart_alternative(
    headers: Sequence[bytes], boundary: str, text_body: bytes, html_body: bytes
) -> bytes:
    """A whole message: the folded ``headers``, then text and HTML parts (text first).

    ``boundary`` must start with ``=_``: that pair never occurs in quoted-printable output
    (a literal ``=`` is always written ``=3D``), so no body can contain the boundary.
    """
    if not boundary.startswith("=_"):
        raise ValueError("the boundary must start with '=_'")
    return b"".join(
        [
            *headers,
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/alternative;\r\n boundary="'
            + boundary.encode("ascii")
            + b'"\r\n',
            CRLF,
            multipart_body(boundary, text_body, html_body),
        ]
    )


def multipart_body(boundary: str, text_body: bytes, html_body: bytes) -> bytes:
    """The body of :func:`multipart_alternative`'s message: what follows its header block."""
    delimiter = b"--" + boundary.encode("ascii")
    part_headers = (
        b'Content-Type: text/%s; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return b"".join(
        [
            delimiter,
            CRLF,
            part_headers % b"plain",
            _ensure_crlf_end(text_body),
            CRLF,
            delimiter,
            CRLF,
            part_headers % b"html",
            _ensure_crlf_end(html_body),
            CRLF,
            delimiter,
            b"--\r\n",
        ]
    )


def _ensure_crlf_end(body: bytes) -> bytes:
    return body if body.endswith(CRLF) else body + CRLF
