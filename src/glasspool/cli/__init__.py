"""The ``glasspool`` command line: ``glasspool demo`` and ``glasspool get``.

``main(argv)`` is what the ``glasspool`` console script and ``python -m glasspool`` call.
Exit codes: 0 success; 1 a request failed (a network, timeout or protocol error) or the
demo broke; 2 a usage error (bad option, unusable output path, missing optional
dependency); 22 with ``get --fail``, a response had a 4xx or 5xx status (curl's code);
130 interrupted; 141 stdout was closed early (a pipe into ``head``), quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .._defaults import DEFAULT_LIMIT, DEFAULT_LIMIT_PER_HOST, UNSET, default_limit_per_host
from .._version import __version__
from ._compare import aiohttp_missing, print_comparison, run_aiohttp
from ._demo import DemoError, run_demo
from ._get import (
    DEFAULT_NAMESPACE,
    GetOptions,
    PlainReporter,
    QuietReporter,
    Reporter,
    UsageError,
    check_output_paths,
    check_urls,
    run_get,
)
from ._summary import summary_json
from ._text import Printer, wants_color

__all__ = ["build_parser", "main"]

_DESCRIPTION = "glasspool: an asyncio HTTP client built around a pool you can see through."
_EPILOG = (
    "Run 'glasspool demo' to see why aiohttp's count \"hung at 4\" explained, and "
    "'glasspool get --help' "
    "for the fetch options. Exit codes: 0 ok, 1 a request failed, 2 usage error, 22 an "
    "HTTP error status with --fail, 130 interrupted, 141 output pipe closed."
)
_RICH_MISSING = "--live needs the 'rich' package: pip install 'glasspool[cli]'"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _per_host(text: str) -> int | None:
    return None if text.lower() == "none" else _positive_int(text)


def _resolve_per_host(args: argparse.Namespace) -> int | None:
    """``--limit-per-host``, its default capped at ``--limit``; an explicit value above it
    is a usage error naming both."""
    if args.limit_per_host is UNSET:  # argparse never converts a non-str default
        return default_limit_per_host(int(args.limit))
    per_host: int | None = args.limit_per_host
    if per_host is not None and per_host > args.limit:
        raise UsageError(f"--limit-per-host {per_host} is greater than --limit {args.limit}")
    return per_host


def _namespace(text: str) -> str:
    if not text or "{" in text or "}" in text:
        raise argparse.ArgumentTypeError(f"expected a non-empty name without braces, got {text!r}")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value:g}")
    return value


_GET_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("-n", "--repeat"),
        {"type": _positive_int, "default": 1, "metavar": "N",
         "help": "request each URL N times (default 1)"},
    ),
    (
        ("-c", "--concurrency"),
        {"type": _positive_int, "default": 10, "metavar": "N",
         "help": "at most N requests in flight (default 10)"},
    ),
    (
        ("--limit",),
        {"type": _positive_int, "default": DEFAULT_LIMIT, "metavar": "N",
         "help": f"open connections overall, idle included (default {DEFAULT_LIMIT})"},
    ),
    (
        ("--limit-per-host",),
        {"type": _per_host, "default": UNSET, "metavar": "N",
         "help": "open connections per host, idle included; 'none' = no limit (default: "
         f"{DEFAULT_LIMIT_PER_HOST}, or --limit if that is lower)"},
    ),
    (
        ("--timeout",),
        {"type": _seconds, "metavar": "SECONDS",
         "help": "connect, read, write and pool-wait timeout, each (default: connect 10, "
         "read 30, write 30, pool none)"},
    ),
    (
        ("-o", "--output"),
        {"type": Path, "metavar": "PATH",
         "help": "write bodies: to the file PATH for a single request, else into the "
         "directory PATH as <n>-<host>_<port>_<path>"},
    ),
    (
        ("-i", "--include"),
        {"action": "store_true",
         "help": "write the status line and headers before the body (to stdout, or into "
         "the -o file)"},
    ),
    (
        ("--fail",),
        {"action": "store_true",
         "help": "exit with status 22 if a response has a 4xx or 5xx status (as curl -f)"},
    ),
    (
        ("--json",),
        {"action": "store_true",
         "help": "print only the summary, as JSON, on stdout (no body, no per-request lines)"},
    ),
    (
        ("--live",),
        {"action": "store_true",
         "help": "live view on a terminal: a row per host (in use, idle, connecting, "
         "waiting, opened, reused, req/s, and fleet with --redis) and a progress bar with "
         "ETA; needs glasspool[cli]"},
    ),
    (
        ("--timeline",),
        {"type": Path, "metavar": "FILE",
         "help": "write an HTML timeline: a lane per connection, a bar per request"},
    ),
    (
        ("--trace",),
        {"type": Path, "metavar": "FILE",
         "help": "write the pool's events as Chrome trace JSON (open it in ui.perfetto.dev): "
         "a process per host, a thread per connection"},
    ),
    (
        ("--redis",),
        {"metavar": "URL",
         "help": "share per-host limits with other workers through the Redis at URL "
         "(glasspool.RedisLimits); needs glasspool[redis]"},
    ),
    (
        ("--shared-limit",),
        {"type": _positive_int, "metavar": "N",
         "help": "with --redis: connections per host name across every worker (default: "
         "--limit-per-host)"},
    ),
    (
        ("--namespace",),
        {"type": _namespace, "metavar": "NS",
         "help": "with --redis: the Redis key prefix; workers sharing limits use the same "
         "one (default glasspool)"},
    ),
)  # fmt: skip


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="answer the 'hung at 4' question on loopback servers, explaining every pool event",
        description=(
            "Explain in aiohttp's terms why TCPConnector(limit=25, limit_per_host=5) "
            "showed 'available' stuck at 4, then start two loopback HTTP servers, replay the "
            "same requests with "
            "Client(limit=25, limit_per_host=5), and after each step print the pool events "
            "(one sentence each) and the public stats() table. Needs no network."
        ),
    )
    demo.add_argument(
        "--timeline", metavar="FILE", type=Path, help="also write an HTML timeline of the run"
    )
    demo.add_argument(
        "--trace",
        metavar="FILE",
        type=Path,
        help="also write the run's pool events as Chrome trace JSON (for ui.perfetto.dev)",
    )
    demo.add_argument(
        "--compare-aiohttp",
        action="store_true",
        help="run the same steps through aiohttp and print its private counters beside "
        "glasspool's public ones (needs aiohttp; exit code 2 without it)",
    )
    demo.set_defaults(handler=_cmd_demo)


def _add_get(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = sub.add_parser(
        "get",
        help="GET URLs (repeated, concurrently) and report what the pool did",
        description=(
            "GET every URL (each --repeat times) with at most --concurrency requests in "
            "flight, then print a summary: status codes, latency p50/p90/p99, connections "
            "opened, reused and closed (with the reasons), body bytes, errors by exception "
            "class. A single request (one URL, no -o) prints its body on stdout, like curl, "
            "and the report on stderr. Without --live, or when stdout is not a terminal, "
            "output is plain lines without control codes."
        ),
    )
    get.add_argument("urls", nargs="+", metavar="URL", help="absolute http:// or https:// URL")
    for flags, options in _GET_OPTIONS:
        get.add_argument(*flags, **options)
    get.set_defaults(handler=_cmd_get)


def build_parser() -> argparse.ArgumentParser:
    """The ``glasspool`` argument parser with its ``demo`` and ``get`` subcommands."""
    parser = argparse.ArgumentParser(prog="glasspool", description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"glasspool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_get(sub)
    return parser


def _cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.compare_aiohttp and (missing := aiohttp_missing()) is not None:
        err.write(f"glasspool demo: {missing}\n")
        return 2
    try:
        check_output_paths(args.timeline, args.trace, None, 0)
    except UsageError as exc:
        err.write(f"glasspool demo: {exc}\n")
        return 2
    printer = Printer(out)

    async def demo() -> None:
        outcome = await run_demo(printer, args.timeline, args.trace)
        if args.compare_aiohttp:
            aio = await run_aiohttp(outcome.concurrent)
            print_comparison(printer, outcome.snapshots, aio, outcome.names)

    try:
        asyncio.run(demo())
    except DemoError as exc:
        err.write(f"glasspool demo: {exc}\n")
        return 1
    return 0


def _check_fleet_flags(args: argparse.Namespace) -> None:
    """``--shared-limit`` and ``--namespace`` mean nothing without ``--redis``."""
    if args.redis is not None:
        return
    for flag, value in (("--shared-limit", args.shared_limit), ("--namespace", args.namespace)):
        if value is not None:
            raise UsageError(f"{flag} {value} needs --redis URL (shared limits live in Redis)")


def _get_options(args: argparse.Namespace) -> GetOptions:
    """The parsed ``get`` arguments as :class:`GetOptions`; raises :class:`UsageError`."""
    check_urls(tuple(args.urls))
    _check_fleet_flags(args)
    check_output_paths(args.timeline, args.trace, args.output, len(args.urls) * args.repeat)
    return GetOptions(
        urls=tuple(args.urls),
        repeat=args.repeat,
        concurrency=args.concurrency,
        limit=args.limit,
        limit_per_host=_resolve_per_host(args),
        timeout=args.timeout,
        output=args.output,
        live=args.live,
        timeline=args.timeline,
        trace=args.trace,
        redis_url=args.redis,
        shared_limit=args.shared_limit,
        namespace=args.namespace or DEFAULT_NAMESPACE,
        include=args.include,
        fail=args.fail,
        json=args.json,
        stdout=getattr(sys.stdout, "buffer", None),
    )


def _cmd_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        opts = _get_options(args)
        reporter: Reporter
        if opts.json:
            reporter = QuietReporter(Printer(err, color=False))
        elif opts.body_to_stdout:  # stdout carries the body: the report goes to stderr
            reporter = PlainReporter(Printer(err, color=False))
        else:
            reporter = PlainReporter(Printer(out, color=False))
            if opts.live:
                reporter = _live_reporter(out) or reporter
        summary = asyncio.run(run_get(opts, reporter))
    except UsageError as exc:
        err.write(f"glasspool get: {exc}\n")
        return 2
    if opts.json:
        out.write(json.dumps(summary_json(summary), indent=2) + "\n")
        out.flush()
    if summary.failed:
        return 1
    if opts.fail and any(code >= 400 for code in summary.statuses):
        return 22
    return 0


def _live_reporter(out: TextIO) -> Reporter | None:
    """The rich live view on a terminal; ``None`` (plain lines) when ``out`` is not one.

    Raises:
        UsageError: rich is not installed.
    """
    try:
        from rich.console import Console

        from ._live import LiveReporter
    except ImportError:
        raise UsageError(_RICH_MISSING) from None
    if not wants_color(out):
        return None
    return LiveReporter(Console(file=out))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``glasspool`` command line.

    Args:
        argv: the arguments after the program name; ``None`` = ``sys.argv[1:]``.

    Returns:
        The exit code (see the module docstring); ``--help`` and ``--version`` return 0.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.handler(args, sys.stdout, sys.stderr))
    except KeyboardInterrupt:
        sys.stderr.write("glasspool: interrupted\n")
        return 130
    except BrokenPipeError:
        return _stdout_closed()
    except BaseExceptionGroup as group:  # a worker wrote into the closed pipe
        rest = group.subgroup(lambda e: not isinstance(e, BrokenPipeError | BaseExceptionGroup))
        if rest is not None:
            raise
        return _stdout_closed()


def _stdout_closed() -> int:
    """The reader of stdout went away (``glasspool get ... | head``): end quietly.

    stdout is pointed at /dev/null so the interpreter's final flush cannot fail again, as
    the Python docs advise for SIGPIPE; 141 is what a tool killed by SIGPIPE returns.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 141
