"""The ``glasspool`` command line: demo, get (every option), the live view, narration.

Every request goes to loopback servers these tests start (``DemoServer``): in the test's
own event loop for async tests, or in a background thread (``threaded_server``) for tests
that call ``main()``, which runs its own loop with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

import glasspool
from glasspool import EVENT_REASONS, PoolEvent, PoolKey
from glasspool._stats import HostsView
from glasspool.cli import main
from glasspool.cli._get import GetOptions, run_get
from glasspool.cli._live import LiveReporter
from glasspool.cli._narrate import TEMPLATES, Narrator
from glasspool.cli._summary import Result, percentile, summarize, summary_lines
from glasspool.cli._text import Printer
from tests.demoserver import HELLO, CountingDemoServer, DemoServer, ThreadedServer

A = PoolKey("http", "127.0.0.1", 8001)


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    """A loopback DemoServer in a background thread, closed (every connection) afterwards."""
    with ThreadedServer() as running:
        yield running


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_value(out: str, prefix: str) -> str:
    """The rest of the summary line starting with ``prefix`` (fails if there is none)."""
    for line in out.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no line starting with {prefix!r} in:\n{out}")


# -- help, version, usage errors ------------------------------------------------------------


GET_OPTIONS = (  # (short form or "", long form, metavar or "")
    ("-n", "--repeat", "N"),
    ("-c", "--concurrency", "N"),
    ("", "--limit", "N"),
    ("", "--limit-per-host", "N"),
    ("", "--timeout", "SECONDS"),
    ("-o", "--output", "PATH"),
    ("", "--live", ""),
    ("", "--timeline", "FILE"),
)


def help_entry(short: str, long: str, metavar: str) -> str:
    """A regex for an option's entry in argparse's help, as any supported Python prints it.

    Python 3.13 prints the metavar once, after the long form (``-n, --repeat N``); earlier
    versions print it after each form (``-n N, --repeat N``).
    """
    arg = f" {re.escape(metavar)}" if metavar else ""
    first = f"{re.escape(short)}(?:{arg})?, " if short else ""
    return rf"(?m)^  {first}{re.escape(long)}{arg}(?:\s|$)"


def test_get_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "get", "--help")
    assert code == 0
    for option in GET_OPTIONS:
        assert re.search(help_entry(*option), out), option
    assert "p50/p90/p99" in out and "plain lines" in out


def test_demo_and_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "demo", "--help")
    assert code == 0
    assert "--timeline FILE" in out and "--compare-aiohttp" in out
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "demo" in out and "get" in out and "Exit codes" in out


def test_version_and_missing_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert (code, out.strip()) == (0, f"glasspool {glasspool.__version__}")
    code, _, err = run_cli(capsys)
    assert code == 2 and "usage: glasspool" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "-n", "0", "http://127.0.0.1:1/"], "expected a whole number >= 1, got 0"),
        (["get", "-c", "x", "http://127.0.0.1:1/"], "expected a whole number >= 1, got 'x'"),
        (["get", "--limit", "-3", "http://127.0.0.1:1/"], "got -3"),
        (["get", "--limit-per-host", "0", "http://127.0.0.1:1/"], "got 0"),
        (["get", "--timeout", "0", "http://127.0.0.1:1/"], "expected seconds > 0, got 0"),
        (
            ["get", "--limit", "2", "--limit-per-host", "3", "http://127.0.0.1:1/"],
            "--limit-per-host 3 is greater than --limit 2",
        ),
        (["get", "ftp://127.0.0.1/x"], "URL 'ftp://127.0.0.1/x' must be absolute http://"),
        (["get", "/relative"], "URL '/relative' must be absolute"),
    ],
)
def test_bad_values_exit_2_naming_the_value(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err


def test_python_dash_m_glasspool() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "glasspool", "get", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--limit-per-host" in done.stdout


# -- the demo -------------------------------------------------------------------------------


def table_row(out: str, step: str, host: str) -> list[int]:
    """The six counts of ``host``'s stats() row printed after ``step``."""
    section = out.split(f"Step {step}:", 1)[1].split("\nStep ", 1)[0]
    for line in section.splitlines():
        if line.strip().startswith(host):
            return [int(v) for v in line.split()[-6:]]
    raise AssertionError(f"no {host!r} row after step {step}:\n{section}")


