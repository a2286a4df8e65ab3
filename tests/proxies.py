"""Real proxies for tests: tinyproxy and squid (HTTP, CONNECT) and microsocks (SOCKS5)
child processes.

Each listens on a free 127.0.0.1 port with a temporary configuration, with or without
credentials. A missing binary fails the test with a message naming the Debian package
(``.ci/run`` installs them); it never skips. Also here: :class:`Origin`, an asyncio HTTP
server (plain or TLS) that records every request head it receives, and
:class:`DyingProxy`, a fake HTTP proxy that accepts ``CONNECT`` and then closes the tunnel
after a given number of bytes from the origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.redisproc import free_port


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not on PATH; the proxy tests need a real one: install the Debian "
            f"package {package} (.ci/run does this)"
        )
    return found


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"{what} on port {port} did not start:\n{text}")
        time.sleep(0.02)  # readiness probe of a child process: no event to await


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Tinyproxy:
    """A tinyproxy child process; ``auth`` is ``(user, password)`` for Basic auth, or None."""

    def __init__(self, workdir: Path, *, auth: tuple[str, str] | None = None) -> None:
        self.binary = _binary("tinyproxy", "tinyproxy")
        self.workdir = workdir
        self.auth = auth
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = "" if user is None else f"{user}:{password}@"
        return f"http://{cred}127.0.0.1:{self.port}"

    def start(self) -> Tinyproxy:
        conf = self.workdir / f"tinyproxy-{self.port}.conf"
        log = self.workdir / f"tinyproxy-{self.port}.log"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            "MaxClients 200",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
            "LogLevel Info",
            f'LogFile "{log}"',
        ]
        if self.auth is not None:
            lines.append(f"BasicAuth {self.auth[0]} {self.auth[1]}")
        if os.geteuid() == 0:
            lines += ["User root", "Group root"]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [self.binary, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.proc, self.port, log, "tinyproxy")
        return self

    def stop(self) -> None:
        _stop(self.proc)


class Microsocks:
    """A microsocks SOCKS5 child process; ``auth`` is ``(user, password)`` or None."""

    def __init__(self, workdir: Path, *, auth: tuple[str, str] | None = None) -> None:
        self.binary = _binary("microsocks", "microsocks")
        self.workdir = workdir
        self.auth = auth
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, scheme: str = "socks5", user: str | None = None, pw: str | None = None) -> str:
        cred = "" if user is None else f"{user}:{pw}@"
        return f"{scheme}://{cred}127.0.0.1:{self.port}"

    def start(self) -> Microsocks:
        args = [self.binary, "-i", "127.0.0.1", "-p", str(self.port)]
        if self.auth is not None:
            args += ["-u", self.auth[0], "-P", self.auth[1]]
        log = self.workdir / f"microsocks-{self.port}.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        _wait_listening(self.proc, self.port, log, "microsocks")
        return self

    def stop(self) -> None:
        _stop(self.proc)


class Squid:
    """A squid child process (a caching forward proxy, here with the cache off) that keeps
    client connections alive, forwards and tunnels; ``auth`` is ``(user, password)`` for
    Basic auth through squid's ``basic_ncsa_auth`` helper (the password file is written
    with ``openssl passwd -apr1``)."""

    HELPER = "/usr/lib/squid/basic_ncsa_auth"

    def __init__(self, *, auth: tuple[str, str] | None = None) -> None:
        self.binary = _binary("squid", "squid")
        self.auth = auth
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # squid started as root runs as its own user: a world-readable directory of its own
        self.workdir = Path(tempfile.mkdtemp(prefix="glasspool-squid-"))
        self.workdir.chmod(0o755)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = "" if user is None else f"{user}:{password}@"
        return f"http://{cred}127.0.0.1:{self.port}"

    def _password_file(self) -> Path:
        assert self.auth is not None
        if not os.access(self.HELPER, os.X_OK):
            pytest.fail(f"{self.HELPER} is missing: install the Debian package squid")
        openssl = _binary("openssl", "openssl")
        hashed = (
            subprocess.run(
                [openssl, "passwd", "-apr1", "-stdin"],
                input=self.auth[1].encode(),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        path = self.workdir / "passwd"
        path.write_text(f"{self.auth[0]}:{hashed}\n")
        path.chmod(0o644)
        return path

    def start(self) -> Squid:
        conf = self.workdir / "squid.conf"
        log = self.workdir / "cache.log"
        lines = [
            f"http_port 127.0.0.1:{self.port}",
            "pid_filename none",
            "cache deny all",
            "access_log none",
            f"cache_log {log}",
            "cache_store_log none",
            f"coredump_dir {self.workdir}",
            "pinger_enable off",
            "shutdown_lifetime 0 seconds",
            "via off",
            "forwarded_for delete",
            "acl local src 127.0.0.1",
        ]
        if self.auth is not None:
            lines += [
                f"auth_param basic program {self.HELPER} {self._password_file()}",
                "auth_param basic realm glasspool-tests",
                "acl authed proxy_auth REQUIRED",
                "http_access allow local authed",
            ]
        else:
            lines.append("http_access allow local")
        lines.append("http_access deny all")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [self.binary, "-N", "-f", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.proc, self.port, log, "squid")
        return self

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


class Origin:
    """An HTTP/1.1 origin on 127.0.0.1 (TLS with ``context``) that records request heads.

    Every request gets ``200`` with the body ``origin:<path>``, keep-alive.
    """

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # the connection handlers
        self.release = asyncio.Event()  # lets the held half of ``/slow`` go

    @property
    def scheme(self) -> str:
        return "https" if self.context is not None else "http"

    def url(self, path: str = "/", host: str = "localhost") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def start(self) -> Origin:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            for _ in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                path = head.split(b" ", 2)[1]
                if path == b"/slow":  # half a body now, the rest when released
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n")
                    writer.write(b"x" * 10000)
                    await writer.drain()
                    await self.release.wait()
                    writer.write(b"x" * 10000)
                    continue
                body = b"origin:" + path
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def aclose(self) -> None:
        """Stop listening and end every connection now (a proxy may still hold one open
        after the client left); wait, at most 5 s, for their handlers to finish."""
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.transport.abort()  # the handler's read fails at once and it returns
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5)
            await self.server.wait_closed()


class DyingProxy:
    """A fake HTTP proxy: answers ``CONNECT`` with 200 and relays, but closes both sides once
    ``budget`` bytes have come back from the origin. ``connect_status`` other than 200 is
    sent as the reply to ``CONNECT`` instead (and the connection closed)."""

    def __init__(
        self, budget: int = 1 << 30, connect_status: bytes = b"200 OK", raw_reply: bytes = b""
    ) -> None:
        self.budget = budget
        self.connect_status = connect_status
        self.raw_reply = raw_reply  # sent instead of any reply, then the proxy waits
        self.received = asyncio.Event()  # set when a request head arrived
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests: list[bytes] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> DyingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            self.received.set()
            target = head.split(b" ", 2)[1].decode()
            if self.raw_reply:
                writer.write(self.raw_reply)
                await writer.drain()
                await reader.read()  # until the client gives up
                return
            if not head.startswith(b"CONNECT ") or not self.connect_status.startswith(b"200"):
                writer.write(b"HTTP/1.1 " + self.connect_status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            self._writers.add(up_writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            up = asyncio.ensure_future(self._pipe(reader, up_writer, None))
            self._tasks.add(up)
            try:
                await self._pipe(up_reader, writer, self.budget)
            finally:
                up.cancel()
                with contextlib.suppress(BaseException):
                    await up
                self._tasks.discard(up)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, budget: int | None
    ) -> None:
        sent = 0
        for _ in range(100000):
            data = await reader.read(65536)
            if not data:
                return
            if budget is not None and sent + len(data) >= budget:
                writer.write(data[: max(0, budget - sent)])
                return
            sent += len(data)
            writer.write(data)
            await writer.drain()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self.server.wait_closed()


class TLSFront:
    """TLS in front of another proxy: accepts TLS on 127.0.0.1 and relays the plain bytes to
    ``127.0.0.1:target_port``, making an HTTPS proxy out of tinyproxy."""

    def __init__(self, context: ssl.SSLContext, target_port: int) -> None:
        self.context = context
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = "" if user is None else f"{user}:{password}@"
        return f"https://{cred}localhost:{self.port}"

    async def start(self) -> TLSFront:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(up_writer)
            up = asyncio.ensure_future(_relay(reader, up_writer))
            try:
                await _relay(up_reader, writer)
            finally:
                up.cancel()
                with contextlib.suppress(BaseException):
                    await up
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self.server.wait_closed()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for _ in range(1_000_000):
        data = await reader.read(65536)
        if not data:
            return
        writer.write(data)
        await writer.drain()
