"""Tests for glasspool._models: Headers, URLs, request heads, bodies, Request, Response."""

from __future__ import annotations

import asyncio
import dataclasses
import doctest
import gzip
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable

import httptools
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from glasspool import _headers, _request, _request_head, _response, _syntax, _urls
from glasspool._exceptions import (
    GlasspoolError,
    HTTPStatusError,
    InvalidRequest,
    InvalidURL,
    ResponseNotRead,
    ResponseTooLarge,
    StreamConsumed,
)
from glasspool._headers import ACCEPT_ENCODING, USER_AGENT, Headers, HeaderTypes, default_headers
from glasspool._pool.key import PoolKey, TLSIdentity
from glasspool._request import Request, encode_body
from glasspool._request_head import build_request_head
from glasspool._response import Response
from glasspool._urls import ParamTypes, parse_url, pool_key_for

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FAST = settings(max_examples=150, deadline=None)


@pytest.mark.parametrize("module", [_headers, _request, _request_head, _response, _syntax, _urls])
def test_doctests_pass(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.failed == 0


# =========================================================================== Headers


def test_headers_lookup_is_case_insensitive_and_returns_first_value() -> None:
    h = Headers([("Accept", "a"), ("X-Tag", "1"), ("x-tag", "2")])
    assert h["ACCEPT"] == "a"
    assert h["x-TAG"] == "1"
    assert h.get_all("X-TAG") == ["1", "2"]
    assert h.getall("x-tag") == ["1", "2"]
    assert h.get_all("missing") == []
    assert h.get("missing") is None
    assert h.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        h["missing"]


def test_headers_iteration_len_items_and_raw() -> None:
    h = Headers([("Accept", "a"), ("X-Tag", "1"), ("x-tag", "2")])
    assert list(h) == ["Accept", "X-Tag"]
    assert len(h) == 2
    assert h.keys() == ["Accept", "X-Tag"]
    assert h.items() == [("Accept", "a"), ("X-Tag", "1"), ("x-tag", "2")]
    assert h.raw == h.items()
    assert "x-ACCEPT" not in h
    assert "accept" in h
    assert 3 not in h


def test_headers_raw_is_a_copy() -> None:
    h = Headers({"A": "1"})
    h.raw.append(("B", "2"))
    assert h.raw == [("A", "1")]


@pytest.mark.parametrize(
    "source",
    [
        {"Content-Type": "text/plain", "X-A": "1"},
        [("Content-Type", "text/plain"), ("X-A", "1")],
        (("Content-Type", "text/plain"), ("X-A", "1")),
        CIMultiDict([("Content-Type", "text/plain"), ("X-A", "1")]),
        Headers([("Content-Type", "text/plain"), ("X-A", "1")]),
    ],
)
def test_headers_built_from_every_accepted_source(source: HeaderTypes) -> None:
    h = Headers(source)
    assert h.raw == [("Content-Type", "text/plain"), ("X-A", "1")]


def test_headers_from_cimultidict_keeps_repeated_names() -> None:
    md: CIMultiDict[str] = CIMultiDict([("Via", "a"), ("via", "b")])
    assert Headers(md).raw == [("Via", "a"), ("via", "b")]


def test_headers_copy_and_construction_from_headers_are_independent() -> None:
    original = Headers({"A": "1"})
    copied = original.copy()
    rebuilt = Headers(original)
    copied["A"] = "2"
    rebuilt.add("B", "3")
    assert original.raw == [("A", "1")]
    assert copied.raw == [("A", "2")]
    assert rebuilt.raw == [("A", "1"), ("B", "3")]


def test_headers_reject_a_plain_string() -> None:
    with pytest.raises(TypeError, match="headers must be a mapping or"):
        Headers("Accept: */*")  # type: ignore[arg-type]


@pytest.mark.parametrize("pair", [("X-Num", 1), (b"X-Bytes", "v"), ("X-None", None)])
def test_headers_reject_non_str_naming_the_header(pair: tuple[object, object]) -> None:
    with pytest.raises(TypeError, match=r"header .*X-"):
        Headers([pair])  # type: ignore[list-item]


def test_headers_repr_hides_credentials_in_any_case() -> None:
    h = Headers(
        [
            ("authorization", "Bearer secret1"),
            ("PROXY-Authorization", "Basic secret2"),
            ("Cookie", "sid=secret3"),
            ("set-COOKIE", "sid=secret4"),
            ("Accept", "text/html"),
        ]
    )
    text = repr(h)
    for secret in ("secret1", "secret2", "secret3", "secret4"):
        assert secret not in text
    assert text.count("[hidden]") == 4
    assert "('Accept', 'text/html')" in text
    assert "'PROXY-Authorization'" in text


def test_headers_mutation() -> None:
    h = Headers([("A", "1"), ("B", "2"), ("a", "3")])
    h["a"] = "9"
    assert h.raw == [("a", "9"), ("B", "2")]
    h.add("A", "10")
    assert h.get_all("a") == ["9", "10"]
    assert h.setdefault("b", "x") == "2"
    assert h.setdefault("C", "c") == "c"
    del h["A"]
    assert h.raw == [("B", "2"), ("C", "c")]
    with pytest.raises(KeyError):
        del h["A"]
    h.discard("missing")
    h.discard("c")
    assert h.raw == [("B", "2")]
    with pytest.raises(TypeError, match="X-Bad"):
        h["X-Bad"] = 5  # type: ignore[assignment]


def test_headers_update_replaces_per_name_and_keeps_others() -> None:
    h = default_headers()
    h.update([("user-agent", "mine/1"), ("X-A", "1"), ("x-a", "2")])
    assert h.get_all("User-Agent") == ["mine/1"]
    assert h.get_all("x-a") == ["1", "2"]
    assert h["accept"] == "*/*"


def test_headers_equality() -> None:
    assert Headers({"A": "1", "B": "2"}) == Headers([("b", "2"), ("a", "1")])
    assert Headers({"A": "1"}) == {"a": "1"}
    assert Headers([("A", "1"), ("A", "2")]) != Headers([("A", "2"), ("A", "1")])
    assert Headers({"A": "1"}) != Headers({"A": "2"})
    assert Headers() != 5
    with pytest.raises(TypeError):
        hash(Headers())


def test_headers_from_raw_build_no_index_until_looked_up() -> None:
    pairs = [("Content-Type", "text/plain"), ("Content-Length", "3")]
    h = Headers._from_raw(pairs)
    assert h._index_md is None
    assert h.raw == pairs
    assert list(h) == ["Content-Type", "Content-Length"]
    assert h._index_md is None
    assert h["content-length"] == "3"
    assert h._index_md is not None


def test_headers_from_raw_mutation_leaves_the_connection_list_alone() -> None:
    pairs = [("A", "1")]
    h = Headers._from_raw(pairs)
    h.add("B", "2")
    assert pairs == [("A", "1")]
    assert h.raw == [("A", "1"), ("B", "2")]


def test_default_headers() -> None:
    h = default_headers()
    assert h["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("glasspool/")
    assert USER_AGENT != "glasspool/"
    assert h["Accept"] == "*/*"
    codings = [c.strip() for c in ACCEPT_ENCODING.split(",")]
    # brotli and zstandard are installed in the test environment
    assert codings == ["gzip", "deflate", "br", "zstd"]
    h["Accept"] = "text/html"
    assert default_headers()["Accept"] == "*/*"


# =========================================================================== URLs


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("http://h/a", None, "http://h/a"),
        ("http://h", None, "http://h"),
        ("HTTP://H.Example:80/p", None, "http://h.example/p"),
        ("https://h:8443/p?q=1#frag", None, "https://h:8443/p?q=1#frag"),
        ("/users", "http://h/api", "http://h/api/users"),
        ("users", "http://h/api/", "http://h/api/users"),
        ("/users?x=1", "http://h/api/?dropped=1", "http://h/api/users?x=1"),
        ("", "http://h/api", "http://h/api"),
        ("?x=1", "http://h/api", "http://h/api?x=1"),
        ("http://abs.example/p", "https://h/api", "http://abs.example/p"),
        ("/a%20b", "http://h", "http://h/a%20b"),
    ],
)
def test_parse_url_joins_with_base(url: str, base: str | None, expected: str) -> None:
    assert str(parse_url(url, base_url=base)) == expected


