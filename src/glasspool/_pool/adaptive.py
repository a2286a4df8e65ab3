"""Adaptive per-host limits: :class:`AdaptiveLimits`, the options as a frozen value.

The rule itself (halve, grow back, close the surplus) is ``state.PoolState.response_seen``;
this module only holds and checks the options. No I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from .._validate import check_int

__all__ = ["DEFAULT_DECREASE_ON", "AdaptiveLimits", "AdaptiveLimitsTypes"]

DEFAULT_DECREASE_ON: Final = frozenset({429, 503})


@dataclass(frozen=True, slots=True, init=False)
class AdaptiveLimits:
    """Per-host limits that back off when a host says it is overloaded.

    A host's *effective* limit starts at its configured limit (``limit_per_host``, a
    ``host_limits`` override, or ``limit``). It halves (never below 1) when a response
    has a status in ``decrease_on``, or carries ``Retry-After`` (if ``retry_after``), and
    grows by one after ``increase_after`` successes in a row (responses below 500 that
    are no such signal), never above the configured limit.

    Args:
        decrease_on: statuses that halve the effective limit.
        increase_after: successes in a row that raise it by one.
        retry_after: whether a ``Retry-After`` header on any response halves it too.

    Raises:
        TypeError, ValueError: an option of the wrong type or out of range, named.
    """

    decrease_on: frozenset[int]
    increase_after: int
    retry_after: bool

    def __init__(
        self,
        *,
        decrease_on: Iterable[int] = DEFAULT_DECREASE_ON,
        increase_after: int = 10,
        retry_after: bool = True,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "decrease_on", _statuses(decrease_on))
        setattr_(self, "increase_after", check_int("AdaptiveLimits increase_after", increase_after))
        if not isinstance(retry_after, bool):
            raise TypeError(f"AdaptiveLimits retry_after must be a bool, not {retry_after!r}")
        setattr_(self, "retry_after", retry_after)

    @classmethod
    def coerce(cls, value: AdaptiveLimitsTypes) -> AdaptiveLimits | None:
        """``None`` or ``False`` (off), ``True`` (the defaults) or an AdaptiveLimits."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, AdaptiveLimits):
            return value
        raise TypeError(
            f"adaptive_limits must be None, a bool or a glasspool.AdaptiveLimits, not {value!r}"
        )


AdaptiveLimitsTypes = AdaptiveLimits | bool | None


def _statuses(values: Iterable[int]) -> frozenset[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise TypeError(f"AdaptiveLimits decrease_on must be a set of ints, not {values!r}")
    out = frozenset(values)
    for status in out:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(
                f"AdaptiveLimits decrease_on must hold ints from 100 to 599, got {status!r}"
            )
    return out
