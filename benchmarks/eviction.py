"""Eviction scenario matrix: glasspool and aiohttp side by side on the same local servers.

Each cell is a crawler-like run: ``workers`` tasks each pick one of ``hosts`` hosts at
random (uniform, or skewed: host i has weight 1/(i+1)) and GET a 13-byte body, for
``--requests`` requests in all. A host is a loopback port of one server process started
here, which answers at once or after a delay, and counts the connections it accepted and
the most it had open at once. Per client and cell it prints requests per second,
connections opened per 1,000 requests, the longest time one request took beyond the
server's delay (its wait for a connection, plus connecting), and the most sockets open at
once.

    python benchmarks/eviction.py                 # the whole matrix, default event loop
    python benchmarks/eviction.py --uvloop        # the same on uvloop
    python benchmarks/eviction.py --cells 3,4     # some cells only

Traffic stays on 127.0.0.1. Every run is bounded by ``--requests`` and by
``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

_BODY = b"hello, world\n"
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % len(_BODY)
    + _BODY
)


@dataclass(frozen=True)
class Cell:
    limit: int
    per_host: int
    hosts: int
    skew: bool
    workers: int
    delay_ms: int

    def describe(self) -> str:
        ratio = self.per_host * self.hosts / self.limit
        return (
            f"limit={self.limit} per_host={self.per_host} hosts={self.hosts} "
            f"(sum {ratio:g}x) {'skewed' if self.skew else 'uniform'} "
            f"workers={self.workers} ({self.workers / self.limit:g}x) "
            f"{'instant' if not self.delay_ms else f'{self.delay_ms} ms'}"
        )


#: limit 4 to 64; per-host sums 0.5x to 4x; 2 to 20 hosts; uniform and skewed; workers
#: 0.5x to 4x the limit; instant and 50 ms responses.
CELLS = [
    Cell(4, 2, 4, False, 4, 0),
    Cell(4, 1, 2, False, 8, 0),
    Cell(10, 3, 4, False, 10, 0),
    Cell(10, 3, 4, False, 10, 50),
    Cell(10, 3, 4, True, 10, 50),
    Cell(10, 3, 4, False, 40, 50),
    Cell(10, 10, 4, True, 10, 0),
    Cell(16, 4, 8, False, 8, 50),
    Cell(16, 2, 20, False, 16, 0),
    Cell(32, 8, 8, True, 32, 0),
    Cell(32, 8, 8, False, 32, 50),
    Cell(64, 16, 16, False, 64, 0),
    Cell(64, 16, 8, False, 256, 0),
    Cell(64, 8, 4, False, 64, 50),
]


# ------------------------------------------------------------------ the server


class _Counts:
    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self.max_open = 0


class _Http(asyncio.Protocol):
    def __init__(self, counts: _Counts, delay_s: float) -> None:
        self.counts, self.delay_s = counts, delay_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        c = self.counts
        c.accepted += 1
        c.open += 1
        c.max_open = max(c.max_open, c.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts.open -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            if self.delay_s:
                asyncio.get_running_loop().call_later(self.delay_s, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_RESPONSE)


class _Control(asyncio.Protocol):
    """``stats`` answers the counts as JSON; ``reset`` zeroes them (open stays)."""

    def __init__(self, counts: _Counts) -> None:
        self.counts = counts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        c = self.counts
        if data.startswith(b"reset"):
            c.accepted, c.max_open = 0, c.open
        self.transport.write(json.dumps(vars(c)).encode() + b"\n")


def _serve(ports: list[int], control: int, delay_s: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        counts = _Counts()
        for port in ports:
            await loop.create_server(
                lambda: _Http(counts, delay_s), "127.0.0.1", port, backlog=1024
            )
        await loop.create_server(lambda: _Control(counts), "127.0.0.1", control)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _control(port: int, command: bytes) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command)
        data = s.makefile("rb").readline()
    return dict(json.loads(data))


class Server:
    """The server process for one cell: ``hosts`` ports and a control port."""

    def __init__(self, hosts: int, delay_ms: int) -> None:
        *self.ports, self.control = _free_ports(hosts + 1)
        ctx = multiprocessing.get_context("spawn")
        self.proc = ctx.Process(
            target=_serve, args=(self.ports, self.control, delay_ms / 1000), daemon=True
        )
        self.proc.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                _control(self.control, b"stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def reset(self) -> None:
        _control(self.control, b"reset")

    def stats(self) -> dict[str, int]:
        return _control(self.control, b"stats")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(5)


# ------------------------------------------------------------------ the clients

Get = Callable[[str], Awaitable[int]]


@contextlib.asynccontextmanager
async def _glasspool(cell: Cell, grace: str | None = None) -> Any:
    import glasspool

    options: dict[str, Any] = {}
    if grace is not None:
        options["evict_grace"] = None if grace == "none" else float(grace)
    async with glasspool.Client(
        limit=cell.limit, limit_per_host=cell.per_host, **options
    ) as client:

        async def get(url: str) -> int:
            response = await client.get(url)
            return response.status

        yield get


@contextlib.asynccontextmanager
async def _aiohttp(cell: Cell, _: str | None = None) -> Any:
    aiohttp = importlib.import_module("aiohttp")
    connector = aiohttp.TCPConnector(limit=cell.limit, limit_per_host=cell.per_host)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> int:
            async with session.get(url) as response:
                await response.read()
                return int(response.status)

        yield get


CLIENTS = {"glasspool": _glasspool, "aiohttp": _aiohttp}


async def _drive(get: Get, cell: Cell, urls: list[str], args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    weights = [1 / (i + 1) if cell.skew else 1.0 for i in range(cell.hosts)]
    picks = rng.choices(urls, weights, k=args.requests)
    next_pick = iter(picks)
    worst = 0.0
    done = 0
    deadline = time.monotonic() + args.max_seconds

    async def worker() -> None:
        nonlocal worst, done
        for url in next_pick:
            if time.monotonic() > deadline:
                return
            start = time.monotonic()
            status = await get(url)
            if status != 200:
                raise RuntimeError(f"status {status} from {url}")
            worst = max(worst, time.monotonic() - start)
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(cell.workers)))
    elapsed = time.monotonic() - start
    return {"done": done, "elapsed": elapsed, "worst_s": worst}


def run_cell(client: str, cell: Cell, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    urls = [f"http://127.0.0.1:{port}/" for port in server.ports]

    async def main() -> dict[str, Any]:
        name, _, option = client.partition(":")  # glasspool:0 = evict_grace=0
        async with CLIENTS[name](cell, option or None) as get:
            return await _drive(get, cell, urls, args)

    server.reset()
    factory = importlib.import_module("uvloop").new_event_loop if args.uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(main())
    counts = server.stats()
    result["opened"] = counts["accepted"]
    result["max_open"] = counts["max_open"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="run the clients on uvloop")
    parser.add_argument("--cells", help="comma-separated cell numbers (1-based); default all")
    parser.add_argument(
        "--clients",
        default="glasspool,aiohttp",
        help="comma-separated; glasspool:G runs glasspool with evict_grace=G (a number or none)",
    )
    args = parser.parse_args()
    chosen = [CELLS[int(n) - 1] for n in args.cells.split(",")] if args.cells else list(CELLS)
    loop = "uvloop" if args.uvloop else "asyncio"
    version = sys.version.split()[0]
    print(f"eviction matrix: {args.requests} requests per run, loop={loop}, Python {version}")
    print(
        f"{'#':>2} {'client':<14} {'req/s':>8} {'opens/1k':>9} {'max wait ms':>11} "
        f"{'max open':>8}  cell"
    )
    for cell in chosen:
        number = CELLS.index(cell) + 1
        server = Server(cell.hosts, cell.delay_ms)
        try:
            for client in args.clients.split(","):
                r = run_cell(client, cell, server, args)
                rate = r["done"] / r["elapsed"]
                opens = 1000 * r["opened"] / max(1, r["done"])
                wait_ms = max(0.0, r["worst_s"] * 1000 - cell.delay_ms)
                print(
                    f"{number:>2} {client:<14} {rate:>8.0f} {opens:>9.1f} {wait_ms:>11.1f} "
                    f"{r['max_open']:>8}  {cell.describe()}",
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