@pytest.mark.parametrize(
    "url",
    [
        "//other.example/p",
        "///other.example/p",
        "\\\\other.example\\p",
        "/\\o.example",
        "\\/o.example",
    ],
)
def test_parse_url_keeps_a_relative_url_on_the_origin_of_base_url(url: str) -> None:
    with pytest.raises(InvalidURL, match="names a host, so it would leave base_url's origin"):
        parse_url(url, base_url="https://h/api")
    with pytest.raises(InvalidURL, match="names a host"):
        parse_url(yarl.URL("//other.example/p"), base_url="https://h/api")


def test_parse_url_accepts_yarl_urls() -> None:
    base = yarl.URL("http://h/root")
    assert str(parse_url(yarl.URL("/x"), base_url=base)) == "http://h/root/x"
    assert parse_url(yarl.URL("https://h/")) == yarl.URL("https://h/")


def test_parse_url_idna_and_ipv6() -> None:
    u = parse_url("http://münchen.example/ä")
    assert u.raw_host == "xn--mnchen-3ya.example"
    assert u.raw_path == "/%C3%A4"
    v = parse_url("http://[::1]:8080/x")
    assert v.raw_host == "::1"
    assert v.port == 8080


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({"a": "1", "b": 2, "c": 1.5}, "a=1&b=2&c=1.5"),
        ({"t": True, "f": False}, "t=true&f=false"),
        ({"keep": "", "drop": None}, "keep="),
        ({"l": [1, None, "x"], "t": ("y",)}, "l=1&l=x&t=y"),
        ([("a", "1"), ("a", "2"), ("n", None)], "a=1&a=2"),
        ("a=1&b=x%20y&c", "a=1&b=x+y&c="),
        ({"sym": "a&b=c+d/?"}, "sym=a%26b%3Dc%2Bd/?"),
    ],
)
def test_parse_url_params(params: ParamTypes, query: str) -> None:
    assert parse_url("http://h/p", params=params).raw_query_string == query


