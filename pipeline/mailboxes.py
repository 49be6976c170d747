"""Mailboxes that bounces arrive in: a Maildir, an mbox file, or an IMAP folder.

``open_mailbox(spec, settings)`` turns ``[bounces] source`` (or ``pipeline bounces --from``)
into a ``Mailbox``: ``messages()`` yields ``(id, raw bytes)`` and ``handled(id)`` puts a
processed message away. Nothing is ever deleted: handled mail is moved to the
``[bounces] processed_folder`` (a Maildir++ sub-folder ``.Processed``, or an IMAP folder of
that name, flagged ``\\Seen``). Mail nobody recognised is left where it is, unread, for a
person. An mbox file is only read (a mail system may be appending to it): the ledger's
record of processed messages is what keeps a second run from acting twice.

``spec`` forms: ``imaps://user@host[:port]/FOLDER`` (TLS, port 993), ``imap://…`` (plain,
port 143: for a server on the same machine or tests), a path to a Maildir (a folder with
``cur/`` and ``new/``) or to an mbox file, relative to the project root; ``maildir:PATH`` and
``mbox:PATH`` say which. The IMAP password comes from ``PIPELINE_BOUNCES_PASSWORD`` only.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from pipeline.config import CONFIG_FILE, Settings
from pipeline.config_urls import check_mailbox_url
from pipeline.errors import ConfigError, PipelineError

__all__ = [
    "PASSWORD_ENV",
    "ImapMailbox",
    "Mailbox",
    "MailboxError",
    "MaildirMailbox",
    "MboxMailbox",
    "NoMailboxYet",
    "open_mailbox",
]

PASSWORD_ENV = "PIPELINE_BOUNCES_PASSWORD"


class MailboxError(PipelineError):
    """The bounce mailbox cannot be read: not there, unreachable, or the login is refused."""


class NoMailboxYet(MailboxError):
    """No file or folder at ``path`` yet: nothing has been delivered there."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class Mailbox(Protocol):
    name: str

    def messages(self) -> Iterator[tuple[str, bytes]]: ...

    def handled(self, message_id: str) -> None: ...

    def close(self) -> None: ...


class MaildirMailbox:
    """The top folder of a Maildir; handled mail moves to ``.<processed>/cur`` marked seen.

    A message is moved with one ``rename`` (atomic, and no copy: Maildir's own way), its
    flags kept and ``S`` (seen) added. Ids are ``new/<name>`` or ``cur/<name>``.
    """

    def __init__(self, path: Path, processed: str) -> None:
        self.name = f"maildir:{path}"
        self._root = path
        self._box = mailbox.Maildir(path, create=False)
        self._processed_name = processed
        self._processed: Path | None = None

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for sub in ("new", "cur"):
            names = sorted(  # names start with the delivery time
                entry.name
                for entry in os.scandir(self._root / sub)
                if entry.is_file() and not entry.name.startswith(".")
            )
            for name in names:
                try:
                    yield f"{sub}/{name}", (self._root / sub / name).read_bytes()
                except FileNotFoundError:  # taken away by another reader meanwhile
                    continue

    def handled(self, message_id: str) -> None:
        if self._processed is None:
            self._box.add_folder(self._processed_name)  # Maildir++: .Name with its marker
            self._processed = self._root / f".{self._processed_name}"
        name = message_id.partition("/")[2]
        unique, _, info = name.partition(":")
        flags = set(info.removeprefix("2,")) if info.startswith("2,") else set()
        target = self._processed / "cur" / f"{unique}:2,{''.join(sorted(flags | {'S'}))}"
        os.rename(self._root / message_id, target)

    def close(self) -> None:
        self._box.close()


class MboxMailbox:
    """An mbox file, read only."""

    def __init__(self, path: Path) -> None:
        self.name = f"mbox:{path}"
        self._box = mailbox.mbox(path, create=False)

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for key in self._box.iterkeys():
            yield str(key), self._box.get_bytes(key)

    def handled(self, message_id: str) -> None:
        """Nothing: the file belongs to the mail system; the ledger remembers instead."""

    def close(self) -> None:
        self._box.close()


