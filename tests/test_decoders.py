"""Content-Encoding decoders: real compressed data, chains, bombs, bad and truncated data."""

from __future__ import annotations

import gzip
import itertools
import sys
import time
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
    Decoder,
    make_decoder,
    supported_encodings,
)
from glasspool._exceptions import ProtocolError, ResponseTooLarge

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


def test_multi_frame_zstd() -> None:
    frames = zstd(TEXT[:777]) + zstd(TEXT[777:])
    for step in (3, 4096):
        assert decode_all(make_decoder("zstd", max_size=None), frames, step) == TEXT


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
        assert so_far <= (1 << 20) + (4 << 20), coding  # the cap plus at most one step
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
