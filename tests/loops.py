"""Which event loop the tests run on: ``GLASSPOOL_TEST_LOOP`` = ``asyncio`` (default) or ``uvloop``.

``tests/conftest.py`` installs the choice as the event loop policy of the test process (its
docstring says why a policy). Scripts that tests start in a subprocess inherit the variable
and start their loop with :func:`run`, or are told :func:`name` on their command line.
glasspool itself never sets a policy: choosing the loop is its user's business.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import warnings
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

__all__ = ["ENV_VAR", "UnknownLoop", "describe", "name", "policy", "run", "swap_policy"]

ENV_VAR = "GLASSPOOL_TEST_LOOP"
LOOPS = ("asyncio", "uvloop")

T = TypeVar("T")


class UnknownLoop(Exception):
    """``GLASSPOOL_TEST_LOOP`` names no loop we know, or one that is not installed."""


def name() -> str:
    """The chosen loop: ``GLASSPOOL_TEST_LOOP``, or ``asyncio`` when it is unset or empty.

    Raises:
        UnknownLoop: it names something else.
    """
    chosen = os.environ.get(ENV_VAR, "").strip().lower() or "asyncio"
    if chosen not in LOOPS:
        raise UnknownLoop(f"{ENV_VAR}={chosen!r}: expected one of {', '.join(LOOPS)}")
    return chosen


def _uvloop() -> ModuleType:
    try:
        return importlib.import_module("uvloop")
    except ImportError as exc:
        raise UnknownLoop(f"{ENV_VAR}=uvloop, but uvloop is not installed") from exc


def _factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a loop of the chosen kind; None for asyncio's default."""
    if name() == "asyncio":
        return None
    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = _uvloop().new_event_loop
    return new_event_loop


def policy() -> asyncio.AbstractEventLoopPolicy | None:
    """A policy that makes loops of the chosen kind; None for asyncio's default.

    Raises:
        UnknownLoop: as :func:`name`, or uvloop is chosen but not installed.
    """
    if name() == "asyncio":
        return None
    made: asyncio.AbstractEventLoopPolicy = _uvloop().EventLoopPolicy()
    return made


def describe() -> str:
    """The loop and its version, for pytest's report header."""
    if name() == "asyncio":
        return "asyncio (the standard library's default loop)"
    return f"uvloop {_uvloop().__version__}"


def swap_policy(new: asyncio.AbstractEventLoopPolicy) -> asyncio.AbstractEventLoopPolicy:
    """Install ``new`` as the event loop policy; return the one it replaced.

    The policy functions are deprecated from Python 3.14 on; nothing else reaches the loops
    that ``asyncio.run()`` starts on 3.11, in the CLI and in the docs' examples.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(new)
    return old


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop, without installing a policy."""
    with asyncio.Runner(loop_factory=_factory()) as runner:
        return runner.run(main)
