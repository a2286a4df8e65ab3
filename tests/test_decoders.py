"""Content-Encoding decoders: real compressed data, chains, bombs, bad and truncated data."""

from __future__ import annotations

import functools
import gzip
import itertools
import os
import re
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from glasspool._decoders import (
    MAX_CODINGS,
    MAX_EMPTY_MEMBERS,
    STEP_BYTES,
    ZSTD_MAX_WINDOW,
    Decoder,
    make_decoder,
    supported_encodings,
)
from glasspool._exceptions import ProtocolError, ResponseTooLarge
from tests.hostile_bodies import triple_gzip

TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(5000))


def raw_deflate(data: bytes) -> bytes:
    obj = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return obj.compress(data) + obj.flush()


def zstd(data: bytes) -> bytes:
    return bytes(zstandard.ZstdCompressor().compress(data))


def br(data: bytes) -> bytes:
    return bytes(brotli.compress(data, quality=5))


def five_gzip(data: bytes) -> bytes:
    for _ in range(5):
        data = gzip.compress(data)
    return data


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": br,
    "zstd": zstd,
}


def decode_all(decoder: Decoder, data: bytes, step: int) -> bytes:
    out = [decoder.decode(data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out) + decoder.flush()


@pytest.mark.parametrize("coding", list(ENCODERS))
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_round_trip_in_any_chunking(coding: str, step: int) -> None:
    data = TEXT if step > 1 else TEXT[:3000]
    compressed = ENCODERS[coding](data)
    assert decode_all(make_decoder(coding, max_size=None), compressed, step) == data


def test_raw_deflate_as_servers_often_send_it() -> None:
    for step in (1, 100, 1 << 20):
        decoded = decode_all(make_decoder("deflate", max_size=None), raw_deflate(TEXT), step)
        assert decoded == TEXT


def raw_deflate_starting_78_9c(data: bytes) -> bytes:
    """A raw deflate stream whose first two bytes are a valid zlib header, ``78 9C``.

    A stored block's header byte has five padding bits that inflaters ignore: ``0x78`` is
    "not final, stored" with padding ``01111``; its LEN is 0x009C (its first byte 9C).
    """
    first, rest = data[:0x9C], data[0x9C:]
    assert len(first) == 0x9C
    stored = b"\x78" + (0x9C).to_bytes(2, "little") + (0xFFFF ^ 0x9C).to_bytes(2, "little")
    return stored + first + raw_deflate(rest)


def test_raw_deflate_that_starts_like_a_zlib_header_is_decoded() -> None:
    body = raw_deflate_starting_78_9c(TEXT)
    assert body[:2] == b"\x78\x9c"
    assert zlib.decompress(body, -zlib.MAX_WBITS) == TEXT  # what the server meant
    for step in (1, 7, 4096, 1 << 20):
        assert decode_all(make_decoder("deflate", max_size=None), body, step) == TEXT


def test_zlib_deflate_that_breaks_after_giving_output_is_still_an_error() -> None:
    body = bytearray(zlib.compress(TEXT))
    body[len(body) // 2 :] = b"\xff" * (len(body) - len(body) // 2)
    with pytest.raises(ProtocolError, match="deflate data"):
        decode_all(make_decoder("deflate", max_size=None), bytes(body), 1 << 20)


def test_identity_passes_bytes_through_unchanged() -> None:
    for value in (None, "", "identity", " Identity "):
        decoder = make_decoder(value, max_size=1)
        chunk = b"x" * 100  # identity is not capped by max_size
        assert decoder.decode(chunk) is chunk
        assert decoder.flush() == b""


def test_multi_member_gzip() -> None:
    members = gzip.compress(TEXT[:1000]) + gzip.compress(b"") + gzip.compress(TEXT[1000:])
    for step in (5, 4096):
        assert decode_all(make_decoder("gzip", max_size=None), members, step) == TEXT


def skippable(payload: bytes) -> bytes:
    """A zstd skippable frame (RFC 8878 section 3.1.2)."""
    return b"\x5a\x2a\x4d\x18" + len(payload).to_bytes(4, "little") + payload


def test_multi_frame_zstd() -> None:
    noise = os.urandom(300_000)  # incompressible: raw blocks
    streamed = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    obj = streamed.compressobj()
    frames = [
        zstd(TEXT[:777]),
        skippable(b"metadata"),
        skippable(b""),
        zstd(b""),
        obj.compress(TEXT[777:]) + obj.flush(),
        bytes(zstandard.ZstdCompressor(write_checksum=True).compress(noise)),
    ]
    for step in (1, 3, 4096, 1 << 20):
        decoded = decode_all(make_decoder("zstd", max_size=None), b"".join(frames), step)
        assert decoded == TEXT + noise


@pytest.mark.parametrize(
    ("header", "encode"),
    [
        ("gzip, br", lambda d: br(gzip.compress(d))),
        ("deflate, gzip", lambda d: gzip.compress(zlib.compress(d))),
        ("br,zstd", lambda d: zstd(br(d))),
        ("gzip, identity, zstd", lambda d: zstd(gzip.compress(d))),
        ("gzip, gzip, gzip, gzip, gzip", five_gzip),
    ],
)
def test_chains_decode_in_reverse_order(header: str, encode: Callable[[bytes], bytes]) -> None:
    assert decode_all(make_decoder(header, max_size=None), encode(TEXT), 1000) == TEXT


def test_more_than_five_codings_is_a_protocol_error_naming_the_count() -> None:
    header = ", ".join(["gzip"] * (MAX_CODINGS + 1))
    with pytest.raises(ResponseTooLarge, match="lists 6 codings; at most 5"):
        make_decoder(header, max_size=None)


def test_unknown_coding_is_named() -> None:
    with pytest.raises(ProtocolError, match="unsupported Content-Encoding 'compress'"):
        make_decoder("gzip, compress", max_size=None)


def test_missing_optional_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "brotli", None)
    with pytest.raises(
        ProtocolError, match=r"'brotli' module: pip install 'glasspool\[compression\]'"
    ):
        make_decoder("br", max_size=None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ProtocolError, match="'zstandard' module"):
        make_decoder("zstd", max_size=None)


def test_supported_encodings_lists_what_is_installed() -> None:
    assert supported_encodings() == ("gzip", "deflate", "br", "zstd")


# -- caps ------------------------------------------------------------------------------------

ZEROS_10M = b"\0" * (10 << 20)


def test_gzip_bomb_trips_the_ratio_guard() -> None:
    bomb = gzip.compress(ZEROS_10M)
    decoder = make_decoder("gzip", max_size=None)
    with pytest.raises(
        ResponseTooLarge, match=r"decompression ratio 10\d\d\.\d:1 exceeds max_ratio=1000"
    ):
        decode_all(decoder, bomb, 4096)


@pytest.mark.parametrize("coding", ["br", "zstd", "deflate"])
def test_bombs_in_other_codings_trip_the_ratio_guard(coding: str) -> None:
    bomb = ENCODERS[coding](ZEROS_10M)
    with pytest.raises(ResponseTooLarge, match="exceeds max_ratio=1000"):
        make_decoder(coding, max_size=None).decode(bomb)


def test_ratio_guard_waits_for_min_ratio_bytes() -> None:
    small = gzip.compress(b"\0" * 500_000)  # ratio ~1000:1, but under 1 MiB of output
    assert make_decoder("gzip", max_size=None, max_ratio=10).decode(small) == b"\0" * 500_000
    with pytest.raises(ResponseTooLarge, match="exceeds max_ratio=10"):
        make_decoder("gzip", max_size=None, max_ratio=10, min_ratio_bytes=1000).decode(small)


def test_max_size_names_the_cap() -> None:
    decoder = make_decoder("gzip", max_size=10_000)
    with pytest.raises(ResponseTooLarge, match="exceeds max_decompressed_size=10000 bytes"):
        decode_all(decoder, gzip.compress(TEXT), 512)


def test_one_small_input_cannot_expand_far_past_the_cap() -> None:
    """A 100 MiB bomb under a 1 MiB cap stops after one bounded step, quickly."""
    bomb = zstd(b"\0" * (100 << 20))  # a few KB
    for coding, blob in (("zstd", bomb), ("gzip", gzip.compress(b"\0" * (100 << 20), 1))):
        started = time.perf_counter()
        with pytest.raises(ResponseTooLarge, match="max_decompressed_size=1048576") as info:
            make_decoder(coding, max_size=1 << 20, max_ratio=1e9).decode(blob)
        so_far = int(str(info.value).split(": ")[-1].split()[0])
        assert so_far <= (1 << 20) + STEP_BYTES, coding  # the cap plus at most one step
        assert time.perf_counter() - started < 2


def test_chain_bomb_is_caught_through_the_chain() -> None:
    nested = gzip.compress(gzip.compress(b"\0" * (50 << 20)))
    with pytest.raises(ResponseTooLarge, match="ratio"):
        make_decoder("gzip, gzip", max_size=None).decode(nested)


def test_many_empty_gzip_members_are_capped() -> None:
    empties = gzip.compress(b"") * (MAX_EMPTY_MEMBERS + 2)
    with pytest.raises(ResponseTooLarge, match=f"more than {MAX_EMPTY_MEMBERS} empty members"):
        make_decoder("gzip", max_size=None).decode(empties)
    few = gzip.compress(b"") * MAX_EMPTY_MEMBERS + gzip.compress(b"ok")
    assert decode_all(make_decoder("gzip", max_size=None), few, 1 << 20) == b"ok"


def test_many_members_in_one_chunk_are_capped() -> None:
    tiny = gzip.compress(b"x") * 1100
    with pytest.raises(ResponseTooLarge, match="more than 1024 members in one chunk"):
        make_decoder("gzip", max_size=None).decode(tiny)
    assert decode_all(make_decoder("gzip", max_size=None), tiny, 10_000) == b"x" * 1100


# -- bounded steps ---------------------------------------------------------------------------

ZEROS_32M = bytes(32 << 20)


@functools.cache
def high_ratio(coding: str) -> bytes:
    """32 MiB of zeros in ``coding`` (a chain is encoded innermost first)."""
    data = ZEROS_32M
    for name in (c.strip() for c in coding.split(",")):
        data = ENCODERS[name](data) if name != "br" else bytes(brotli.compress(data, quality=1))
    return data


@functools.cache
def prefixed_bomb(coding: str) -> bytes:
    """64 KiB of random bytes, then 32 MiB of zeros, in ``coding``."""
    data = os.urandom(64 << 10) + ZEROS_32M
    return ENCODERS[coding](data) if coding != "br" else bytes(brotli.compress(data, quality=1))


CHAINS = ["gzip", "deflate", "br", "zstd", "gzip, br", "zstd, gzip"]


@pytest.mark.parametrize("coding", CHAINS)
def test_every_step_yields_at_most_step_bytes(coding: str) -> None:
    """A body of a few KB that decodes to 32 MiB, given in one chunk: no step is larger."""
    decoder = make_decoder(coding, max_size=None, max_ratio=1e9)
    sizes = [len(p) for p in decoder.decode_steps(high_ratio(coding))]
    sizes += [len(p) for p in decoder.flush_steps()]
    assert max(sizes) <= STEP_BYTES
    assert sum(sizes) == len(ZEROS_32M)


@pytest.mark.parametrize("coding", CHAINS)
def test_decoding_a_bomb_step_by_step_holds_only_a_step(coding: str) -> None:
    """Python-visible allocations (output, zlib state, queued input) stay near one step."""
    body = high_ratio(coding)
    decoder = make_decoder(coding, max_size=None, max_ratio=1e9)
    total = 0
    tracemalloc.start()
    try:
        for piece in decoder.decode_steps(body):
            total += len(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == len(ZEROS_32M)
    assert peak < 8 * STEP_BYTES, peak


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_the_ratio_guard_stops_a_prefixed_bomb_at_the_first_step_past_it(coding: str) -> None:
    """The random prefix keeps the ratio low for a while; the guard fires one step past it.

    The steps before it were delivered: the body is not decoded whole and then refused.
    """
    body = prefixed_bomb(coding)
    decoder = make_decoder(coding, max_size=None, max_ratio=50)
    delivered = 0
    with pytest.raises(ResponseTooLarge, match="exceeds max_ratio=50") as info:
        for piece in decoder.decode_steps(body):
            delivered += len(piece)
    found = re.search(r"\((\d+) bytes from (\d+) ", str(info.value))
    assert found is not None
    decoded, received = int(found[1]), int(found[2])
    assert received == len(body)
    assert decoded <= 50 * received + STEP_BYTES
    assert decoded - STEP_BYTES <= delivered < decoded


def test_an_inner_layer_counts_against_the_guards() -> None:
    """gzip, gzip, gzip: 5 KB whose middle layer is 2 GiB of empty deflate blocks.

    The last layer decodes to 2 bytes, so only a guard on the inner layer can stop it.
    """
    started = time.perf_counter()
    with pytest.raises(ResponseTooLarge, match=r"max_ratio=1000 in an inner layer \(coding 2 of 3"):
        make_decoder("gzip, gzip, gzip", max_size=None).decode(triple_gzip(410))
    assert time.perf_counter() - started < 2  # it stops after ~5 MB, not 2 GiB
    with pytest.raises(ResponseTooLarge, match="max_decompressed_size=100000 bytes in an inner"):
        make_decoder("gzip, gzip, gzip", max_size=100_000).decode(triple_gzip(1))
    # An inner layer of incompressible data is a little larger than the body: that is fine.
    noise = os.urandom(100_000)
    inner = make_decoder("gzip, gzip", max_size=len(noise))
    assert inner.decode(gzip.compress(gzip.compress(noise))) + inner.flush() == noise


def zstd_window(window_log: int, size: int) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log)
    return bytes(zstandard.ZstdCompressor(compression_params=params).compress(bytes(size)))


def test_zstd_windows_above_8_mib_are_refused_naming_window_and_limit() -> None:
    assert ZSTD_MAX_WINDOW == 8 << 20
    data = bytes(20 << 20)
    at_limit = make_decoder("zstd", max_size=None, max_ratio=1e9)
    assert at_limit.decode(zstd_window(23, len(data))) == data
    for blob, window in (
        (zstd_window(27, 200 << 20), 1 << 27),  # the largest the zstd library accepts by default
        (zstd_window(24, 20 << 20), 1 << 24),
        # single-segment frame: the window is the content size
        (bytes(zstandard.ZstdCompressor(level=22).compress(data)), len(data)),
    ):
        decoder = make_decoder("zstd", max_size=None)
        with pytest.raises(
            ResponseTooLarge, match=f"window of {window} bytes; .* is 8388608 bytes .*RFC 9659"
        ):
            decoder.decode(blob[:100])  # refused from the frame header, before any block


# -- bad data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "data", "message"),
    [
        ("gzip", b"this is not gzip", "invalid gzip data"),
        ("x-gzip", gzip.compress(b"abc")[:10] + b"\xff" * 20, "invalid x-gzip data"),
        ("deflate", b"\x78\x9c" + b"\xff" * 10, "invalid deflate data"),
        ("br", b"\xff" * 20, "invalid br data"),
        ("zstd", b"not zstd at all", "invalid zstd data"),
        ("gzip", gzip.compress(b"abc") + b"trailing junk", "invalid gzip data"),
        ("deflate", zlib.compress(b"abc") + b"junk", "after the end of the deflate stream"),
    ],
)
def test_bad_data_is_a_protocol_error_naming_the_coding(
    coding: str, data: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_all(make_decoder(coding, max_size=None), data, 1 << 20)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_truncated_data_is_reported_at_flush(coding: str) -> None:
    blob = ENCODERS[coding](TEXT)
    decoder = make_decoder(coding, max_size=None)
    decoder.decode(blob[: len(blob) // 2])
    with pytest.raises(ProtocolError, match=f"truncated {coding} data"):
        decoder.flush()


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd", "gzip, br"])
def test_empty_body_with_a_coding_is_fine(coding: str) -> None:
    decoder = make_decoder(coding, max_size=None)
    assert decoder.decode(b"") == b""
    assert decoder.flush() == b""


def test_bad_caps_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_size"):
        make_decoder("gzip", max_size=-1)
    with pytest.raises(ValueError, match="max_ratio"):
        make_decoder("gzip", max_size=None, max_ratio=0)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=5000),
    coding=st.sampled_from(["gzip", "deflate", "br", "zstd"]),
    cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=8),
)
def test_any_split_of_any_payload_round_trips(data: bytes, coding: str, cuts: list[int]) -> None:
    blob = ENCODERS[coding](data)
    points = sorted({min(c, len(blob)) for c in cuts} | {0, len(blob)})
    decoder = make_decoder(coding, max_size=None)
    out = [decoder.decode(blob[a:b]) for a, b in itertools.pairwise(points)]
    assert b"".join(out) + decoder.flush() == data
