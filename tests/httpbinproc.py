"""httpbin under gunicorn, as a child process on a free loopback port, for tests.

``httpbin_url`` (a module-scoped fixture in the test modules that use it) starts one per
module. gunicorn runs the ``gthread`` worker, which keeps connections alive, so tests can
see a connection reused. A missing httpbin or gunicorn fails the test naming the pip
packages; it never skips.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

START_TIMEOUT_S = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def run_httpbin() -> Iterator[str]:
    """Start httpbin, yield its base URL (``http://127.0.0.1:PORT``), stop it afterwards."""
    missing = [m for m in ("httpbin", "gunicorn") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not installed; these tests need a real httpbin: "
            "pip install httpbin gunicorn (the test extra has them)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
         "-k", "gthread", "--threads", "4", "--keep-alive", "30", "httpbin:app"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                pytest.fail(f"httpbin under gunicorn did not start on port {port}: {err}")
            time.sleep(0.05)  # polling a child process's port: there is no event to await
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
