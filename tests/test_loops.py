"""The tests' event loop switch (``GLASSPOOL_TEST_LOOP``), and glasspool's own neutrality."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests import loops


def kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` for a uvloop loop, else ``asyncio``."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


async def test_async_tests_run_on_the_chosen_loop() -> None:
    assert kind(asyncio.get_running_loop()) == loops.name()


def test_asyncio_run_in_a_sync_test_uses_the_chosen_loop_too() -> None:
    async def running() -> str:
        return kind(asyncio.get_running_loop())

    assert asyncio.run(running()) == loops.name()


def test_loops_run_uses_the_chosen_loop_without_a_policy_of_its_own() -> None:
    code = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(Path(loops.__file__).parent)!r})\n"
        "import loops\n"
        "async def running():\n"
        "    return type(asyncio.get_running_loop()).__module__.split('.')[0]\n"
        "print(loops.run(running()))\n"
        "print(type(asyncio.get_event_loop_policy()).__module__.split('.')[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    ran_on, policy = done.stdout.split()
    assert ran_on == loops.name()
    assert policy == "asyncio"


def test_importing_glasspool_sets_no_event_loop_policy() -> None:
    code = (
        "import asyncio\n"
        "before = asyncio.get_event_loop_policy()\n"
        "import glasspool, glasspool.cli, glasspool.timeline\n"
        "assert asyncio.get_event_loop_policy() is before\n"
        "print(type(before).__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("asyncio")
