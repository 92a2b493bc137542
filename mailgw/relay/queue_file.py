"""A message on disk: its metadata and the one file that holds both.

A file is a line of JSON metadata (the envelope, each recipient's state, and
`data_length`), the raw message bytes, then zero or more update records,
each a newline and one line of JSON saying what changed since: attempts,
next try, crashes, and the recipients whose state or last reply changed.
A change of metadata is an append of a few hundred bytes, never a rewrite of
the message: it needs next to no free space, and when the disk is full it
fails without harming what is there.

A record cut short by a crash is not valid JSON (no proper prefix of a JSON
object is) and is skipped; records hold values, not increments, so those
after a skipped one still read right. Files of earlier versions (no
`data_length`) read as before: all that follows the first line is the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any, Literal

import orjson

RecipientState = Literal["pending", "delivered", "bounced"]
Origin = Literal["system", "dsn", "notice"]
UNREADABLE = (ValueError, TypeError, KeyError, IndexError)  # what broken metadata raises


@dataclass
class Recipient:
    address: str
    state: RecipientState = "pending"
    code: int | None = None
    response: str | None = None
    remote: str | None = None

    def outcome(self) -> list[Any]:
        return [self.state, self.code, self.response, self.remote]


@dataclass
class Meta:
    id: str
    system: str | None
    sender: str
    recipients: list[Recipient]
    size: int
    received_at: float
    origin: Origin = "system"
    attempts: int = 0
    next_try: float = 0.0
    crashes: int = 0
    client: dict[str, str | None] = field(default_factory=dict)

    def whose(self) -> dict[str, str]:
        """Who sent it, as its events carry it: the envelope sender, and the
        SMTP AUTH login if the client logged in (mailgw/senders.py)."""
        login = self.client.get("login")
        return {"sender": self.sender, **({"auth": login} if login else {})}

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]

    @property
    def due(self) -> float:
        """When it is to be tried: a message never tried is due since it
        arrived, so that the queue goes in arrival order."""
        return self.next_try or self.received_at

    def to_json(self) -> bytes:
        """One line: orjson never writes a raw newline (nor does it escape
        non-ASCII), and it is several times faster than json here."""
        return orjson.dumps(self._fields())

    def _fields(self) -> dict[str, Any]:
        obj = dict(vars(self))  # asdict() deep-copies; one level is all there is
        obj["recipients"] = [vars(r) for r in self.recipients]
        return obj

    @classmethod
    def from_json(cls, raw: bytes) -> Meta:
        return cls._from(orjson.loads(raw))

    @classmethod
    def _from(cls, obj: dict[str, Any]) -> Meta:
        obj["recipients"] = [Recipient(**r) for r in obj["recipients"]]
        return cls(**obj)


def encode(meta: Meta, data: bytes) -> tuple[bytes, bytes, bytes]:
    """The parts of a new file holding `meta` and `data`."""
    head = meta._fields()
    head["data_length"] = len(data)
    return orjson.dumps(head), b"\n", data


def decode(raw: bytes) -> tuple[Meta, bytes]:
    """A whole file: its metadata as updated, and the message bytes."""
    line, _, rest = raw.partition(b"\n")
    head = orjson.loads(line)
    length = head.pop("data_length", None)
    meta = Meta._from(head)
    if length is None:
        return meta, rest
    _apply(meta, rest[length:])
    return meta, rest[:length]


def read_meta(f: IO[bytes]) -> tuple[Meta, bool]:
    """The metadata as updated, from a file open at its start (the message
    bytes are skipped, not read), and whether updates can be appended to
    the file (not to one of the earlier layout)."""
    line = f.readline()
    head = orjson.loads(line)
    length = head.pop("data_length", None)
    meta = Meta._from(head)
    if length is not None:
        f.seek(len(line) + length)
        _apply(meta, f.read())
    return meta, length is not None


def update(old: Meta, new: Meta) -> bytes:
    """The record that turns `old` (as on disk) into `new`: appended to the file."""
    changed = [[i, *r.outcome()] for i, (r, was) in enumerate(
        zip(new.recipients, old.recipients, strict=True)) if r.outcome() != was.outcome()]
    return b"\n" + orjson.dumps({"attempts": new.attempts, "next_try": new.next_try,
                                 "crashes": new.crashes, "rcpt": changed})


def _apply(meta: Meta, records: bytes) -> None:
    for line in records.split(b"\n"):
        if not line:
            continue
        try:
            record = orjson.loads(line)
            changes = [(meta.recipients[i], state, code, response, remote)
                       for i, state, code, response, remote in record["rcpt"]]
            attempts, next_try, crashes = (record["attempts"], record["next_try"],
                                           record["crashes"])
        except UNREADABLE:
            continue  # cut short by a crash: it never counted
        meta.attempts, meta.next_try, meta.crashes = attempts, next_try, crashes
        for rcpt, state, code, response, remote in changes:
            rcpt.state, rcpt.code, rcpt.response, rcpt.remote = state, code, response, remote
