"""What relay/smtp_edge.py relies on in aiosmtpd and asyncio beyond their
documented API, checked one by one: each private method with its
parameters, the StreamReader's insides as the edge uses them, how aiosmtpd
makes a session and finds hooks, the command line limits it reads, and
every reply it can write. An upgrade of aiosmtpd or Python that moves or
changes one of them fails here, naming it; aiosmtpd is pinned to the minor
series these pass on (pyproject.toml)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import re
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiosmtpd
import aiosmtpd.smtp
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.relay import replies
from mailgw.relay.policy import Rejection
from mailgw.relay.smtp_edge import (
    AIOSMTPD_REFUSALS,
    EdgeHandler,
    EdgeSMTP,
    StreamBuffer,
    aiosmtpd_refusal,
    as_ours,
)

T = TypeVar("T")


def test_aiosmtpd_is_of_the_minor_series_this_contract_was_checked_on():
    # move this and the pin in pyproject.toml together, once this file passes
    assert aiosmtpd.__version__.startswith("1.4."), aiosmtpd.__version__


@pytest.mark.parametrize("owner,name,parameters,coroutine", [
    (asyncio.StreamReader, "_maybe_resume_transport", ["self"], False),
    (asyncio.StreamReader, "_wait_for_data", ["self", "func_name"], True),
    (Session, "__init__", ["self", "loop"], False),
    (SMTP, "_create_session", ["self"], False),
    (SMTP, "_set_post_data_state", ["self"], False),
    (SMTP, "_getaddr", ["self", "arg"], False),
    (SMTP, "_timeout_cb", ["self"], False),
    (SMTP, "check_helo_needed", ["self", "helo"], True),
    (SMTP, "handle_exception", ["self", "error"], True),
    (SMTP, "push", ["self", "status"], True),
    (SMTP, "smtp_HELO", ["self", "hostname"], True),
    (SMTP, "smtp_EHLO", ["self", "hostname"], True),
    (SMTP, "smtp_DATA", ["self", "arg"], True),
    (SMTP, "auth_PLAIN", ["self", "_", "args"], True),
    (SMTP, "auth_LOGIN", ["self", "_", "args"], True),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_a_method_the_edge_calls_or_overrides_is_there_with_its_parameters(
        owner, name, parameters, coroutine):
    where = f"{owner.__module__}.{owner.__qualname__}.{name}"
    method = getattr(owner, name, None)
    assert callable(method), f"{where} is gone"
    assert list(inspect.signature(method).parameters) == parameters, (
        f"{where} now takes {inspect.signature(method)}")
    assert inspect.iscoroutinefunction(method) == coroutine, (
        f"{where} is {'no longer' if coroutine else 'now'} a coroutine function")


def test_smtp_keeps_its_command_line_limits_in_attributes_of_the_class():
    assert isinstance(SMTP.command_size_limit, int), "SMTP.command_size_limit is gone"
    assert isinstance(SMTP.command_size_limits, dict), "SMTP.command_size_limits is gone"
    assert isinstance(SMTP.line_length_limit, int), "SMTP.line_length_limit is gone"


# --- the StreamReader's insides ---------------------------------------------


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def test_fed_bytes_wait_in_the_reader_s_buffer_and_reads_take_from_its_front():
    async def scenario() -> tuple[bytes, bytes]:
        reader = StreamBuffer()
        reader.feed_data(b"MAIL FROM:<a@b>\r\nRCPT")
        seen = bytes(reader.unread)  # StreamReader._buffer
        reader.consume(len(b"MAIL "))
        return seen, await reader.readuntil(b"\r\n")

    assert run(scenario) == (b"MAIL FROM:<a@b>\r\nRCPT", b"FROM:<a@b>\r\n")


def test_waiting_for_more_returns_when_bytes_arrive():
    async def scenario() -> bytes:
        reader = StreamBuffer()
        waiting = asyncio.create_task(reader.more())  # StreamReader._wait_for_data
        await asyncio.sleep(0)
        assert not waiting.done()
        reader.feed_data(b"more")
        await waiting
        return bytes(reader.unread)

    assert run(scenario) == b"more"


def test_at_the_end_of_the_stream_waiting_for_more_raises_with_what_is_unread():
    async def scenario() -> bytes:
        reader = StreamBuffer()
        reader.feed_data(b"half a line")
        reader.feed_eof()  # StreamReader._eof, with bytes still unread
        with pytest.raises(asyncio.IncompleteReadError) as ended:
            await reader.more()
        return ended.value.partial

    assert run(scenario) == b"half a line"


def test_a_stream_error_is_raised_to_whoever_waits_for_more():
    async def scenario() -> None:
        reader = StreamBuffer()
        reader.set_exception(ConnectionResetError("reset"))
        with pytest.raises(ConnectionResetError):
            await reader.more()

    run(scenario)


def test_a_transport_paused_for_a_full_buffer_reads_again_once_it_is_consumed():
    async def scenario() -> tuple[bool, bool]:
        ours, theirs = socket.socketpair()
        reader = StreamBuffer(limit=16)
        transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
            lambda: asyncio.StreamReaderProtocol(reader), ours)
        theirs.sendall(b"x" * 1000)
        while len(reader.unread) < 1000:
            await reader.more()
        paused = not transport.is_reading()  # over twice the limit
        reader.consume(len(reader.unread))  # StreamReader._maybe_resume_transport
        resumed = transport.is_reading()
        transport.close()
        theirs.close()
        return paused, resumed

    assert run(scenario) == (True, True)


# --- a live EdgeSMTP: session, reader, hooks, limits, timer -----------------


class ProbeSession(Session):
    pass


class ProbeReader(StreamBuffer):
    pass


class Hooks(EdgeHandler):
    async def handle_NOOP(self, server: SMTP, session: Session, envelope: Envelope,
                          arg: str) -> str:
        return "250 2.0.0 hook"


class Probe(EdgeSMTP[ProbeReader]):
    """The edge with nothing of the gateway's: it records what it refuses."""

    def __init__(self, refused: list[Rejection], **smtp: Any):
        super().__init__(Hooks(), reader_class=ProbeReader, max_command_length=64,
                         loop=asyncio.get_running_loop(), **smtp)
        self.refused = refused

    def new_session(self) -> ProbeSession:
        return ProbeSession(self.loop)

    def refuse(self, rejection: Rejection, **fields: Any) -> str:
        self.refused.append(rejection)
        return rejection.text


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        lines = [await self.reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(await self.reader.readline())
        return "\n".join(line.decode().rstrip("\r\n") for line in lines)

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()


async def talk(dialogue: Callable[[Probe, Client], Awaitable[T]], **smtp: Any) -> T:
    """`dialogue` with a Probe on a loopback port, as its client."""
    made: list[Probe] = []
    refused: list[Rejection] = []

    def probe() -> Probe:
        made.append(Probe(refused, **smtp))
        return made[-1]

    server = await asyncio.get_running_loop().create_server(probe, "127.0.0.1", 0)
    client = Client(*await asyncio.open_connection(*server.sockets[0].getsockname()[:2]))
    try:
        assert (await client.reply()).startswith("220 ")
        return await dialogue(made[0], client)
    finally:
        client.writer.close()
        with contextlib.suppress(OSError):
            await client.writer.wait_closed()
        server.close()
        await server.wait_closed()


def test_the_session_is_made_by_new_session_through_create_session():
    async def dialogue(probe: Probe, client: Client) -> object:
        return probe.session

    assert isinstance(run(lambda: talk(dialogue)), ProbeSession)


def test_the_connection_is_read_by_a_reader_of_the_class_chosen():
    async def dialogue(probe: Probe, client: Client) -> None:
        assert type(probe.reader) is ProbeReader
        assert probe.reader is probe._reader, "SMTP._reader is not the protocol's reader"
        assert probe.reader is probe._stream_reader, (
            "StreamReaderProtocol._stream_reader is not the reader it reads with")
        assert await client.cmd("EHLO client.test") is not None  # and it reads with it

    run(lambda: talk(dialogue))


def test_aiosmtpd_finds_every_hook_and_command_through_dir():
    async def dialogue(probe: Probe, client: Client) -> tuple[object, ...]:
        return (set(probe._handle_hooks), set(probe._smtp_methods), set(probe._auth_methods),
                await client.cmd("NOOP"))

    hooks, commands, mechanisms, noop = run(lambda: talk(dialogue))
    assert hooks == {"NOOP"}
    assert commands == {name[5:] for name in dir(SMTP) if name.startswith("smtp_")}
    assert mechanisms == {"LOGIN", "PLAIN"}
    assert noop == "250 2.0.0 hook"


def test_command_lines_are_limited_with_their_crlf_and_mail_once_26_octets_more():
    async def dialogue(probe: Probe, client: Client) -> list[str]:
        got = [await client.cmd("NOOP " + "x" * 57), await client.cmd("NOOP " + "x" * 58)]
        for _ in range(2):  # aiosmtpd raised MAIL's limit at each EHLO
            assert (await client.cmd("EHLO client.test")).startswith("250")
        mail = "MAIL FROM:<a@b.example>"
        got += [await client.cmd(mail + " " * (64 + 26 - 2 - len(mail))),
                await client.cmd("RSET"), await client.cmd(mail + " " * (64 + 27 - 2 - len(mail)))]
        return got

    assert run(lambda: talk(dialogue)) == [
        "250 2.0.0 hook", "500 5.5.2 Line too long", "250 OK", "250 OK", "500 5.5.2 Line too long"]


def test_aiosmtpd_s_own_refusal_leaves_as_ours_through_refuse():
    async def dialogue(probe: Probe, client: Client) -> tuple[str, list[Rejection]]:
        assert (await client.cmd("EHLO client.test")).startswith("250-")
        return await client.cmd("RCPT TO:<x@example.com>"), probe.refused

    reply, refused = run(lambda: talk(dialogue))
    assert reply == "503 5.5.1 Error: need MAIL command"
    assert refused == [Rejection.of(replies.NEED_MAIL, "bad_sequence")]


def test_end_transaction_starts_the_envelope_afresh():
    async def dialogue(probe: Probe, client: Client) -> tuple[object, object]:
        assert (await client.cmd("EHLO client.test")).startswith("250")
        assert await client.cmd("MAIL FROM:<a@b.example>") == "250 OK"
        before = probe.envelope
        probe.end_transaction()  # SMTP._set_post_data_state
        return before, probe.envelope

    before, after = run(lambda: talk(dialogue))
    assert isinstance(after, Envelope) and after is not before and after.mail_from is None


def test_an_idle_client_gets_421_from_the_timer():
    async def dialogue(probe: Probe, client: Client) -> tuple[str, bytes]:
        return await client.reply(), await client.reader.read()  # SMTP._timeout_cb

    assert run(lambda: talk(dialogue, timeout=0.05)) == (
        "421 4.4.2 Idle timeout; closing connection", b"")


# the plain addresses and parameters the fast path of _getaddr takes
ATOM = st.text("abcXYZ019_+=-", min_size=1, max_size=6)
DOT_ATOM = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
LABELS = st.lists(st.text("abcXYZ019-", min_size=1, max_size=6), min_size=1, max_size=3)
PARAMETERS = st.lists(st.sampled_from(["SIZE=100", "BODY=8BITMIME", "X", "A=b=c"]), max_size=3)


@pytest.fixture(scope="module")
def probe() -> Probe:
    async def make() -> Probe:
        return Probe([])

    return run(make)


@settings(max_examples=300, deadline=None)
@given(DOT_ATOM, LABELS.map(".".join), PARAMETERS, st.sampled_from([" ", "  "]))
def test_the_fast_path_finds_the_address_and_parameters_aiosmtpd_s_parser_finds(
        probe, local, domain, parameters, space):
    arg = f"<{local}@{domain}>" + "".join(space + p for p in parameters)
    fast, slow = probe._getaddr(arg), SMTP._getaddr(probe, arg)
    assert (fast[0], (fast[1] or "").split()) == (slow[0], (slow[1] or "").split()), arg


# --- every reply aiosmtpd can write ------------------------------------------

_REPLY = re.compile(r"(\d{3}|\{\})[ -]")


class _Texts(ast.NodeVisitor):
    """The reply texts in a module's source, as written: what varies is {}."""

    def __init__(self) -> None:
        self.found: set[str] = set()

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._keep("".join(part.value if isinstance(part, ast.Constant) else "{}"
                           for part in node.values))

    def visit_BinOp(self, node: ast.BinOp) -> None:
        left = node.left
        if isinstance(node.op, ast.Add) and isinstance(left, ast.Constant) and isinstance(
                left.value, str):
            self._keep(left.value + "{}")
            self.visit(node.right)
        else:
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._keep(node.value)

    def _keep(self, text: str) -> None:
        if _REPLY.match(text):
            self.found.add(text)


def aiosmtpd_replies() -> set[str]:
    texts = _Texts()
    texts.visit(ast.parse(inspect.getsource(aiosmtpd.smtp)))
    found = texts.found
    # smtp_HELP fills the code in: 250, or 501 for a command it does not know
    if "{} Supported commands: {}" in found:
        found = (found - {"{} Supported commands: {}"}) | {
            "250 Supported commands: {}", "501 Supported commands: {}"}
    return found


# not refusals: a client gets them as aiosmtpd writes them
PASSED_ON = {
    "220 {} {}", "220 Ready to start TLS", "221 Bye", "235 2.7.0 Authentication successful",
    "250 HELP", "250 OK", "250 Syntax: {}", "250 Supported commands: {}", "250 {}", "250-{}",
    "250-8BITMIME", "250-AUTH {}", "250-SIZE {}", "250-SMTPUTF8", "250-STARTTLS",
    "252 Cannot VRFY user, but will accept message and attempt delivery",
}
_OWN_DATA = "aiosmtpd's DATA is replaced by the gateway's (GatewaySMTP.smtp_DATA)"
_OWN_ERRORS = "GatewaySMTP.handle_exception answers every error itself"
NEVER_SENT = {
    "421 4.7.0 {} sent too many times": "the gateway sets no command_call_limit",
    "530 5.7.0 Authentication required": "the gateway sets no auth_required",
    "530 Must issue a STARTTLS command first": "the gateway sets no require_starttls",
    "554 Command refused due to lack of security": "only a handle_STARTTLS hook refuses; "
                                                   "the gateway has none",
    "535 5.7.8 Authentication credentials invalid": "a failed login gets replies.AUTH_FAILED, "
                                                    "as AuthResult.message",
    "500 Error: ({}) {}": _OWN_ERRORS,
    "500 Error: Cannot describe error": _OWN_ERRORS,
    "354 End data with <CR><LF>.<CR><LF>": _OWN_DATA,
    "503 Error: need RCPT command": _OWN_DATA,
    "500 Line too long (see RFC5321 4.5.3.1.6)": _OWN_DATA,
    "552 Error: Too much mail data": _OWN_DATA,
}


def test_every_reply_aiosmtpd_can_write_is_translated_passed_on_or_never_sent():
    unknown = sorted(text for text in aiosmtpd_replies()
                     if aiosmtpd_refusal(text) is None and text not in PASSED_ON | NEVER_SENT.keys())
    assert unknown == [], "replies of aiosmtpd the edge does not know; add them to "\
        "AIOSMTPD_REFUSALS (relay/smtp_edge.py) or here"


def test_every_translation_is_of_a_reply_aiosmtpd_still_writes():
    written = aiosmtpd_replies()
    matched = {found[0] for text in written if (found := aiosmtpd_refusal(text)) is not None}
    assert sorted(AIOSMTPD_REFUSALS.keys() - matched) == [], "aiosmtpd no longer writes these"


def test_the_lists_here_name_only_replies_aiosmtpd_still_writes():
    assert sorted((PASSED_ON | NEVER_SENT.keys()) - aiosmtpd_replies()) == []


@pytest.mark.parametrize("text", sorted(AIOSMTPD_REFUSALS))
def test_a_translated_refusal_has_an_enhanced_code_of_its_class(text):
    reply, reason = AIOSMTPD_REFUSALS[text]
    assert text[0] in "45", "only a 4xx or 5xx is looked up (EdgeSMTP.push)"
    assert re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", reply.enhanced), reply
    assert reply.enhanced[0] == str(reply.code)[0], reply
    assert reason


def test_a_varying_part_of_aiosmtpd_s_text_fills_ours_in():
    assert as_ours("503 Error: send EHLO first") == Rejection.of(
        replies.NEED_HELO, "bad_sequence", command="EHLO")
    assert as_ours("552 Error: message size exceeds fixed maximum message size",
                   limit=100) == Rejection.of(replies.MESSAGE_TOO_LARGE, "message_too_large",
                                              limit=100)
    assert as_ours("250 OK") is None
