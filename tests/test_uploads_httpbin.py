"""files= against httpbin under gunicorn (a child process on a free loopback port): the
form fields and files httpbin parsed are the ones sent. A missing gunicorn or httpbin fails
with a message naming the pip package (.ci/run installs both); it never skips."""

from __future__ import annotations

import base64
import importlib.util
import io
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import glasspool
from tests.redisproc import free_port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"GET /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture(scope="module")
def httpbin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for package in ("gunicorn", "httpbin"):
        if importlib.util.find_spec(package) is None:
            pytest.fail(f"{package} is not installed: pip install {package} (.ci/run does this)")
    port = free_port()
    log_path = tmp_path_factory.mktemp("httpbin") / "gunicorn.log"
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    args = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1"]
    proc = subprocess.Popen([*args, "httpbin:app"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        deadline = time.monotonic() + 20
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn httpbin did not start:\n{log_path.read_text()}")
            time.sleep(0.05)  # readiness probe of a child process: no event to await
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_httpbin_receives_the_fields_and_files_sent(
    httpbin: str, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first line\nsecond line\n")
    binary = bytes(range(256))
    async with glasspool.Client() as client:
        response = await client.post(
            f"{httpbin}/post",
            data={"title": "Weekly", "tags": ["a", "b"]},
            files={
                "path": path,
                "inline": ("inline.txt", b"inline text"),
                "bin": ("blob.bin", io.BytesIO(binary), "application/octet-stream"),
            },
        )
    assert response.status == 200
    got = response.json()
    assert got["form"] == {"title": "Weekly", "tags": ["a", "b"]}
    assert got["files"]["path"] == "first line\nsecond line\n"
    assert got["files"]["inline"] == "inline text"
    prefix = "data:application/octet-stream;base64,"
    assert got["files"]["bin"].startswith(prefix)
    assert base64.b64decode(got["files"]["bin"][len(prefix) :]) == binary
    assert got["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    assert int(got["headers"]["Content-Length"]) > len(binary)
