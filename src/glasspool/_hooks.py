"""Event hooks: functions called with each request before it is sent and each response
head as it arrives (``Client(event_hooks=...)``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

__all__ = ["EventHooks", "Hook", "call_hooks", "check_hooks"]

Hook: TypeAlias = Callable[[Any], Any]
"""A hook: ``fn(request)`` or ``fn(response)``, returning ``None`` or an awaitable."""
EventHooks: TypeAlias = Mapping[str, Sequence[Hook]]
"""``{"request": [...], "response": [...]}``; either key may be left out."""

_KINDS = ("request", "response")


def check_hooks(event_hooks: EventHooks | None) -> tuple[tuple[Hook, ...], tuple[Hook, ...]]:
    """The request and response hooks of ``event_hooks``, checked.

    Raises:
        TypeError: not a mapping, an unknown key, a value that is not a list or tuple, or
            a hook that is not callable (named).
    """
    if event_hooks is None:
        return (), ()
    if not isinstance(event_hooks, Mapping):
        raise TypeError(
            f"event_hooks must be a mapping like {{'request': [...], 'response': [...]}}, "
            f"not {type(event_hooks).__name__}"
        )
    found: dict[str, tuple[Hook, ...]] = {}
    for kind, hooks in event_hooks.items():
        if kind not in _KINDS:
            raise TypeError(f"event_hooks key {kind!r} is not one of 'request', 'response'")
        if not isinstance(hooks, list | tuple):
            raise TypeError(
                f"event_hooks[{kind!r}] must be a list of callables, not {type(hooks).__name__}"
            )
        for i, hook in enumerate(hooks):
            if not callable(hook):
                raise TypeError(
                    f"event_hooks[{kind!r}][{i}] is not callable: {type(hook).__name__}"
                )
        found[kind] = tuple(hooks)
    return found.get("request", ()), found.get("response", ())


async def call_hooks(hooks: tuple[Hook, ...], value: object) -> None:
    """Call each hook with ``value`` in order, awaiting what a hook returns if awaitable."""
    for hook in hooks:
        result = hook(value)
        if inspect.isawaitable(result):
            await result
