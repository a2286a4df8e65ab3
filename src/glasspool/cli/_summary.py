"""What ``glasspool get`` reports: one result per request, and the summary at the end."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._stats import HostStats, PoolStats

__all__ = [
    "Fleet",
    "Result",
    "Summary",
    "duration",
    "fleet_cell",
    "percentile",
    "plural",
    "summarize",
    "summary_json",
    "summary_lines",
]


@dataclass(frozen=True, slots=True)
class Result:
    """One request: its status and body size, or the exception it raised.

    Attributes:
        index: the request's number (0-based, in the order requests were planned).
        url: the URL requested, any password replaced by ``***``.
        status: the response status, or ``None`` if the request raised.
        nbytes: body bytes received (decoded).
        latency_s: from the call to the end of the body (or the error).
        error: the exception class name, or ``None``.
        message: the exception message (empty without an error).
    """

    index: int
    url: str
    status: int | None
    nbytes: int
    latency_s: float
    error: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Fleet:
    """One pool key's shared-limit figures (``glasspool get --redis``).

    Attributes:
        key: ``str()`` of the pool key.
        shared_limit: the fleet-wide limit for its host.
        in_use: fleet-wide slots in use as this worker last saw them (``None``: never seen).
        leases: the slots this worker holds for the key.
    """

    key: str
    shared_limit: int
    in_use: int | None
    leases: int


def fleet_cell(host: HostStats) -> str:
    """A host's fleet figures for the live view, ``"2/3 (1 mine)"``, or ``""`` without them.

    The first two numbers are the fleet-wide slots in use (``?`` if not seen yet) and the
    shared limit; the last is this worker's leases.
    """
    if host.shared_limit is None:
        return ""
    seen = "?" if host.fleet_in_use is None else str(host.fleet_in_use)
    return f"{seen}/{host.shared_limit} ({host.leases} mine)"


@dataclass(frozen=True, slots=True)
class Summary:
    """Totals over every result plus the pool's counters."""

    requests: int
    responses: int
    elapsed_s: float
    statuses: Counter[int]
    latencies: dict[str, float]  # "p50"/"p90"/"p99" -> seconds; empty without responses
    opened: int
    reused: int
    nbytes: int
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # class -> count, example
    fleet: tuple[Fleet, ...] = ()  # keys with shared limits, in stats() order
    closed: dict[str, int] = field(default_factory=dict)  # close reason -> connections

    @property
    def failed(self) -> int:
        """Requests that raised."""
        return self.requests - self.responses


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ascending ``ordered``.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    >>> percentile([1.0, 2.0, 3.0, 4.0], 99)
    4.0

    Raises:
        ValueError: ``ordered`` is empty or ``q`` is out of range.
    """
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[rank - 1]


def plural(count: int, noun: str) -> str:
    """``1 request``, ``2 requests``.

    >>> plural(1, "request"), plural(0, "error")
    ('1 request', '0 errors')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summarize(
    results: Sequence[Result],
    stats: PoolStats,
    elapsed_s: float,
    closed: dict[str, int] | None = None,
) -> Summary:
    """Fold the results, the pool's final ``stats()`` and the close reasons seen (reason ->
    connections) into a :class:`Summary`."""
    answered = [r for r in results if r.status is not None]
    ordered = sorted(r.latency_s for r in answered)
    latencies = {f"p{q}": percentile(ordered, q) for q in (50, 90, 99)} if ordered else {}
    errors: dict[str, tuple[int, str]] = {}
    for r in results:
        if r.error is not None:
            count, example = errors.get(r.error, (0, r.message))
            errors[r.error] = (count + 1, example)
    return Summary(
        requests=len(results),
        responses=len(answered),
        elapsed_s=elapsed_s,
        statuses=Counter(r.status for r in answered if r.status is not None),
        latencies=latencies,
        opened=sum(h.opened for h in stats.hosts.values()),
        reused=sum(h.reused for h in stats.hosts.values()),
        nbytes=sum(r.nbytes for r in results),
        errors=errors,
        fleet=tuple(
            Fleet(str(key), h.shared_limit, h.fleet_in_use, h.leases)
            for key, h in stats.hosts.items()
            if h.shared_limit is not None
        ),
        closed=dict(sorted((closed or {}).items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def duration(seconds: float) -> str:
    """``0.84 ms``, ``12.3 ms`` or ``1.25 s``."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def summary_lines(s: Summary) -> list[str]:
    """The summary as plain lines (no control codes)."""
    rate = s.requests / s.elapsed_s if s.elapsed_s > 0 else 0.0
    statuses = ", ".join(f"{code} x{n}" for code, n in sorted(s.statuses.items())) or "none"
    latency = (
        ", ".join(f"{name} {duration(v)}" for name, v in s.latencies.items())
        + f" ({plural(s.responses, 'response')})"
        if s.latencies
        else "no responses"
    )
    closed = sum(s.closed.values())
    reasons = ", ".join(f"{reason} x{n}" for reason, n in s.closed.items())
    lines = [
        f"summary: {plural(s.requests, 'request')} in {duration(s.elapsed_s)} "
        f"({rate:.1f} req/s): {plural(s.responses, 'response')}, {plural(s.failed, 'error')}",
        f"status codes: {statuses}",
        f"latency: {latency}",
        f"connections: {s.opened} opened, {s.reused} reused, {closed} closed"
        + (f" ({reasons})" if reasons else ""),
        f"bytes: {s.nbytes} body bytes received",
    ]
    for f in s.fleet:
        seen = "?" if f.in_use is None else str(f.in_use)
        held = "1 lease" if f.leases == 1 else f"{f.leases} leases"
        lines.append(f"fleet: {f.key} {seen}/{f.shared_limit} in use fleet-wide, {held} held here")
    if not s.errors:
        lines.append("errors: none")
    for name, (count, example) in sorted(s.errors.items()):
        lines.append(f"errors: {name} x{count} (e.g. {example})")
    return lines


def summary_json(s: Summary) -> dict[str, object]:
    """The summary as a JSON-ready dict (``glasspool get --json``; schema in docs/cli.md)."""
    return {
        "requests": s.requests,
        "responses": s.responses,
        "errors": s.failed,
        "elapsed_s": round(s.elapsed_s, 6),
        "statuses": {str(code): n for code, n in sorted(s.statuses.items())},
        "latency_s": {name: round(v, 6) for name, v in s.latencies.items()},
        "connections": {"opened": s.opened, "reused": s.reused, "closed": dict(s.closed)},
        "body_bytes": s.nbytes,
        "error_classes": {
            name: {"count": count, "example": example}
            for name, (count, example) in sorted(s.errors.items())
        },
        "fleet": [
            {"key": f.key, "shared_limit": f.shared_limit, "in_use": f.in_use, "leases": f.leases}
            for f in s.fleet
        ],
    }
