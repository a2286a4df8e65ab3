"""Requests per second through a local HTTP proxy: glasspool, aiohttp and httpx, one run.

    python benchmarks/proxy.py [--requests 1000] [--concurrency 20] [--rounds 3]
                               [--proxies tinyproxy,squid]

Starts each proxy of ``--proxies`` in turn (tinyproxy and squid, the Debian packages
``tinyproxy`` and ``squid``) on a free loopback port, and an origin in a child process: a
small asyncio HTTP/1.1 server answering every request with 1 KiB, once in plain text and
once over TLS (a trustme CA made for the run). Each client then sends ``--requests`` GETs,
``--concurrency`` at a time, through the proxy:

- ``http``: plain-text origin, requests forwarded by the proxy (absolute form);
- ``https``: TLS origin, through ``CONNECT`` tunnels (TLS inside the tunnel).

Each (client, scenario) runs ``--rounds`` times, clients interleaved, and the median is
printed as a Markdown table. Every response is checked (status 200, 1,024 bytes). Every
loop is bounded by its request count and a 120 s deadline per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

BODY = 1024
RUN_DEADLINE_S = 120.0

ORIGIN = r"""
import asyncio, ssl, sys
port_file, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
BODY = b"x" * 1024
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nContent-Type: text/plain\r\n\r\n" + BODY

async def serve(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESP)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()

async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    plain = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    tls = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx, backlog=1024)
    ports = (plain.sockets[0].getsockname()[1], tls.sockets[0].getsockname()[1])
    with open(port_file, "w") as f:
        f.write("%d %d" % ports)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.02)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


Get = Callable[[str], Awaitable[None]]


async def run_glasspool(proxy: str, ca: str, urls: list[str], concurrency: int) -> float:
    import glasspool

    async with glasspool.Client(
        proxy=proxy, verify=ca, limit=concurrency, limit_per_host=concurrency, trust_env=False
    ) as client:

        async def get(url: str) -> None:
            r = await client.get(url)
            assert r.status == 200 and len(r.content) == BODY, r

        return await drive(get, urls, concurrency)


async def run_aiohttp(proxy: str, ca: str, urls: list[str], concurrency: int) -> float:
    import aiohttp

    ctx = ssl.create_default_context(cafile=ca)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, ssl=ctx)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:

        async def get(url: str) -> None:
            async with session.get(url, proxy=proxy) as r:
                body = await r.read()
                assert r.status == 200 and len(body) == BODY, r

        return await drive(get, urls, concurrency)


async def run_httpx(proxy: str, ca: str, urls: list[str], concurrency: int) -> float:
    import httpx

    ctx = ssl.create_default_context(cafile=ca)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(proxy=proxy, verify=ctx, limits=limits, trust_env=False) as c:

        async def get(url: str) -> None:
            r = await c.get(url)
            assert r.status_code == 200 and len(r.content) == BODY, r

        return await drive(get, urls, concurrency)


async def drive(get: Get, urls: list[str], concurrency: int) -> float:
    """Send every URL, ``concurrency`` at a time; return requests per second."""
    queue = list(reversed(urls))

    async def worker() -> None:
        while queue:
            await get(queue.pop())

    start = time.perf_counter()
    async with asyncio.timeout(RUN_DEADLINE_S):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(urls) / (time.perf_counter() - start)


RUNNERS: dict[str, Callable[[str, str, list[str], int], Awaitable[float]]] = {
    "glasspool": run_glasspool,
    "aiohttp": run_aiohttp,
    "httpx": run_httpx,
}


def start_tinyproxy(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """tinyproxy on a free port: it closes its client connection after every forwarded
    response."""
    binary = shutil.which("tinyproxy")
    if binary is None:
        raise SystemExit("tinyproxy is not on PATH: install the Debian package tinyproxy")
    port = free_port()
    conf = work / "tinyproxy.conf"
    lines = [f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "MaxClients 500"]
    lines += ["DisableViaHeader Yes", "LogLevel Critical", f'LogFile "{work}/tp.log"']
    if os.geteuid() == 0:
        lines += ["User root", "Group root"]
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)])
    wait_for(lambda: listening(port), "tinyproxy", proc)
    return proc, port


def start_squid(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """squid on a free port, cache off: it keeps client connections alive."""
    binary = shutil.which("squid") or "/usr/sbin/squid"
    if not os.access(binary, os.X_OK):
        raise SystemExit("squid is not on PATH: install the Debian package squid")
    port = free_port()
    home = work / "squid"
    home.mkdir()
    home.chmod(0o755)  # squid started as root runs as its own user
    conf = home / "squid.conf"
    lines = [
        f"http_port 127.0.0.1:{port}", "pid_filename none", "cache deny all",
        "access_log none", f"cache_log {home}/cache.log", "cache_store_log none",
        f"coredump_dir {home}", "pinger_enable off", "shutdown_lifetime 0 seconds",
        "via off", "forwarded_for delete", "max_filedescriptors 4096",
        "acl local src 127.0.0.1", "http_access allow local", "http_access deny all",
    ]  # fmt: skip
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [binary, "-N", "-f", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: listening(port), "squid", proc)
    return proc, port


PROXIES = {"tinyproxy": start_tinyproxy, "squid": start_squid}


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--proxies", default="tinyproxy,squid", help="comma-separated")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.proxies.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PROXIES]
    if unknown or not chosen:
        raise SystemExit(f"--proxies: choose from {', '.join(PROXIES)}, got {args.proxies!r}")
    import trustme

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        leaf.private_key_pem.write_to_path(str(work / "key.pem"))
        leaf.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
        for pem in leaf.cert_chain_pems[1:]:
            with open(work / "cert.pem", "ab") as f:
                f.write(pem.bytes())
        port_file = work / "ports"
        origin = subprocess.Popen(
            [sys.executable, "-c", ORIGIN, str(port_file), str(work / "cert.pem"),
             str(work / "key.pem")]
        )  # fmt: skip
        try:
            wait_for(lambda: port_file.exists() and bool(port_file.read_text()), "origin", origin)
            plain, tls = (int(p) for p in port_file.read_text().split())
            scenarios = {
                "http (forwarded)": [f"http://127.0.0.1:{plain}/{i}" for i in range(args.requests)],
                "https (CONNECT)": [f"https://localhost:{tls}/{i}" for i in range(args.requests)],
            }
            for proxy_name in chosen:
                proxy_proc, port = PROXIES[proxy_name](work)
                try:
                    results = _measure(
                        f"http://127.0.0.1:{port}", str(work / "ca.pem"), scenarios, args
                    )
                finally:
                    stop(proxy_proc)
                print(
                    f"\n{args.requests} requests, {args.concurrency} at a time, through "
                    f"{proxy_name}; median of {args.rounds} rounds (requests/s)\n"
                )
                print("| scenario | " + " | ".join(RUNNERS) + " |")
                print("|---|" + "---:|" * len(RUNNERS))
                for scenario in scenarios:
                    cells = [f"{statistics.median(results[(scenario, n)]):,.0f}" for n in RUNNERS]
                    print(f"| {scenario} | " + " | ".join(cells) + " |")
        finally:
            stop(origin)


def _measure(
    proxy: str, ca: str, scenarios: dict[str, list[str]], args: argparse.Namespace
) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for scenario, urls in scenarios.items():
            for name, runner in RUNNERS.items():
                rps = asyncio.run(runner(proxy, ca, urls, args.concurrency))
                results.setdefault((scenario, name), []).append(rps)
    return results


if __name__ == "__main__":
    main()
