"""Checks for numeric options: every limit, count and duration is refused in the same words.

Each check returns the value (a duration as ``float``) or raises naming the option:
``TypeError`` for a value of the wrong type (a ``bool`` is never taken for a number) and
``ValueError`` for one out of range.

>>> check_int("max_redirects", 0, minimum=0), check_seconds("read", 5)
(0, 5.0)
>>> check_limit("limit_per_host", 20, limit=10)
Traceback (most recent call last):
ValueError: limit_per_host=20 is greater than limit=10
"""

from __future__ import annotations

__all__ = ["check_int", "check_limit", "check_seconds"]


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` of at least ``minimum``.

    Raises:
        TypeError: ``value`` is not an ``int`` (or is a ``bool``).
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_limit(name: str, value: object, limit: int | None = None) -> int:
    """Return a connection limit: an ``int`` >= 1, and not above ``limit`` when given.

    Raises:
        TypeError, ValueError: as :func:`check_int`; ``ValueError`` also when ``value`` is
            above ``limit`` (the global limit, named ``limit`` in the message).
    """
    checked = check_int(name, value)
    if limit is not None and checked > limit:
        raise ValueError(f"{name}={checked} is greater than limit={limit}")
    return checked


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float | None:
    """Return a duration in seconds as a ``float``, or ``None`` (no limit).

    Args:
        name: the option, as the message should name it.
        value: ``None``, or an ``int`` or ``float`` above 0 (at least 0 with
            ``allow_zero``); infinity is taken, NaN is not.
        allow_zero: whether 0 is a valid duration.

    Raises:
        TypeError: ``value`` is not a number or ``None``.
        ValueError: ``value`` is NaN, negative, or 0 without ``allow_zero``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    if value != value or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds or None, got {value!r}")
    return float(value)
