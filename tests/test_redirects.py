"""Tests for glasspool._redirects: method/body rewriting, targets and credential stripping."""

from __future__ import annotations

import doctest
import random

import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from glasspool import _redirects
from glasspool._exceptions import InvalidRequest, InvalidURL
from glasspool._headers import Headers
from glasspool._redirects import RedirectPlan, redirect_request, resolve_location

FAST = settings(max_examples=200, deadline=None)
CREDENTIALS = ("authorization", "cookie", "proxy-authorization")
BODY_HEADERS = ("content-type", "content-length", "transfer-encoding", "content-encoding")


def plan(
    status: int = 302,
    method: str = "GET",
    url: str = "http://h.example/a/b?q=1",
    location: str = "/next",
    headers: Headers | None = None,
    *,
    replayable: bool = True,
    stripped_once: bool = False,
) -> RedirectPlan:
    return redirect_request(
        status,
        method,
        yarl.URL(url),
        location,
        headers if headers is not None else Headers(),
        replayable,
        stripped_once,
    )


def lower_names(headers: Headers) -> list[str]:
    return [name.lower() for name, _ in headers.raw]


def test_doctests_pass() -> None:
    result = doctest.testmod(_redirects)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    ("status", "method", "new_method", "keep_body"),
    [
        (301, "GET", "GET", True),
        (301, "POST", "GET", False),
        (301, "PUT", "PUT", True),
        (302, "POST", "GET", False),
        (302, "DELETE", "DELETE", True),
        (302, "HEAD", "HEAD", True),
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (303, "GET", "GET", False),
        (303, "HEAD", "HEAD", False),
        (307, "POST", "POST", True),
        (307, "PATCH", "PATCH", True),
        (308, "POST", "POST", True),
        (308, "GET", "GET", True),
    ],
)
def test_method_and_body_rules(status: int, method: str, new_method: str, keep_body: bool) -> None:
    result = plan(status, method)
    assert (result.method, result.keep_body) == (new_method, keep_body)


@pytest.mark.parametrize("status", [200, 300, 304, 305, 306, 404])
def test_non_redirect_status_is_rejected(status: int) -> None:
    with pytest.raises(ValueError, match=f"status {status} is not a redirect status"):
        plan(status)


@pytest.mark.parametrize("status", [307, 308, 301, 302])
def test_unreplayable_body_that_must_be_kept_is_an_error(status: int) -> None:
    with pytest.raises(InvalidRequest, match=f"{status} redirect of PUT .*cannot be replayed"):
        plan(status, "PUT", replayable=False)


@pytest.mark.parametrize(("status", "method"), [(303, "PUT"), (301, "POST"), (302, "POST")])
def test_unreplayable_body_that_is_dropped_is_fine(status: int, method: str) -> None:
    result = plan(status, method, replayable=False)
    assert result.method == "GET"
    assert not result.keep_body


@pytest.mark.parametrize(
    ("url", "location", "expected"),
    [
        ("http://h/a/b?q=1", "/x", "http://h/x"),
        ("http://h/a/b?q=1", "c", "http://h/a/c"),
        ("http://h/a/b?q=1", "../c?z=2", "http://h/c?z=2"),
        ("http://h/a/b?q=1", "?z=2", "http://h/a/b?z=2"),
        ("http://h/a/b", "https://o.example:8443/p", "https://o.example:8443/p"),
        ("https://h/a", "//cdn.example/x", "https://cdn.example/x"),
        ("http://h/a", "HTTPS://H/b", "https://h/b"),
        ("http://h/a#top", "/b", "http://h/b#top"),
        ("http://h/a#top", "/b#mid", "http://h/b#mid"),
        ("http://h/a", "/with space", "http://h/with%20space"),
        ("http://h/a", "  /trimmed\t", "http://h/trimmed"),
        ("http://h/a", "/caf\xc3\xa9", "http://h/caf%C3%A9"),
        ("http://h/a", "/caf\xe9", "http://h/caf%C3%A9"),
    ],
)
def test_location_resolution(url: str, location: str, expected: str) -> None:
    assert str(plan(url=url, location=location).url) == expected
    assert str(resolve_location(yarl.URL(url), location)) == expected


@pytest.mark.parametrize(
    ("location", "match"),
    [
        ("ftp://h/file", "unsupported scheme 'ftp'"),
        ("javascript:alert(1)", "unsupported scheme 'javascript'"),
        ("file:///etc/passwd", "unsupported scheme 'file'"),
        ("", "empty Location"),
        ("   ", "empty Location"),
        ("/a\r\nSet-Cookie: x=1", r"forbidden character '\\r' in its path"),
        ("/a\x00", r"forbidden character '\\x00'"),
        ("http://h:0/", "port 0"),
        ("http://h:99999/", "not a valid URL"),
        ("https:///nohost", "has no host"),
    ],
)
def test_bad_locations(location: str, match: str) -> None:
    with pytest.raises(InvalidURL, match=match):
        plan(location=location)


