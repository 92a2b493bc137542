"""Hashing of the secrets that config.toml holds: SMTP AUTH passwords and
status tokens. The file never holds a secret in the clear.

Passwords are low-entropy, so they get scrypt (slow on purpose). Tokens are
random and long, so a SHA-256 digest is enough and keeps an HTTP request cheap
(web/auth.py looks a presented token up by its digest).
"""

import base64
import hashlib
import hmac
import secrets

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def is_password_hash(text: str) -> bool:
    parts = text.split("$")
    return len(parts) == 6 and parts[0] == "scrypt" and all(p.isdigit() for p in parts[1:4])


def verify_password(password: str, stored: str) -> bool:
    if not is_password_hash(stored):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    expected = _unb64(digest)
    got = hashlib.scrypt(
        password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
    )
    return hmac.compare_digest(got, expected)


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def is_token_text(token: str) -> bool:
    """A token travels in an HTTP header or a cookie: printable ASCII only."""
    return token.isascii() and token.isprintable()


def is_token_hash(text: str) -> bool:
    kind, _, digest = text.partition("$")
    return kind == "sha256" and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def new_token() -> str:
    return secrets.token_urlsafe(32)
