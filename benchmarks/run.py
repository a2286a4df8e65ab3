"""Side-by-side benchmark of glasspool, aiohttp, httpx and a minimal reference client.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/run.py --help``). It starts a
private nginx (see ``nginx_bench.py``), pins nginx and the clients to different CPUs with
``taskset`` when there are two, and runs every (client, scenario, round) in a fresh Python
process (``clients.py``), rotating the client order each round. Each figure printed is the
median over the rounds; the ratio column divides each client's headline figure by
glasspool's from the same invocation.

How things are counted:

- *latency* is per request, from the call to the last body byte, pool wait included.
- *conns opened* is the growth of nginx's ``stub_status`` ``accepts`` counter over the run
  (minus the reading itself), the same for every client, warm-up included; glasspool's own
  ``pool.stats()`` count is kept in the JSON as ``client_opened``.
- *CPU us/req* is the worker's user + system CPU time over the measured phase divided by
  the requests: the figure least disturbed by other work on the machine.
- *peak RSS* is the worker process's ``ru_maxrss`` (interpreter and imports included).
- *memory* is RSS after N connections are open and idle (tasks done, ``gc.collect()``)
  minus RSS before, divided by the sockets the process then holds.
- *wrk* is the server's ceiling: ``wrk -t1 -cN`` on the same nginx, one URL, no pool queue.

Nothing here is collected by pytest, and nothing talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nginx_bench
from nginx_bench import BODY_SIZES, NginxServer

CLIENTS_PY = Path(__file__).with_name("clients.py")
ALL_CLIENTS = ("glasspool", "aiohttp", "httpx", "httpx-glasspool", "reference", "wrk")
BASELINE = "glasspool"
_MIB = 1024 * 1024
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
#: A run slower than this is not repeated (httpx needs 1.5-2.5 min to hold 1,000 connections).
SLOW_RUN_S = 30.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark scenario.

    Attributes:
        name: short name used by ``--scenarios`` and in the JSON.
        title: the table heading.
        kind: ``"load"`` or ``"memory"``.
        path: the file requested (a key of ``BODY_SIZES``).
        hosts: how many stand-in hosts (nginx ports) requests rotate over.
        concurrency: tasks (load) or connections per host (memory).
        limit: the clients' overall connection limit.
        limit_per_host: the clients' per-host limit, or None.
        max_requests: measured request cap (the time cap is ``--seconds``).
        warmup: requests before measuring.
        unit: the headline figure: ``req/s``, ``MiB/s`` or ``KiB/conn``.
        wrk_connections: wrk's ``-c`` for this scenario, or None for no wrk row.
    """

    name: str
    title: str
    kind: str
    path: str
    hosts: int
    concurrency: int
    limit: int
    limit_per_host: int | None
    max_requests: int
    warmup: int
    unit: str
    wrk_connections: int | None


SCENARIOS = (
    Scenario("c1", "C=1 sequential on one keep-alive connection, 13 B body, limit=1",
             "load", "/13b", 1, 1, 1, None, 200_000, 200, "req/s", 1),
    Scenario("c64", "C=64 tasks, limit=100, 13 B body",
             "load", "/13b", 1, 64, 100, None, 300_000, 640, "req/s", 64),
    Scenario("c256", "C=256 tasks over 4 hosts, limit=16, limit_per_host=4, 13 B body",
             "load", "/13b", 4, 256, 16, 4, 300_000, 512, "req/s", 16),
    Scenario("body64k", "C=64 tasks, limit=100, 64 KiB body",
             "load", "/64k", 1, 64, 100, None, 100_000, 128, "MiB/s", 64),
    Scenario("body1m", "C=64 tasks, limit=100, 1 MiB body",
             "load", "/1m", 1, 64, 100, None, 10_000, 64, "MiB/s", 64),
    Scenario("memory", "RSS per idle keep-alive connection, {per_host} per host x 4 hosts",
             "memory", "/13b", 4, 250, 1000, 250, 0, 0, "KiB/conn", None),
    Scenario("waiters", "C=10,000 tasks over 1,000 hosts, limit=1000, limit_per_host=1, "
             "13 B body (9 waiters queued per host)",
             "load", "/13b", 1000, 10_000, 1000, 1, 200_000, 10_000, "req/s", None),
)  # fmt: skip
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


@dataclass(frozen=True, slots=True)
class Options:
    """Parsed command line."""

    rounds: int
    quick: bool
    seconds: float
    wrk_seconds: int
    clients: tuple[str, ...]
    scenarios: tuple[Scenario, ...]
    uvloop: bool
    json_path: Path | None
    pin: bool
    tune_allocator: bool = False


