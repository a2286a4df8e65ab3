"""``glasspool get --redis``: shared limits in the CLI, its live view and its summary.

A real redis-server (started by this module on a free 127.0.0.1 port, no persistence; the
test fails with a clear message if the binary is missing) and a loopback ``DemoServer``.
Other workers are played by leases written straight into Redis, in the documented key
layout (docs/fleet.md): ``<namespace>:{<host>}:leases``, lease id -> expiry in ms.
"""

from __future__ import annotations

import asyncio
import io
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from rich.console import Console

from glasspool import PoolEvent, PoolKey
from glasspool.cli import main
from glasspool.cli._get import GetOptions, fleet_limits, run_get
from glasspool.cli._live import FLEET_COLUMN, LiveReporter
from glasspool.cli._narrate import Narrator
from tests.demoserver import DemoServer, ThreadedServer
from tests.redisproc import RedisProcess

HOST = "127.0.0.1"  # every loopback server here listens on it: one fleet budget
OTHER_WORKER_TTL_MS = 60_000


# -- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis-cli-fleet"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    return f"cli{uuid.uuid4().hex[:12]}"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(HOST) as running:
        yield running


# -- helpers ------------------------------------------------------------------------------


def leases_key(namespace: str) -> str:
    return f"{namespace}:{{{HOST}}}:leases"


def other_workers(url: str, namespace: str, count: int) -> None:
    """Occupy ``count`` of the host's fleet slots, as other workers' live leases would."""
    with redis.Redis.from_url(url) as client:
        seconds, micros = client.time()
        expiry = seconds * 1000 + micros // 1000 + OTHER_WORKER_TTL_MS
        client.zadd(leases_key(namespace), {f"other:{i}": expiry for i in range(count)})


def fleet_members(url: str, namespace: str) -> list[str]:
    """The lease ids in the host's lease set and queue, sorted."""
    with redis.Redis.from_url(url) as client:
        leases = client.zrange(leases_key(namespace), 0, -1)
        queued = client.zrange(f"{namespace}:{{{HOST}}}:queue", 0, -1)
    return sorted(m.decode() for m in [*leases, *queued])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_value(out: str, prefix: str) -> str:
    """The rest of the line starting with ``prefix`` (fails if there is none)."""
    for line in out.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no line starting with {prefix!r} in:\n{out}")


def live_console() -> Console:
    return Console(
        file=io.StringIO(), force_terminal=True, width=140, record=True, color_system="standard"
    )


def host_rows(text: str, origin: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip().startswith(origin)]


# -- options ------------------------------------------------------------------------------


def test_help_lists_the_fleet_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "get", "--help")
    assert code == 0
    for option in ("--redis URL", "--shared-limit N", "--namespace NS", "glasspool[redis]"):
        assert option in out, option


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shared-limit", "2"], "--shared-limit 2 needs --redis URL"),
        (["--namespace", "crawl"], "--namespace crawl needs --redis URL"),
        (["--redis", "redis://127.0.0.1:1/0", "--shared-limit", "0"], "got 0"),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--namespace", "a{b}"],
            "expected a non-empty name without braces, got 'a{b}'",
        ),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--limit-per-host", "none"],
            "--redis needs --shared-limit N when --limit-per-host is none",
        ),
        (
            ["--redis", "ftp://user:secret@127.0.0.1/"],
            "--redis ftp://user:***@127.0.0.1/: Redis URL must specify one of the following",
        ),
    ],
)
def test_fleet_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "get", *argv, "http://127.0.0.1:1/")
    assert code == 2
    assert message in err
    assert "secret" not in err
    assert out == ""


async def test_fleet_limits_defaults_and_overrides(redis_server: RedisProcess) -> None:
    key = PoolKey("http", HOST, 8080)
    assert fleet_limits(GetOptions(("http://127.0.0.1/",))) is None
    default = fleet_limits(GetOptions(("http://x/",), limit_per_host=4, redis_url=redis_server.url))
    given = fleet_limits(
        GetOptions(("http://x/",), redis_url=redis_server.url, shared_limit=2, namespace="crawl")
    )
    assert default is not None and given is not None
    try:
        assert (default.namespace, default.limit_for(key)) == ("glasspool", 4)
        assert (given.namespace, given.limit_for(key)) == ("crawl", 2)
        assert default.url == given.url == redis_server.url
    finally:
        await default.aclose()
        await given.aclose()


# -- plain output -------------------------------------------------------------------------


def test_get_shares_the_limit_and_prints_the_fleet_line(
    capsys: pytest.CaptureFixture[str],
    server: ThreadedServer,
    redis_server: RedisProcess,
    namespace: str,
) -> None:
    other_workers(redis_server.url, namespace, 1)  # shared limit 2: one slot left for us
    argv = ("--redis", redis_server.url, "--shared-limit", "2", "--namespace", namespace)
    code, out, err = run_cli(
        capsys, "get", *argv, "--timeout", "5", "-c", "4", "-n", "6", server.url("/hello")
    )
    assert code == 0, out + err
    assert "\x1b" not in out
    assert summary_value(out, "status codes:") == "200 x6"
    # not 4: the fleet
    assert summary_value(out, "connections:").startswith("1 opened, 5 reused, ")
    origin = server.url("")
    assert summary_value(out, "fleet:") == f"{origin} 2/2 in use fleet-wide, 1 lease held here"
    # the RedisLimits was closed: our lease is gone, nothing is left queued
    assert fleet_members(redis_server.url, namespace) == ["other:0"]


