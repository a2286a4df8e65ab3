"""One plain sentence per pool event, for ``glasspool demo``.

The sentences are data: :data:`TEMPLATES` maps ``(kind, reason, variant)`` to a template.
The variant says what the neighbouring events show: ``served`` (the event took a request
off the key's queue, seen as ``waiting`` going down) or ``handoff`` (a released connection
went straight to the next request). A key without a variant is the general sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from .._events import EVENT_REASONS, PoolEvent
from .._pool.key import PoolKey

__all__ = ["FALLBACK", "TEMPLATES", "Narrator"]

_FREE: Final = "Its slot is free again."

TEMPLATES: Final[dict[tuple[str, str | None, str], str]] = {
    ("connecting", None, ""): (
        "A slot was reserved and connection {conn} to {host} is being opened; from now on it "
        "counts toward both limits."
    ),
    ("connecting", None, "served"): (
        "A waiting request for {host} got a free slot, so connection {conn} is being opened "
        "for it ({queue})."
    ),
    ("tunnel", "connect", ""): (
        "The proxy accepted CONNECT: connection {conn}'s tunnel to {host} is open; TLS with "
        "the origin runs inside it next."
    ),
    ("tunnel", "socks", ""): (
        "The SOCKS proxy connected connection {conn} through to {host}; the tunnel is open."
    ),
    ("tls", "origin", ""): (
        "Connection {conn} reached {host}; the TLS handshake with the server begins."
    ),
    ("tls", "proxy", ""): (
        "Connection {conn} reached its HTTPS proxy; the TLS handshake with the proxy begins."
    ),
    ("acquired", "new", ""): "Connection {conn} is open and carries the request (reason new).",
    ("acquired", "reused", ""): (
        "Connection {conn} was idle in the pool and now carries this request (reason reused): "
        "no new socket, no handshake."
    ),
    ("acquired", "reused", "served"): (
        "Connection {conn} went straight to the oldest request waiting for {host} (reason "
        "reused), without going idle ({queue})."
    ),
    ("released", "eof", ""): (
        "Connection {conn} went back to the pool: its {body} was read to the end (reason "
        "eof). It stays open and idle, and still counts toward the limit."
    ),
    ("released", "eof", "handoff"): (
        "Connection {conn} is done: its {body} was read to the end (reason eof). A request "
        "is waiting for {host}, so the connection is handed on instead of going idle."
    ),
    ("released", "closed", ""): (
        "The caller closed the response on connection {conn} before reading its body to the "
        "end (reason closed)."
    ),
    ("released", "error", ""): (
        "The request on connection {conn} failed, so the connection comes back broken "
        "(reason error)."
    ),
    ("queued", "limit_per_host", ""): (
        "A request for {host} has to wait: that host already has its limit of "
        "{limit_per_host} connections open, idle ones included (reason limit_per_host; "
        "{queue})."
    ),
    ("queued", "limit", ""): (
        "A request for {host} has to wait: all {limit} connections of the client are open "
        "and no other host has an idle one to close (reason limit; {queue})."
    ),
    ("queued", "shared_limit", ""): (
        "A request for {host} has to wait: the fleet-wide limit for this host is full "
        "(reason shared_limit; {queue})."
    ),
    ("dequeued", "cancelled", ""): (
        "A request waiting for {host} was cancelled and left the queue without ever holding "
        "a slot (reason cancelled; {queue})."
    ),
    ("dequeued", "timeout", ""): (
        "A request waiting for {host} ran out of pool timeout and left the queue (reason "
        "timeout; {queue})."
    ),
    ("closed", "expired", ""): (
        "Connection {conn} sat idle longer than keepalive_expiry (or the server's Keep-Alive "
        f"hint) and was closed (reason expired). {_FREE}"
    ),
    ("closed", "max_lifetime", ""): (
        f"Connection {{conn}} was closed: it is older than max_lifetime (reason max_lifetime). "
        f"{_FREE}"
    ),
    ("closed", "max_requests", ""): (
        "Connection {conn} was closed: it has carried max_requests_per_connection requests "
        f"(reason max_requests). {_FREE}"
    ),
    ("closed", "server_closed", ""): (
        f"The server closed connection {{conn}} (reason server_closed). {_FREE}"
    ),
    ("closed", "not_reusable", ""): (
        "Connection {conn} was closed instead of pooled: unread body bytes (or Connection: "
        f"close) mean it cannot carry another request (reason not_reusable). {_FREE}"
    ),
    ("closed", "evicted", ""): (
        "Idle connection {conn} to {host} was closed to make room for another host under the "
        "global limit (reason evicted)."
    ),
    ("closed", "error", ""): (
        "Connection {conn} was closed after a network or protocol error, or its connect "
        f"failed (reason error). {_FREE}"
    ),
    ("closed", "cancelled", ""): (
        f"Connection {{conn}} was closed because its request was cancelled (reason "
        f"cancelled). {_FREE}"
    ),
    ("closed", "client_closed", ""): (
        "Connection {conn} was closed by client.aclose() (reason client_closed)."
    ),
    ("closed", "limit_lowered", ""): (
        "Connection {conn} to {host} came back or sat idle while more connections were open "
        "than its lowered adaptive limit, so it was closed (reason limit_lowered)."
    ),
    **{
        ("retry", reason, ""): (
            "The request to {host} failed ({reason}) and is sent again as attempt {attempt} "
            "after {delay}."
        )
        for reason in EVENT_REASONS["retry"]
    },
    **{
        ("limit_changed", reason, ""): (
            "{host} answered {reason}, so its adaptive limit was halved to {new_limit}: new "
            "requests wait until fewer connections are in use."
        )
        for reason in EVENT_REASONS["limit_changed"] - {"recovered"}
    },
    ("limit_changed", "recovered", ""): (
        "{host} answered a run of requests well, so its adaptive limit grew by one to "
        "{new_limit} (reason recovered)."
    ),
}

FALLBACK: Final = "Event {kind} (reason {reason}) on connection {conn} for {host}."


def _queue(waiting: int, host: str) -> str:
    if waiting == 0:
        return f"nothing else waits for {host}"
    return f"{waiting} waiting for {host}" if waiting > 1 else f"1 waits for {host}"


class Narrator:
    """Turns batches of events into sentences, remembering each key's queue length.

    Args:
        names: gives a key's short name ("host A"), or ``None`` to print ``str(key)``.
        limit, limit_per_host: the client's limits, for the ``queued`` sentences.
    """

    def __init__(
        self,
        names: Callable[[PoolKey], str | None],
        *,
        limit: int,
        limit_per_host: int | None,
    ) -> None:
        self.names = names
        self.limit = limit
        self.limit_per_host = limit_per_host
        self._waiting: dict[PoolKey, int] = {}

    def name(self, key: PoolKey) -> str:
        """The short name of ``key``, or ``str(key)``."""
        return self.names(key) or str(key)

    def sentences(self, events: Sequence[PoolEvent], body: str) -> list[str]:
        """One sentence per event, in order.

        Args:
            events: consecutive events (one demo step).
            body: how to name a response body in ``released`` sentences ("13-byte body").

        Returns:
            The sentences, one per event.
        """
        out = []
        for i, event in enumerate(events):
            variant = self._variant(event, events[i + 1] if i + 1 < len(events) else None)
            self._waiting[event.key] = event.waiting
            template = (
                TEMPLATES.get((event.kind, event.reason, variant))
                or TEMPLATES.get((event.kind, event.reason, ""))
                or FALLBACK
            )
            out.append(template.format(**self._fields(event, body)))
        return out

    def _variant(self, event: PoolEvent, following: PoolEvent | None) -> str:
        if event.kind in ("connecting", "acquired"):
            return "served" if event.waiting < self._waiting.get(event.key, 0) else ""
        if (
            event.kind == "released"
            and following is not None
            and following.kind == "acquired"
            and following.connection_id == event.connection_id
        ):
            return "handoff"
        return ""

    def _fields(self, event: PoolEvent, body: str) -> dict[str, object]:
        host = self.name(event.key)
        return {
            "kind": event.kind,
            "reason": event.reason,
            "conn": event.connection_id,
            "host": host,
            "body": body,
            "queue": _queue(event.waiting, host),
            "limit": self.limit,
            "limit_per_host": self.limit_per_host,
            "attempt": event.attempt,
            "delay": "no wait" if not event.delay else f"{event.delay:.3f} s",
            "new_limit": event.limit,
        }