def _csv(value: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in items if v not in known]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    return items


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The options, with quick-mode defaults applied.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per client (default 3)")
    parser.add_argument("--quick", action="store_true", help="short runs, 200 idle conns")
    parser.add_argument("--seconds", type=float, help="time cap per load run (default 2.5)")
    parser.add_argument(
        "--clients", default=",".join(ALL_CLIENTS), help=f"any of {','.join(ALL_CLIENTS)}"
    )
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIO_NAMES), help=f"any of {','.join(SCENARIO_NAMES)}"
    )
    parser.add_argument("--uvloop", action="store_true", help="run the clients on uvloop")
    parser.add_argument("--json", dest="json_path", type=Path, help="also save results here")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset")
    parser.add_argument(
        "--tune-allocator",
        action="store_true",
        help="glasspool's worker calls glasspool.tune_allocator() before its client (the "
        "other clients keep glibc's defaults; for all of them alike, set MALLOC_* instead)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    try:
        clients = _csv(args.clients, ALL_CLIENTS, "client")
        names = _csv(args.scenarios, SCENARIO_NAMES, "scenario")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 2.5)
    if not 0 < seconds <= 60:
        parser.error(f"--seconds must be in (0, 60], got {seconds}")
    scenarios = tuple(s for s in SCENARIOS if s.name in names)
    return Options(args.rounds, args.quick, seconds, 1 if args.quick else 5, clients,
                   scenarios, args.uvloop, args.json_path, args.pin,
                   args.tune_allocator)  # fmt: skip


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True, slots=True)
class Placement:
    """Where things run: the CPU for nginx and the CPU for clients (None: not pinned)."""

    server_cpu: int | None
    client_cpu: int | None

    def prefix(self) -> list[str]:
        """The ``taskset`` prefix for a client-side command."""
        return [] if self.client_cpu is None else ["taskset", "-c", str(self.client_cpu)]


def _placement(pin: bool) -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return Placement(None, None)
    return Placement(cpus[0], cpus[1])


def _memory_per_host(opts: Options, scenario: Scenario) -> int:
    return 50 if opts.quick else scenario.concurrency


def _spec(opts: Options, scenario: Scenario, client: str, server: NginxServer) -> dict[str, Any]:
    """The ``clients.WorkSpec`` JSON for one run."""
    memory = scenario.kind == "memory"
    per_host = _memory_per_host(opts, scenario) if memory else scenario.concurrency
    return {
        "client": client,
        "kind": scenario.kind,
        "urls": [server.url(scenario.path, i) for i in range(scenario.hosts)],
        "concurrency": per_host,
        "limit": per_host * scenario.hosts if memory else scenario.limit,
        "limit_per_host": per_host if memory else scenario.limit_per_host,
        "requests": scenario.max_requests,
        "max_seconds": opts.seconds,
        "warmup": scenario.warmup,
        "expected_size": BODY_SIZES[scenario.path],
        "status_url": server.status_url,
        "uvloop": opts.uvloop,
        "tune_allocator": opts.tune_allocator and client == "glasspool",
    }


def _worker_env() -> dict[str, str]:
    """The environment for a worker: ours without proxy variables (loopback only)."""
    proxies = {*_PROXY_VARS, *(v.upper() for v in _PROXY_VARS)}
    return {k: v for k, v in os.environ.items() if k not in proxies}


def _run_worker(spec: dict[str, Any], where: Placement, timeout_s: float) -> dict[str, Any]:
    """Run one client in a fresh process; return its JSON result (or an error record)."""
    argv = [*where.prefix(), sys.executable, str(CLIENTS_PY), "--spec", json.dumps(spec)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env=_worker_env()
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"worker killed after {timeout_s:.0f}s"}
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.strip()[-600:] or "(no output)"
        return {"status": "error", "reason": f"worker exit {done.returncode}: {tail}"}
    return result


def _run_wrk(
    opts: Options, scenario: Scenario, server: NginxServer, where: Placement
) -> dict[str, Any]:
    connections = scenario.wrk_connections or 1
    try:
        wrk = nginx_bench.run_wrk(
            server.url(scenario.path), connections, opts.wrk_seconds, where.client_cpu
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"status": "error", "reason": str(exc)}
    return {"status": "ok", **asdict(wrk)}


