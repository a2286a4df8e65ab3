"""The ``glasspool get --live`` view: a rich table per host and a progress bar with an ETA.

With shared limits (``--redis``) the table has a ``fleet`` column: fleet-wide slots in use
over the shared limit, and this worker's leases.

Needs ``rich`` (the ``glasspool[cli]`` extra). Refreshed by an asyncio task ten times a
second (never from another thread, so ``stats()`` is read on the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Final

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .._events import PoolEvent
from .._pool.asyncio import Pool
from .._pool.key import PoolKey
from ._summary import Result, fleet_cell

__all__ = ["FLEET_COLUMN", "HOST_COLUMNS", "LiveReporter"]

HOST_COLUMNS: Final = ("host", "in use", "idle", "connecting", "waiting", "opened", "reused")
FLEET_COLUMN: Final = "fleet"  # last, only with shared limits: "2/3 (1 mine)"
REFRESH_S: Final = 0.1


class LiveReporter:
    """Draws the live view on ``console`` while requests run, then the summary.

    Args:
        console: a rich console (a terminal; tests pass ``Console(record=True, ...)``).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]requests"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,
        )
        self._task: TaskID | None = None
        self._pool: Pool | None = None
        self._done: Counter[PoolKey] = Counter()
        self._closed: Counter[str] = Counter()  # close reasons
        self._start = time.perf_counter()
        self._live = Live(
            console=console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            get_renderable=self.render,
        )
        self._ticker: asyncio.Task[None] | None = None
        self._listening = False

    def started(self, pool: Pool, total: int) -> None:
        """Start drawing: listen to ``pool`` and refresh every 0.1 s."""
        self._pool = pool
        self._start = time.perf_counter()
        self._task = self.progress.add_task("requests", total=total)
        pool.add_listener(self._on_event)
        self._listening = True
        self._live.start(refresh=True)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def _on_event(self, event: PoolEvent) -> None:
        if event.kind == "released":
            self._done[event.key] += 1
        elif event.kind == "closed":
            self._closed[event.reason or "unknown"] += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            self._live.refresh()

    def result(self, result: Result) -> None:
        """Advance the progress bar by one request."""
        if self._task is not None:
            self.progress.advance(self._task)

    def render(self) -> Group:
        """The table (one row per host) above the progress bar.

        With shared limits on (a host has a ``shared_limit``), a last column ``fleet``
        shows the fleet-wide slots in use / the shared limit, and this worker's leases.
        """
        stats = self._pool.stats() if self._pool is not None else None
        hosts = stats.hosts if stats is not None else {}
        fleet = any(h.shared_limit is not None for h in hosts.values())
        table = Table(box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        table.add_column("host", no_wrap=True, min_width=max([4] + [len(str(k)) for k in hosts]))
        for name in (*HOST_COLUMNS[1:], "req/s", *([FLEET_COLUMN] if fleet else [])):
            table.add_column(name, justify="right", no_wrap=True)
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        if stats is not None:
            title = f"pool: {stats.open}/{stats.limit} open, {stats.waiting} waiting"
            if self._closed:
                title += "; closed: " + ", ".join(
                    f"{reason} x{n}" for reason, n in self._closed.most_common()
                )
            table.title = title
            for key, h in stats.hosts.items():
                cells = (h.in_use, h.idle, h.connecting, h.waiting, h.opened, h.reused)
                rate = f"{self._done[key] / elapsed:.1f}"
                extra = [fleet_cell(h)] if fleet else []
                table.add_row(str(key), *(str(c) for c in cells), rate, *extra)
        return Group(table, self.progress)

    async def finished(self, lines: list[str]) -> None:
        """Draw the last frame, stop, and print the summary lines below it. Idempotent."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        if self._live.is_started:
            self._live.refresh()
            self._live.stop()
        if self._pool is not None and self._listening:
            self._pool.remove_listener(self._on_event)
            self._listening = False
        for line in lines:
            self.note(line)

    def note(self, line: str) -> None:
        """Print one plain line (no markup, no highlighting) below the view."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
