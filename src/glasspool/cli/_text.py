"""Plain-text output for the CLI: a line printer that styles only real terminals.

The ``stats()`` table is ``PoolStats.table()``, the one renderer of it.
"""

from __future__ import annotations

import os
import textwrap
from typing import Final, TextIO

__all__ = ["Printer", "wants_color"]

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
