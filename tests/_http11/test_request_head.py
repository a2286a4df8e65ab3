"""Tests for glasspool._http11.request_head: the request head's checks and its bytes on the wire."""

from __future__ import annotations

import httptools
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from glasspool._exceptions import InvalidRequest, InvalidURL
from glasspool._headers import Headers, HeaderTypes
from glasspool._http11.request_head import build_request_head
from glasspool._urls import parse_url

TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FAST = settings(max_examples=150, deadline=None)


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
