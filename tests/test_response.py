"""Tests for glasspool._response: metadata, text and charset, reading, iteration, decoding."""

from __future__ import annotations

import asyncio
import doctest
import gzip
import json
from collections.abc import Iterable

import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from glasspool import _response
from glasspool._exceptions import (
    GlasspoolError,
    HTTPStatusError,
    ResponseNotRead,
    ResponseTooLarge,
    StreamConsumed,
)
from glasspool._request import Request
from glasspool._response import Response
from glasspool._urls import parse_url

FAST = settings(max_examples=150, deadline=None)


def test_doctests_pass() -> None:
    result = doctest.testmod(_response)
    assert result.attempted > 0
    assert result.failed == 0


class FakeStream:
    """A BodyStream that replays chunks, then ends (or raises ``error``)."""

    def __init__(self, chunks: Iterable[bytes], error: BaseException | None = None) -> None:
        self.chunks = list(chunks)
        self.error = error
        self.reads = 0
        self.closes = 0

    async def read_chunk(self) -> bytes:
        self.reads += 1
        if self.chunks:
            return self.chunks.pop(0)
        if self.error is not None:
            raise self.error
        return b""

    async def aclose(self) -> None:
        self.closes += 1


def streamed(
    chunks: Iterable[bytes],
    headers: list[tuple[str, str]] | None = None,
    **kwargs: object,
) -> tuple[Response, FakeStream]:
    stream = FakeStream(chunks)
    response = Response(
        200,
        reason="OK",
        raw_headers=headers or [],
        url="http://h/",
        stream=stream,
        **kwargs,  # type: ignore[arg-type]
    )
    return response, stream


def test_response_with_content() -> None:
    r = Response(200, reason="OK", headers={"Content-Type": "application/json"}, content=b'{"a":1}')
    assert r.content == b'{"a":1}'
    assert r.json() == {"a": 1}
    assert r.text == '{"a":1}'
    assert r.is_closed
    assert r.num_bytes_downloaded == 0
    assert repr(r) == "<Response [200 OK]>"
    assert r.http_version == "HTTP/1.1"
    assert r.history == []
    assert r.elapsed.total_seconds() == 0


def test_response_defaults() -> None:
    r = Response(204)
    assert r.content == b""
    assert r.headers.raw == []
    assert str(r.url) == ""
    assert r.request is None
    assert repr(r) == "<Response [204 No Content]>"
    assert repr(Response(599)) == "<Response [599]>"
    assert Response(200, reason="Fine").reason_phrase == "Fine"


def test_response_url_defaults_to_the_request_url() -> None:
    request = Request("GET", parse_url("http://h/r"))
    assert Response(200, request=request).url == request.url
    assert Response(200, request=request, url=yarl.URL("http://o/")).url == yarl.URL("http://o/")


def test_response_constructor_conflicts() -> None:
    with pytest.raises(ValueError, match="headers= or raw_headers="):
        Response(200, headers={}, raw_headers=[])
    with pytest.raises(ValueError, match="stream= or content="):
        Response(200, stream=FakeStream([]), content=b"")


def test_response_headers_are_lazy() -> None:
    raw = [("Content-Type", "text/plain; charset=latin-1"), ("Location", "/x")]
    r = Response(301, raw_headers=raw, content=b"caf\xe9")
    assert r.is_redirect
    assert r.text == "café"
    headers = r.headers
    assert headers._index_md is None
    assert headers["location"] == "/x"
    assert r.headers is headers


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        (None, "é".encode(), "é"),
        ("text/html; charset=ISO-8859-1", b"\xe9", "é"),
        ('text/html; Charset="utf-16-le"', "hé".encode("utf-16-le"), "hé"),
        ("text/html; charset=no-such-codec", "é".encode(), "é"),
        ("text/plain", b"\xff\xfeok", "\ufffd\ufffdok"),
    ],
)
def test_response_text_charset(content_type: str | None, body: bytes, text: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    assert Response(200, headers=headers, content=body).text == text


@pytest.mark.parametrize(
    "charset",
    ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "undefined", "idna", "punycode"],
)
def test_response_text_ignores_a_charset_that_is_no_text_encoding(charset: str) -> None:
    headers = {"Content-Type": f"text/plain; charset={charset}"}
    r = Response(200, headers=headers, content="héllo".encode() + b"\xff")
    assert r.encoding == "utf-8"
    assert r.text == "héllo\ufffd"


def test_response_status_helpers() -> None:
    assert Response(200).is_success
    assert Response(299).is_success
    assert not Response(300).is_success
    assert not Response(302).is_redirect
    assert Response(302, headers={"location": "/"}).is_redirect
    assert not Response(304, headers={"location": "/"}).is_redirect
    assert Response(404).is_error and Response(503).is_error and not Response(399).is_error


