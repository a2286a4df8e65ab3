"""Hostile compressed bodies: peak memory, event-loop stalls and timeouts, client by client.

Run: .venv/bin/python benchmarks/hostile.py [--cases NAME,...] [--clients NAME,...]

A loopback HTTP server (a thread of this process) serves each body below. Each client and
case runs in a fresh subprocess, which first makes one small warm-up request and then the
hostile one, and reports:

- peak memory: VmHWM after the request minus VmRSS before it (the high-water mark is
  reset first through ``/proc/self/clear_refs``), so the figure is the request's own;
- longest stall: the most a ticker task that wakes every 5 ms was late;
- time: from the request to its end, whether it completed or failed;
- outcome: the decoded size, or the error.

Cases (the streamed ones are read with ``aiter_bytes(65536)`` or ``iter_chunked(65536)``):

- ``gzip-prefix-bomb``: gzip of 2 MiB of random bytes then 200 MiB of zeros (2.2 MiB on the
  wire, ratio ~90:1, so no ratio guard fires); streamed.
- ``zstd-bomb``: zstd of 1 MiB of random bytes then 900 MiB of zeros (1 MiB); streamed.
- ``zstd-window-128m``: zstd with a 128 MiB window (1 MiB random, 199 MiB zeros); streamed.
- ``gzip3-empty``: ``Content-Encoding: gzip, gzip, gzip``, 5 KB whose middle layer is
  2 GiB of empty deflate blocks; it decodes to 2 bytes. ``client.get()``, total 2 s.
- ``gzip2-slow``: ``gzip, gzip``, 1.5 MB: 1 KB of data, then 1 GiB of empty deflate
  blocks; every layer stays under 1000:1, so only a deadline stops it. ``get()``, total 2 s.

Every gzip layer is a single member (some decoders ignore a second member), so building
the two empty-block cases takes about 10 s.

Deadlines: glasspool ``Timeout(total=2)``, aiohttp ``ClientTimeout(total=2)``; httpx has
no total timeout, so its call runs under ``asyncio.timeout(2)``. Each run is killed after
``--kill-after`` seconds (60). All clients use the default asyncio event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MiB = 1 << 20
CLIENTS = ("glasspool", "aiohttp", "httpx")


@dataclass(frozen=True)
class Case:
    coding: str
    stream: bool
    total: float | None


CASES = {
    "gzip-prefix-bomb": Case("gzip", stream=True, total=None),
    "zstd-bomb": Case("zstd", stream=True, total=None),
    "zstd-window-128m": Case("zstd", stream=True, total=None),
    "gzip3-empty": Case("gzip, gzip, gzip", stream=False, total=2.0),
    "gzip2-slow": Case("gzip, gzip", stream=False, total=2.0),
}

# ----------------------------------------------------------------------------- bodies

EMPTY_BLOCKS = bytes([0x02, 0x08, 0x20, 0x80, 0x00])  # four empty fixed-Huffman blocks
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def gzip_stream(parts: list[tuple[bool, int]]) -> bytes:
    """One gzip member of the given parts: (random?, size), fed 16 MiB at a time."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = []
    for random, size in parts:
        while size:
            step = min(size, 16 * MiB)
            out.append(comp.compress(os.urandom(step) if random else bytes(step)))
            size -= step
    out.append(comp.flush())
    return b"".join(out)


def zstd_stream(parts: list[tuple[bool, int]], window_log: int | None = None) -> bytes:
    """One zstd frame (no content size) of the given parts, 16 MiB at a time."""
    import zstandard

    if window_log is None:
        cctx = zstandard.ZstdCompressor(level=3)
    else:
        params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
        cctx = zstandard.ZstdCompressor(compression_params=params)
    comp = cctx.compressobj()
    out = []
    for random, size in parts:
        while size:
            step = min(size, 16 * MiB)
            out.append(comp.compress(os.urandom(step) if random else bytes(step)))
            size -= step
    out.append(comp.flush())
    return b"".join(out)


def empty_blocks_member(slabs: int, data: bytes, data_first: bool) -> Iterator[bytes]:
    """One gzip member, in pieces: ``data`` and ``slabs`` x 5 MiB of empty deflate blocks.

    ``data`` goes before the empty blocks (compressed, then byte-aligned by a sync flush)
    or in the final block after them. Single members throughout, as any gzip decoder
    reads them (some ignore a second member).
    """
    yield GZIP_HEADER
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    if data_first:
        yield raw.compress(data) + raw.flush(zlib.Z_SYNC_FLUSH)
    slab = EMPTY_BLOCKS * MiB
    for _ in range(slabs):
        yield slab
    if data_first:
        yield zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # final, empty
    else:
        yield raw.compress(data) + raw.flush()
    yield struct.pack("<II", zlib.crc32(data), len(data))