def _headline(scenario: Scenario, result: dict[str, Any]) -> None:
    """Add ``req_per_s``, ``mib_per_s`` and ``value`` (the headline figure) to ``result``."""
    if scenario.kind == "memory":
        result["value"] = result["kib_per_conn"]
        return
    if "requests_per_s" in result:  # wrk
        result["req_per_s"] = result["requests_per_s"]
    else:
        result["req_per_s"] = result["requests"] / result["elapsed_s"]
    result["mib_per_s"] = result["req_per_s"] * BODY_SIZES[scenario.path] / _MIB
    result["value"] = result["mib_per_s"] if scenario.unit == "MiB/s" else result["req_per_s"]


def run_once(
    opts: Options, scenario: Scenario, client: str, server: NginxServer, where: Placement
) -> dict[str, Any]:
    """Run one (client, scenario) and count the connections nginx accepted meanwhile.

    Args:
        opts: the options.
        scenario: what to run.
        client: a name from ``ALL_CLIENTS``.
        server: the running nginx.
        where: CPU placement.

    Returns:
        The worker's (or wrk's) result plus ``server_opened``, ``wall_s`` and headline
        figures; ``status`` is ``ok``, ``unavailable`` or ``error`` (with ``reason``).
    """
    before = nginx_bench.read_status(server.status_url).accepts
    start = time.monotonic()
    if client == "wrk":
        result: dict[str, Any] = _run_wrk(opts, scenario, server, where)
    else:
        spec = _spec(opts, scenario, client, server)
        result = _run_worker(spec, where, timeout_s=2 * opts.seconds + 240.0)
    result["wall_s"] = time.monotonic() - start
    after = nginx_bench.read_status(server.status_url).accepts
    # Minus the "after" reading's own connection, and the memory worker's own reading.
    result["server_opened"] = after - before - 1 - (scenario.kind == "memory")
    if result.get("status") == "ok":
        _headline(scenario, result)
    return result


