"""Header fields: :class:`Headers` and the default request headers.

``multidict.CIMultiDict`` is the case-insensitive index behind :class:`Headers`. It is
built only when someone looks a header up, so a response whose headers nobody reads never
pays for one. Checking names and values for the wire is ``_http11.request_head``'s job.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeAlias

from multidict import CIMultiDict

from ._version import __version__

__all__ = ["ACCEPT_ENCODING", "USER_AGENT", "HeaderTypes", "Headers", "default_headers"]

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def _accept_encoding() -> str:
    codings = ["gzip", "deflate"]
    for module, coding in (("brotli", "br"), ("zstandard", "zstd")):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        codings.append(coding)
    return ", ".join(codings)


USER_AGENT = f"glasspool/{__version__}"
"""The default ``User-Agent`` value, ``glasspool/<installed version>``."""

ACCEPT_ENCODING = _accept_encoding()
"""The default ``Accept-Encoding``: gzip and deflate, plus br and zstd when they import."""


class Headers:
    """HTTP header fields: case-insensitive, multi-valued, in order, with original case.

    The pairs are kept exactly as given (order, case, repeats) and are what gets sent.
    Lookups go through a ``multidict.CIMultiDict`` index that is built on the first
    lookup, so headers built from a connection's raw pairs cost nothing until read.

    ``headers[name]`` and ``get(name)`` return the *first* value; ``get_all(name)`` returns
    every value. Iteration yields each distinct name once (in the case first seen) and
    ``len()`` counts distinct names; ``items()`` and ``raw`` list every pair.

    >>> h = Headers([("Cookie", "a=1"), ("Content-Type", "text/plain"), ("cookie", "b=2")])
    >>> h["content-type"], h.get_all("COOKIE"), list(h)
    ('text/plain', ['a=1', 'b=2'], ['Cookie', 'Content-Type'])
    >>> h
    Headers([('Cookie', '[hidden]'), ('Content-Type', 'text/plain'), ('cookie', '[hidden]')])

    Args:
        headers: a mapping (``dict``, ``CIMultiDict``: every pair of it), an iterable of
            ``(name, value)`` pairs, or another :class:`Headers` (copied).

    Raises:
        TypeError: a name or value is not a ``str``; the error names the header.
    """

    __slots__ = ("_block", "_index_md", "_pairs")

    def __init__(self, headers: HeaderTypes | None = None) -> None:
        self._pairs: list[tuple[str, str]] | None = _collect_pairs(headers)
        self._index_md: CIMultiDict[str] | None = None
        self._block: object = None  # request_head caches the wire form here; mutations drop it

    @classmethod
    def _from_raw(cls, pairs: list[tuple[str, str]]) -> Headers:
        """Wrap a connection's ``(name, value)`` list without copying or checking it."""
        self = cls.__new__(cls)
        self._pairs = pairs
        self._index_md = None
        self._block = None
        return self

    def _index(self) -> CIMultiDict[str]:
        if self._index_md is None:
            self._index_md = CIMultiDict(self._pairs or ())
        return self._index_md

    def _mutable(self) -> CIMultiDict[str]:
        """The index, about to be changed: every mutation comes through here."""
        index = self._index()
        self._pairs = None  # the index is now the only truth
        self._block = None  # so the next request head validates and encodes them again
        return index

    def _iter_pairs(self) -> Iterable[tuple[str, str]]:
        if self._pairs is not None:
            return self._pairs
        return self._index().items()

    def _scan(self, lower_name: str) -> list[str]:
        """Every value of ``lower_name`` (already lowercase), without building the index."""
        if self._index_md is not None:
            return self._index_md.getall(lower_name, [])
        size = len(lower_name)  # a length check first: most names are not lowered at all
        return [v for n, v in self._pairs or () if len(n) == size and n.lower() == lower_name]

    def __getitem__(self, name: str) -> str:
        return self._index()[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of ``name``, or ``default`` when it is absent."""
        return self._index().get(name, default)

    def get_all(self, name: str) -> list[str]:
        """Return every value of ``name`` in order; an empty list when it is absent."""
        return self._index().getall(name, [])

    getall = get_all

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def keys(self) -> list[str]:
        """Return each distinct name once, in the case and order it was first seen."""
        seen: set[str] = set()
        names = []
        for name, _ in self._iter_pairs():
            lower = name.lower()
            if lower not in seen:
                seen.add(lower)
                names.append(str(name))
        return names

    def items(self) -> list[tuple[str, str]]:
        """Return every ``(name, value)`` pair in order, repeated names included."""
        return [(str(n), v) for n, v in self._iter_pairs()]

    @property
    def raw(self) -> list[tuple[str, str]]:
        """A new list of every ``(name, value)`` pair, exactly as it is (or was) sent."""
        return self.items()

    def copy(self) -> Headers:
        """Return an independent copy."""
        return Headers(self)

    def __setitem__(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with ``value`` (kept where the first one was)."""
        _check_pair(name, value)
        self._mutable()[name] = value

    def add(self, name: str, value: str) -> None:
        """Append a ``(name, value)`` pair, keeping any existing values of ``name``."""
        _check_pair(name, value)
        self._mutable().add(name, value)

    def setdefault(self, name: str, value: str) -> str:
        """Add ``name: value`` unless ``name`` is present; return its first value."""
        current = self.get(name)
        if current is not None:
            return current
        self.add(name, value)
        return value

    def __delitem__(self, name: str) -> None:
        """Remove every value of ``name``; ``KeyError`` when it is absent."""
        del self._mutable()[name]

    def discard(self, name: str) -> None:
        """Remove every value of ``name`` if it is present."""
        if name in self:
            del self[name]

    def update(self, other: HeaderTypes) -> None:
        """Replace, name by name, the values of every name ``other`` has with its values.

        Args:
            other: anything :class:`Headers` accepts; names it lacks are left alone.
        """
        incoming = Headers(other)
        index = self._mutable()
        for name in incoming:
            index.popall(name, None)
        for name, value in incoming._iter_pairs():
            index.add(name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            if not isinstance(other, Mapping | list | tuple):
                return NotImplemented
            try:
                other = Headers(other)
            except (TypeError, ValueError):
                return NotImplemented
        return _normalised(self) == _normalised(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        shown = [
            (str(n), "[hidden]" if n.lower() in _SECRET_HEADERS else v)
            for n, v in self._iter_pairs()
        ]
        return f"Headers({shown!r})"


HeaderTypes: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]
"""What :class:`Headers` (and every ``headers=`` argument) accepts."""


def _check_pair(name: object, value: object) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(
            f"header {name!r}: names and values must be str, "
            f"got {type(name).__name__} and {type(value).__name__}"
        )


def _collect_pairs(headers: HeaderTypes | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return headers.items()
    if isinstance(headers, str | bytes):
        raise TypeError(f"headers must be a mapping or (name, value) pairs, not {headers!r}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for item in items:
        name, value = item
        _check_pair(name, value)
        pairs.append((name, value))
    return pairs


def _normalised(headers: Headers) -> list[tuple[str, str]]:
    # A stable sort on the name keeps the order of the values of each name.
    return sorted(((n.lower(), v) for n, v in headers._iter_pairs()), key=lambda p: p[0])


def default_headers() -> Headers:
    """Return a new :class:`Headers` with glasspool's defaults.

    ``User-Agent: glasspool/<version>``, ``Accept: */*`` and ``Accept-Encoding`` (gzip,
    deflate, and br/zstd when ``brotli``/``zstandard`` import). The client starts from
    these and ``update()``\\ s them with the caller's headers, so a caller can replace any.

    >>> default_headers()["accept"]
    '*/*'
    """
    return Headers(
        [("User-Agent", USER_AGENT), ("Accept", "*/*"), ("Accept-Encoding", ACCEPT_ENCODING)]
    )
