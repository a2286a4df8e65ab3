"""Tests for glasspool._request: body encoding and Request."""

from __future__ import annotations

import dataclasses
import doctest
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from glasspool import _request
from glasspool._exceptions import InvalidRequest
from glasspool._headers import Headers
from glasspool._request import Request, encode_body
from glasspool._urls import parse_url


def test_doctests_pass() -> None:
    result = doctest.testmod(_request)
    assert result.attempted > 0
    assert result.failed == 0


def test_encode_body_bytes_and_none() -> None:
    assert encode_body() == (None, Headers())
    assert encode_body(content=b"abc") == (b"abc", Headers())
    assert encode_body(content=b"") == (b"", Headers())
    assert encode_body(content=bytearray(b"ab")) == (b"ab", Headers())
    assert encode_body(content=memoryview(b"ab")) == (b"ab", Headers())


def test_encode_body_str_is_utf8_text() -> None:
    body, headers = encode_body(content="héllo")
    assert body == "héllo".encode()
    assert headers.raw == [("Content-Type", "text/plain; charset=utf-8")]


def test_encode_body_json_is_compact_utf8() -> None:
    body, headers = encode_body(json={"name": "Zoë", "n": [1, 2.5, None, True]})
    assert body == '{"name":"Zoë","n":[1,2.5,null,true]}'.encode()
    assert headers.raw == [("Content-Type", "application/json")]
    assert encode_body(json=[])[0] == b"[]"
    assert encode_body(json=0)[0] == b"0"


def test_encode_body_form() -> None:
    body, headers = encode_body(
        data={"q": "a b&c", "n": 1, "t": True, "skip": None, "m": ["x", "y"]}
    )
    assert body == b"q=a+b%26c&n=1&t=true&m=x&m=y"
    assert headers.raw == [("Content-Type", "application/x-www-form-urlencoded")]


async def test_encode_body_async_iterable_is_passed_through() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    stream = gen()
    body, headers = encode_body(content=stream)
    assert body is stream
    assert headers.raw == []
    assert [c async for c in stream] == [b"a", b"b"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"content": b"a", "json": {}}, "content, json"),
        ({"content": b"a", "data": {}}, "content, data"),
        ({"json": 1, "data": {}}, "json, data"),
        ({"content": "", "json": 1, "data": {}}, "content, json, data"),
    ],
)
def test_encode_body_rejects_more_than_one(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        encode_body(**kwargs)  # type: ignore[arg-type]


def test_encode_body_errors() -> None:
    with pytest.raises(InvalidRequest, match="json= body cannot be encoded"):
        encode_body(json={"x": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_body(json={"x": object()})
    with pytest.raises(TypeError, match="data= must be a mapping"):
        encode_body(data="a=1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="content= must be bytes, str or an async iterable"):
        encode_body(content=iter([b"a"]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="content= must be"):
        encode_body(content=5)  # type: ignore[arg-type]


# =========================================================================== Request


def test_request_is_frozen_with_short_repr() -> None:
    request = Request("GET", parse_url("http://h/x?y=1"), Headers({"A": "1"}))
    assert repr(request) == "<Request('GET', 'http://h/x?y=1')>"
    assert request.body_replayable
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.method = "POST"  # type: ignore[misc]


def test_trusted_request_is_the_same_frozen_request() -> None:
    url, headers = parse_url("http://h/x"), Headers({"A": "1"})
    fast = Request._trusted("PUT", url, headers, b"body", None)
    assert fast == Request("PUT", url, headers, content=b"body")
    assert (fast.method, fast.url, fast.headers, fast.content, fast.stream) == (
        "PUT",
        url,
        headers,
        b"body",
        None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.content = b"other"  # type: ignore[misc]


async def test_request_with_stream_is_not_replayable() -> None:
    async def gen() -> AsyncGenerator[bytes, None]:
        yield b"x"

    stream = gen()
    request = Request("POST", parse_url("http://h/"), stream=stream)
    assert request.content is None
    assert not request.body_replayable
    await stream.aclose()
