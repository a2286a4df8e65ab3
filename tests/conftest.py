"""Shared fixtures: servers the tests start themselves, and a leak check around every test.

Fixtures::

    tls_certs     (session)  TLSCerts: trustme CA file, server cert/key for localhost,
                             127.0.0.1 and ::1, a wrong-host cert for example.invalid;
                             .client_context() / .server_context(wrong_host=...)
    nginx         (session)  NginxServer: .url(path, which="default"|"strict"|"tls"),
                             .ports, .ca_file, .content(path), .log_mark(),
                             .access_log_lines(since), await .wait_access_log(n, since=...)
    fault_server  (function) a started FaultServer (plain HTTP) on 127.0.0.1
    refused_port  (function) a 127.0.0.1 port where connecting is refused

See tests/nginx.py and tests/faults.py for what the servers do.

Leak check (autouse). A test errors at teardown when, after it and its fixtures finished:

- a task of its event loop is still pending (checked just before the per-test loop
  closes; tasks that are merely finishing a cancellation get a few loop iterations), or
- a socket it opened is still open (``/proc/self/fd`` compared before the test, after the
  higher-scoped fixtures started, and after the test's event loop was closed, so the loop's
  own self-pipe and transports it closes on shutdown do not count), or
- (async tests) a socket opened after its event loop started is still open when the test
  and its fixtures finished, while the loop still runs. This catches a transport left open
  on a loop that closes every transport when it closes (uvloop does, with a
  ResourceWarning), where the check after the loop sees nothing.

Close what you open: ``writer.close(); await writer.wait_closed()``, ``await
client.aclose()``, ``async with``. A test that already failed is not also reported for
leaks. ``@pytest.mark.no_leak_check(reason="...")`` turns the check off for one test.

Event loop. ``GLASSPOOL_TEST_LOOP=uvloop`` runs the whole suite on uvloop (default:
``asyncio``, the standard library's loop); see ``tests/loops.py``. The choice is installed as
the event loop *policy* for the test process, not as pytest-asyncio's loop factory, because
the policy also reaches the loops that tests, the CLI and the docs' examples start with
``asyncio.run()`` and ``asyncio.new_event_loop()``. Scripts the tests run in a subprocess
inherit the variable and pick the loop with :func:`tests.loops.run`. glasspool itself never
sets a policy: choosing the loop is its user's business.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Generator, Iterator
from typing import cast

import pytest
from pytest_asyncio import is_async_test

from tests import loops
from tests.faults import FaultServer, refusing_port
from tests.nginx import NginxServer, TLSCerts, start_nginx

pytest_plugins = ["pytester"]

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()
_SETTLE_ITERATIONS = 50


_SAVED_POLICY = pytest.StashKey[asyncio.AbstractEventLoopPolicy]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``no_leak_check`` marker; install the loop ``GLASSPOOL_TEST_LOOP`` names."""
    config.addinivalue_line(
        "markers", "no_leak_check(reason): do not fail this test for leaked tasks or sockets"
    )
    try:
        policy = loops.policy()
    except loops.UnknownLoop as exc:
        raise pytest.UsageError(str(exc)) from exc
    if policy is not None:
        config.stash[_SAVED_POLICY] = loops.swap_policy(policy)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put back the event loop policy that :func:`pytest_configure` replaced."""
    saved = config.stash.get(_SAVED_POLICY, None)
    if saved is not None:
        loops.swap_policy(saved)


def pytest_report_header(config: pytest.Config) -> str:
    """Say which event loop the run uses (the first lines of pytest's output)."""
    return f"event loop: {loops.describe()} (GLASSPOOL_TEST_LOOP={loops.name()})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember the call-phase report, so the leak check can tell whether the test failed."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


# -- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TLSCerts:
    """A trustme CA and the server certificates, written to a session temp directory."""
    return TLSCerts.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory, tls_certs: TLSCerts) -> Iterator[NginxServer]:
    """The system nginx on three fresh loopback ports (fails, never skips, if missing)."""
    server = start_nginx(tmp_path_factory.mktemp("nginx"), tls_certs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    """A started plain-HTTP FaultServer on 127.0.0.1; closed (all connections) afterwards."""
    async with FaultServer() as server:
        yield server


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the duration of the test."""
    with refusing_port() as port:
        yield port


# -- leak check -----------------------------------------------------------------------------


def socket_fds() -> dict[int, str]:
    """Return this process's open socket descriptors as {fd: "socket:[inode]"}.

    Empty where ``/proc/self/fd`` does not exist.
    """
    found: dict[int, str] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
        if target.startswith("socket:"):
            found[int(name)] = target
    return found


def describe_socket(fd: int, inode: str) -> str:
    """Return ``fd 7 (AF_INET SOCK_STREAM 127.0.0.1:5000 -> 127.0.0.1:41234)``, best effort."""
    try:
        dup = os.dup(fd)
    except OSError:
        return f"fd {fd} ({inode})"
    with socket.socket(fileno=dup) as sock:
        try:
            peer = f" -> {sock.getpeername()}"
        except OSError:
            peer = " (unconnected)"
        return f"fd {fd} ({sock.family.name} {sock.type.name} {sock.getsockname()}{peer})"


def _test_failed(request: pytest.FixtureRequest) -> bool:
    report = request.node.stash.get(_CALL_REPORT, None)
    return report is not None and report.failed


_SOCKET_LEAK_REPORTED = pytest.StashKey[bool]()


def _fail_for_sockets(request: pytest.FixtureRequest, leaked: dict[int, str], after: str) -> None:
    request.node.stash[_SOCKET_LEAK_REPORTED] = True
    described = "\n  ".join(describe_socket(fd, inode) for fd, inode in sorted(leaked.items()))
    pytest.fail(
        f"leak check: {len(leaked)} socket(s) opened during {request.node.nodeid} are still"
        f" open after {after}:\n  {described}",
        pytrace=False,
    )


def _new_sockets(before: set[str], *, unix: bool = True) -> dict[int, str]:
    """The sockets open now that were not in ``before``; with ``unix=False``, no AF_UNIX ones."""
    new = {fd: inode for fd, inode in socket_fds().items() if inode not in before}
    return new if unix else {fd: i for fd, i in new.items() if not _is_unix_socket(fd)}


def _is_unix_socket(fd: int) -> bool:
    try:
        dup = os.dup(fd)
    except OSError:
        return False
    with socket.socket(fileno=dup) as sock:
        return sock.family == socket.AF_UNIX


@pytest.fixture
def _leak_check_sockets(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail at teardown if a socket opened after setup is still open."""
    before = set(socket_fds().values())
    yield
    leaked = _new_sockets(before)
    if (
        leaked
        and not _test_failed(request)
        and not request.node.stash.get(_SOCKET_LEAK_REPORTED, False)
    ):
        _fail_for_sockets(request, leaked, "it and its event loop finished")


@pytest.fixture
async def _leak_check_tasks(
    request: pytest.FixtureRequest, _leak_check_sockets: None
) -> AsyncIterator[None]:
    """Fail at teardown if a task of the test's event loop is still pending, or a socket
    opened since the loop started is still open while it runs.

    Requests ``_leak_check_sockets`` first, so that socket baseline predates the loop and
    that socket check runs after the loop closed.
    """
    sockets_before = set(socket_fds().values())  # the loop's own are open by now
    yield
    current = asyncio.current_task()
    pending: list[asyncio.Task[object]] = []
    leaked: dict[int, str] = {}
    for _ in range(_SETTLE_ITERATIONS):  # let cancelled tasks and closing transports finish
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        # AF_UNIX sockets do not count here: uvloop opens a new wake-up socketpair each time
        # it starts running. The check after the loop closed still sees a leaked one,
        # unless the loop closed it.
        leaked = _new_sockets(sockets_before, unix=False)
        if not pending and not leaked:
            return
        await asyncio.sleep(0)
    if not pending:
        if not _test_failed(request):
            _fail_for_sockets(request, leaked, "it and its fixtures finished")
        return
    if not _test_failed(request):
        listed = "\n  ".join(repr(t) for t in pending)
        pytest.fail(
            f"leak check: {len(pending)} task(s) created during {request.node.nodeid} are still"
            f" pending after it and its fixtures finished:\n  {listed}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _leak_check(request: pytest.FixtureRequest) -> None:
    """Put the task check (async tests) or the socket check (sync tests) around each test."""
    item = cast(pytest.Item, request.node)
    if item.get_closest_marker("no_leak_check") is not None:
        return
    if not is_async_test(item):
        request.getfixturevalue("_leak_check_sockets")
        return
    marker = item.get_closest_marker("asyncio")
    scope = (marker.kwargs.get("loop_scope") if marker else None) or item.config.getini(
        "asyncio_default_test_loop_scope"
    )
    if scope == "function":
        request.getfixturevalue("_leak_check_tasks")
        return
    # A wider loop outlives the test: start it before the baseline (pytest-asyncio's
    # private runner fixture name) and check only sockets.
    request.getfixturevalue(f"_{scope}_scoped_runner")
    request.getfixturevalue("_leak_check_sockets")
