"""glasspool._validate: one wording for every numeric option, wherever it is checked."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import pytest

from glasspool import Client, Timeout, _validate
from glasspool._pool.state import PoolState
from glasspool._validate import check_int, check_limit, check_seconds


def test_doctests_pass() -> None:
    result = doctest.testmod(_validate)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("value", ["5", 5.0, None, True])
def test_check_int_refuses_what_is_not_an_int(value: object) -> None:
    with pytest.raises(TypeError, match=f"n must be an int, not {value!r}"):
        check_int("n", value)


def test_check_int_and_check_limit_bounds() -> None:
    assert check_int("n", 0, minimum=0) == 0
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        check_int("n", -1, minimum=0)
    assert check_limit("limit_per_host", 10, limit=10) == 10
    with pytest.raises(ValueError, match="limit_per_host must be >= 1, got 0"):
        check_limit("limit_per_host", 0, limit=10)
    with pytest.raises(ValueError, match="limit_per_host=11 is greater than limit=10"):
        check_limit("limit_per_host", 11, limit=10)


def test_check_seconds() -> None:
    assert check_seconds("t", None) is None
    assert check_seconds("t", 2) == 2.0 and isinstance(check_seconds("t", 2), float)
    assert check_seconds("t", math.inf) == math.inf
    assert check_seconds("t", 0, allow_zero=True) == 0.0
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError, match=r"t must be > 0 seconds or None, got"):
            check_seconds("t", bad)
    with pytest.raises(ValueError, match=r"t must be >= 0 seconds or None, got -1"):
        check_seconds("t", -1, allow_zero=True)
    for wrong in ("1", True):
        with pytest.raises(TypeError, match=r"t must be a number of seconds or None, not"):
            check_seconds("t", wrong)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Client(limit=0), ValueError, "limit must be >= 1, got 0"),
        (lambda: PoolState(limit="5"), TypeError, "limit must be an int, not '5'"),
        (lambda: Client(max_headers=0), ValueError, "max_headers must be >= 1, got 0"),
        (lambda: Client(max_header_bytes=True), TypeError, "max_header_bytes must be an int"),
        (lambda: Client(max_redirects=-1), ValueError, "max_redirects must be >= 0, got -1"),
        (lambda: Client(max_lifetime=0), ValueError, "max_lifetime must be > 0 seconds"),
        (lambda: Client(evict_grace=-1), ValueError, "evict_grace must be >= 0 seconds"),
        (lambda: Timeout(read=0), ValueError, "Timeout read must be > 0 seconds or None"),
        (lambda: Timeout(pool="1"), TypeError, "Timeout pool must be a number of seconds"),
    ],
)
def test_client_pool_and_timeout_use_the_same_words(
    make: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make()