def test_get_defaults_to_limit_per_host_and_namespace_glasspool(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, redis_server: RedisProcess
) -> None:
    other_workers(redis_server.url, "glasspool", 2)  # --limit-per-host 3: one slot left
    try:
        argv = ("--redis", redis_server.url, "--limit-per-host", "3", "--timeout", "5")
        code, out, err = run_cli(capsys, "get", *argv, "-c", "3", "-n", "3", server.url("/hello"))
    finally:
        with redis.Redis.from_url(redis_server.url) as client:
            client.delete(leases_key("glasspool"))
    assert code == 0, err
    assert summary_value(out, "connections:").startswith("1 opened, 2 reused, ")
    assert summary_value(out, "fleet:").endswith(" 3/3 in use fleet-wide, 1 lease held here")


def test_get_without_redis_py_names_the_extra(
    capsys: pytest.CaptureFixture[str],
    server: ThreadedServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)  # import redis.asyncio fails
    bodies = tmp_path / "bodies"
    argv = ("--redis", "redis://127.0.0.1:1/0", "-n", "2", "-o", str(bodies))
    code, out, err = run_cli(capsys, "get", *argv, server.url("/hello"))
    assert code == 2
    assert "--redis needs redis-py, which is not installed" in err
    assert "pip install 'glasspool[redis]'" in err
    assert out == ""
    assert server.server.requests == 0
    assert not bodies.exists()  # checked before -o made the directory


def test_get_with_redis_unreachable_fails_every_request(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, refused_port: int
) -> None:
    url = f"redis://127.0.0.1:{refused_port}/0"
    code, out, _ = run_cli(capsys, "get", "--redis", url, "-n", "2", server.url("/hello"))
    assert code == 1
    error = summary_value(out, "errors:")
    assert error.startswith("SharedLimitsUnavailable x2 (e.g. Redis at ")
    assert f"127.0.0.1:{refused_port}" in error
    assert server.server.requests == 0  # never an unaccounted connection


@pytest.mark.parametrize(
    "template",
    [
        "redis://user:s3cret@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password=s3cret",
        "rediss://:s3cret@127.0.0.1:{port}/0?ssl_password=s3cret",
    ],
)
def test_get_with_redis_never_prints_its_password(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, refused_port: int, template: str
) -> None:
    url = template.format(port=refused_port)
    code, out, err = run_cli(capsys, "get", "--redis", url, server.url("/hello"))
    assert code == 1
    assert "s3cret" not in out + err
    assert "***" in summary_value(err, "errors:")  # one request: the report is on stderr


# -- the live view --------------------------------------------------------------------------


@pytest.fixture
async def demo_server() -> AsyncIterator[DemoServer]:
    async with DemoServer(HOST) as srv:
        yield srv


async def test_live_view_has_a_fleet_column_with_shared_limits(
    demo_server: DemoServer, redis_server: RedisProcess, namespace: str
) -> None:
    await asyncio.to_thread(other_workers, redis_server.url, namespace, 1)
    console = live_console()
    reporter = LiveReporter(console)
    opts = GetOptions(
        (demo_server.url("/hold"),),
        repeat=3,
        concurrency=3,
        timeout=10,
        redis_url=redis_server.url,
        shared_limit=2,
        namespace=namespace,
    )
    run = asyncio.create_task(run_get(opts, reporter))
    await demo_server.wait_held(1)  # our one fleet slot is in use; two requests wait
    frame = live_console()
    frame.print(reporter.render())
    demo_server.release_held()
    summary = await run
    text = frame.export_text()
    assert FLEET_COLUMN in text.splitlines()[2].split()  # the header row
    (row,) = host_rows(text, demo_server.url(""))
    assert row.split()[1:2] == ["1"] and row.rstrip().endswith("2/2 (1 mine)")  # 1 in use
    assert summary.responses == 3 and summary.opened == 1
    last = console.export_text()
    assert host_rows(last, demo_server.url(""))[-1].rstrip().endswith("2/2 (1 mine)")
    origin = demo_server.url("")
    assert f"fleet: {origin} 2/2 in use fleet-wide, 1 lease held here" in last


async def test_live_view_has_no_fleet_column_without_shared_limits(
    demo_server: DemoServer,
) -> None:
    console = live_console()
    summary = await run_get(
        GetOptions((demo_server.url("/hello"),), repeat=2), LiveReporter(console)
    )
    text = console.export_text()
    header = next(line for line in text.splitlines() if "req/s" in line)
    assert header.split()[-1] == "req/s" and FLEET_COLUMN not in header
    assert "fleet:" not in text
    assert summary.fleet == ()


# -- narration ----------------------------------------------------------------------------


def test_narration_of_a_request_queued_on_the_shared_limit() -> None:
    key = PoolKey("http", HOST, 8001)
    narrator = Narrator(lambda k: "host A", limit=25, limit_per_host=5)
    (sentence,) = narrator.sentences(
        [PoolEvent("queued", key, None, "shared_limit", 0.0, 2)], "13-byte body"
    )
    assert sentence == (
        "A request for host A has to wait: the fleet-wide limit for this host is full "
        "(reason shared_limit; 2 waiting for host A)."
    )
