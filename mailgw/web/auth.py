"""Who holds a bearer token: an operator (sees every system) or a system's
mail admins (see their own). Tokens are kept as SHA-256 hashes (config.toml
holds only those); a token is hashed and looked up by its digest."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from mailgw.config import OperatorToken, System
from mailgw.hashing import hash_token, is_token_text

MAX_TOKEN = 512  # longer is not a token of ours; not worth hashing


class Principal(NamedTuple):
    operator: str | None  # the operator's name
    system: str | None  # the system whose token it is

    def can_see(self, system: str) -> bool:
        return self.operator is not None or self.system == system


class Tokens:
    def __init__(self, operators: Iterable[OperatorToken], systems: Iterable[System]):
        self.load(operators, systems)

    def load(self, operators: Iterable[OperatorToken], systems: Iterable[System]) -> None:
        """(Re)build: at start, and when the config is reloaded."""
        by_hash = {op.token_hash: Principal(op.name, None) for op in operators}
        for system in systems:
            if system.status_token_hash:
                by_hash[system.status_token_hash] = Principal(None, system.id)
        self._by_hash = by_hash

    def who(self, token: str | None) -> Principal | None:
        # anything else (such as bytes that are not UTF-8, which aiohttp
        # hands over surrogate-escaped) is nobody's token, not an error
        if not token or len(token) > MAX_TOKEN or not is_token_text(token):
            return None
        # looked up by digest, not compared as typed: what timing could tell
        # is how one SHA-256 digest compares with another, which brings no
        # one closer to a token (the reason to compare in constant time)
        return self._by_hash.get(hash_token(token))
