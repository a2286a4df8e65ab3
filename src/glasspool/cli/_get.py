"""``glasspool get``: fetch URLs (repeated, concurrently) and report what the pool did."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import yarl

from .._defaults import DEFAULT_LIMIT, DEFAULT_LIMIT_PER_HOST
from .._events import PoolEvent
from .._exceptions import GlasspoolError
from .._fleet import RedisLimits
from .._pool.asyncio import Pool
from .._redact import redact_url, safe_text
from .._response import Response
from .._timeouts import Timeout
from ..client import Client
from ..timeline import Timeline
from ._summary import Result, Summary, duration, summarize, summary_lines
from ._text import Printer

__all__ = [
    "DEFAULT_NAMESPACE",
    "QuietReporter",
    "check_output_paths",
    "GetOptions",
    "PlainReporter",
    "Reporter",
    "UsageError",
    "fleet_limits",
    "output_plan",
    "run_get",
]

DEFAULT_NAMESPACE = "glasspool"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UsageError(Exception):
    """A command-line value cannot work (names the option and the value)."""


@dataclass(frozen=True, slots=True)
class GetOptions:
    """The parsed options of ``glasspool get`` (see ``glasspool get --help``)."""

    urls: tuple[str, ...]
    repeat: int = 1
    concurrency: int = 10
    limit: int = DEFAULT_LIMIT
    limit_per_host: int | None = DEFAULT_LIMIT_PER_HOST
    timeout: float | None = None
    output: Path | None = None
    live: bool = False
    timeline: Path | None = None
    trace: Path | None = None  # Chrome trace JSON of the pool's events
    redis_url: str | None = None  # shared limits over Redis when given
    shared_limit: int | None = None  # None: limit_per_host
    namespace: str = DEFAULT_NAMESPACE
    include: bool = False  # the status line and headers before the body (-i)
    fail: bool = False  # exit 22 on a 4xx/5xx status (--fail)
    json: bool = False  # the summary as JSON on stdout, nothing else there (--json)
    stdout: BinaryIO | None = None  # where a single body goes when no -o is given

    @property
    def body_to_stdout(self) -> bool:
        """Whether the body goes to stdout: one request, no ``-o``, no ``--json``/``--live``."""
        return (
            len(self.urls) * self.repeat == 1
            and self.output is None
            and not self.json
            and not self.live
        )

    def jobs(self) -> list[tuple[int, str]]:
        """Every request as ``(index, url)``: each URL once per round, ``repeat`` rounds."""
        order = [url for _ in range(self.repeat) for url in self.urls]
        return list(enumerate(order))


class Reporter(Protocol):
    """Where progress and the summary go (plain lines, or the live view)."""

    def started(self, pool: Pool, total: int) -> None:
        """The run starts: ``total`` requests on ``pool``."""

    def result(self, result: Result) -> None:
        """One request finished (or raised)."""

    async def finished(self, lines: list[str]) -> None:
        """The run is over (or failed: ``lines`` is empty); show the summary lines."""

    def note(self, line: str) -> None:
        """Show one more line after the summary."""


class PlainReporter:
    """One plain line per finished request, then the summary; never a control code."""

    def __init__(self, printer: Printer) -> None:
        self.printer = printer
        self.total = 0
        self.done = 0

    def started(self, pool: Pool, total: int) -> None:
        """Remember how many requests will come."""
        self.total = total

    def result(self, result: Result) -> None:
        """Print ``[3/10] 200 URL 13 B 1.20 ms`` (or the error)."""
        self.done += 1
        where = f"[{self.done}/{self.total}]"
        took = duration(result.latency_s)
        if result.error is not None:
            self.printer.line(f"{where} {result.error} {result.url} {took}: {result.message}")
        else:
            self.printer.line(f"{where} {result.status} {result.url} {result.nbytes} B {took}")

    async def finished(self, lines: list[str]) -> None:
        """Print the summary lines."""
        for line in lines:
            self.printer.line(line)

    def note(self, line: str) -> None:
        """Print one more line after the summary."""
        self.printer.line(line)


class QuietReporter:
    """Nothing per request and no summary lines (``--json`` prints the summary itself);
    notes go to ``printer`` (stderr)."""

    def __init__(self, printer: Printer) -> None:
        self.printer = printer

    def started(self, pool: Pool, total: int) -> None:
        """Nothing to show."""

    def result(self, result: Result) -> None:
        """Nothing to show."""

    async def finished(self, lines: list[str]) -> None:
        """Nothing to show."""

    def note(self, line: str) -> None:
        """Print the note."""
        self.printer.line(line)


def _check_file(flag: str, path: Path) -> None:
    """A file ``path`` can be written: not a directory, its directory exists and is
    writable, and an existing file is writable."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: the directory {parent} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path}: permission denied")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot create files in {parent} (permission denied)")