def test_parse_url_params_are_appended_to_an_existing_query() -> None:
    url = parse_url("http://h/p?x=0#f", params={"y": 1})
    assert url.raw_query_string == "x=0&y=1"
    assert url.fragment == "f"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"a": object()}, "'a'.*object"),
        ({"a": b"bytes"}, "'a'.*bytes"),
        ([(1, "x")], "names must be str"),
    ],
)
def test_parse_url_param_type_errors(params: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        parse_url("http://h/", params=params)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "field", "char"),
    [
        ("http://h/a b", "path", "' '"),
        ("http://h/a\r\nX-Injected: 1", "path", r"'\r'"),
        ("http://h/a\x00", "path", r"'\x00'"),
        ("http://h/a\x7f", "path", r"'\x7f'"),
        ("http://h/p?q=a b", "query", "' '"),
        ("http://h/p?q=\n", "query", r"'\n'"),
        ("http://ex ample.org/", "host", "' '"),
        ("http://h\t.org/", "host", r"'\t'"),
        ("http://u\x01er@h/", "userinfo", r"'\x01'"),
        ("http://h/p#a\x1b", "fragment", r"'\x1b'"),
        ("ht\ntp://h/", "scheme", r"'\n'"),
        ("/rel\x0bx", "path", r"'\x0b'"),
    ],
)
def test_parse_url_rejects_control_characters_naming_field(url: str, field: str, char: str) -> None:
    with pytest.raises(InvalidURL) as info:
        parse_url(url, base_url="http://base/")
    message = str(info.value)
    assert f"in its {field}" in message
    assert char in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://h/", "unsupported scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("/relative", "has no scheme"),
        ("http:///path", "has no host"),
        ("http://h:0/", "port 0"),
        ("http://h:65536/", "invalid port"),
        ("http://h:-1/", "invalid port"),
        ("http://h:abc/", "invalid port"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_parse_url_rejects_bad_urls(url: str, match: str) -> None:
    with pytest.raises(InvalidURL, match=match):
        parse_url(url)


def test_parse_url_rejects_control_characters_in_an_encoded_yarl_url() -> None:
    url = yarl.URL.build(scheme="http", host="h", path="/a\r\nb", encoded=True)
    with pytest.raises(InvalidURL, match=r"'\\r' in its path"):
        parse_url(url)


def test_parse_url_rejects_bad_base_url() -> None:
    with pytest.raises(InvalidURL, match="base_url 'ftp://h/' has the unsupported scheme"):
        parse_url("/x", base_url="ftp://h/")
    with pytest.raises(TypeError, match=r"URL must be a str or yarl\.URL, not bytes"):
        parse_url(b"http://h/")  # type: ignore[arg-type]


def test_pool_key_for() -> None:
    tls = TLSIdentity(verify=False)
    assert pool_key_for(parse_url("https://EXAMPLE.org/x"), tls) == PoolKey(
        "https", "example.org", 443, tls
    )
    assert pool_key_for(parse_url("http://Example.ORG:8080/"), tls) == PoolKey(
        "http", "example.org", 8080, None
    )
    key = pool_key_for(parse_url("http://[::1]/"), None)
    assert (key.host, key.port, str(key)) == ("::1", 80, "http://[::1]:80")
    assert pool_key_for(parse_url("https://münchen.example/"), tls).host == (
        "xn--mnchen-3ya.example"
    )
    assert pool_key_for(parse_url("https://h:443/"), tls) == pool_key_for(
        parse_url("https://h/"), tls
    )


# =========================================================================== request head


def head(
    method: str = "GET",
    url: str = "http://h/",
    headers: HeaderTypes | None = None,
    *,
    body_length: int | None = None,
    chunked: bool = False,
) -> bytes:
    return build_request_head(
        method, parse_url(url), Headers(headers), body_length=body_length, chunked=chunked
    )


def parse_head(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """Parse a request head with httptools (llhttp): (method, target, header pairs)."""

    class Sink:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []
            self.complete = False

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_message_complete(self) -> None:
            self.complete = True

    sink = Sink()
    parser = httptools.HttpRequestParser(sink)
    parser.feed_data(data)
    assert sink.complete or b"Content-Length: 0" not in data
    return parser.get_method(), sink.url, sink.headers


def test_head_simple_get_is_exact() -> None:
    assert head(headers={"Accept": "*/*"}) == b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://h/", "h"),
        ("http://h:80/", "h"),
        ("https://h:443/", "h"),
        ("http://h:8080/", "h:8080"),
        ("https://h:80/", "h:80"),
        ("http://[::1]/", "[::1]"),
        ("http://[2001:db8::1]:8443/", "[2001:db8::1]:8443"),
        ("http://münchen.example/", "xn--mnchen-3ya.example"),
        ("http://user:pw@h/", "h"),
    ],
)
def test_head_host_from_url(url: str, host: str) -> None:
    assert head(url=url).split(b"\r\n")[1] == b"Host: " + host.encode()


