"""Every script in examples/ runs against loopback servers the test starts, exits 0, says
what it should, and prints nothing on stderr."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demoserver import ThreadedServer
from tests.redisproc import RedisProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as running:
        yield running


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout


def test_every_example_is_tested() -> None:
    tested = {
        "crawler.py", "fan_out.py", "download.py", "watch_pool.py", "fleet_workers.py",
        "httpx_transport.py", "otel_metrics.py", "prometheus_collector.py",
    }  # fmt: skip
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_crawler(server: ThreadedServer) -> None:
    urls = [server.url("/hello")] * 6 + [server.url("/status/404")] * 2
    out = run("crawler.py", *urls)
    assert "200: 6" in out and "404: 2" in out
    assert "2 opened, 6 reused" in out  # per-host limit 2: never more than 2 connections


def test_fan_out(server: ThreadedServer) -> None:
    out = run("fan_out.py", server.url("/hello"))
    assert out.startswith("100 of 100 calls succeeded over ")
    assert int(out.split(" over ")[1].split()[0]) <= 10


def test_download(server: ThreadedServer, tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    out = run("download.py", server.url("/bytes/300000"), str(target))
    assert out.strip() == f"300000 bytes written to {target}"
    assert target.stat().st_size == 300000


def test_download_progress_bar(server: ThreadedServer, tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "download.py"),
            server.url("/bytes/300000"),
            str(target),
            "--progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"300000 bytes written to {target}"
    last = done.stderr.splitlines()[-1]  # text mode reads each "\r" as a line end
    assert last == f"[{'#' * 30}] 100% of 300000 bytes", done.stderr
    assert "Traceback" not in done.stderr


def test_watch_pool(server: ThreadedServer) -> None:
    out = run("watch_pool.py", server.url("/hello"))
    assert "4 x queued (limit_per_host)" in out
    assert "2 x acquired (new)" in out
    assert "all hosts" in out


def test_fleet_workers(server: ThreadedServer, tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path)
    redis.start()
    try:
        out = run("fleet_workers.py", redis.url, server.url("/hello"))
    finally:
        redis.stop()
    assert out.startswith("3 workers made 15 requests")


def test_httpx_transport(server: ThreadedServer) -> None:
    out = run("httpx_transport.py", server.url("/hello"))
    assert "10 responses, statuses [200]" in out


def test_otel_metrics(server: ThreadedServer) -> None:
    names = run("otel_metrics.py", server.url("/hello")).split()
    for name in ("http.client.request.duration", "http.client.open_connections",
                 "http.client.request.time_in_queue"):  # fmt: skip
        assert name in names


def test_prometheus_collector(server: ThreadedServer) -> None:
    out = run("prometheus_collector.py", server.url("/hello"))
    assert "glasspool_pool_open" in out
