"""Tests for glasspool._headers: Headers and the default request headers."""

from __future__ import annotations

import doctest

import pytest
from multidict import CIMultiDict

from glasspool import _headers
from glasspool._headers import ACCEPT_ENCODING, USER_AGENT, Headers, HeaderTypes, default_headers


def test_doctests_pass() -> None:
    result = doctest.testmod(_headers)
    assert result.attempted > 0
    assert result.failed == 0


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