def test_head_target_is_path_and_query_without_fragment() -> None:
    data = head(url="http://h/a%20b/c?x=1&y=%C3%A9#frag")
    assert data.startswith(b"GET /a%20b/c?x=1&y=%C3%A9 HTTP/1.1\r\n")
    assert b"frag" not in data
    assert head(url="http://h?x=1").startswith(b"GET /?x=1 HTTP/1.1\r\n")


def test_head_caller_host_replaces_the_url_host() -> None:
    data = head(headers=[("X-A", "1"), ("host", "virtual.example")])
    assert data.count(b"ost:") == 1
    assert b"host: virtual.example\r\n" in data


def test_head_keeps_order_case_and_repeats() -> None:
    data = head(headers=[("X-b", "1"), ("x-B", "2"), ("ACCEPT", "a")])
    assert data == b"GET / HTTP/1.1\r\nHost: h\r\nX-b: 1\r\nx-B: 2\r\nACCEPT: a\r\n\r\n"


def test_head_strips_surrounding_whitespace_and_allows_inner_htab() -> None:
    assert b"\r\nX: a\tb c\r\n" in head(headers={"X": " \ta\tb c\t "})


@pytest.mark.parametrize(
    ("method", "body_length", "chunked", "line"),
    [
        ("GET", None, False, None),
        ("HEAD", None, False, None),
        ("DELETE", None, False, None),
        ("POST", None, False, b"Content-Length: 0"),
        ("PUT", None, False, b"Content-Length: 0"),
        ("PATCH", None, False, b"Content-Length: 0"),
        ("POST", 0, False, b"Content-Length: 0"),
        ("GET", 5, False, b"Content-Length: 5"),
        ("POST", 12345, False, b"Content-Length: 12345"),
        ("POST", None, True, b"Transfer-Encoding: chunked"),
    ],
)
def test_head_framing(method: str, body_length: int | None, chunked: bool, line: bytes) -> None:
    data = head(method, body_length=body_length, chunked=chunked)
    lines = data.split(b"\r\n")
    framing = [x for x in lines if x.lower().startswith((b"content-length", b"transfer-encoding"))]
    assert framing == ([line] if line else [])
    assert data.endswith(b"\r\n\r\n")