def test_demo_replays_the_seed_and_answers_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo")
    assert code == 0, err
    assert "\x1b" not in out  # captured stdout is not a terminal: plain text
    eof = (
        "Connection 1 went back to the pool: its 13-byte body was read to the end (reason "
        "eof). It stays open and idle, and still counts toward the limit."
    )
    assert eof in " ".join(out.split())
    # open, in use, idle, connecting, waiting, available for host A
    assert table_row(out, "1", "host A") == [1, 0, 1, 0, 0, 4]
    assert table_row(out, "2", "host A") == [1, 0, 1, 0, 0, 4]
    assert table_row(out, "3", "host A") == [1, 1, 0, 0, 0, 4]
    assert table_row(out, "4", "host B") == [1, 0, 1, 0, 0, 4]
    assert table_row(out, "5", "host A") == [5, 5, 0, 0, 2, 0]
    assert table_row(out, "6", "host A") == [5, 1, 4, 0, 0, 0]
    assert table_row(out, "7", "host A") == [4, 0, 4, 0, 0, 1]
    assert out.count("queued (limit_per_host)") == 2
    assert "Event " not in out  # every event had a real sentence, not the fallback
    assert 'Why does "available" hang at 4?' in " ".join(out.split())
    assert "stats().hosts keeps every key" in " ".join(out.split())


def test_demo_writes_a_timeline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "demo.html"
    code, out, _ = run_cli(capsys, "demo", "--timeline", str(target))
    assert code == 0
    assert f"timeline: written to {target}" in out
    page = target.read_text()
    assert page.count('<g class="lane"') == 6  # connections 1-6
    assert page.count('<g class="bar"') == 10  # requests of steps 1-5
    assert 'data-max-waiting="2"' in page


def test_demo_compare_aiohttp(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "demo", "--compare-aiohttp")
    assert code == 0
    compared = out.split("The same steps through aiohttp", 1)[1]
    flat = " ".join(compared.split())
    step4 = flat.split("Step 4:", 1)[1].split("Step 5:", 1)[0]
    assert "_acquired_per_host={A: 1}" in step4  # host B is missing: the seed's one key
    assert "hosts: A(in use 1, idle 0, available 4) B(in use 0, idle 1, available 4)" in step4
    step5 = flat.split("Step 5:", 1)[1].split("Step 6:", 1)[0]
    assert "len(_acquired)=5" in step5 and "waiters=2" in step5


