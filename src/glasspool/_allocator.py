"""An opt-in, process-wide tuning of glibc's ``malloc`` for programs that receive many bodies.

glasspool never calls :func:`tune_allocator` itself: it changes how the C heap of the whole
program behaves, so the program decides. See "Bodies and the C heap" in
``docs/performance.md`` for the measurements behind it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

__all__ = ["tune_allocator"]

TUNE_BYTES: Final = 4 * 1024 * 1024
"""The block :func:`tune_allocator` allocates and frees: glibc's new mmap threshold."""

#: Settings that fix glibc's thresholds and turn its dynamic adjustment off.
_MALLOC_VARS: Final = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)
_TUNABLES: Final = ("mmap_threshold", "trim_threshold", "top_pad", "mmap_max")

# Process-wide, as the effect is: whether the block was allocated and freed already.
_tuned = False


def tune_allocator() -> bool:
    """Make glibc's ``malloc`` keep up to 8 MiB of freed heap for reuse, for the whole process.

    A client that receives many bodies of tens of KiB at once (64 responses of 64 KiB in
    flight, say) allocates and frees such blocks all the time. With glibc's defaults the
    heap's free top is handed back to the kernel whenever more than 128 KiB of it is free,
    so the heap shrinks and grows back over and over: a ``brk`` call every few responses,
    then a page fault and a zeroed page for every 4 KiB used again. This function allocates
    and frees one 4 MiB block, once per process. glibc answers that the way it answers
    any program that frees so large a block (its documented *dynamic mmap threshold*):
    from then on it serves blocks of up to 4 MiB from the heap instead of fresh mappings,
    and keeps up to 8 MiB of free heap instead of returning it.

    The trade-off is the whole program's, not only glasspool's: its resident memory stays
    up to about 8 MiB higher after a burst of allocations, and every large block (glasspool's
    or any other library's) up to 4 MiB now comes from the heap, where it can fragment it.
    In exchange, bodies of tens of KiB are received with far less work: with 64 responses
    of 64 KiB in flight, glasspool's benchmark measured about 1.6x the requests per second
    (13,146 -> 20,661). It does little for many 1 MiB bodies at once, which need more
    heap than this; set the ``MALLOC_*`` variables named below for that.

    It does nothing, and returns ``False``:

    - when ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
      ``MALLOC_MMAP_MAX_`` (or the same ``glibc.malloc.*`` settings in ``GLIBC_TUNABLES``)
      is set: glibc keeps those and turns its dynamic adjustment off (settings made with
      ``mallopt()`` in the program itself cannot be seen here, and turn it off too);
    - on a C library other than glibc (musl, macOS, Windows), whose allocators differ;
    - when it was called before in this process.

    Synchronous and cheap (two system calls; the block's pages are never touched).

    Returns:
        ``True`` if the block was allocated and freed by this call, else ``False``.
    """
    global _tuned
    if _tuned or not _is_glibc() or _thresholds_fixed(os.environ):
        return False
    _tuned = True
    block = bytes(TUNE_BYTES)  # calloc: freshly mapped zero pages, none of them touched
    del block
    return True


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # no confstr, or not glibc
        return False


def _thresholds_fixed(environ: Mapping[str, str]) -> bool:
    """Whether the environment sets a glibc malloc threshold (no dynamic adjustment then)."""
    if any(environ.get(name) for name in _MALLOC_VARS):
        return True
    tunables = environ.get("GLIBC_TUNABLES", "")
    return any(f"glibc.malloc.{name}=" in tunables for name in _TUNABLES)
