"""Retry policy: :class:`Retry`, a frozen value, and the pure decisions the client asks it.

Sans-IO: nothing here sleeps, reads a clock of its own or touches a connection. The client
(``Client._send_retrying``) passes in what happened (a status and its ``Retry-After``, or a
network error and whether the request had been sent), the wall-clock time and a random
source, and gets back whether to send again and after how long. Like urllib3's ``Retry``,
:meth:`Retry.increment` returns a new object that remembers the attempts made so far.

Rules (docs/retries.md says the same for users):

- ``total`` is the number of *retries*, so at most ``total + 1`` attempts. ``total=0`` never
  retries.
- A request may be sent again only if its body can be replayed (no body, or bytes) and its
  method is in ``methods`` (idempotent by default) or it carries an ``Idempotency-Key``
  header (Go's rule). A request that failed *before anything was sent* (``ConnectError``,
  ``ConnectTimeout``) is an exception to the method rule: the server never saw it, so any
  method with a replayable body is tried again.
- A response is retried when its status is in ``statuses``. The delay is its
  ``Retry-After`` (seconds, or an HTTP date; a date in the past means at once) when
  ``respect_retry_after`` is on, else exponential backoff with full jitter:
  ``uniform(0, min(max_backoff, backoff * 2 ** n))`` for the ``n``-th retry (from 0).
- A ``Retry-After`` above ``max_retry_after`` is not waited for and not shortened: the
  request is not retried and the response is returned as it is (the server asked for more
  time than the caller allows; the caller sees the status and the header).
- Network errors retried: ``ConnectError`` (not ``TLSError``: a failed verification does
  not heal), ``ConnectTimeout``, a ``ProxyError`` without a status (the proxy failed before
  the request reached it: like ``ConnectError``, for any method), ``ServerDisconnected``,
  ``ReadError``, ``WriteError``, ``ReadTimeout``, ``WriteTimeout``; never a ``ProxyError``
  with a status (407, a refused ``CONNECT``), ``PoolTimeout``, ``TotalTimeout``, protocol
  errors or caps.

>>> r = Retry(total=2, backoff=0.1)
>>> r.retries_left, r.increment("503", 0.05).retries_left
(2, 1)
>>> parse_retry_after("7", now=0.0)
7.0
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, Protocol

from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    ProxyError,
    ReadError,
    ReadTimeout,
    ServerDisconnected,
    TLSError,
    WriteError,
    WriteTimeout,
)
from ._validate import check_int, check_seconds

if TYPE_CHECKING:  # pragma: no cover
    from ._headers import Headers

__all__ = [
    "DEFAULT_RETRY_METHODS",
    "DEFAULT_RETRY_STATUSES",
    "Retry",
    "RetryAttempt",
    "RetryTypes",
    "Uniform",
    "error_delay",
    "method_allows_retry",
    "parse_retry_after",
    "status_delay",
]

DEFAULT_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
DEFAULT_RETRY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
IDEMPOTENCY_KEY: Final = "idempotency-key"

_BEFORE_SENDING = (ConnectError, ConnectTimeout)  # the server saw nothing of the request
_AFTER_SENDING = (ServerDisconnected, ReadError, WriteError, ReadTimeout, WriteTimeout)


class Uniform(Protocol):
    """A random source: ``random.Random`` or the ``random`` module (injectable for tests)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RetryAttempt:
    """One attempt that was retried: why (a status like ``"503"`` or an error class name
    like ``"ServerDisconnected"``) and the seconds waited before the next attempt."""

    reason: str
    delay: float


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class Retry:
    """When and how long to wait before sending a request again.

    Args:
        total: the most retries (attempts after the first); ``0`` never retries.
        backoff: base seconds of the exponential backoff (``backoff * 2 ** n``, full jitter).
        max_backoff: cap in seconds on one backoff delay.
        statuses: response statuses that are retried.
        methods: methods retried without an ``Idempotency-Key`` header (upper case).
        respect_retry_after: wait as a response's ``Retry-After`` says (else backoff).
        max_retry_after: the longest ``Retry-After`` honoured, seconds; a longer one ends
            the retries and the response is returned. ``None``: no cap.

    Attributes:
        attempts: the attempts retried so far (see :meth:`increment`).

    Raises:
        TypeError, ValueError: an option of the wrong type or out of range, named.
    """

    total: int
    backoff: float
    max_backoff: float
    statuses: frozenset[int]
    methods: frozenset[str]
    respect_retry_after: bool
    max_retry_after: float | None
    attempts: tuple[RetryAttempt, ...] = dataclasses.field(default=(), compare=False)

    def __init__(
        self,
        total: int = 3,
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
        methods: Iterable[str] = DEFAULT_RETRY_METHODS,
        respect_retry_after: bool = True,
        max_retry_after: float | None = 120.0,
        attempts: tuple[RetryAttempt, ...] = (),
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "total", check_int("Retry total", total, minimum=0))
        setattr_(self, "backoff", _seconds("Retry backoff", backoff))
        setattr_(self, "max_backoff", _seconds("Retry max_backoff", max_backoff))
        setattr_(self, "statuses", _statuses(statuses))
        setattr_(self, "methods", _methods(methods))
        if not isinstance(respect_retry_after, bool):
            raise TypeError(
                f"Retry respect_retry_after must be a bool, not {respect_retry_after!r}"
            )
        setattr_(self, "respect_retry_after", respect_retry_after)
        cap = check_seconds("Retry max_retry_after", max_retry_after, allow_zero=True)
        setattr_(self, "max_retry_after", cap)
        setattr_(self, "attempts", tuple(attempts))

    @classmethod
    def coerce(cls, value: RetryTypes) -> Retry | None:
        """``None`` (no retries), a number of retries (other options default) or a Retry."""
        if value is None or isinstance(value, Retry):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"retry must be None, an int or a glasspool.Retry, not {value!r}")
        return cls(total=value)

    @property
    def retries_left(self) -> int:
        """How many more times a request may be sent again."""
        return self.total - len(self.attempts)

    def increment(self, reason: str, delay: float) -> Retry:
        """A copy that has counted one more retry (``reason``, waiting ``delay`` seconds)."""
        return dataclasses.replace(self, attempts=(*self.attempts, RetryAttempt(reason, delay)))

    def backoff_delay(self, rng: Uniform) -> float:
        """Full-jitter exponential backoff for the next retry: uniform in
        ``[0, min(max_backoff, backoff * 2 ** len(attempts))]``."""
        exponent = min(len(self.attempts), 64)  # 2 ** 64 * backoff is past any cap
        return rng.uniform(0.0, min(self.max_backoff, self.backoff * 2.0**exponent))