def check_output_paths(
    timeline: Path | None, trace: Path | None, output: Path | None, requests: int
) -> None:
    """Check every output path before any request is sent.

    Raises:
        UsageError: naming the option and the path: a directory where a file is needed, a
            file where a directory is needed, a missing parent directory, no permission.
    """
    for flag, path in (("--timeline", timeline), ("--trace", trace)):
        if path is not None:
            _check_file(flag, path)
    if output is None:
        return
    if requests == 1 and not output.is_dir():
        _check_file("-o", output)
        return
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: is a file, but {requests} responses need a directory")
    existing = output
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"-o {output}: cannot create files in {existing} (permission denied)")


def check_urls(urls: tuple[str, ...]) -> None:
    """Raise :class:`UsageError` naming the first URL that is not absolute http(s)."""
    for url in urls:
        shown = redact_url(url, quoted=True)
        try:
            parsed = yarl.URL(url)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"URL {shown} is not a valid URL: {safe_text(str(exc))}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UsageError(f"URL {shown} must be absolute http:// or https:// with a host")


def _slug(url: str) -> str:
    parsed = yarl.URL(url)
    text = _UNSAFE.sub("_", f"{parsed.host}_{parsed.port}{parsed.path}").strip("_")
    return text[:80] or "response"


def output_plan(output: Path | None, jobs: list[tuple[int, str]]) -> dict[int, Path]:
    """Where each body goes: ``output`` itself for a single request, else files in it.

    A single request writes the file ``output`` (unless it is an existing directory);
    several write ``output/<n>-<host>_<port>_<path>`` (the directory is created).

    Raises:
        UsageError: several requests but ``output`` is an existing file.
    """
    if output is None:
        return {}
    if len(jobs) == 1 and not output.is_dir():
        return {jobs[0][0]: output}
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: is a file, but {len(jobs)} responses need a directory")
    output.mkdir(parents=True, exist_ok=True)
    width = len(str(len(jobs)))
    return {i: output / f"{i + 1:0{width}d}-{_slug(url)}" for i, url in jobs}


def _head_bytes(response: Response) -> bytes:
    """The status line and header fields as received, for ``--include``."""
    lines = [
        f"HTTP/{response.http_version.removeprefix('HTTP/')} {response.status} "
        f"{response.reason_phrase}".rstrip()
    ]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


async def _drain(response: Response, target: Path | BinaryIO | None, include: bool = False) -> int:
    """Read the body to its end, writing it to ``target`` (a path, or an open binary
    stream such as stdout) if given, after the head with ``include``; return its size."""
    nbytes = 0
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(target.open("wb")) if isinstance(target, Path) else target
        if sink is not None and include:
            sink.write(_head_bytes(response))
        async for chunk in response.aiter_bytes():
            nbytes += len(chunk)
            if sink is not None:
                sink.write(chunk)
        if sink is not None:
            sink.flush()
    return nbytes


def _public_name(exc: BaseException) -> str:
    """The name of the nearest public class of ``exc`` (``SharedLimitsUnavailable`` for a
    private subclass such as ``_RedisUnreachable``)."""
    return next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))


async def _fetch(
    client: Client, index: int, url: str, target: Path | BinaryIO | None, include: bool = False
) -> Result:
    """GET ``url``, stream its body (to ``target`` if given), time it; never raises.

    The result holds ``url`` with any password replaced by ``***``, and the error message
    with control characters escaped: both are printed.
    """
    start = time.perf_counter()
    try:
        async with client.stream("GET", url) as response:
            nbytes = await _drain(response, target, include)
    except (GlasspoolError, OSError) as exc:
        took = time.perf_counter() - start
        shown = redact_url(url)
        return Result(index, shown, None, 0, took, _public_name(exc), safe_text(str(exc)))
    return Result(index, redact_url(url), response.status, nbytes, time.perf_counter() - start)