def gzip_pieces(pieces: Iterator[bytes]) -> bytes:
    """One gzip member of the concatenated pieces."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join([*(comp.compress(p) for p in pieces), comp.flush()])


def build(name: str) -> bytes:
    if name == "gzip-prefix-bomb":
        return gzip_stream([(True, 2 * MiB), (False, 200 * MiB)])
    if name == "zstd-bomb":
        return zstd_stream([(True, 1 * MiB), (False, 900 * MiB)])
    if name == "zstd-window-128m":
        return zstd_stream([(True, 1 * MiB), (False, 199 * MiB)], window_log=27)
    if name == "gzip3-empty":
        return gzip.compress(gzip_pieces(empty_blocks_member(410, b"ok", False)), 9)
    if name == "gzip2-slow":
        return gzip_pieces(empty_blocks_member(205, os.urandom(1000), True))
    raise ValueError(name)


# ----------------------------------------------------------------------------- server


def serve(bodies: dict[str, tuple[str, bytes]]) -> ThreadingHTTPServer:
    """Serve ``/<case>`` as its body with its Content-Encoding, and ``/small``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            coding, body = bodies.get(self.path.lstrip("/"), ("", b"small"))
            self.send_response(200)
            if coding:
                self.send_header("Content-Encoding", coding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(ConnectionError):
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that gave up closed its connection: expected here

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ----------------------------------------------------------------------------- child


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


class Ticker:
    """The longest lateness of a task that wakes every 5 ms."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.since = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.since = loop.time()
            await asyncio.sleep(0.005)
            self.note(loop.time())

    def note(self, now: float) -> None:
        self.longest = max(self.longest, now - self.since - 0.005)


Fetch = Callable[[str, Case], Awaitable[int]]


async def glasspool_client(base: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    import glasspool

    client = glasspool.Client()

    async def fetch(path: str, case: Case) -> int:
        timeout = glasspool.Timeout(30, total=case.total)
        if not case.stream:
            return len((await client.get(base + path, timeout=timeout)).content)
        n = 0
        async with client.stream("GET", base + path, timeout=timeout) as r:
            async for chunk in r.aiter_bytes(65536):
                n += len(chunk)
        return n

    return fetch, client.aclose


async def aiohttp_client(base: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession()

    async def fetch(path: str, case: Case) -> int:
        timeout = aiohttp.ClientTimeout(total=case.total, sock_read=30)
        async with session.get(base + path, timeout=timeout) as r:
            if not case.stream:
                return len(await r.read())
            n = 0
            async for chunk in r.content.iter_chunked(65536):
                n += len(chunk)
            return n

    return fetch, session.close


async def httpx_client(base: str) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(timeout=30)

    async def fetch(path: str, case: Case) -> int:
        async with contextlib.AsyncExitStack() as stack:
            if case.total is not None:  # httpx has no total timeout
                await stack.enter_async_context(asyncio.timeout(case.total))
            if not case.stream:
                return len((await client.get(base + path)).content)
            n = 0
            async with client.stream("GET", base + path) as r:
                async for chunk in r.aiter_bytes(65536):
                    n += len(chunk)
            return n
        raise AssertionError("unreachable")

    return fetch, client.aclose


async def child(client_name: str, case_name: str, port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/"
    make = {"glasspool": glasspool_client, "aiohttp": aiohttp_client, "httpx": httpx_client}
    fetch, aclose = await make[client_name](base)
    await fetch("small", Case("", stream=False, total=None))  # warm-up: connection, buffers
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status_kib("VmRSS")
    ticker = Ticker()
    loop = asyncio.get_running_loop()
    ticker.since = loop.time()
    tick = asyncio.create_task(ticker.run())
    started = time.monotonic()
    try:
        size = await fetch(case_name, CASES[case_name])
        outcome = f"ok, {size / MiB:.1f} MiB" if size >= MiB else f"ok, {size:,} bytes"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    elapsed = time.monotonic() - started
    ticker.note(loop.time())
    tick.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tick
    peak = status_kib("VmHWM") - before
    with contextlib.suppress(Exception):
        await aclose()
    return {
        "peak_mib": peak / 1024,
        "stall_ms": ticker.longest * 1000,
        "seconds": elapsed,
        "outcome": outcome,
    }


# ----------------------------------------------------------------------------- parent


def run_one(client: str, case: str, port: int, kill_after: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", client, case, str(port)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=kill_after)
    except subprocess.TimeoutExpired:
        return {"outcome": f"killed after {kill_after:g} s"}
    if done.returncode != 0:
        return {"outcome": f"exit {done.returncode}: {done.stderr.strip()[-200:]}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--kill-after", type=float, default=60.0)
    parser.add_argument("--child", nargs=3, metavar=("CLIENT", "CASE", "PORT"))
    args = parser.parse_args()
    if args.child:
        name, case, port = args.child
        print(json.dumps(asyncio.run(child(name, case, int(port)))))
        return
    cases = args.cases.split(",")
    started = time.monotonic()
    bodies = {name: (CASES[name].coding, build(name)) for name in cases}
    print(f"bodies built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    server = serve(bodies)
    port = server.server_address[1]
    print(f"{platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")
    print()
    print("| case | wire | client | peak memory | longest stall | time | outcome |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        wire = f"{len(bodies[case][1]) / 1024:,.0f} KiB"
        for client in args.clients.split(","):
            r = run_one(client, case, port, args.kill_after)
            outcome = r["outcome"] if len(r["outcome"]) <= 110 else r["outcome"][:107] + "..."
            print(
                f"| {case} | {wire} | {client} | {fmt(r.get('peak_mib'), '.1f')} MiB "
                f"| {fmt(r.get('stall_ms'), '.1f')} ms | {fmt(r.get('seconds'), '.2f')} s "
                f"| {outcome.replace('|', '/')} |",
                flush=True,
            )
    server.shutdown()
    print(f"\ntotal {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
