"""A real nginx for the tests, plus the trustme certificates it and the fault server use.

The conftest fixtures ``nginx`` (session) and ``tls_certs`` (session) wrap this module. Tests
only talk to 127.0.0.1 / ::1 ports that this module picks and the nginx it starts listens on.

API::

    certs = TLSCerts.create(directory)          # trustme CA + leaf certificates on disk
    certs.ca_file                               # PEM of the CA (what a client should trust)
    certs.server_cert_file, certs.server_key_file          # localhost, 127.0.0.1, ::1
    certs.wrong_host_cert_file, certs.wrong_host_key_file  # example.invalid only
    certs.client_context() -> ssl.SSLContext    # verifies hostnames, trusts only the CA
    certs.server_context(wrong_host=False) -> ssl.SSLContext

    server = start_nginx(directory, certs)      # pytest.fail()s if nginx is not installed
    server.url("/small", which="default" | "strict" | "tls", host="127.0.0.1" | "::1" | ...)
    server.ports                                # {"default": int, "strict": int, "tls": int}
    server.ca_file, server.ipv6                 # ipv6: also listening on ::1 (same ports)
    server.content("/64k") -> bytes             # exact body nginx serves for a static path
    mark = server.log_mark()                    # remember where the access log ends now
    server.access_log_lines(since=mark) -> list[AccessLogEntry]
    await server.wait_access_log(count, since=mark, timeout=5.0) -> list[AccessLogEntry]
    server.stop()

What nginx serves (identically on all three ports):

- ``/small``: the 13 bytes ``Hello, world!``; ``/64k``, ``/1m``, ``/big`` (20 MiB): fixed,
  deterministic bytes (see ``content()``); all with ``Content-Length``.
- ``/gzip``: text/plain, gzip-encoded when the request sends ``Accept-Encoding: gzip`` (then
  also chunked, as nginx cannot know the compressed length up front).
- ``/chunked``: text/plain, always ``Transfer-Encoding: chunked`` to HTTP/1.1 requests (an
  ``ngx_http_sub_module`` filter that never matches removes the length), identity encoded.
- ``/redirect/N`` (1 <= N <= 20): ``302`` to ``/redirect/N-1``; ``/redirect/1`` goes to
  ``/small``. ``/redirect-301/N``, ``-303/N``, ``-307/N``, ``-308/N`` do the same with
  that status. Locations are absolute (``http://<Host header>/...``).
- ``/status/<code>`` for 200, 201, 204, 400, 401, 403, 404, 418, 429, 500, 502, 503:
  ``return <code>``.
- ``/upload``: any method, body up to 1 MiB read and discarded, answers 200 ``uploaded\\n``;
  a larger ``Content-Length`` gets nginx's 413.

The ``default`` port has ``keepalive_timeout 60s; keepalive_requests 1000``; ``strict`` has
``keepalive_timeout 1s; keepalive_requests 3``; ``tls`` is the default policy over TLS with
the ``localhost``/``127.0.0.1``/``::1`` certificate.

Access log: one line per request with nginx's connection serial number (``$connection``)
and the request's index on that connection (``$connection_requests``), so a test can count
TCP connections. A test can tag its requests with an ``X-Test-Tag`` header. nginx writes
the line after it sent the response, so use ``wait_access_log`` rather than reading at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest
import trustme

__all__ = ["AccessLogEntry", "NginxServer", "TLSCerts", "find_nginx", "start_nginx"]

NGINX_CANDIDATES = ("/usr/sbin/nginx", "nginx")
REDIRECT_MAX = 20
STATUS_CODES = (200, 201, 204, 400, 401, 403, 404, 418, 429, 500, 502, 503)
WHICH = ("default", "strict", "tls")
ADDRESS_IN_USE = "Address already in use"
_LOG_FIELDS = (
    "$connection $connection_requests $server_port $status $request_method $request_uri"
    " $server_protocol $body_bytes_sent $http_x_test_tag"
)


@dataclass(frozen=True, slots=True)
class TLSCerts:
    """A trustme CA and the leaf certificates the test servers present, written as PEM files.

    Attributes:
        ca_file: the CA certificate; trust this and nothing else.
        server_cert_file: certificate chain valid for ``localhost``, ``127.0.0.1``, ``::1``.
        server_key_file: its private key.
        wrong_host_cert_file: certificate chain valid only for ``example.invalid``.
        wrong_host_key_file: its private key.
    """

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    wrong_host_cert_file: Path
    wrong_host_key_file: Path

    @classmethod
    def create(cls, directory: Path) -> TLSCerts:
        """Make a fresh CA and both leaf certificates and write them into ``directory``.

        Args:
            directory: an existing, writable directory.

        Returns:
            The paths of the written files.
        """
        ca = trustme.CA()
        good = ca.issue_cert("localhost", "127.0.0.1", "::1")
        wrong = ca.issue_cert("example.invalid")
        certs = cls(
            ca_file=directory / "ca.pem",
            server_cert_file=directory / "server.pem",
            server_key_file=directory / "server.key",
            wrong_host_cert_file=directory / "wrong-host.pem",
            wrong_host_key_file=directory / "wrong-host.key",
        )
        ca.cert_pem.write_to_path(str(certs.ca_file))
        certs.server_cert_file.write_bytes(b"".join(p.bytes() for p in good.cert_chain_pems))
        good.private_key_pem.write_to_path(str(certs.server_key_file))
        certs.wrong_host_cert_file.write_bytes(b"".join(p.bytes() for p in wrong.cert_chain_pems))
        wrong.private_key_pem.write_to_path(str(certs.wrong_host_key_file))
        return certs

    def client_context(self) -> ssl.SSLContext:
        """Return a client context that verifies hostnames and trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_context(self, *, wrong_host: bool = False) -> ssl.SSLContext:
        """Return a server context presenting the good (or the ``example.invalid``) cert.

        Args:
            wrong_host: present the certificate for ``example.invalid`` instead, so a client
                that connects to 127.0.0.1 or localhost fails hostname verification.
        """
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if wrong_host:
            ctx.load_cert_chain(self.wrong_host_cert_file, self.wrong_host_key_file)
        else:
            ctx.load_cert_chain(self.server_cert_file, self.server_key_file)
        return ctx


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One parsed line of the nginx access log.

    Attributes:
        connection: nginx's serial number of the TCP connection (``$connection``).
        connection_requests: 1 for the first request on that connection, then 2, 3, ...
        port: the server port the request arrived on (tells default/strict/tls apart).
        status: the response status.
        method, uri, protocol: from the request line (``-`` when nginx could not parse it).
        body_bytes_sent: response body bytes nginx sent.
        tag: the request's ``X-Test-Tag`` header, or None.
        raw: the line as logged.
    """

    connection: int
    connection_requests: int
    port: int
    status: int
    method: str
    uri: str
    protocol: str
    body_bytes_sent: int
    tag: str | None
    raw: str

    @classmethod
    def parse(cls, line: str) -> AccessLogEntry:
        """Parse one tab-separated access log line.

        Raises:
            ValueError: the line does not have the expected fields.
        """
        fields = line.split("\t")
        if len(fields) != 9:
            raise ValueError(f"access log line has {len(fields)} fields, expected 9: {line!r}")
        conn, conn_requests, port, status, method, uri, protocol, sent, tag = fields
        return cls(
            connection=int(conn),
            connection_requests=int(conn_requests),
            port=int(port),
            status=int(status),
            method=method,
            uri=uri,
            protocol=protocol,
            body_bytes_sent=int(sent),
            tag=None if tag == "-" else tag,
            raw=line,
        )


def pattern_bytes(size: int) -> bytes:
    """Return ``size`` deterministic bytes: 0..250 repeated (251 is prime, so a dropped or
    shifted block changes the content at every 4 KiB boundary)."""
    block = bytes(range(251))
    return (block * (size // len(block) + 1))[:size]


def text_bytes(lines: int) -> bytes:
    """Return ``lines`` numbered ASCII lines of compressible text."""
    return b"".join(
        b"line %05d: the quick brown fox jumps over the lazy dog\n" % i for i in range(lines)
    )


@functools.cache
def static_content() -> Mapping[str, bytes]:
    """Return the body of every static path, keyed by URL path (built once, then cached)."""
    return MappingProxyType(
        {
            "/small": b"Hello, world!",
            "/64k": pattern_bytes(64 * 1024),
            "/1m": pattern_bytes(1024 * 1024),
            "/big": pattern_bytes(20 * 1024 * 1024),
            "/gzip": text_bytes(400),
            "/chunked": text_bytes(2000),
        }
    )


class NginxServer:
    """A running nginx master process (one worker) serving the files in its directory.

    Built by :func:`start_nginx`; ``stop()`` ends it. Not thread-safe; the methods other
    than ``wait_access_log`` do no I/O except reading the access log.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        directory: Path,
        ports: dict[str, int],
        *,
        ca_file: Path,
        ipv6: bool,
    ) -> None:
        self.process = process
        self.directory = directory
        self.ports = dict(ports)
        self.ca_file = ca_file
        self.ipv6 = ipv6
        self.access_log = directory / "logs" / "access.log"

    def __repr__(self) -> str:
        return f"<NginxServer pid={self.process.pid} ports={self.ports} dir={self.directory}>"

    def url(self, path: str = "/", which: str = "default", host: str = "127.0.0.1") -> str:
        """Return the URL of ``path`` on one of the three servers.

        Args:
            path: absolute path, may carry a query.
            which: ``"default"``, ``"strict"`` or ``"tls"`` (the only https one).
            host: the host to put in the URL; ``"::1"`` is bracketed for you.

        Raises:
            ValueError: unknown ``which`` or a path without a leading slash.
        """
        if which not in self.ports:
            raise ValueError(f"unknown nginx server {which!r}; expected one of {WHICH}")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        scheme = "https" if which == "tls" else "http"
        shown = f"[{host}]" if ":" in host else host
        return f"{scheme}://{shown}:{self.ports[which]}{path}"

    def content(self, path: str) -> bytes:
        """Return the exact (unencoded) body nginx serves for a static ``path``.

        Raises:
            KeyError: ``path`` is not one of the static files.
        """
        return static_content()[path]

    def log_mark(self) -> int:
        """Return the current end of the access log, for ``access_log_lines(since=...)``."""
        return self.access_log.stat().st_size

    def access_log_lines(self, since: int = 0) -> list[AccessLogEntry]:
        """Parse the complete access log lines written after byte offset ``since``.

        Args:
            since: a value from ``log_mark()``; 0 means the whole log.
        """
        with self.access_log.open("rb") as f:
            f.seek(since)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1].decode("latin-1")
        return [AccessLogEntry.parse(line) for line in complete.splitlines()]

    async def wait_access_log(
        self, count: int, *, since: int = 0, timeout: float = 5.0
    ) -> list[AccessLogEntry]:
        """Wait until at least ``count`` lines were logged after ``since`` and return them.

        nginx offers no notification, so this polls the file every 10 ms; a checkpoint.

        Raises:
            AssertionError: fewer than ``count`` lines after ``timeout`` seconds (the
                message shows the lines that did arrive).
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = self.access_log_lines(since)
            if len(lines) >= count:
                return lines
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"nginx logged {len(lines)} of {count} expected access log lines within"
                    f" {timeout}s: {[e.raw for e in lines]}"
                )
            await asyncio.sleep(0.01)

    def error_log(self) -> str:
        """Return nginx's error log and its stderr (for failure messages)."""
        parts = []
        for name in ("logs/error.log", "stderr.log"):
            path = self.directory / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL after 10 s) and reap it. Idempotent; blocks."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def find_nginx(candidates: tuple[str, ...] = NGINX_CANDIDATES) -> str:
    """Return the path of the nginx binary, or fail the test with how to install it.

    Raises:
        pytest.fail.Exception: no candidate exists.
    """
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail(
        f"nginx is not installed (looked for {', '.join(candidates)}). The tests need the"
        " system nginx: run .ci/run, or `apt-get install nginx`.",
        pytrace=False,
    )


