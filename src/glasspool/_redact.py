"""What glasspool shows of URLs and server text: no secrets, no control characters.

Every exception message, repr, warning, log line, timeline label and CLI line that
shows a URL passes it through :func:`redact_url`, and every string a server chose (a reason
phrase, a header value, a ``Location``, a charset, an error text from Redis) through
:func:`safe_text`. This module is the only place that decides what those two hide.

- **Secrets.** The password of a URL's userinfo (``user:pw@``, ``:pw@``) and the value
  of a secret query parameter become ``***``: ``password`` and ``ssl_password`` (how
  redis-py takes them), the signatures and keys of pre-signed cloud storage URLs
  (``Signature``, ``AWSAccessKeyId``, ``X-Amz-Signature``, ``X-Amz-Credential``,
  ``X-Amz-Security-Token``, ``X-Goog-Signature``, ``sig``) and ``access_token``. The user
  name stays: it is not a secret, and it helps tell accounts apart. Pool keys never hold
  userinfo at all. :func:`telemetry_url` writes the same URL the way OpenTelemetry's
  ``url.full`` asks: ``REDACTED:REDACTED@`` for any userinfo, ``REDACTED`` for the values.
- **Control characters.** A server can put bytes into its reason phrase or headers that
  a terminal or a log reader would act on: ESC sequences, C1 controls such as U+009B (CSI)
  or U+0085 (next line), line and paragraph separators (CWE-117, log injection).
  :func:`safe_text` writes every character that Python's ``str.isprintable`` rejects (C0,
  DEL, C1, U+2028/U+2029, bidirectional and other format characters) as an escape such as
  ``\\x1b`` or ``\\u2028``, the way ``repr()`` does.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["REDACTED", "SECRET_QUERY_KEYS", "redact_url", "safe_text", "telemetry_url"]

REDACTED = "***"
"""What a password is replaced with."""

SECRET_QUERY_KEYS = frozenset(
    {
        "password",
        "ssl_password",
        "access_token",
        "awsaccesskeyid",
        "signature",
        "sig",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-signature",
    }
)
"""Query parameters whose values are secrets (compared after percent-decoding, any case)."""

_TELEMETRY_REDACTED = "REDACTED"  # the OpenTelemetry semantic conventions' word

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\Z")


def safe_text(text: str) -> str:
    """Return ``text`` with every non-printable character written as an escape.

    Printable text, spaces included, is returned unchanged (the same object), so calling it
    twice changes nothing more than calling it once.

    >>> safe_text("Not Found")
    'Not Found'
    >>> print(safe_text("OK\\x1b[2J\\x85\\u2028!"))
    OK\\x1b[2J\\x85\\u2028!
    """
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def redact_url(url: object, *, quoted: bool = False) -> str:
    """Return ``url`` as text that is safe to show: secrets replaced by ``***``.

    Works on any text, parsed or not (a URL that failed validation is shown through it
    too), and on ``yarl.URL`` objects. The authority is what follows ``//`` up to the
    first ``/``, ``?`` or ``#``; its userinfo is what comes before its last ``@``.

    Args:
        url: a ``str``, a ``yarl.URL`` or anything whose ``str()`` is a URL.
        quoted: return the ``repr()`` of the redacted text (quotes, and control
            characters escaped by ``repr``), for messages that quote the URL; otherwise
            the redacted text with control characters escaped by :func:`safe_text`.

    >>> redact_url("http://user:secret@example.org/x")
    'http://user:***@example.org/x'
    >>> redact_url("redis://:secret@cache:6379/0?password=also&db=1")
    'redis://:***@cache:6379/0?password=***&db=1'
    >>> redact_url("unix://:secret@/run/redis.sock?db=0")
    'unix://:***@/run/redis.sock?db=0'
    >>> redact_url("https://example.org/a?q=1")
    'https://example.org/a?q=1'
    >>> print(redact_url("http://u:pw@h/a\\x1b", quoted=True))
    'http://u:***@h/a\\x1b'
    """
    text = _redacted(str(url))
    return repr(text) if quoted else safe_text(text)


def telemetry_url(url: object) -> str:
    """Return ``url`` redacted as OpenTelemetry's ``url.full`` attribute asks: userinfo
    (user name included) as ``REDACTED:REDACTED``, secret query values as ``REDACTED``.

    >>> telemetry_url("https://u:pw@example.org/o?X-Amz-Signature=abc&part=1")
    'https://REDACTED:REDACTED@example.org/o?X-Amz-Signature=REDACTED&part=1'
    """
    return safe_text(_redacted(str(url), telemetry=True))


def _redacted(text: str, *, telemetry: bool = False) -> str:
    if "@" not in text and "?" not in text:  # no userinfo, no query: nothing to hide
        return text
    marker = _TELEMETRY_REDACTED if telemetry else REDACTED
    start = _authority_start(text)
    if start < 0:
        return _redact_query(text, 0, marker)
    at = text.rfind("@", start, _first_of(text, "/?#", start))
    if at >= 0:
        user, colon, _ = text[start:at].partition(":")
        if telemetry:
            text = f"{text[:start]}{marker}:{marker}{text[at:]}"
        elif colon:
            text = f"{text[:start]}{user}:{marker}{text[at:]}"
    return _redact_query(text, _first_of(text, "/?#", start), marker)


def _authority_start(text: str) -> int:
    """Where the authority begins (after ``scheme://`` or a leading ``//``), or -1."""
    slashes = text.find("//")
    if slashes < 0 or (slashes and not _SCHEME.match(text[:slashes])):
        return -1
    return slashes + 2


def _first_of(text: str, chars: str, start: int) -> int:
    found = [i for i in (text.find(c, start) for c in chars) if i >= 0]
    return min(found, default=len(text))


def _redact_query(text: str, start: int, marker: str) -> str:
    """Replace the values of secret query parameters in ``text`` (searched from ``start``)."""
    query = text.find("?", start)
    end = text.find("#", start)
    end = len(text) if end < 0 else end
    if not 0 <= query < end:  # no query, or a "?" inside the fragment
        return text
    pairs = text[query + 1 : end].split("&")
    changed = False
    for i, pair in enumerate(pairs):
        name, eq, _ = pair.partition("=")
        if eq and urllib.parse.unquote_plus(name).strip().lower() in SECRET_QUERY_KEYS:
            pairs[i] = f"{name}={marker}"
            changed = True
    if not changed:
        return text
    return f"{text[: query + 1]}{'&'.join(pairs)}{text[end:]}"
