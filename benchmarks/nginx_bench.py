"""The benchmark's server side: a private nginx, its counters, and ``wrk`` as the ceiling.

nginx runs from a temporary folder with its own configuration: one worker process,
keep-alive with a very high ``keepalive_requests``, no access log, and three static files
(13 bytes, 64 KiB, 1 MiB) served on four loopback ports that stand in for four hosts. A
fifth port serves ``stub_status``; its ``accepts`` counter is how the harness counts the
connections each client opened, the same way for every client (see :func:`read_status`).

Nothing here talks to anything but 127.0.0.1, and every wait is bounded in time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BODY_SIZES",
    "NginxServer",
    "ServerStatus",
    "WrkResult",
    "nginx_version",
    "read_status",
    "run_wrk",
    "start_nginx",
    "wrk_version",
]

NGINX = "/usr/sbin/nginx"
HOST_PORTS = 4
#: path -> size in bytes of every file the server serves.
BODY_SIZES: dict[str, int] = {"/13b": 13, "/64k": 64 * 1024, "/1m": 1024 * 1024}
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_NOFILE = 8192
_CONFIG = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections 4096;
    multi_accept on;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush off;  # with TCP_CORK, 64 KiB keep-alive responses stall ~40 ms at p99
    tcp_nodelay on;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
{listens}
        root {root}/www;
        etag off;
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{ stub_status; }}
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class NginxServer:
    """A running private nginx.

    Attributes:
        pid: the master process id (we started it; only it is ever signalled).
        ports: the data ports, one per stand-in host (four unless asked for more).
        status_port: the ``stub_status`` port.
        root: the temporary folder holding the config, files and error log.
        cpu: the CPU nginx is pinned to, or None when it is not pinned.
    """

    pid: int
    ports: tuple[int, ...]
    status_port: int
    root: Path
    cpu: int | None

    def url(self, path: str, host_index: int = 0) -> str:
        """Return the URL of ``path`` on the ``host_index``-th stand-in host."""
        return f"http://127.0.0.1:{self.ports[host_index]}{path}"

    @property
    def status_url(self) -> str:
        """The ``stub_status`` URL."""
        return f"http://127.0.0.1:{self.status_port}/status"


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One ``stub_status`` reading.

    Attributes:
        accepts: connections accepted since start, including the one that read this.
        active: connections open now, including the one that read this.
        waiting: idle keep-alive connections now.
    """

    accepts: int
    active: int
    waiting: int


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one ``wrk`` run measured.

    Attributes:
        requests_per_s: wrk's ``Requests/sec``.
        p50_ms: median latency in milliseconds.
        p99_ms: 99th percentile latency in milliseconds.
        max_ms: slowest request in milliseconds.
        connections: the ``-c`` value used.
    """

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    connections: int


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_tree(root: Path, ports: Sequence[int], status_port: int) -> Path:
    """Write the config and the served files under ``root``; return the config path."""
    www = root / "www"
    for sub in ("www", "tmp"):
        (root / sub).mkdir()
    for path, size in BODY_SIZES.items():
        data = (b"hello, world\n" if size == 13 else bytes(range(256)) * (size // 256))[:size]
        (www / path.lstrip("/")).write_bytes(data)
    # The worker may run as "nobody" when we are root: let it read the files.
    for item in (root, www, *www.iterdir()):
        item.chmod(0o755 if item.is_dir() else 0o644)
    listens = "\n".join(f"        listen 127.0.0.1:{port} backlog=4096;" for port in ports)
    config = root / "nginx.conf"
    config.write_text(
        _CONFIG.format(root=root, listens=listens, status_port=status_port, nofile=_NOFILE)
    )
    return config


def _raise_nofile() -> None:
    """Raise this process's open-file soft limit so nginx and the clients inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _NOFILE if hard == resource.RLIM_INFINITY else min(_NOFILE, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _wait_ready(proc: subprocess.Popen[bytes], server: NginxServer) -> None:
    """Block until every port accepts a connection; raise if nginx exits or is too slow."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    pending = [*server.ports, server.status_port]
    while pending:
        if proc.poll() is not None:
            log = (server.root / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nginx exited with status {proc.returncode}: {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not listen on ports {pending} in {_START_TIMEOUT_S}s")
        try:
            with socket.create_connection(("127.0.0.1", pending[0]), timeout=1.0):
                pending.pop(0)
        except OSError:
            time.sleep(0.05)  # polling another process's start-up: there is no event to await


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the nginx master we started: graceful quit, then kill if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGQUIT)
    try:
        proc.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=_STOP_TIMEOUT_S)


@contextmanager
def start_nginx(cpu: int | None, host_ports: int = HOST_PORTS) -> Iterator[NginxServer]:
    """Start a private nginx for the duration of the ``with`` block.

    Args:
        cpu: pin nginx (master and worker) to this CPU with ``taskset``; None to not pin.
        host_ports: how many data ports (stand-in hosts) to listen on.

    Returns:
        A context manager yielding the running :class:`NginxServer`; leaving it stops
        nginx and deletes the temporary folder.

    Raises:
        RuntimeError: nginx is missing, exits at start-up, or does not listen within 10 s.
    """
    if not os.access(NGINX, os.X_OK):
        raise RuntimeError(f"{NGINX} not found: install the Debian 'nginx' package")
    _raise_nofile()
    root = Path(tempfile.mkdtemp(prefix="glasspool-bench-"))
    try:
        *ports, status_port = _free_ports(host_ports + 1)
        config = _write_tree(root, ports, status_port)
        argv = [NGINX, "-p", str(root), "-c", str(config), "-e", str(root / "error.log")]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        server = NginxServer(proc.pid, tuple(ports), status_port, root, cpu)
        try:
            _wait_ready(proc, server)
            yield server
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def read_status(status_url: str) -> ServerStatus:
    """Read nginx's ``stub_status`` page (proxies ignored; loopback only).

    Args:
        status_url: the server's :attr:`NginxServer.status_url`.

    Returns:
        The counters. ``accepts`` and ``active`` include the connection used to read them.

    Raises:
        RuntimeError: the page does not have the expected shape.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(status_url, timeout=5.0) as response:
        text = response.read().decode("ascii", "replace")
    active = re.search(r"Active connections:\s*(\d+)", text)
    counts = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.MULTILINE)
    waiting = re.search(r"Waiting:\s*(\d+)", text)
    if not (active and counts and waiting):
        raise RuntimeError(f"unexpected stub_status page from {status_url}: {text!r}")
    return ServerStatus(int(counts.group(1)), int(active.group(1)), int(waiting.group(1)))