def test_raise_for_status_returns_self_below_400() -> None:
    for status in (200, 204, 301, 399):
        r = Response(status)
        assert r.raise_for_status() is r


@pytest.mark.parametrize(
    ("status", "reason", "kind", "phrase"),
    [
        (404, "Not Found", "Client error", "Not Found"),
        (418, "", "Client error", "I'm a Teapot"),
        (500, "Oops", "Server error", "Oops"),
        (599, "", "Server error", ""),
    ],
)
def test_raise_for_status_names_status_reason_and_url(
    status: int, reason: str, kind: str, phrase: str
) -> None:
    request = Request("DELETE", parse_url("http://h/item/7"))
    r = Response(status, reason=reason, request=request)
    with pytest.raises(HTTPStatusError) as info:
        r.raise_for_status()
    message = str(info.value)
    assert message.startswith(f"{kind} {status}")
    assert phrase in message
    assert "DELETE 'http://h/item/7'" in message
    assert info.value.response is r
    assert info.value.status == status


async def test_streamed_response_read() -> None:
    r, stream = streamed([b"hel", b"", b"lo"])  # an empty chunk ends the body
    assert not r.is_closed
    with pytest.raises(ResponseNotRead, match=r"await response.read\(\)"):
        _ = r.content
    assert isinstance(ResponseNotRead("x"), GlasspoolError)
    assert await r.read() == b"hel"
    assert r.content == b"hel"
    assert r.is_closed
    assert stream.closes == 1
    assert r.num_bytes_downloaded == 3
    assert await r.read() == b"hel"
    assert stream.reads == 2


async def test_streamed_response_aiter_bytes_then_again_after_read() -> None:
    r, stream = streamed([b"ab", b"cd", b"e"])
    assert [c async for c in r.aiter_bytes()] == [b"ab", b"cd", b"e"]
    assert r.is_closed
    assert stream.closes == 1
    with pytest.raises(StreamConsumed, match="already streamed"):
        await r.read()
    with pytest.raises(StreamConsumed):
        [c async for c in r.aiter_raw()]


async def test_aiter_bytes_is_repeatable_after_read() -> None:
    r, _ = streamed([b"abc", b"de"])
    await r.read()
    assert [c async for c in r.aiter_bytes()] == [b"abcde"]
    assert [c async for c in r.aiter_bytes(chunk_size=2)] == [b"ab", b"cd", b"e"]
    with pytest.raises(StreamConsumed, match="already read"):
        [c async for c in r.aiter_raw()]


async def test_aiter_raw_counts_bytes_and_cannot_run_twice() -> None:
    r, stream = streamed([b"12", b"345"])
    assert [c async for c in r.aiter_raw()] == [b"12", b"345"]
    assert r.num_bytes_downloaded == 5
    assert stream.closes == 1
    with pytest.raises(StreamConsumed, match="already streamed"):
        [c async for c in r.aiter_raw()]
    with pytest.raises(StreamConsumed):
        [c async for c in r.aiter_bytes()]
    assert isinstance(StreamConsumed("x"), GlasspoolError)


async def test_aiter_bytes_chunk_size_regroups() -> None:
    r, _ = streamed([b"a", b"bcdefg", b"", b"never"])
    assert [c async for c in r.aiter_bytes(chunk_size=3)] == [b"abc", b"def", b"g"]
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        [c async for c in Response(200).aiter_bytes(chunk_size=0)]


@FAST
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=20), max_size=8),
    size=st.one_of(st.none(), st.integers(min_value=1, max_value=25)),
)
def test_property_chunking_preserves_bytes(chunks: list[bytes], size: int | None) -> None:
    r, _ = streamed(chunks)

    async def collect() -> list[bytes]:
        return [c async for c in r.aiter_bytes(chunk_size=size)]

    pieces = asyncio.run(collect())
    assert b"".join(pieces) == b"".join(chunks)
    if size is not None:
        assert all(len(p) == size for p in pieces[:-1])
        assert all(0 < len(p) <= size for p in pieces)


async def test_aclose_before_reading_closes_the_stream_once() -> None:
    r, stream = streamed([b"data"])
    await r.aclose()
    await r.aclose()
    assert r.is_closed
    assert stream.closes == 1
    assert stream.reads == 0
    with pytest.raises(StreamConsumed, match="closed before its body was read"):
        await r.read()


async def test_async_with_closes() -> None:
    r, stream = streamed([b"data"])
    async with r as entered:
        assert entered is r
        assert not r.is_closed
    assert r.is_closed
    assert stream.closes == 1


