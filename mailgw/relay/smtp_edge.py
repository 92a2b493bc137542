"""The SMTP edge's one contact with the insides of aiosmtpd and asyncio.

The gateway's SMTP server is aiosmtpd's, shaped where aiosmtpd has no
documented hook: our reader takes the byte stream (relay/linecheck.py),
aiosmtpd's own refusals leave with our codes, a connection is made cheaply.
Every undocumented name of aiosmtpd or asyncio the gateway uses is used here
and nowhere else, each with why; tests/test_smtp_edge_contract.py checks each
of them, so that an upgrade that moves one fails there, naming it. aiosmtpd
is pinned to the minor series those tests pass on (pyproject.toml).

What the rest of the gateway uses:
- StreamBuffer: a StreamReader whose unread bytes a parser searches in place
  (`unread`), takes off (`consume`) and waits for (`more`);
- EdgeSMTP: aiosmtpd's SMTP with the reader class, the command length limit
  and the session (`new_session`) of the subclass's choosing. Each of
  aiosmtpd's own refusals goes through the subclass's `refuse` as ours
  (AIOSMTPD_REFUSALS); `send` writes a reply as it is; `close_with` and
  `close_after_reply` end a session with a reply, `idle` when the client
  has been silent too long; `end_transaction` starts the envelope afresh
  after DATA;
- EdgeHandler: the base of the handler, whose hooks aiosmtpd finds cheaply.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections import defaultdict
from typing import Any, ClassVar, Generic, TypeVar, cast

from aiosmtpd.smtp import SMTP, Session, syntax

from mailgw.relay import replies
from mailgw.relay.policy import Rejection
from mailgw.relay.replies import Reply
from mailgw.wording import size


class StreamBuffer(asyncio.StreamReader):
    """A StreamReader whose unread bytes a parser searches where they lie
    (bytes.find over all that has arrived) instead of copying them out a
    line at a time, as StreamReader.readuntil does inside."""

    @property
    def unread(self) -> bytearray:
        """What has arrived and is not read yet. Search and slice it; take
        bytes off only with `consume`."""
        return self._buffer  # type: ignore[attr-defined]  # StreamReader has no view of it

    def consume(self, count: int) -> None:
        """Take `count` bytes off the front of `unread`."""
        del self._buffer[:count]  # type: ignore[attr-defined]
        # a transport paused for a full buffer must read again as it drains,
        # as StreamReader's own reads make it
        self._maybe_resume_transport()  # type: ignore[attr-defined]

    async def more(self) -> None:
        """Wait for more bytes. Raises the stream's error, or, at its end,
        IncompleteReadError with what is unread."""
        error = self.exception()
        if error is not None:
            raise error
        # the end of the stream, even with bytes unread (at_eof() is false then)
        if self._eof:  # type: ignore[attr-defined]
            raise asyncio.IncompleteReadError(bytes(self.unread), None)
        # StreamReader's own wait: one waiter at a time, resumes a paused transport
        await self._wait_for_data("more")  # type: ignore[attr-defined]


# aiosmtpd's own refusals, as it writes them ({name}: what varies there), and
# the reply a client gets instead, with the reason of its `rejected` event.
# Those it writes only in set-ups the gateway does not use are left out; the
# contract test lists them.
AIOSMTPD_REFUSALS: dict[str, tuple[Reply, str]] = {
    # the command loop
    "500 Command line too long": (replies.LINE_TOO_LONG, "line_too_long"),
    "500 Error: bad syntax": (replies.BAD_SYNTAX, "bad_syntax"),
    '500 Error: command "{command}" not recognized': (
        replies.UNRECOGNIZED_COMMAND, "unrecognized_command"),
    "500 Error: strict ASCII mode": (replies.NON_ASCII, "non_ascii"),
    "502 5.5.1 Too many unrecognized commands, goodbye.": (
        replies.TOO_MANY_ERRORS, "too_many_errors"),
    # out of sequence
    "503 Error: send {command} first": (replies.NEED_HELO, "bad_sequence"),
    "503 Error: need MAIL command": (replies.NEED_MAIL, "bad_sequence"),
    "503 Error: nested MAIL command": (replies.NESTED_MAIL, "bad_sequence"),
    "503 Already authenticated": (replies.ALREADY_AUTHENTICATED, "bad_sequence"),
    # arguments
    "501 Syntax: {usage}": (replies.SYNTAX, "bad_syntax"),
    "501 Supported commands: {commands}": (replies.NO_HELP, "bad_syntax"),
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": (replies.BAD_BODY, "bad_syntax"),
    "501 Error: SMTPUTF8 takes no arguments": (replies.NO_SMTPUTF8, "bad_syntax"),
    "501 Error: SMTPUTF8 disabled": (replies.NO_SMTPUTF8, "bad_syntax"),
    "552 Error: message size exceeds fixed maximum message size": (
        replies.MESSAGE_TOO_LARGE, "message_too_large"),
    "555 MAIL FROM parameters not recognized or not implemented": (
        replies.UNKNOWN_MAIL_PARAMETERS, "unknown_parameter"),
    "555 RCPT TO parameters not recognized or not implemented": (
        replies.UNKNOWN_RCPT_PARAMETERS, "unknown_parameter"),
    "553 5.1.3 Error: malformed address": (replies.MALFORMED_ADDRESS, "bad_address"),
    "502 Could not VRFY {address}": (replies.VRFY_MALFORMED, "bad_address"),
    "502 EXPN not implemented": (replies.NOT_IMPLEMENTED, "unrecognized_command"),
    # TLS and AUTH
    "454 TLS not available": (replies.TLS_NOT_AVAILABLE, "tls_not_available"),
    "538 5.7.11 Encryption required for requested authentication mechanism": (
        replies.ENCRYPTION_REQUIRED, "auth_without_tls"),
    "500 Error: command 'AUTH' not recognized": (
        replies.UNRECOGNIZED_COMMAND, "unrecognized_command"),
    "501 Not enough value": (replies.AUTH_SYNTAX, "bad_syntax"),
    "501 Too many values": (replies.AUTH_SYNTAX, "bad_syntax"),
    "504 5.5.4 Unrecognized authentication type": (
        replies.UNKNOWN_AUTH_MECHANISM, "unknown_auth_mechanism"),
    "501 5.7.0 Auth aborted": (replies.AUTH_ABORTED, "auth_aborted"),
    "501 5.5.2 Can't decode base64": (replies.BAD_BASE64, "bad_syntax"),
    "501 5.5.2 Can't split auth value": (replies.BAD_AUTH_VALUE, "bad_syntax"),
}


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile("".join(
        re.escape(literal) + (f"(?P<{name}>.+)" if name else "")
        for literal, name, _, _ in string.Formatter().parse(text)
    ) + r"\Z")


_FIXED = frozenset(text for text in AIOSMTPD_REFUSALS if "{" not in text)
_VARYING = [(_pattern(text), text) for text in AIOSMTPD_REFUSALS if "{" in text]


def aiosmtpd_refusal(text: str) -> tuple[str, dict[str, str]] | None:
    """The entry of AIOSMTPD_REFUSALS that `text` is, with its varying
    parts; None for any other text."""
    if text in _FIXED:
        return text, {}
    for pattern, entry in _VARYING:
        if (found := pattern.match(text)) is not None:
            return entry, found.groupdict()
    return None


def as_ours(text: str, **values: object) -> Rejection | None:
    """Our refusal for one of aiosmtpd's own, its reply filled in from the
    varying parts and `values`; None for any other text."""
    found = aiosmtpd_refusal(text)
    if found is None:
        return None
    entry, parts = found
    reply, reason = AIOSMTPD_REFUSALS[entry]
    return Rejection.of(reply, reason, **values, **parts)


def _named(cls: type, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(name for name in dir(cls) if name.startswith(prefixes))


class EdgeHandler:
    """The base of the handler. aiosmtpd scans the handler with dir() on
    every connection to find its handle_ hooks; listing only those, as
    found once when a subclass is made, keeps a connection cheap."""

    _edge_names: ClassVar[list[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._edge_names = _named(cls, ("handle_",))

    def __dir__(self) -> list[str]:
        return self._edge_names


# the plain form most MTAs send (dot-atoms, no quoting, no source route);
# aiosmtpd's parser finds the same address and parameters in it
_DOT_ATOM_ADDRESS = re.compile(
    r"^<([A-Za-z0-9_+=-]+(?:\.[A-Za-z0-9_+=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?: +(.*))?$"
)

R = TypeVar("R", bound=StreamBuffer)


class EdgeSMTP(SMTP, Generic[R]):
    """aiosmtpd's SMTP for one connection, read by a `reader_class` reader,
    with command lines of at most `max_command_length` octets with CRLF
    (MAIL 26 more for SIZE, RFC 1870). Subclasses give `refuse` (and may
    give `new_session`); the other arguments are SMTP's."""

    _edge_names: ClassVar[list[str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._edge_names = _named(cls, ("smtp_", "auth_"))  # as EdgeHandler's, for the protocol

    def __init__(self, handler: EdgeHandler, *, reader_class: type[R], max_command_length: int,
                 **smtp: Any):
        # read by SMTP.__init__ as its reader's limit (documented): the most
        # of a command line held before it is known to be too long
        self.line_length_limit = 2 * max_command_length
        super().__init__(handler, **smtp)
        # StreamReaderProtocol makes its reader before a subclass can choose
        # the class; its state is a plain StreamReader's, so the class is swapped
        self._stream_reader.__class__ = reader_class  # type: ignore[attr-defined]
        # aiosmtpd measures a command line without its CRLF, and keeps its
        # limits per command in a table that every session shares and that
        # each EHLO raises: each session gets its own, set afresh at EHLO
        command_limit = max_command_length - 2
        self.command_size_limit = command_limit
        self.command_size_limits = defaultdict(lambda: command_limit)
        self._reply_lines: list[str] = []
        self._then_close: Reply | None = None

    def __dir__(self) -> list[str]:
        return self._edge_names

    @property
    def reader(self) -> R:
        """The connection's reader, of the class given."""
        return cast(R, self._reader)  # aiosmtpd keeps it here once connected

    def new_session(self) -> Session:
        """The session each connection (and each STARTTLS) begins."""
        return Session(self.loop)

    def _create_session(self) -> Session:
        return self.new_session()  # documented for subclassing

    def end_transaction(self) -> None:
        """The envelope afresh, as after aiosmtpd's own DATA."""
        self._set_post_data_state()  # aiosmtpd's own step after DATA

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every address with the email package's full RFC
        # 5322 parser; the plain form takes a regex
        plain = _DOT_ATOM_ADDRESS.match(arg)
        if plain:
            return plain.group(1), plain.group(2) or ""
        return super()._getaddr(arg)

    def _timeout_cb(self) -> None:
        # aiosmtpd's idle timer closes without a word; a client gets a 421
        self.idle()

    def idle(self) -> None:
        """The client said nothing for `timeout` seconds: 421 and close."""
        self.close_with(replies.IDLE_TIMEOUT)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self.command_size_limits.clear()  # aiosmtpd adds SIZE's 26 octets at each EHLO
        await super().smtp_EHLO(hostname)

    def refuse(self, rejection: Rejection, **fields: Any) -> str:
        """Record a refusal; the text to answer with. The subclass's."""
        raise NotImplementedError

    async def push(self, status: str | bytes) -> None:
        """Where aiosmtpd's replies, and the handler hooks' it passes on,
        leave: the lines of a multi-line reply (EHLO) in one write, and
        aiosmtpd's own refusals as ours, through `refuse`."""
        text = status.decode() if isinstance(status, bytes) else status
        if text[3:4] == "-":
            self._reply_lines.append(text)
            return
        if self._reply_lines:
            text = "\r\n".join([*self._reply_lines, text])
            self._reply_lines.clear()
        # only a 4xx or 5xx can be a refusal: most replies are not looked up
        if text.startswith(("4", "5")):
            # the size refusal names the limit
            ours = as_ours(text, limit=size(self.data_size_limit or 0))
            if ours is not None:
                text = self.refuse(ours)
        await self.send(text)

    async def send(self, text: str) -> None:
        """Write a reply as it is."""
        await super().push(text)
        if self._then_close is not None:
            self.close_with(self._then_close)

    def close_after_reply(self, reply: Reply) -> None:
        """Once the reply being made is written, say `reply` and close."""
        self._then_close = reply

    def close_with(self, reply: Reply) -> bool:
        """Say `reply` and close, if the connection is still open (True then)."""
        transport = cast(asyncio.WriteTransport | None, self.transport)
        if transport is None or transport.is_closing():
            return False
        transport.write(f"{reply}\r\n".encode())
        transport.close()
        return True