def test_head_caller_content_length_that_matches_is_sent_once() -> None:
    data = head("POST", headers={"content-length": "3"}, body_length=3)
    assert data.lower().count(b"content-length") == 1
    assert b"content-length: 3\r\n" in data


def test_head_caller_transfer_encoding_chunked_with_stream_is_sent_once() -> None:
    data = head("POST", headers={"Transfer-Encoding": "Chunked"}, chunked=True)
    assert data.lower().count(b"transfer-encoding") == 1
    assert b"content-length" not in data.lower()


@pytest.mark.parametrize(
    ("headers", "body_length", "chunked", "match"),
    [
        ({"Content-Length": "3"}, 4, False, "says 3 bytes but the body has 4 bytes"),
        ({"Content-Length": "10"}, None, False, "says 10 bytes but the body has 0 bytes"),
        ({"Content-Length": "3"}, None, True, "Content-Length: 3 was given for a streamed body"),
        ({"Content-Length": "-1"}, 1, False, "'-1' is not a non-negative integer"),
        ({"Content-Length": "٣"}, 3, False, "is not a non-negative integer"),
        (
            {"Content-Length": "3", "Transfer-Encoding": "chunked"},
            3,
            False,
            "both Content-Length: 3 and Transfer-Encoding: chunked",
        ),
        ({"Transfer-Encoding": "gzip"}, None, True, "Transfer-Encoding: gzip was given"),
        ({"Transfer-Encoding": "chunked"}, 5, False, "Transfer-Encoding: chunked was given"),
        ([("Content-Length", "1"), ("content-length", "1")], 1, False, "more than once"),
        ([("Host", "a"), ("HOST", "b")], None, False, "'HOST' was given more than once"),
        ({}, 5, True, "body_length=5 is invalid with chunked=True"),
        ({}, -1, False, "body_length=-1 is invalid"),
    ],
)
def test_head_framing_errors(
    headers: HeaderTypes, body_length: int | None, chunked: bool, match: str
) -> None:
    with pytest.raises(InvalidRequest, match=match):
        head("POST", headers=headers, body_length=body_length, chunked=chunked)