def ipv6_loopback() -> bool:
    """Return True when a socket can be bound to ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def pick_ports(count: int, ipv6: bool) -> list[int]:
    """Return ``count`` distinct ports free on 127.0.0.1 (and on ::1 when ``ipv6``).

    The sockets are closed before nginx binds, so another process may take a port in
    between; :func:`start_nginx` retries when nginx reports the address in use.

    Raises:
        RuntimeError: no such ports found in ``10 * count`` tries.
    """
    held: list[socket.socket] = []  # kept bound until the end, so no port comes twice
    ports: list[int] = []
    try:
        for _ in range(10 * count):
            if len(ports) == count:
                break
            s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s4)
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            if ipv6:
                s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                held.append(s6)
                try:
                    s6.bind(("::1", port))
                except OSError:
                    continue
            ports.append(port)
    finally:
        for s in held:
            s.close()
    if len(ports) < count:
        raise RuntimeError(f"found only {len(ports)} of {count} free loopback ports")
    return ports


def _listen_lines(port: int, ipv6: bool, extra: str = "") -> str:
    lines = [f"        listen 127.0.0.1:{port}{extra};"]
    if ipv6:
        lines.append(f"        listen [::1]:{port}{extra};")
    return "\n".join(lines)


def render_locations() -> str:
    """Return the ``location`` blocks shared by all three servers."""
    blocks = [
        "location = /small { default_type text/plain; }",
        "location = /gzip { default_type text/plain; gzip on; gzip_min_length 1;"
        " gzip_types text/plain; }",
        "location = /chunked { default_type text/plain; sub_filter_types text/plain;"
        " sub_filter '@@glasspool-never-matches@@' ''; sub_filter_once off; }",
        "location = /upload { client_max_body_size 1m; return 200 'uploaded\\n'; }",
    ]
    for code in (302, 301, 303, 307, 308):
        prefix = "/redirect" if code == 302 else f"/redirect-{code}"
        blocks.append(f"location = {prefix}/1 {{ return {code} /small; }}")
        blocks.extend(
            f"location = {prefix}/{n} {{ return {code} {prefix}/{n - 1}; }}"
            for n in range(2, REDIRECT_MAX + 1)
        )
    blocks.extend(f"location = /status/{code} {{ return {code}; }}" for code in STATUS_CODES)
    return "\n".join(blocks) + "\n"


def render_config(directory: Path, ports: dict[str, int], certs: TLSCerts, ipv6: bool) -> str:
    """Return nginx.conf: every path inside ``directory``, one worker, three servers."""
    d = directory
    user = ""
    if os.geteuid() == 0:  # workers would drop to "nobody", who cannot read a 0700 tmpdir
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(
        f"    {kind}_temp_path {d}/temp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    fields = _LOG_FIELDS.replace(" ", "\\t")
    servers = "\n".join(
        [
            _server_block(_listen_lines(ports["default"], ipv6), "60s", 1000, d),
            _server_block(_listen_lines(ports["strict"], ipv6), "1s", 3, d),
            _server_block(_listen_lines(ports["tls"], ipv6, " ssl"), "60s", 1000, d, certs),
        ]
    )
    return f"""{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
lock_file {d}/nginx.lock;
events {{ worker_connections 768; }}
http {{
    log_format glasspool "{fields}";
    access_log {d}/logs/access.log glasspool;
{temp}
    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
{servers}
}}
"""


def _server_block(
    listen: str,
    keepalive_timeout: str,
    keepalive_requests: int,
    d: Path,
    certs: TLSCerts | None = None,
) -> str:
    tls = ""
    if certs is not None:
        tls = (
            f"        ssl_certificate {certs.server_cert_file};\n"
            f"        ssl_certificate_key {certs.server_key_file};\n"
        )
    return f"""    server {{
{listen}
        server_name localhost;
        keepalive_timeout {keepalive_timeout};
        keepalive_requests {keepalive_requests};
        root {d}/www;
{tls}        include {d}/locations.conf;
    }}"""


def write_tree(directory: Path) -> None:
    """Create the log, temp and www directories and write the static files."""
    for sub in ("logs", "temp", "www"):
        (directory / sub).mkdir(exist_ok=True)
    for path, body in static_content().items():
        (directory / "www" / path.lstrip("/")).write_bytes(body)
    (directory / "locations.conf").write_text(render_locations())
    (directory / "logs" / "access.log").touch()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM nginx if the pytest process dies without stopping it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _launch(binary: str, directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "stderr.log").open("wb") as err:
        return subprocess.Popen(
            [binary, "-p", f"{directory}/", "-c", f"{directory}/nginx.conf", "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            preexec_fn=_die_with_parent,
        )


def _accepting(port: int, host: str) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait_ready(server: NginxServer, timeout: float) -> str | None:
    """Poll until every port accepts; return None, or the reason nginx did not start."""
    hosts = ["127.0.0.1", "::1"] if server.ipv6 else ["127.0.0.1"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"nginx exited with status {server.process.returncode}"
        if ADDRESS_IN_USE in server.error_log():  # nginx would retry bind() for 2.5 s
            return f"a port of {server.ports} was taken meanwhile"
        if all(_accepting(p, h) for p in server.ports.values() for h in hosts):
            return None
        time.sleep(0.02)  # an external process: nothing to await but its sockets
    return f"nginx did not accept on ports {server.ports} within {timeout}s"


def start_nginx(
    directory: Path,
    certs: TLSCerts,
    *,
    binary: str | None = None,
    attempts: int = 5,
    startup_timeout: float = 10.0,
) -> NginxServer:
    """Start nginx in the foreground on fresh loopback ports, serving files it writes.

    Blocks until every port accepts connections. The caller must ``stop()`` the server.

    Args:
        directory: an empty directory that holds config, files, logs, pid and temp files.
        certs: certificates for the TLS server.
        binary: nginx to run; default ``/usr/sbin/nginx`` or ``nginx`` on ``PATH``.
        attempts: how often to pick new ports when one was taken meanwhile.
        startup_timeout: seconds to wait for each attempt.

    Raises:
        pytest.fail.Exception: nginx is not installed, or did not start (with its log).
    """
    binary = binary or find_nginx()
    ipv6 = ipv6_loopback()
    write_tree(directory)
    failure = ""
    for _ in range(attempts):
        ports = dict(zip(WHICH, pick_ports(len(WHICH), ipv6), strict=True))
        (directory / "nginx.conf").write_text(render_config(directory, ports, certs, ipv6))
        (directory / "logs" / "error.log").write_bytes(b"")  # judge this attempt alone
        process = _launch(binary, directory)
        server = NginxServer(process, directory, ports, ca_file=certs.ca_file, ipv6=ipv6)
        reason = _wait_ready(server, startup_timeout)
        if reason is None:
            return server
        server.stop()
        failure = f"{reason}\n{server.error_log()}"
        if ADDRESS_IN_USE not in failure:
            break
    pytest.fail(f"could not start {binary} in {directory}: {failure}", pytrace=False)
