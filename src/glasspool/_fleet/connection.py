"""The Redis client of the fleet: building it (redis-py is an optional extra), and the
pub/sub connection that wakes the local tasks whose tickets reached the head of a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = ["RedisApi", "Waker", "import_redis"]

logger = logging.getLogger("glasspool.fleet")

_READ_S = 1.0  # longest single pub/sub read; bounds how late the reader notices close()
_RECONNECT_S = 0.25  # pause between pub/sub reconnect attempts while Redis is down


@dataclass(frozen=True, slots=True)
class RedisApi:
    """The parts of redis-py this module uses, imported only when RedisLimits is built."""

    make_client: Callable[[str, float], Redis]
    unreachable: tuple[type[BaseException], ...]
    redis_error: type[BaseException]


def import_redis() -> RedisApi:
    """Import redis-py's asyncio client, which is the optional ``glasspool[redis]`` extra.

    Returns:
        the constructors and exception classes RedisLimits needs.

    Raises:
        ImportError: redis-py is not installed; the message names the extra.
    """
    try:
        import redis.asyncio as aioredis
        from redis import exceptions
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as exc:
        raise ImportError(
            "glasspool.RedisLimits needs redis-py (redis.asyncio), which is not installed; "
            "install the extra: pip install 'glasspool[redis]'"
        ) from exc

    def make_client(url: str, socket_timeout: float) -> Redis:
        # One immediate retry on a fresh connection: enough to get past a connection that
        # died with a restarted server, without hiding an outage behind back-off.
        return aioredis.Redis.from_url(
            url,
            socket_connect_timeout=socket_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 1),
        )

    unreachable = (exceptions.ConnectionError, exceptions.TimeoutError, OSError)
    return RedisApi(make_client, unreachable, exceptions.RedisError)


def _text(value: object) -> str:
    """Decode a pub/sub field that may be bytes (decode_responses=False) or str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# -- pub/sub wake-ups ---------------------------------------------------------------------


class Waker:
    """Wakes the local task whose ticket a notice names; one pub/sub channel per worker.

    The scripts publish ``"<ticket> <in use>"`` on ``<namespace>:wake:<worker id>`` when a
    ticket of this worker reaches the head of its host's queue with a slot free, so a
    notice costs one delivery, to its owner only. The channel is subscribed the first time
    a task here has to wait and stays subscribed until :meth:`aclose` (redis-py
    resubscribes after a reconnect). Waiters must not rely on a notice arriving (one
    published while the subscription was down is lost), so they re-check on a timer too.
    """

    def __init__(
        self,
        pubsub: PubSub,
        channel: str,
        on_notice: Callable[[str, int], None],
        confirm_s: float,
    ) -> None:
        self._pubsub = pubsub
        self._channel = channel
        self._on_notice = on_notice  # (host, in use) from every notice
        self._confirm_s = confirm_s
        self._waiters: dict[str, tuple[str, asyncio.Event]] = {}  # ticket -> (host, event)
        self._confirmed = asyncio.Event()  # set once Redis confirmed the SUBSCRIBE
        self._reader: asyncio.Task[None] | None = None
        self._subscribing: asyncio.Task[None] | None = None
        self._closed = False

    def register(self, ticket: str, host: str) -> asyncio.Event:
        """Register a waiting ticket; its event is set when a notice names it."""
        event = asyncio.Event()
        self._waiters[ticket] = (host, event)
        return event

    def unregister(self, ticket: str) -> None:
        """Forget a ticket (granted, timed out or cancelled)."""
        self._waiters.pop(ticket, None)

    def is_listening(self) -> bool:
        """Whether Redis has confirmed the subscription (and it has not been lost since)."""
        return self._confirmed.is_set()

    async def ensure(self) -> None:
        """Subscribe unless Redis already confirmed it; wait at most ``confirm_s`` for that.

        A failure is left to the waiters' timers (the next ``ensure`` tries again).
        """
        if self._confirmed.is_set() or self._closed:
            return
        subscribing = self._subscribing
        if subscribing is None or subscribing.done():
            subscribing = asyncio.create_task(self._subscribe(), name="glasspool-fleet-subscribe")
            self._subscribing = subscribing
        # The SUBSCRIBE runs in a task of its own: it serves every waiter of this worker,
        # and redis-py (8.1) can swallow a cancellation that arrives during the command
        # (subscribe() then returns normally), which left a cancelled acquire() waiting
        # on. Shielded, a cancelled waiter stops here and the command finishes cleanly.
        try:
            await asyncio.shield(subscribing)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this waiter was cancelled
            return  # aclose() stopped the subscription; the waiter finds the limiter closed
        try:
            async with asyncio.timeout(self._confirm_s):
                await self._confirmed.wait()
        except TimeoutError:
            pass

    async def _subscribe(self) -> None:
        try:
            await self._pubsub.subscribe(self._channel)
        except Exception as exc:  # the waiter's timer covers a failed subscription
            logger.debug("SUBSCRIBE %s failed: %r", self._channel, exc)
            return
        if (self._reader is None or self._reader.done()) and not self._closed:
            self._reader = asyncio.create_task(self._read_loop(), name="glasspool-fleet-pubsub")

    def wake_all(self) -> None:
        """Set every waiter's event (on close, and when the subscription is lost)."""
        for _, event in self._waiters.values():
            event.set()

    async def _read_loop(self) -> None:
        """Read notices until closed; reconnect (redis-py resubscribes) after a failure."""
        while not self._closed:
            try:
                message = await self._pubsub.get_message(timeout=_READ_S)
            except Exception as exc:  # any failure: note it, back off, read again
                logger.debug("pub/sub read failed: %r", exc)
                self._confirmed.clear()
                self.wake_all()
                await asyncio.sleep(_RECONNECT_S)  # back-off between reconnect attempts
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        """Act on one pub/sub message: a notice, or a subscribe confirmation."""
        kind = _text(message.get("type"))
        if kind == "subscribe":
            self._confirmed.set()
        elif kind == "message":
            ticket, _, in_use = _text(message.get("data")).partition(" ")
            waiter = self._waiters.get(ticket)
            if waiter is not None:
                waiter[1].set()
                if in_use.isdigit():
                    self._on_notice(waiter[0], int(in_use))

    async def aclose(self) -> None:
        """Stop the reader and close the subscriber connection. Idempotent."""
        self._closed = True
        self.wake_all()
        for task in (self._subscribing, self._reader):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in newer redis-py
        except Exception as exc:  # closing must finish even if the socket is broken
            logger.debug("closing the pub/sub connection failed: %r", exc)