def _progress(rnd: int, opts: Options, scenario: Scenario, client: str, r: dict[str, Any]) -> None:
    head = f"[round {rnd + 1}/{opts.rounds}] {scenario.name:<8} {client:<10}"
    if r.get("status") != "ok":
        print(f"{head} {r.get('status')}: {r.get('reason')}", file=sys.stderr, flush=True)
        return
    extra = "" if scenario.kind == "memory" else f"  p99 {r['p99_ms']:.2f} ms"
    if r["wall_s"] > SLOW_RUN_S:
        extra += f"  [over {SLOW_RUN_S:.0f} s: not repeated]"
    print(
        f"{head} {r['value']:>12,.1f} {scenario.unit}{extra}  ({r['wall_s']:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _clients_for(opts: Options, scenario: Scenario) -> tuple[str, ...]:
    if scenario.wrk_connections is None:
        return tuple(c for c in opts.clients if c != "wrk")
    return opts.clients


def run_all(opts: Options, server: NginxServer, where: Placement) -> list[dict[str, Any]]:
    """Run every round of every scenario for every client, rotating the client order.

    A client that cannot be imported is skipped for the rest of the invocation; a client
    whose run fails, or takes longer than ``SLOW_RUN_S``, is not run again in that scenario
    (a slow run's single figure is kept). All of this is reported.

    Args:
        opts: the options.
        server: the running nginx.
        where: CPU placement.

    Returns:
        One record per attempted run, with ``round``, ``scenario`` and ``client`` added.
    """
    records: list[dict[str, Any]] = []
    unavailable: set[str] = set()
    done_with: set[tuple[str, str]] = set()
    for rnd in range(opts.rounds):
        for index, scenario in enumerate(opts.scenarios):
            order = _clients_for(opts, scenario)
            shift = (rnd + index) % len(order)
            for client in order[shift:] + order[:shift]:
                if client in unavailable or (client, scenario.name) in done_with:
                    continue
                result = run_once(opts, scenario, client, server, where)
                result.update(round=rnd + 1, scenario=scenario.name, client=client)
                records.append(result)
                _progress(rnd, opts, scenario, client, result)
                if result["status"] == "unavailable":
                    unavailable.add(client)
                elif result["status"] != "ok" or result["wall_s"] > SLOW_RUN_S:
                    done_with.add((client, scenario.name))
    return records


# ---------------------------------------------------------------------------- summary

_MEDIAN_FIELDS = (
    "value", "req_per_s", "mib_per_s", "p50_ms", "p99_ms", "max_ms", "cpu_us_per_request",
    "peak_rss_kib",
    "server_opened", "client_opened", "kib_per_conn", "open_sockets", "server_idle",
    "rss_before_kib", "rss_after_kib", "open_s",
)  # fmt: skip


def summarise(opts: Options, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median every figure over the successful rounds of each (scenario, client).

    Args:
        opts: the options (for the scenario and client order).
        records: every run record.

    Returns:
        ``{scenario: {client: {figure: median, "runs": ok, "attempts": n}}}`` where each
        client also gets ``vs_glasspool`` (its ``value`` over glasspool's) when both ran.
    """
    summary: dict[str, dict[str, Any]] = {}
    for scenario in opts.scenarios:
        rows: dict[str, Any] = {}
        for client in _clients_for(opts, scenario):
            mine = [r for r in records if r["scenario"] == scenario.name and r["client"] == client]
            ok = [r for r in mine if r["status"] == "ok"]
            if not ok:
                continue
            row: dict[str, Any] = {"runs": len(ok), "attempts": len(mine)}
            for name in _MEDIAN_FIELDS:
                values = [r[name] for r in ok if r.get(name) is not None]
                if values:
                    row[name] = statistics.median(values)
            rows[client] = row
        base = rows.get(BASELINE, {}).get("value")
        for row in rows.values():
            row["vs_glasspool"] = row["value"] / base if base else None
        summary[scenario.name] = rows
    return summary


# ----------------------------------------------------------------------------- output


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Align a text table: first column left, the others right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _mib(kib: Any) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def _ratio(row: dict[str, Any]) -> str:
    ratio = row.get("vs_glasspool")
    return "-" if ratio is None else f"{ratio:.2f}x"


def _runs(row: dict[str, Any]) -> str:
    return f"{row['runs']}/{row['attempts']}"


def _load_table(scenario: Scenario, rows: dict[str, Any]) -> str:
    mib = scenario.unit == "MiB/s"
    headers = ["client", "req/s", *(["MiB/s"] if mib else []), "vs glasspool", "p50 ms",
               "p99 ms", "max ms", "max/p99", "CPU us/req", "peak RSS MiB", "conns opened",
               "runs"]  # fmt: skip
    lines = []
    for client, row in rows.items():
        spread = row["max_ms"] / row["p99_ms"] if row.get("p99_ms") else None
        lines.append([
            client, _num(row["req_per_s"], 0), *([_num(row["mib_per_s"])] if mib else []),
            _ratio(row), _num(row["p50_ms"], 2), _num(row["p99_ms"], 2),
            _num(row["max_ms"], 1), _num(spread, 1), _num(row.get("cpu_us_per_request"), 0),
            _mib(row.get("peak_rss_kib")),
            _num(row.get("server_opened"), 0), _runs(row),
        ])  # fmt: skip
    return _table(headers, lines)


def _memory_table(rows: dict[str, Any]) -> str:
    headers = ["client", "KiB/conn", "vs glasspool", "idle sockets", "nginx idle",
               "RSS before MiB", "RSS after MiB", "open time s", "conns opened",
               "peak RSS MiB", "runs"]  # fmt: skip
    lines = [
        [
            client, _num(row["kib_per_conn"], 1), _ratio(row), _num(row["open_sockets"], 0),
            _num(row.get("server_idle"), 0), _mib(row["rss_before_kib"]),
            _mib(row["rss_after_kib"]), _num(row.get("open_s"), 2),
            _num(row.get("server_opened"), 0), _mib(row.get("peak_rss_kib")), _runs(row),
        ]
        for client, row in rows.items()
    ]  # fmt: skip
    return _table(headers, lines)


def _notes(opts: Options, scenario: Scenario, rows: dict[str, Any]) -> list[str]:
    better = "lower" if scenario.kind == "memory" else "higher"
    notes = [f"vs glasspool: {scenario.unit} divided by glasspool's ({better} is better)."]
    if BASELINE not in rows:
        why = "see failures" if BASELINE in opts.clients else "not in --clients"
        notes.append(f"glasspool did not run here ({why}), so there are no ratios.")
    if any(row["runs"] < opts.rounds for row in rows.values()):
        notes.append(
            f"runs: successful/attempted; a run that failed or took over {SLOW_RUN_S:.0f} s "
            "is not repeated."
        )
    if "httpx" in rows and scenario.limit_per_host is not None:
        notes.append("httpx has no per-host limit: it ran with max_connections only.")
    if "wrk" in rows:
        notes.append(
            f"wrk: the server's ceiling, wrk -t1 -c{scenario.wrk_connections} "
            f"-d{opts.wrk_seconds}s on one URL, no client-side pool or queue."
        )
    if scenario.kind == "memory":
        notes.append("conns opened includes 4 warm-up connections made before the baseline.")
    return notes


def format_report(opts: Options, summary: dict[str, dict[str, Any]]) -> str:
    """Render one table per scenario, with its notes.

    Args:
        opts: the options.
        summary: from :func:`summarise`.

    Returns:
        The printable report.
    """
    parts = []
    for scenario in opts.scenarios:
        rows = summary.get(scenario.name, {})
        title = scenario.title.format(per_host=_memory_per_host(opts, scenario))
        parts.append(f"\n== {scenario.name}: {title} ==")
        if not rows:
            parts.append("(no client completed this scenario)")
            continue
        table = _memory_table(rows) if scenario.kind == "memory" else _load_table(scenario, rows)
        parts.append(table)
        parts.extend(f"  * {note}" for note in _notes(opts, scenario, rows))
    return "\n".join(parts)


def format_failures(records: list[dict[str, Any]]) -> str:
    """List every run that did not succeed, with its reason ("" when there are none)."""
    bad = [r for r in records if r["status"] != "ok"]
    lines = [
        f"  round {r['round']} {r['scenario']} {r['client']}: {r['status']}: {r.get('reason')}"
        for r in bad
    ]
    return "\nRuns that did not complete:\n" + "\n".join(lines) if lines else ""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> str:
    """The 1-minute load average over the CPU count: other work skews every figure."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def describe_setup(opts: Options, where: Placement) -> dict[str, Any]:
    """Everything needed to read (and reproduce) the figures.

    Args:
        opts: the options.
        where: CPU placement.

    Returns:
        A JSON-ready description of the machine, versions and settings.
    """
    packages = ("glasspool", "aiohttp", "httpx", "httptools", "uvloop")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        "python": platform.python_version(),
        "loop": "uvloop" if opts.uvloop else "asyncio",
        "allocator": "glasspool.tune_allocator() in glasspool's worker"
        if opts.tune_allocator
        else "glibc defaults (unless MALLOC_* is set)",
        "versions": {p: _version(p) for p in packages}
        | {
            "nginx": nginx_bench.nginx_version(),
            "wrk": nginx_bench.wrk_version(),
        },
        "pinning": "none (fewer than 2 CPUs, no taskset, or --no-pin)"
        if where.server_cpu is None
        else f"nginx on CPU {where.server_cpu}, clients and wrk on CPU {where.client_cpu}",
        "load_average_at_start": _load_average(),
        "rounds": opts.rounds,
        "seconds_per_load_run": opts.seconds,
        "wrk_seconds": opts.wrk_seconds,
        "clients": list(opts.clients),
        "scenarios": [s.name for s in opts.scenarios],
    }


def _print_setup(setup: dict[str, Any]) -> None:
    print("glasspool benchmark (medians over rounds; every run in a fresh process)")
    keys = ("date", "machine", "python", "loop", "allocator", "pinning", "rounds",
            "load_average_at_start")  # fmt: skip
    for key in keys:
        print(f"  {key}: {setup[key]}")
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in setup["versions"].items()))
    print(f"  load runs: {setup['seconds_per_load_run']} s cap each; wrk: {setup['wrk_seconds']} s")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the tables.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 when at least one run succeeded, 1 when none did, 2 on a setup error.
    """
    opts = parse_args(argv)
    if opts.uvloop and importlib.util.find_spec("uvloop") is None:
        print("--uvloop: uvloop is not installed (pip install 'glasspool[speed]')", file=sys.stderr)
        return 2
    where = _placement(opts.pin)
    setup = describe_setup(opts, where)
    _print_setup(setup)
    try:
        hosts = max([nginx_bench.HOST_PORTS, *(s.hosts for s in opts.scenarios)])
        with nginx_bench.start_nginx(where.server_cpu, host_ports=hosts) as server:
            records = run_all(opts, server, where)
    except RuntimeError as exc:
        print(f"benchmark setup failed: {exc}", file=sys.stderr)
        return 2
    summary = summarise(opts, records)
    setup["load_average_at_end"] = _load_average()
    print(format_report(opts, summary))
    print(format_failures(records) or "\nEvery run completed.")
    print(f"load average at end: {setup['load_average_at_end']} (other work skews the figures)")
    if opts.json_path is not None:
        document = {"setup": setup, "summary": summary, "runs": records}
        opts.json_path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nsaved {opts.json_path}")
    return 0 if any(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
