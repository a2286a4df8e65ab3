"""A loopback HTTP/1.1 server that answers every request after a fixed delay.

Stands in for a remote API (a server that takes milliseconds to answer) in benchmarks
that must not be bound by the client's CPU alone. Keep-alive, pipelining-safe, 13-byte
body; uvloop when installed (the server should be the cheaper side). Prints ``ready PORT``
on stdout once it listens, then serves until killed.

    python benchmarks/slow_server.py --delay 0.01          # an ephemeral port
    python benchmarks/slow_server.py --delay 0.01 --port 8099

Listens on 127.0.0.1 only. Never collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from typing import cast

BODY = b"Hello, world!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
MAX_HEAD = 64 * 1024


class _Slow(asyncio.Protocol):
    """Answers each request head (no request bodies expected) ``delay`` seconds later,
    in order."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for _ in self._heads():
            self.loop.call_later(self.delay, self._answer)
        if len(self.buf) > MAX_HEAD:
            assert self.transport is not None
            self.transport.abort()

    def _heads(self) -> Iterator[None]:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buf = self.buf[end + 4 :]
            yield None

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _serve(delay: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Slow(delay), "127.0.0.1", port, backlog=1024)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, required=True, help="seconds before each answer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(args.delay, args.port))


if __name__ == "__main__":
    main()