def test_demo_compare_aiohttp_without_aiohttp(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    code, out, err = run_cli(capsys, "demo", "--compare-aiohttp")
    assert code == 2
    assert "--compare-aiohttp needs aiohttp" in err and "pip install aiohttp" in err
    assert out == ""


# -- narration and the stats table ----------------------------------------------------------


def test_every_event_kind_and_reason_has_a_sentence() -> None:
    missing = [
        (kind, reason)
        for kind, reasons in EVENT_REASONS.items()
        for reason in reasons
        if (kind, reason, "") not in TEMPLATES
    ]
    assert missing == []


def event(kind: str, reason: str | None, conn: int | None, waiting: int) -> PoolEvent:
    return PoolEvent(kind, A, conn, reason, 0.0, waiting)


def test_narrator_picks_the_variant_from_neighbouring_events() -> None:
    narrator = Narrator(lambda k: "host A", limit=25, limit_per_host=5)
    first = narrator.sentences(
        [event("queued", "limit_per_host", None, 1), event("queued", "limit_per_host", None, 2)],
        "13-byte body",
    )
    assert "limit of 5 connections" in first[0] and "1 waits for host A" in first[0]
    handoff = narrator.sentences(
        [event("released", "eof", 3, 2), event("acquired", "reused", 3, 1)], "13-byte body"
    )
    assert "handed on instead of going idle" in handoff[0]
    assert "went straight to the oldest request waiting for host A" in handoff[1]
    plain = narrator.sentences([event("released", "eof", 3, 0)], "13-byte body")
    assert plain[0].startswith("Connection 3 went back to the pool: its 13-byte body")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_printer_styles_only_terminals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    tty, plain = FakeTTY(), io.StringIO()
    Printer(tty).heading("Step 1")
    Printer(plain).heading("Step 1")
    assert "\x1b[1mStep 1" in tty.getvalue()
    assert plain.getvalue() == "\nStep 1\n======\n"
    monkeypatch.setenv("NO_COLOR", "1")
    quiet = FakeTTY()
    Printer(quiet).heading("Step 1")
    assert "\x1b" not in quiet.getvalue()


# -- glasspool get ------------------------------------------------------------------------


def test_get_plain_lines_and_summary(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    hello, missing = server.url("/hello"), server.url("/status/404")
    code, out, _ = run_cli(capsys, "get", "-c", "1", hello, missing)
    assert code == 0
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].startswith(f"[1/2] 200 {hello} 13 B ")
    assert lines[1].startswith(f"[2/2] 404 {missing} 11 B ")
    assert summary_value(out, "status codes:") == "200 x1, 404 x1"
    assert summary_value(out, "connections:") == "1 opened, 1 reused, 0 closed"
    assert summary_value(out, "bytes:") == "24 body bytes received"
    assert summary_value(out, "errors:") == "none"
    assert re.fullmatch(
        r"p50 [\d.]+ m?s, p90 [\d.]+ m?s, p99 [\d.]+ m?s \(2 responses\)",
        summary_value(out, "latency:"),
    )


def test_get_repeat(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run_cli(capsys, "get", "-n", "3", "-c", "1", server.url("/hello"))
    assert code == 0
    assert server.server.requests == 3
    assert summary_value(out, "summary:").startswith("3 requests in ")
    assert summary_value(out, "connections:") == "1 opened, 2 reused, 0 closed"


def test_get_concurrency(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    # /barrier/3 answers only once 3 requests are in flight together.
    argv = ("get", "--timeout", "5", "-c", "3", "-n", "3", server.url("/barrier/3"))
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert summary_value(out, "status codes:") == "200 x3"
    assert summary_value(out, "connections:") == "3 opened, 0 reused, 0 closed"


def test_get_limit(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run_cli(
        capsys, "get", "--limit", "1", "-c", "3", "-n", "3", server.url("/hello")
    )
    assert code == 0
    assert summary_value(out, "connections:") == "1 opened, 2 reused, 0 closed"


def test_get_limit_per_host(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    argv = ("--limit-per-host", "2", "-c", "4", "-n", "4", server.url("/barrier/2"))
    code, out, _ = run_cli(capsys, "get", "--timeout", "5", *argv)
    assert code == 0
    assert summary_value(out, "connections:") == "2 opened, 2 reused, 0 closed"


def test_get_limit_per_host_none(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    # /barrier/12 needs 12 requests in flight at once: more than the default per-host 10.
    argv = ("--limit-per-host", "none", "-c", "12", "-n", "12", server.url("/barrier/12"))
    code, out, _ = run_cli(capsys, "get", "--timeout", "5", *argv)
    assert code == 0
    assert summary_value(out, "connections:") == "12 opened, 0 reused, 0 closed"


def test_get_timeout_groups_the_error(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    # A single request: the report goes to stderr (stdout is for the body).
    code, _, err = run_cli(capsys, "get", "--timeout", "0.2", server.url("/hold"))
    assert code == 1
    assert summary_value(err, "latency:") == "no responses"
    error = summary_value(err, "errors:")
    assert error.startswith("ReadTimeout x1 (e.g. ")
    assert "0.2" in error


def test_get_errors_grouped_by_class(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, refused_port: int
) -> None:
    refused = f"http://127.0.0.1:{refused_port}/x"
    code, out, _ = run_cli(capsys, "get", "-n", "2", refused, server.url("/hello"))
    assert code == 1
    assert summary_value(out, "summary:").endswith("2 responses, 2 errors")
    assert summary_value(out, "errors:").startswith("ConnectError x2 (e.g. ")
    assert summary_value(out, "status codes:") == "200 x2"


def test_get_never_prints_a_password_from_a_url(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, refused_port: int
) -> None:
    ok = server.url("/hello").replace("http://", "http://user:s3cret@")
    refused = f"http://user:s3cret@127.0.0.1:{refused_port}/x"
    code, out, err = run_cli(capsys, "get", ok, refused)
    assert code == 1
    assert "s3cret" not in out + err
    assert f"200 {ok.replace('s3cret', '***')} " in out
    assert f"ConnectError {refused.replace('s3cret', '***')} " in out


@pytest.mark.parametrize(
    "url", ["http://user:s3cret@[::1/", "ftp://user:s3cret@127.0.0.1/", "http://user:s3cret@/"]
)
def test_get_usage_errors_never_print_a_password(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, err = run_cli(capsys, "get", url)
    assert code == 2
    assert "s3cret" not in out + err
    assert "user:***@" in err


def test_get_output_to_a_file(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    target = tmp_path / "body.txt"
    code, _, _ = run_cli(capsys, "get", "-o", str(target), server.url("/bytes/200000"))
    assert code == 0
    assert target.read_bytes() == b"x" * 200000


def test_get_output_to_a_directory(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    target = tmp_path / "bodies"
    urls = (server.url("/hello"), server.url("/status/404"))
    code, _, _ = run_cli(capsys, "get", "-n", "2", "-c", "1", "-o", str(target), *urls)
    assert code == 0
    port = server.server.port
    files = {p.name: p.read_bytes() for p in target.iterdir()}
    assert files == {
        f"1-127.0.0.1_{port}_hello": HELLO,
        f"2-127.0.0.1_{port}_status_404": b"status 404\n",
        f"3-127.0.0.1_{port}_hello": HELLO,
        f"4-127.0.0.1_{port}_status_404": b"status 404\n",
    }


def test_get_output_file_for_many_bodies_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me")
    code, _, err = run_cli(capsys, "get", "-n", "2", "-o", str(target), server.url("/hello"))
    assert code == 2
    assert f"-o {target}: is a file, but 2 responses need a directory" in err
    assert target.read_text() == "keep me"
    assert server.server.requests == 0


def test_get_timeline(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer, tmp_path: Path
) -> None:
    target = tmp_path / "get.html"
    argv = ("get", "-c", "2", "-n", "5", "--timeline", str(target), server.url("/hello"))
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert summary_value(out, "timeline:") == f"written to {target}"
    page = target.read_text()
    opened = int(summary_value(out, "connections:").split()[0])
    assert page.count('<g class="lane"') == opened
    assert page.count('<g class="bar"') == 5


def test_get_live_on_a_pipe_prints_plain_lines(
    capsys: pytest.CaptureFixture[str], server: ThreadedServer
) -> None:
    code, out, _ = run_cli(capsys, "get", "--live", "-n", "2", server.url("/hello"))
    assert code == 0
    assert "\x1b" not in out
    assert out.splitlines()[0].startswith("[1/2] 200 ")
    assert summary_value(out, "status codes:") == "200 x2"


def test_get_live_on_a_terminal_draws_the_live_view(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = FakeTTY()
    monkeypatch.setattr(sys, "stdout", terminal)
    code = main(["get", "--live", "-n", "3", "-c", "1", server.url("/hello")])
    out = terminal.getvalue()
    assert code == 0
    assert "\x1b[" in out  # cursor movement and colours: the rich live view
    assert "req/s" in out and "3/3" in out
    assert "connections: 1 opened, 2 reused" in out


def test_get_live_without_rich_names_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)
    code, out, err = run_cli(capsys, "get", "--live", "http://127.0.0.1:1/")
    assert code == 2
    assert "--live needs the 'rich' package: pip install 'glasspool[cli]'" in err
    assert out == ""


def live_console(file: io.StringIO | None = None) -> Console:
    return Console(
        file=file or io.StringIO(),
        force_terminal=True,
        width=120,
        record=True,
        color_system="standard",
    )


async def test_live_view_shows_hosts_progress_and_summary() -> None:
    raw_out = io.StringIO()
    console = live_console(raw_out)
    async with DemoServer() as srv:
        opts = GetOptions((srv.url("/hello"),), repeat=6, concurrency=2)
        summary = await run_get(opts, LiveReporter(console))
    assert summary.responses == 6
    assert "\x1b[" in raw_out.getvalue()  # drawn as a live terminal view
    text = console.export_text()
    header = ("host", "in use", "idle", "connecting", "waiting", "opened", "reused", "req/s")
    assert all(column in text for column in header)
    row = [line for line in text.splitlines() if line.strip().startswith(srv.url(""))][-1]
    assert row.split()[1:7] == ["0", "2", "0", "0", "2", "4"]  # in use .. reused, last frame
    assert "6/6" in text and "ETA" in text
    assert "connections: 2 opened, 4 reused" in text


async def test_live_view_shows_waiting_requests_while_they_wait() -> None:
    reporter = LiveReporter(live_console())
    async with DemoServer() as srv:
        opts = GetOptions((srv.url("/hold"),), repeat=3, concurrency=3, limit_per_host=1)
        run = asyncio.create_task(run_get(opts, reporter))
        await srv.wait_held(1)
        frame = live_console()
        frame.print(reporter.render())
        srv.release_held()
        summary = await run
    text = frame.export_text()
    row = [line for line in text.splitlines() if line.strip().startswith(srv.url(""))]
    assert row[0].split()[1:7] == ["1", "0", "0", "2", "1", "0"]  # in use 1, waiting 2
    assert "0/3" in text
    assert summary.responses == 3


# -- the loopback server ------------------------------------------------------------------


async def test_demo_server_rejects_what_it_does_not_serve() -> None:
    async with CountingDemoServer() as srv, glasspool.Client() as client:
        answers = {
            path: await client.get(srv.url(path))
            for path in ("/nope", "/bytes/x", "/status/99", "/delay/999999")
        }
        posted = await client.post(srv.url("/hello"), content=b"")
    assert {p: r.status for p, r in answers.items()} == {
        "/nope": 404,
        "/bytes/x": 400,
        "/status/99": 400,
        "/delay/999999": 400,
    }
    assert answers["/nope"].text == "no route /nope\n"
    assert posted.status == 405
    assert srv.requests == 5


# -- summary arithmetic -------------------------------------------------------------------


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="percentile of no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="got 0"):
        percentile([1.0], 0)


def test_summary_counts_statuses_bytes_and_errors() -> None:
    results = [
        Result(0, "u", 200, 10, 0.001),
        Result(1, "u", 500, 5, 0.003),
        Result(2, "u", None, 0, 0.2, "ReadTimeout", "slow"),
        Result(3, "u", None, 0, 0.2, "ReadTimeout", "slower"),
        Result(4, "u", None, 0, 0.1, "ConnectError", "refused"),
    ]
    stats = glasspool.PoolStats(10, 5, 0, 0, 0, 0, 0, 10, HostsView())
    lines = summary_lines(summarize(results, stats, 0.5))
    assert lines[0] == "summary: 5 requests in 500.0 ms (10.0 req/s): 2 responses, 3 errors"
    assert lines[1] == "status codes: 200 x1, 500 x1"
    assert lines[2] == "latency: p50 1.00 ms, p90 3.00 ms, p99 3.00 ms (2 responses)"
    assert lines[4] == "bytes: 15 body bytes received"
    assert lines[5:] == [
        "errors: ConnectError x1 (e.g. refused)",
        "errors: ReadTimeout x2 (e.g. slow)",
    ]