RetryTypes = Retry | int | None


def method_allows_retry(retry: Retry, method: str, headers: Headers, replayable: bool) -> bool:
    """Whether a request may be sent again after it reached the server: a replayable body,
    and a method in ``retry.methods`` or an ``Idempotency-Key`` header.
    """
    if not replayable:
        return False
    return method.upper() in retry.methods or headers.get(IDEMPOTENCY_KEY) is not None


def status_delay(
    retry: Retry, status: int, retry_after: str | None, *, now: float, rng: Uniform
) -> float | None:
    """Seconds to wait before retrying a response with ``status``, or None: do not retry.

    Args:
        retry: the policy, with the attempts so far.
        status: the response's status.
        retry_after: its ``Retry-After`` header, if any.
        now: the wall-clock time (``time.time()``), for an HTTP-date ``Retry-After``.
        rng: the random source of the backoff's jitter.

    The method rule (:func:`method_allows_retry`) is the caller's to check.
    """
    if retry.retries_left <= 0 or status not in retry.statuses:
        return None
    if retry.respect_retry_after and retry_after is not None:
        wait = parse_retry_after(retry_after, now=now)
        if wait is not None:
            if retry.max_retry_after is not None and wait > retry.max_retry_after:
                return None  # longer than allowed: give the caller the response
            return wait
    return retry.backoff_delay(rng)


def error_delay(
    retry: Retry, exc: BaseException, *, method_ok: bool, replayable: bool, rng: Uniform
) -> float | None:
    """Seconds to wait before retrying after the network error ``exc``, or None.

    Args:
        retry: the policy, with the attempts so far.
        exc: what the attempt raised.
        method_ok: :func:`method_allows_retry` for the request.
        replayable: whether its body can be sent again.
        rng: the random source of the backoff's jitter.
    """
    if retry.retries_left <= 0 or not replayable:
        return None
    if isinstance(exc, _BEFORE_SENDING) and not isinstance(exc, TLSError):
        return retry.backoff_delay(rng)
    if isinstance(exc, ProxyError) and exc.status is None:  # failed, not refused: before sending
        return retry.backoff_delay(rng)
    if method_ok and isinstance(exc, _AFTER_SENDING):
        return retry.backoff_delay(rng)
    return None


def parse_retry_after(value: str, *, now: float) -> float | None:
    """A ``Retry-After`` value in seconds from ``now`` (wall-clock), or None if malformed.

    Either delay-seconds (digits only) or an HTTP date; a date in the past gives ``0.0``.
    A number too large for a float, or a date without a time zone, is malformed.

    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0)
    10.0
    >>> parse_retry_after("soon", now=0.0) is None
    True
    """
    text = value.strip()
    if text.isdigit() and text.isascii():
        seconds = float(text)  # hundreds of digits: inf, malformed
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        return None
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _seconds(name: str, value: object) -> float:
    """A duration >= 0 (``None`` is refused: there is no "no limit" here)."""
    checked = check_seconds(name, value, allow_zero=True)
    if checked is None or math.isinf(checked):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return checked


def _statuses(values: Iterable[int]) -> frozenset[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"Retry statuses must be a set of ints, not {values!r}")
    out = frozenset(values)
    for status in out:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"Retry statuses must be ints from 100 to 599, got {status!r}")
    return out


def _methods(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"Retry methods must be a set of method names, not {values!r}")
    out = set()
    for method in values:
        if not isinstance(method, str) or not method:
            raise ValueError(f"Retry methods must be non-empty strings, got {method!r}")
        out.add(method.upper())
    return frozenset(out)