def nginx_version() -> str:
    """Return ``nginx -v``'s version string, e.g. ``nginx/1.22.1``."""
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10.0)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def wrk_version() -> str:
    """Return wrk's version (``wrk -v`` prints it and exits 1), or ``not installed``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "not installed"
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10.0)
    words = (out.stdout or out.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    """Convert a wrk duration such as ``215.00us`` or ``1.20ms`` to milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def _parse_wrk(output: str, connections: int) -> WrkResult:
    """Parse ``wrk --latency`` output."""
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE)
    latency = re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", output, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)|Socket errors:.*", output)
    if errors is not None:
        raise RuntimeError(f"wrk reported errors: {errors.group(0)}")
    if not (rate and p50 and p99 and latency):
        raise RuntimeError(f"unexpected wrk output: {output[-1000:]!r}")
    return WrkResult(
        float(rate.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        _ms(latency.group(1)),
        connections,
    )


def run_wrk(url: str, connections: int, seconds: int, cpu: int | None) -> WrkResult:
    """Run ``wrk -t1 --latency`` against ``url``; the server-side ceiling for a scenario.

    Args:
        url: a loopback URL served by the private nginx.
        connections: wrk's ``-c``.
        seconds: wrk's ``-d`` (whole seconds).
        cpu: pin wrk to this CPU with ``taskset``; None to not pin.

    Returns:
        The parsed figures.

    Raises:
        RuntimeError: wrk is missing, fails, reports errors, or prints something unexpected.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: install the Debian 'wrk' package")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30.0)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with status {done.returncode}: {done.stderr[-500:]}")
    return _parse_wrk(done.stdout, connections)
