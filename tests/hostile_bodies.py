"""Compressed bodies that are cheap to send and expensive to decode, built in milliseconds.

Building a gzip layer of gigabytes would take seconds, so the big layers are multi-member
gzip: one member compresses a 5 MiB slab, and the layer repeats that member (a gzip body
of several members decodes to their concatenation, RFC 1952 section 2.2).
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib

__all__ = [
    "EMPTY_BLOCKS",
    "empty_blocks_layer",
    "gzip_zeros_members",
    "random_prefix_bomb",
    "slow_empty_body",
    "triple_gzip",
]

EMPTY_BLOCKS = bytes([0x02, 0x08, 0x20, 0x80, 0x00])
"""Four empty, non-final, fixed-Huffman deflate blocks (10 bits each): no output at all."""

_SLAB = 1 << 20  # copies of EMPTY_BLOCKS in one slab: 5 MiB
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@functools.cache
def _slab_member() -> bytes:
    """gzip of a 5 MiB slab of empty deflate blocks (about 7.5 KB)."""
    return gzip.compress(EMPTY_BLOCKS * _SLAB, 9)


def empty_blocks_layer(slabs: int, content: bytes) -> bytes:
    """gzip of one gzip member whose deflate stream is ``slabs`` x 5 MiB of empty blocks.

    Undoing the outer gzip gives that member (``slabs * 5 MiB`` bytes); undoing the
    member gives ``content``.
    """
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    tail = raw.compress(content) + raw.flush()  # starts on a byte boundary, as the slabs end
    trailer = struct.pack("<II", zlib.crc32(content), len(content) & 0xFFFFFFFF)
    return gzip.compress(_GZIP_HEADER) + _slab_member() * slabs + gzip.compress(tail + trailer)


@functools.cache
def triple_gzip(slabs: int) -> bytes:
    """``Content-Encoding: gzip, gzip, gzip``: a few KB whose middle layer is empty blocks.

    With 410 slabs (2 GiB of empty blocks) the body is under 5 KB and decodes to ``ok``.
    """
    return gzip.compress(empty_blocks_layer(slabs, b"ok"), 9)


@functools.cache
def slow_empty_body(slabs: int, prefix: int) -> bytes:
    """``Content-Encoding: gzip, gzip`` that decodes ``prefix`` random bytes, then nothing.

    The inner layer is ``slabs`` x 5 MiB of empty deflate blocks after a member of random
    bytes: every layer stays under the 1000:1 ratio guard (about 700:1 with 60 slabs and a
    100 KB prefix), so only time limits can stop it.
    """
    random = gzip.compress(gzip.compress(os.urandom(prefix), 1), 1)
    return random + empty_blocks_layer(slabs, b"")


@functools.cache
def gzip_zeros_members(count: int, size: int = 64 << 20) -> bytes:
    """``count`` gzip members of ``size`` zero bytes each (about 1/1000 of the size each)."""
    return gzip.compress(bytes(size), 9) * count


@functools.cache
def random_prefix_bomb(prefix: int, zeros: int) -> bytes:
    """One gzip member: ``prefix`` random bytes, then ``zeros`` zero bytes."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(os.urandom(prefix))]
    step = min(zeros, 16 << 20)
    parts += [comp.compress(bytes(step)) for _ in range(zeros // step)]
    return b"".join([*parts, comp.flush()])