def fleet_limits(opts: GetOptions) -> RedisLimits | None:
    """The shared limits ``--redis`` asks for, or ``None`` without ``opts.redis_url``.

    The limit is ``opts.shared_limit``, else ``opts.limit_per_host``. Nothing connects to
    Redis here; the first new connection does.

    Returns:
        A new :class:`RedisLimits` (the caller closes it), or ``None``.

    Raises:
        UsageError: redis-py is missing (names the ``glasspool[redis]`` extra), there is no
            limit to share, or the URL is not a Redis URL.
    """
    if opts.redis_url is None:
        return None
    limit = opts.shared_limit or opts.limit_per_host
    if limit is None:
        raise UsageError("--redis needs --shared-limit N when --limit-per-host is none")
    try:
        return RedisLimits(opts.redis_url, namespace=opts.namespace, limit_per_host=limit)
    except ImportError:
        raise UsageError(
            "--redis needs redis-py, which is not installed: pip install 'glasspool[redis]'"
        ) from None
    except ValueError as exc:
        raise UsageError(f"--redis {redact_url(opts.redis_url)}: {safe_text(str(exc))}") from None


def _client(opts: GetOptions, shared: RedisLimits | None) -> Client:
    timeout = Timeout() if opts.timeout is None else Timeout(opts.timeout)
    return Client(
        limit=opts.limit,
        limit_per_host=opts.limit_per_host,
        timeout=timeout,
        shared_limits=shared,
    )


async def _run_jobs(
    client: Client, opts: GetOptions, targets: dict[int, Path | BinaryIO], reporter: Reporter
) -> list[Result]:
    """Run every job with ``opts.concurrency`` workers; return the results in job order."""
    jobs = opts.jobs()
    results: list[Result] = []
    pending = iter(jobs)

    async def worker() -> None:
        for index, url in pending:  # one shared iterator: each job is taken once
            result = await _fetch(client, index, url, targets.get(index), opts.include)
            results.append(result)
            reporter.result(result)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(opts.concurrency, len(jobs))):
            group.create_task(worker())
    return sorted(results, key=lambda r: r.index)


async def run_get(opts: GetOptions, reporter: Reporter) -> Summary:
    """Run every request of ``opts`` with at most ``opts.concurrency`` in flight.

    The summary is reported before the client closes (the live view's last frame still
    shows the idle connections); the timeline is written after, so its lanes end.

    Args:
        opts: the URLs and settings.
        reporter: told about the start, every result, the summary lines and notes.

    Returns:
        The summary.

    Raises:
        UsageError: ``-o`` cannot hold the bodies, or ``--redis`` cannot work (see
            :func:`fleet_limits`).
        OSError: the timeline or trace file could not be written.
    """
    shared = fleet_limits(opts)  # first: a missing extra must not leave an -o directory
    try:
        targets: dict[int, Path | BinaryIO] = dict(output_plan(opts.output, opts.jobs()))
        if opts.body_to_stdout and opts.stdout is not None:
            targets[0] = opts.stdout
        summary, timeline = await _run_client(opts, shared, targets, reporter)
    finally:
        if shared is not None:  # the client closed it already unless building it failed
            await shared.aclose()
    if timeline is not None and opts.timeline is not None:
        timeline.write_html(opts.timeline)
        reporter.note(f"timeline: written to {opts.timeline}")
    if timeline is not None and opts.trace is not None:
        timeline.write_trace(opts.trace)
        reporter.note(f"trace: written to {opts.trace}")
    return summary


async def _run_client(
    opts: GetOptions,
    shared: RedisLimits | None,
    targets: dict[int, Path | BinaryIO],
    reporter: Reporter,
) -> tuple[Summary, Timeline | None]:
    """Open the client, run the jobs, report the summary, close the client."""
    start = time.perf_counter()
    async with _client(opts, shared) as client:
        recording = opts.timeline is not None or opts.trace is not None
        timeline = Timeline(client.pool, title="glasspool get") if recording else None
        closed: Counter[str] = Counter()

        def count_closed(event: PoolEvent) -> None:
            if event.kind == "closed":
                closed[event.reason or "unknown"] += 1

        client.pool.add_listener(count_closed)
        reporter.started(client.pool, len(opts.jobs()))
        try:
            results = await _run_jobs(client, opts, targets, reporter)
        except BaseException:
            await reporter.finished([])  # stop the live view before the error propagates
            raise
        summary = summarize(results, client.pool.stats(), time.perf_counter() - start, dict(closed))
        await reporter.finished(summary_lines(summary))
    return summary, timeline