def test_credentials_kept_on_the_same_origin() -> None:
    headers = Headers(
        [("Authorization", "Bearer t"), ("Cookie", "a=1"), ("Proxy-Authorization", "p")]
    )
    result = plan(url="http://h.example/a", location="http://H.EXAMPLE:80/b", headers=headers)
    assert not result.stripped
    assert result.headers.raw == headers.raw


@pytest.mark.parametrize(
    "location",
    [
        "https://h.example/b",  # scheme
        "http://other.example/b",  # host
        "http://h.example:8080/b",  # port
        "//evil.example/b",  # scheme-relative host change
    ],
)
def test_credentials_dropped_when_the_origin_changes(location: str) -> None:
    headers = Headers(
        [
            ("authorization", "Bearer t"),
            ("AUTHORIZATION", "Basic u"),
            ("Cookie", "a=1"),
            ("cOOKIE", "b=2"),
            ("Proxy-Authorization", "p"),
            ("Accept", "*/*"),
        ]
    )
    result = plan(url="http://h.example/a", location=location, headers=headers)
    assert result.stripped
    assert result.headers.raw == [("Accept", "*/*")]


def test_credentials_stay_dropped_once_stripped_even_back_on_the_origin() -> None:
    headers = Headers({"Authorization": "Bearer t", "X-Keep": "1"})
    first = plan(url="http://a.example/", location="http://b.example/", headers=headers)
    second = plan(
        url=str(first.url),
        location="http://a.example/back",
        headers=headers,
        stripped_once=first.stripped,
    )
    same_origin_again = plan(
        url="http://a.example/back", location="/again", headers=headers, stripped_once=True
    )
    assert first.stripped and second.stripped and same_origin_again.stripped
    assert second.headers.raw == [("X-Keep", "1")]
    assert same_origin_again.headers.raw == [("X-Keep", "1")]


def test_host_is_always_dropped_and_input_headers_untouched() -> None:
    headers = Headers([("Host", "virtual.example"), ("X-A", "1")])
    result = plan(headers=headers)
    assert result.headers.raw == [("X-A", "1")]
    assert headers.raw == [("Host", "virtual.example"), ("X-A", "1")]
    assert result.headers is not headers


def test_body_headers_dropped_with_the_body() -> None:
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("content-length", "2"),
            ("Content-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
            ("X-A", "1"),
        ]
    )
    dropped = plan(303, "POST", headers=headers)
    kept = plan(307, "POST", headers=headers)
    assert dropped.headers.raw == [("X-A", "1")]
    assert kept.headers.raw == headers.raw


# --------------------------------------------------------------------------- properties

CASE_MIXED = st.sampled_from(CREDENTIALS).flatmap(
    lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )
)
OTHER_HEADERS = st.tuples(
    st.sampled_from(["Accept", "X-Trace", "User-Agent", "X-Auth-Hint"]),
    st.text(alphabet="abc123 ", max_size=8),
)
HOSTS = st.sampled_from(["a.example", "A.Example", "b.example", "127.0.0.1", "[::1]"])
ORIGINS = st.tuples(
    st.sampled_from(["http", "https"]), HOSTS, st.sampled_from([None, 80, 443, 8080])
)


def _url(origin: tuple[str, str, int | None]) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}{'' if port is None else f':{port}'}/p"


def _key(url: yarl.URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.raw_host or "").lower(), url.port)


@FAST
@given(
    credentials=st.lists(st.tuples(CASE_MIXED, st.text(max_size=8)), min_size=1, max_size=6),
    others=st.lists(OTHER_HEADERS, max_size=4),
    order=st.randoms(use_true_random=False),
    source=ORIGINS,
    target=ORIGINS,
    status=st.sampled_from(sorted(_redirects.REDIRECT_STATUSES)),
    stripped_once=st.booleans(),
)
def test_property_credentials_never_survive_an_origin_change(
    credentials: list[tuple[str, str]],
    others: list[tuple[str, str]],
    order: random.Random,
    source: tuple[str, str, int | None],
    target: tuple[str, str, int | None],
    status: int,
    stripped_once: bool,
) -> None:
    pairs = credentials + others
    order.shuffle(pairs)
    headers = Headers(pairs)
    url = yarl.URL(_url(source))
    result = redirect_request(status, "GET", url, _url(target), headers, True, stripped_once)
    changed = _key(url) != _key(result.url)
    assert result.stripped == (changed or stripped_once)
    names = lower_names(result.headers)
    if result.stripped:
        assert not set(names) & set(CREDENTIALS)
        assert result.headers.raw == [p for p in pairs if p[0].lower() not in CREDENTIALS]
    else:
        assert result.headers.raw == pairs
