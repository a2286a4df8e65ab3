"""CPU per request inside glasspool, without sockets: the whole ``Client.get`` path.

Every connection the pool opens is an ``HTTP11Connection`` over an in-memory transport
that answers each request, one loop turn later, with a fixed nginx-like response (7
header fields, a Content-Length body). Nothing else runs, so the figure is glasspool's own
CPU time per request: URL handling, request head, pool acquire/release, head parsing,
body reading, the response object and the task switches, but no system calls. This is
the harness the "What changed" table in ``docs/performance.md`` was measured with.

``--against DIR`` imports a second copy of the package from ``DIR`` (a ``src`` folder of
another checkout) and alternates runs of the two, so a change can be measured against
the code before it under the same machine state; same-code runs agree within 1-2%. Both
copies live in one process and share its C heap, so effects of the allocator (see
"Bodies and the C heap" in the docs) do not show up as a difference here. The reply is
delivered whole, in one loop turn, so a large body is queued before the reader runs.

Usage::

    .venv/bin/python benchmarks/hot_path.py                 # this checkout
    .venv/bin/python benchmarks/hot_path.py --body 65536    # a 64 KiB body
    .venv/bin/python benchmarks/hot_path.py --against /tmp/before/src
    .venv/bin/python benchmarks/hot_path.py --socket   # idle checks poll a real socket
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

SRC = Path(__file__).resolve().parent.parent / "src"
URL = "http://127.0.0.1:8080/body"  # never contacted: the transport below answers


def response_bytes(body_size: int) -> bytes:
    """An nginx-like response (7 fields) with a Content-Length body of ``body_size``."""
    head = (
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 13:00:00 GMT\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {body_size}\r\n"
        "Last-Modified: Wed, 25 Nov 2026 12:59:00 GMT\r\nConnection: keep-alive\r\n"
        "Accept-Ranges: bytes\r\n\r\n"
    )
    return head.encode("ascii") + b"x" * body_size


class MemoryTransport(asyncio.Transport):
    """Answers every write with ``reply`` on the next loop turn; closes on ``abort``.

    The reply goes in the way asyncio's selector transport delivers bytes to a buffered
    protocol: ``get_buffer()``, a copy into it (standing in for the kernel's), then
    ``buffer_updated()``, as many times as the buffers handed out require. With
    ``with_socket``, it holds one end of an idle socket pair and reports it as its
    ``"socket"``, so the pool's check of an idle connection before reuse polls a real
    socket (nothing is ever sent on it).
    """

    def __init__(self, protocol: Any, reply: bytes, *, with_socket: bool = False) -> None:
        super().__init__()
        self._protocol = protocol
        self._reply = reply
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._pair = socket.socketpair() if with_socket else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        reply, pos = self._reply, 0
        while pos < len(reply) and not self._closing:
            buffer = self._protocol.get_buffer(-1)
            n = min(len(buffer), len(reply) - pos)
            buffer[:n] = reply[pos : pos + n]
            pos += n
            self._protocol.buffer_updated(n)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket" and self._pair is not None:
            return self._pair[0]
        return default

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            for sock in self._pair or ():
                sock.close()
            self._loop.call_soon(self._protocol.connection_lost, None)

    close = abort

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def load_copy(src: Path, name: str, where: Path) -> tuple[ModuleType, ModuleType]:
    """Import the ``glasspool`` package under ``src`` as a separate package ``name``."""
    shutil.copytree(src / "glasspool", where / name)
    sys.path.insert(0, str(where))
    return importlib.import_module(name), importlib.import_module(f"{name}._http11")


Factory = Callable[[Any, float | None], Awaitable[Any]]


def memory_factory(http11: ModuleType, reply: bytes, *, with_socket: bool = False) -> Factory:
    """A pool connection factory whose connections talk to a :class:`MemoryTransport`.

    They share one read buffer, as the connections of a client do.
    """
    shared = http11.ReceiveBuffer()

    async def factory(key: Any, connect_timeout: float | None) -> Any:
        protocol = http11.HTTP11Connection(key, recv_buffer=shared)
        protocol.connection_made(MemoryTransport(protocol, reply, with_socket=with_socket))
        return protocol

    return factory


async def one_run(package: ModuleType, http11: ModuleType, args: argparse.Namespace) -> float:
    """CPU microseconds per request over ``args.requests`` requests (after a warm-up)."""
    reply = response_bytes(args.body)
    async with package.Client(limit=100, limit_per_host=100) as client:
        # the one private hook used
        client.pool._factory = memory_factory(http11, reply, with_socket=args.socket)
        left = 0

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                response = await client.get(URL)
                if response.status != 200 or len(response.content) != args.body:
                    raise RuntimeError(f"bad response: {response.status}")

        left = args.concurrency * 20  # warm-up: every connection opened and used
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        left = args.requests
        start = time.process_time()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        return (time.process_time() - start) / args.requests * 1e6


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=64, help="tasks (default 64)")
    parser.add_argument("--requests", type=int, default=5000, help="per run (default 5000)")
    parser.add_argument("--runs", type=int, default=15, help="runs per copy (default 15)")
    parser.add_argument("--body", type=int, default=13, help="body bytes (default 13)")
    parser.add_argument("--against", type=Path, help="a src folder to compare with")
    parser.add_argument(
        "--socket",
        action="store_true",
        help="give each connection an idle socket pair, so checks of idle connections "
        "before reuse poll a real socket",
    )
    args = parser.parse_args(argv)
    for name in ("concurrency", "requests", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.body < 0:
        parser.error("--body must not be negative")
    return args


async def compare(
    copies: list[tuple[str, ModuleType, ModuleType]], args: argparse.Namespace
) -> None:
    results: dict[str, list[float]] = {label: [] for label, _, _ in copies}
    for _ in range(args.runs):
        for label, package, http11 in copies:  # alternate: both see the same machine state
            results[label].append(await one_run(package, http11, args))
    base = min(results[copies[0][0]])
    print(
        f"Client.get in memory: {args.concurrency} tasks, {args.body}-byte body, "
        f"{args.runs} runs of {args.requests} requests (CPU us per request)"
    )
    for label, values in results.items():
        values.sort()
        print(
            f"  {label:<28} min {values[0]:7.2f}  median {statistics.median(values):7.2f}"
            f"  max {values[-1]:7.2f}   {base / values[0]:.3f}x of the first"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="glasspool-hot-path-") as tmp:
        where = Path(tmp)
        copies = [("this checkout", *load_copy(SRC, "gp_this", where))]
        if args.against is not None:
            if not (args.against / "glasspool" / "__init__.py").is_file():
                print(f"--against {args.against}: no glasspool package there", file=sys.stderr)
                return 2
            copies.insert(0, (str(args.against), *load_copy(args.against, "gp_other", where)))
        asyncio.run(compare(copies, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