async def test_error_while_reading_closes_the_response() -> None:
    stream = FakeStream([b"part"], error=ConnectionResetError("peer reset"))
    r = Response(200, stream=stream)
    with pytest.raises(ConnectionResetError):
        await r.read()
    assert r.is_closed
    assert stream.closes == 1
    with pytest.raises(StreamConsumed):
        await r.read()


async def test_cancellation_while_reading_closes_the_response() -> None:
    started = asyncio.Event()
    closed = asyncio.Event()

    class Hanging:
        async def read_chunk(self) -> bytes:
            started.set()
            await asyncio.Event().wait()
            return b""

        async def aclose(self) -> None:
            closed.set()

    r = Response(200, stream=Hanging())
    task = asyncio.create_task(r.read())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()
    assert r.is_closed


async def test_stopping_iteration_early_and_closing_the_iterator_closes_the_response() -> None:
    r, stream = streamed([b"a", b"b", b"c"])
    iterator = r.aiter_bytes()
    assert await iterator.__anext__() == b"a"
    assert not r.is_closed
    await iterator.aclose()
    assert r.is_closed
    assert stream.closes == 1
    assert stream.reads == 1


# --------------------------------------------------------------------------- decoding
# These use glasspool._decoders.make_decoder through the Response.


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


async def test_gzip_body_is_decoded_by_read() -> None:
    body = b"hello glasspool " * 100
    packed = gz(body)
    chunks = [packed[i : i + 7] for i in range(0, len(packed), 7)]
    r, _ = streamed(chunks, [("Content-Encoding", "gzip")])
    assert await r.read() == body
    assert r.num_bytes_downloaded == len(packed)
    assert r.is_closed


async def test_gzip_aiter_raw_is_not_decoded() -> None:
    packed = gz(b"raw stays raw")
    r, _ = streamed([packed], [("content-encoding", "GZIP")])
    assert b"".join([c async for c in r.aiter_raw()]) == packed


async def test_gzip_aiter_bytes_with_chunk_size() -> None:
    body = bytes(range(256)) * 20
    r, _ = streamed([gz(body)], [("Content-Encoding", "gzip")])
    pieces = [c async for c in r.aiter_bytes(chunk_size=1000)]
    assert b"".join(pieces) == body
    assert [len(p) for p in pieces[:-1]] == [1000] * (len(pieces) - 1)


async def test_identity_and_empty_bodies_are_not_decoded() -> None:
    r, _ = streamed([b"plain"], [("Content-Encoding", "identity")])
    assert await r.read() == b"plain"
    empty, _ = streamed([], [("Content-Encoding", "gzip")])  # e.g. a HEAD response
    assert await empty.read() == b""


async def test_decompressed_size_cap_raises_and_closes() -> None:
    body = b"\0" * 200_000
    r, stream = streamed([gz(body)], [("Content-Encoding", "gzip")], max_decompressed_size=1000)
    with pytest.raises(ResponseTooLarge, match="1000"):
        await r.read()
    assert r.is_closed
    assert stream.closes == 1


async def test_json_of_a_streamed_response() -> None:
    payload = {"items": list(range(5))}
    r, _ = streamed([gz(json.dumps(payload).encode())], [("Content-Encoding", "gzip")])
    await r.read()
    assert r.json() == payload


# -- filled by the exchange that owns the connection (its own methods, not attributes) -----


async def test_drain_reads_and_drops_the_raw_body_up_to_a_limit() -> None:
    r, stream = streamed([b"ab", b"cd"], headers=[("Content-Encoding", "gzip")])
    await r._drain(10)
    assert (stream.reads, stream.closes) == (3, 1)  # to its end (b""), then closed
    assert (r.content, r.num_bytes_downloaded, r.is_closed) == (b"", 4, True)
    r, stream = streamed([b"ab", b"cd", b"ef"])
    await r._drain(3)
    assert (stream.reads, stream.closes) == (2, 1)  # stopped after passing 3 bytes
    assert (r.content, r.num_bytes_downloaded, r.is_closed) == (b"", 4, True)
    with pytest.raises(StreamConsumed):
        async for _ in r.aiter_raw():
            pass


async def test_set_body_keeps_a_whole_raw_body_and_lets_the_stream_go() -> None:
    r, stream = streamed([])
    r._set_body(b"whole")
    assert (r.content, r.num_bytes_downloaded, r.is_closed) == (b"whole", 5, True)
    assert await r.read() == b"whole"
    assert stream.closes == 0  # the stream read it to its end: nothing to close
    r._set_received(0.25, content_encoding=False)
    assert r.elapsed.total_seconds() == 0.25


async def test_a_head_without_content_encoding_is_not_searched_for_one() -> None:
    r, _ = streamed([b"raw"], headers=[("Content-Encoding", "gzip")])
    r._set_received(0.0, content_encoding=False)  # what the head parser saw: none
    assert await r.read() == b"raw"
