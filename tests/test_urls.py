"""Tests for glasspool._urls: parsing, base_url joining, params and the pool key."""

from __future__ import annotations

import doctest

import pytest
import yarl

from glasspool import _urls
from glasspool._exceptions import InvalidURL
from glasspool._pool.key import PoolKey, TLSIdentity
from glasspool._urls import ParamTypes, parse_url, pool_key_for


def test_doctests_pass() -> None:
    result = doctest.testmod(_urls)
    assert result.attempted > 0
    assert result.failed == 0


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
