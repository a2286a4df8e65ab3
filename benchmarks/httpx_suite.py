"""Run httpx's own async client and timeout tests with glasspool's transport underneath.

httpx's test suite is not part of this repository. Give a checkout of httpx's source
(``--httpx-src``, e.g. ``git clone https://github.com/encode/httpx``); its ``tests/``
directory is copied into a temporary directory, and the copy's ``conftest.py`` gets an
autouse fixture that makes every ``httpx.AsyncClient`` built without ``transport=`` use
``glasspool.httpx.AsyncTransport`` (``verify``, ``cert``, ``http2`` and ``limits`` passed
on). The tests need ``uvicorn`` and ``trustme`` besides pytest and anyio: put them on
``--deps`` (a ``pip install --target`` directory) or in the environment. Only the asyncio
runs are collected (``-k 'not trio'``); without trio installed, the copy's
``tests/concurrency.py`` is replaced by an asyncio-only ``sleep``.

    PYTHONPATH=src .venv/bin/python benchmarks/httpx_suite.py --httpx-src ../httpx
    PYTHONPATH=src .venv/bin/python benchmarks/httpx_suite.py --httpx-src ../httpx \\
        --deps /tmp/hxdeps --tests client/test_async_client.py test_timeouts.py

pytest's summary (``-rf``) lists each failure. Only loopback servers the tests start are
contacted. Never collected by glasspool's own pytest run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_CONFTEST = """

# --- added by glasspool's benchmarks/httpx_suite.py ---
import glasspool.httpx as _gp_httpx  # noqa: E402
import httpx._client as _hx_client  # noqa: E402


def _gp_transport(*, verify=True, cert=None, http2=False, limits=None, **_ignored):
    if verify is None:
        verify = True
    options = {} if limits is None else {"limits": limits}
    return _gp_httpx.AsyncTransport(verify=verify, cert=cert, http2=http2, **options)


@pytest.fixture(autouse=True)
def _glasspool_transport(monkeypatch):
    monkeypatch.setattr(_hx_client, "AsyncHTTPTransport", _gp_transport)
"""

# httpx's tests/concurrency.py imports trio; only the asyncio runs are collected here, so
# without trio installed the copy gets this asyncio-only equivalent.
_CONCURRENCY = """import asyncio


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
"""

DEFAULT_TESTS = ("client/test_async_client.py", "test_timeouts.py")


def main(argv: list[str] | None = None) -> int:
    """Copy httpx's tests, install the transport through their conftest, run pytest.

    Returns:
        pytest's exit status.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--httpx-src", type=Path, required=True, help="httpx source checkout")
    parser.add_argument("--deps", type=Path, help="extra directory put on PYTHONPATH")
    parser.add_argument(
        "--tests", nargs="+", default=list(DEFAULT_TESTS), help="paths under httpx's tests/"
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds for the whole run")
    args = parser.parse_args(argv)
    source = args.httpx_src / "tests"
    if not (source / "conftest.py").is_file():
        parser.error(f"{source} has no conftest.py: is --httpx-src an httpx checkout?")
    with tempfile.TemporaryDirectory(prefix="httpx-suite-") as tmp:
        tests = Path(tmp) / "tests"
        shutil.copytree(source, tests)
        with (tests / "conftest.py").open("a", encoding="utf-8") as conftest:
            conftest.write(_CONFTEST)
        if importlib.util.find_spec("trio") is None:
            (tests / "concurrency.py").write_text(_CONCURRENCY, encoding="utf-8")
        paths = [os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""),) if p)]
        if args.deps is not None:
            paths.append(str(args.deps.resolve()))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
        command = [
            sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider",
            "-k", "not trio", "-o", "addopts=", "-W", "ignore",
            *(f"tests/{t}" for t in args.tests),
        ]  # fmt: skip
        try:
            return subprocess.run(command, cwd=tmp, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"httpx's tests did not finish within {args.timeout} s", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