class ImapMailbox:
    """One IMAP folder (imapclient). Handled mail is flagged ``\\Seen`` and moved."""

    def __init__(self, url: str, processed: str, *, timeout: float = 30.0) -> None:
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError, LoginError

        parts = urlsplit(url)
        secure = parts.scheme == "imaps"
        host = parts.hostname or ""
        port = parts.port or (993 if secure else 143)
        self.folder = unquote(parts.path.lstrip("/")) or "INBOX"
        self.name = f"{parts.scheme}://{parts.username}@{host}:{port}/{self.folder}"
        self._processed = processed
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise MailboxError(f"{self.name}: set {PASSWORD_ENV} to the mailbox's password")
        try:
            self._client: Any = IMAPClient(
                host,
                port=port,
                ssl=secure,
                ssl_context=ssl.create_default_context() if secure else None,
                timeout=timeout,
            )
        except OSError as exc:
            raise MailboxError(f"cannot reach the IMAP server at {host}:{port}: {exc}") from exc
        try:
            self._client.login(unquote(parts.username or ""), password)
            self._client.select_folder(self.folder)
        except LoginError as exc:
            self.close()
            raise MailboxError(
                f"{self.name}: the server refused the login; check the user in the URL "
                f"and {PASSWORD_ENV}"
            ) from exc
        except IMAPClientError as exc:
            self.close()
            raise MailboxError(f"{self.name}: {exc}") from exc

    @contextlib.contextmanager
    def _talking(self) -> Iterator[None]:
        """A dropped connection or a refused command as one ``MailboxError`` line."""
        try:
            yield
        except (imaplib.IMAP4.error, OSError) as exc:  # imapclient's errors derive from these
            raise MailboxError(f"{self.name}: {exc}") from exc

    def messages(self) -> Iterator[tuple[str, bytes]]:
        with self._talking():
            uids = self._client.search(["NOT", "DELETED"])
        for start in range(0, len(uids), 100):
            batch = uids[start : start + 100]
            # BODY.PEEK leaves \\Seen alone: mail nobody recognises stays unread.
            with self._talking():
                fetched = sorted(self._client.fetch(batch, ["BODY.PEEK[]"]).items())
            for uid, data in fetched:
                yield str(uid), bytes(data[b"BODY[]"])

    def handled(self, message_id: str) -> None:
        with self._talking():
            self._move(int(message_id))

    def _move(self, uid: int) -> None:
        client = self._client
        if not client.folder_exists(self._processed):
            client.create_folder(self._processed)
        client.add_flags([uid], [b"\\Seen"])
        if client.has_capability("MOVE"):
            client.move([uid], self._processed)
            return
        client.copy([uid], self._processed)  # RFC 3501's move: copy, then mark deleted
        client.add_flags([uid], [b"\\Deleted"])
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])

    def close(self) -> None:
        # Closing a connection that already broke leaves nothing to do.
        with contextlib.suppress(Exception):
            self._client.logout()


def open_mailbox(spec: str, settings: Settings) -> Mailbox:
    """The mailbox ``spec`` names; ``ConfigError`` or ``MailboxError`` with the fix."""
    spec = spec.strip()
    check_mailbox_url(spec)
    processed = settings.bounces.processed_folder
    scheme = urlsplit(spec).scheme.lower()
    if scheme in ("imap", "imaps"):
        parts = urlsplit(spec)
        if not parts.hostname or not parts.username:
            raise ConfigError(
                f"bounce source {spec!r}: write imaps://user@host/INBOX "
                f"(the password goes in {PASSWORD_ENV})"
            )
        if parts.password is not None:
            raise ConfigError(
                f"bounce source {spec!r}: keep the password out of the URL; set {PASSWORD_ENV}"
            )
        return ImapMailbox(spec, processed)
    kind = ""
    for prefix in ("maildir:", "mbox:"):
        if spec.startswith(prefix):
            kind, spec = prefix[:-1], spec.removeprefix(prefix)
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else settings.paths.root / path
    if not path.exists():
        raise NoMailboxYet(
            f"no bounce mailbox at {path}; deliver bounces there or point [bounces] source "
            f"in {CONFIG_FILE} (or --from) at a Maildir, an mbox file or an imaps:// URL",
            path,
        )
    if kind == "mbox" or (not kind and path.is_file()):
        return MboxMailbox(path)
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise MailboxError(f"{path} is a folder but not a Maildir (it needs cur/ and new/)")
    return MaildirMailbox(path, processed)
