"""Plain-text output for the CLI: a line printer that styles only real terminals, and the
``stats()`` table."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from typing import Final, TextIO

from .._pool.key import PoolKey
from .._stats import PoolStats

__all__ = ["COLUMNS", "Printer", "stats_table", "wants_color"]

COLUMNS: Final = ("open", "in use", "idle", "connecting", "waiting", "available")
WRAP: Final = 92
BOLD: Final = "\x1b[1m"
DIM: Final = "\x1b[2m"
RESET: Final = "\x1b[0m"


def wants_color(out: TextIO) -> bool:
    """Whether ``out`` is a terminal that should get control codes (honours NO_COLOR)."""
    isatty = getattr(out, "isatty", None)
    tty = bool(isatty()) if callable(isatty) else False
    return tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


class Printer:
    """Writes lines to ``out``; bold headings only when ``out`` is a terminal.

    Args:
        out: where to write (``sys.stdout``).
        color: force styling on or off; ``None`` asks :func:`wants_color`.
    """

    def __init__(self, out: TextIO, *, color: bool | None = None) -> None:
        self.out = out
        self.color = wants_color(out) if color is None else color

    def line(self, text: str = "") -> None:
        """Write one line."""
        self.out.write(text + "\n")

    def heading(self, text: str) -> None:
        """A blank line, then ``text`` in bold (underlined with ``=`` when plain)."""
        self.line()
        if self.color:
            self.line(f"{BOLD}{text}{RESET}")
        else:
            self.line(text)
            self.line("=" * min(len(text), WRAP))

    def dim(self, text: str) -> str:
        """``text`` dimmed on a terminal, unchanged otherwise."""
        return f"{DIM}{text}{RESET}" if self.color else text

    def wrapped(self, text: str, indent: int = 0, first: str | None = None) -> None:
        """Write ``text`` wrapped at 92 columns, indented (``first`` prefixes line one)."""
        pad = " " * indent
        lines = textwrap.wrap(
            text, WRAP, initial_indent=pad if first is None else first, subsequent_indent=pad
        )
        for item in lines or [pad]:
            self.line(item)


def stats_table(
    stats: PoolStats, names: Callable[[PoolKey], str | None] | None = None
) -> list[str]:
    """The public ``stats()`` snapshot as aligned text rows: all keys, then one per key.

    Args:
        stats: ``client.pool.stats()``.
        names: gives a key's short label ("host A") or ``None``; ``str(key)`` is always shown.

    Returns:
        The header row and one row per line of the table, without newlines.
    """
    rows: list[tuple[str, tuple[int, ...]]] = [
        (
            f"all hosts (limit {stats.limit})",
            (stats.open, stats.in_use, stats.idle, stats.connecting, stats.waiting),
        )
    ]
    avail = [stats.available]
    for key, h in stats.hosts.items():
        short = names(key) if names is not None else None
        label = f"{short} {key}" if short else str(key)
        limit = "" if h.limit is None else f" (limit {h.limit})"
        rows.append((label + limit, (h.open, h.in_use, h.idle, h.connecting, h.waiting)))
        avail.append(h.available)
    width = max(len(label) for label, _ in rows)
    head = "  ".join(f"{c:>{max(len(c), 4)}}" for c in COLUMNS)
    out = [f"{'':<{width}}  {head}"]
    for (label, counts), available in zip(rows, avail, strict=True):
        cells = [*counts, available]
        line = "  ".join(f"{v:>{max(len(c), 4)}}" for v, c in zip(cells, COLUMNS, strict=True))
        out.append(f"{label:<{width}}  {line}")
    return out
