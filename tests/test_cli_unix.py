"""``glasspool get`` as a Unix tool: the body on stdout, --include, --fail, exit statuses,
quiet broken pipes, output paths checked first, --json, close reasons, plain English.

Most tests run the real command in a subprocess (``python -m glasspool``) against a
loopback DemoServer in a background thread, as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.demoserver import HELLO, ThreadedServer


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as running:
        yield running


def glasspool(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "glasspool", *argv],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_a_single_url_prints_its_body_on_stdout_and_the_report_on_stderr(
    server: ThreadedServer,
) -> None:
    done = glasspool("get", server.url("/hello"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == HELLO
    report = done.stderr.decode()
    assert "summary: 1 request in " in report
    assert "1 response, 0 errors" in report


def test_include_puts_the_status_line_and_headers_before_the_body(
    server: ThreadedServer,
) -> None:
    done = glasspool("get", "-i", server.url("/hello"))
    assert done.returncode == 0
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"Content-Length: 13" in lines[1:]
    assert body == HELLO


def test_fail_turns_an_http_error_status_into_exit_22(server: ThreadedServer) -> None:
    assert glasspool("get", server.url("/status/404")).returncode == 0
    failed = glasspool("get", "--fail", server.url("/status/503"))
    assert failed.returncode == 22
    assert glasspool("get", "--fail", server.url("/hello")).returncode == 0


def test_a_network_error_exits_1_and_says_refused(refused_port: int) -> None:
    done = glasspool("get", f"http://127.0.0.1:{refused_port}/")
    assert done.returncode == 1
    assert done.stdout == b""
    report = done.stderr.decode()
    assert "connection refused" in report
    assert "1 error" in report and "errors: ConnectError x1" in report


def test_piping_into_head_ends_quietly(server: ThreadedServer) -> None:
    # 200 requests, one line each on stdout; head reads one line and exits.
    producer = subprocess.Popen(
        [sys.executable, "-m", "glasspool", "get", "-n", "200", "-c", "2",
         server.url("/hello"), server.url("/bytes/10")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert producer.stdout is not None and producer.stderr is not None
    head = subprocess.run(["head", "-n", "1"], stdin=producer.stdout, capture_output=True)
    producer.stdout.close()  # only head holds the read end now
    err = producer.stderr.read()
    producer.stderr.close()
    code = producer.wait(30)
    assert head.stdout.startswith(b"[1/400] 200 ")
    assert err == b""  # no BrokenPipeError, no ExceptionGroup traceback
    assert code == 141


@pytest.mark.parametrize(
    ("flag", "make_path", "words"),
    [
        ("--timeline", lambda tmp: tmp / "missing" / "t.html", "does not exist"),
        ("--trace", lambda tmp: tmp, "is a directory"),
        ("-o", lambda tmp: tmp / "missing" / "body.bin", "does not exist"),
    ],
)
def test_a_bad_output_path_is_one_line_and_exit_2_before_any_request(
    server: ThreadedServer, tmp_path: Path, flag: str, make_path: object, words: str
) -> None:
    path = make_path(tmp_path)  # type: ignore[operator]
    done = glasspool("get", flag, str(path), server.url("/hello"))
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and flag in lines[0] and words in lines[0], lines
    assert done.stdout == b""
    assert server.server.requests == 0


def test_a_bad_output_path_of_the_demo_is_refused_first(tmp_path: Path) -> None:
    done = glasspool("demo", "--timeline", str(tmp_path / "missing" / "t.html"))
    assert done.returncode == 2
    assert len(done.stderr.decode().splitlines()) == 1
    assert done.stdout == b""


def test_json_prints_the_summary_and_nothing_else(server: ThreadedServer) -> None:
    done = glasspool("get", "--json", "-n", "3", "-c", "1", server.url("/hello"))
    assert done.returncode == 0
    summary = json.loads(done.stdout)
    assert summary["requests"] == 3 and summary["responses"] == 3 and summary["errors"] == 0
    assert summary["statuses"] == {"200": 3}
    assert summary["connections"] == {"opened": 1, "reused": 2, "closed": {}}
    assert summary["body_bytes"] == 3 * len(HELLO)
    assert set(summary["latency_s"]) == {"p50", "p90", "p99"}
    assert done.stderr == b""


def test_the_summary_says_why_connections_closed(server: ThreadedServer) -> None:
    # /stream announces 1 MiB and sends 16 KiB: the read times out, the connection is
    # closed (not reusable); the next request opens another one.
    done = glasspool(
        "get", "--json", "--timeout", "0.3", "-c", "1", server.url("/stream"), server.url("/hello")
    )
    summary = json.loads(done.stdout)
    assert done.returncode == 1
    assert summary["connections"]["opened"] == 2
    assert sum(summary["connections"]["closed"].values()) >= 1
    plain = glasspool(
        "get", "--timeout", "0.3", "-c", "1", server.url("/stream"), server.url("/hello")
    )
    line = next(t for t in plain.stdout.decode().splitlines() if t.startswith("connections:"))
    assert "closed (" in line and " x1" in line


def test_counts_are_grammatical(server: ThreadedServer) -> None:
    one = glasspool("get", "--json", server.url("/hello"))
    assert one.returncode == 0
    plain = glasspool("get", "-o", os.devnull, server.url("/hello"))
    text = plain.stdout.decode()
    assert "summary: 1 request in " in text and "1 response, 0 errors" in text
    assert "(1 response)" in text
