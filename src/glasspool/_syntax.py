"""Character and scheme rules of HTTP/1.1 and URLs, and the fast checks over them.

The tables are bytes, checked with ``bytes.translate(None, delete=...)``: a valid string
leaves nothing (tokens) or loses nothing (values), and only the error path walks characters
one by one to name the culprit. Nothing here raises: callers word their own errors.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEFAULT_PORTS",
    "LOCATION_FORBIDDEN",
    "TCHAR",
    "URL_FORBIDDEN",
    "VALUE_FORBIDDEN",
    "first_bad_char",
    "has_forbidden",
    "is_token",
]

TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
"""The characters of an RFC 9110 token (methods, header names)."""
# C0 controls except HTAB, and DEL: forbidden in header values.
VALUE_FORBIDDEN: Final = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
# C0 controls, SPACE and DEL: forbidden anywhere in a URL we are given.
URL_FORBIDDEN: Final = bytes([*range(0x00, 0x21), 0x7F])
# The same minus SPACE: a redirect Location may carry raw spaces, which yarl encodes.
LOCATION_FORBIDDEN: Final = bytes([*range(0x00, 0x20), 0x7F])

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
"""The schemes glasspool speaks, and the port each uses when a URL names none."""


def first_bad_char(text: str, forbidden: bytes) -> int:
    """Return the index of the first character of ``text`` whose code is in ``forbidden``."""
    bad = frozenset(chr(b) for b in forbidden)
    return next((i for i, ch in enumerate(text) if ch in bad), -1)


def has_forbidden(text: str, forbidden: bytes) -> bool:
    """Tell whether ``text`` holds a character from ``forbidden`` (all below 0x80).

    UTF-8 never uses bytes below 0x80 inside a multi-byte sequence, so checking the
    UTF-8 bytes is exact, and ``surrogatepass`` lets lone surrogates through unharmed.
    """
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw.translate(None, forbidden)) != len(raw)


def is_token(text: str) -> bool:
    """Tell whether ``text`` is a non-empty RFC 9110 token."""
    return text.isascii() and text != "" and not text.encode("ascii").translate(None, TCHAR)