@pytest.mark.parametrize("method", ["", "G ET", "GET\r\n", "GÉT", "GET/", "(GET)", "\x00"])
def test_head_rejects_bad_methods_naming_them(method: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        head(method)
    assert repr(method) in str(info.value)


@pytest.mark.parametrize("name", ["", "X Y", "X:Y", "X\r\nY", "Ünicode", "X\x00", "(x)", "a/b"])
def test_head_rejects_bad_header_names_naming_them(name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        head(headers=[("Good", "1"), (name, "v")])
    assert f"header name {name!r}" in str(info.value)


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00", "\x01", "x\x1fy", "del\x7f"])
def test_head_rejects_bad_header_values_naming_the_header(value: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        head(headers=[("Good", "1"), ("X-Bad", value), ("Other", "2")])
    message = str(info.value)
    assert "header 'X-Bad'" in message
    assert repr(value.strip(" \t")[_first_bad(value.strip(" \t"))]) in message


def _first_bad(value: str) -> int:
    return next(i for i, c in enumerate(value) if (ord(c) < 32 and c != "\t") or c == "\x7f")


def test_head_rejects_a_relative_url() -> None:
    with pytest.raises(InvalidRequest, match="must be absolute"):
        build_request_head("GET", yarl.URL("/x"), Headers(), body_length=None, chunked=False)


def test_head_rejects_a_raw_control_character_in_the_target() -> None:
    url = yarl.URL("http://h/a b", encoded=True)
    with pytest.raises(InvalidRequest, match="request target '/a b'"):
        build_request_head("GET", url, Headers(), body_length=None, chunked=False)


def test_head_encodes_values_latin1_else_utf8() -> None:
    data = head(headers=[("X-Latin", "café"), ("X-Euro", "5€")])
    assert b"X-Latin: caf\xe9\r\n" in data
    assert b"X-Euro: 5\xe2\x82\xac\r\n" in data


def test_head_rejects_lone_surrogates_naming_the_header() -> None:
    with pytest.raises(InvalidRequest, match="header 'X-Sur'"):
        head(headers=[("X-Ok", "€"), ("X-Sur", "a\ud800")])


def test_head_is_parsed_back_by_llhttp() -> None:
    data = head("PUT", "http://h:81/p?q=1", [("X-A", "1"), ("X-A", "2")], body_length=0)
    method, target, pairs = parse_head(data)
    assert (method, target) == (b"PUT", b"/p?q=1")
    assert pairs == [(b"Host", b"h:81"), (b"X-A", b"1"), (b"X-A", b"2"), (b"Content-Length", b"0")]


tokens = st.text(alphabet=TCHAR, min_size=1, max_size=24)
valid_chars = st.characters(
    exclude_categories=["Cs"],
    exclude_characters=[chr(c) for c in range(32) if c != 9] + ["\x7f"],
)
valid_values = st.text(alphabet=valid_chars, max_size=40)
breakers = st.sampled_from(["\r", "\n", "\x00", "\r\n"])


FRAMING_NAMES = {"content-length", "transfer-encoding"}


@FAST
@given(name=tokens.filter(lambda n: n.lower() not in FRAMING_NAMES), value=valid_values)
def test_property_valid_header_round_trips_exactly(name: str, value: str) -> None:
    data = head(headers=[(name, value)])
    sent = value.strip(" \t")
    try:
        encoded = sent.encode("latin-1")
    except UnicodeEncodeError:
        encoded = sent.encode("utf-8")
    line = b"\r\n" + name.encode("ascii") + b": " + encoded + b"\r\n"
    assert line in data
    if name.lower() != "host":
        _, _, pairs = parse_head(data)
        assert pairs[-1] == (name.encode("ascii"), encoded.strip(b" \t"))


@FAST
@given(value=valid_values, breaker=breakers, where=st.integers(min_value=0))
def test_property_value_with_cr_lf_nul_is_rejected(value: str, breaker: str, where: int) -> None:
    at = where % (len(value) + 1)
    bad = value[:at] + breaker + value[at:]
    with pytest.raises(InvalidRequest, match="header 'X-Prop'"):
        head(headers=[("X-Prop", bad)])


@FAST
@given(name=tokens, breaker=breakers, where=st.integers(min_value=0))
def test_property_name_with_cr_lf_nul_is_rejected(name: str, breaker: str, where: int) -> None:
    at = where % (len(name) + 1)
    bad = name[:at] + breaker + name[at:]
    with pytest.raises(InvalidRequest, match="is not an RFC 9110 token"):
        head(headers=[(bad, "v")])


@FAST
@given(method=tokens)
def test_property_any_token_method_is_sent_as_given(method: str) -> None:
    assert head(method).startswith(method.encode("ascii") + b" / HTTP/1.1\r\n")


@FAST
@given(path=st.text(max_size=30))
def test_property_parse_url_never_lets_a_control_character_reach_the_head(path: str) -> None:
    try:
        url = parse_url("http://h/" + path)
    except InvalidURL as exc:
        assert any(ord(c) <= 32 or c == "\x7f" for c in path)
        assert "in its path" in str(exc) or "in its query" in str(exc) or "fragment" in str(exc)
        return
    data = build_request_head("GET", url, Headers(), body_length=None, chunked=False)
    request_line = data.split(b"\r\n", 1)[0]
    assert request_line.count(b" ") == 2
    assert all(32 < b < 127 for b in request_line.replace(b" ", b""))


# =========================================================================== bodies


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


# =========================================================================== Response


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
