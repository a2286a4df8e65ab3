"""Proxies: tinyproxy and squid (HTTP, CONNECT, Basic auth), microsocks (SOCKS5), an HTTPS proxy,
the environment and NO_PROXY, credentials, keys, errors; the pool at rest after each."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yarl

import glasspool
from glasspool._pool.key import ProxyIdentity
from glasspool._proxy import EnvProxies, NoProxy, ProxyChoice, parse_proxy
from tests.nginx import TLSCerts
from tests.proxies import DyingProxy, Microsocks, Origin, Squid, Tinyproxy, TLSFront

USER, PASSWORD = "alice", "s3cret-pw"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxies")


@pytest.fixture(scope="module")
def tinyproxy(proxy_dir: Path) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(proxy_dir).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def tinyproxy_auth(proxy_dir: Path) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(proxy_dir, auth=(USER, PASSWORD)).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def squid_auth() -> Iterator[Squid]:
    proxy = Squid(auth=(USER, PASSWORD)).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def socks(proxy_dir: Path) -> Iterator[Microsocks]:
    proxy = Microsocks(proxy_dir).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def socks_auth(proxy_dir: Path) -> Iterator[Microsocks]:
    proxy = Microsocks(proxy_dir, auth=(USER, PASSWORD)).start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def http_origin() -> AsyncIterator[Origin]:
    origin = await Origin().start()
    yield origin
    await origin.aclose()


@pytest.fixture
async def https_origin(tls_certs: TLSCerts) -> AsyncIterator[Origin]:
    origin = await Origin(tls_certs.server_context()).start()
    yield origin
    await origin.aclose()


def at_rest(client: glasspool.Client) -> glasspool.PoolStats:
    stats = client.pool.stats()
    assert stats.in_use == 0 and stats.waiting == 0 and stats.connecting == 0, stats
    return stats


def assert_no_credentials(origin: Origin) -> None:
    assert origin.heads, "the origin received nothing"
    for head in origin.heads:
        assert b"proxy-authorization" not in head.lower(), head
        assert PASSWORD.encode() not in head, head


# ------------------------------------------------------------- HTTP proxies


@pytest.mark.parametrize("auth", [False, True])
async def test_http_proxy_to_http_origin(
    tinyproxy: Tinyproxy, tinyproxy_auth: Tinyproxy, http_origin: Origin, auth: bool
) -> None:
    proxy_url = tinyproxy_auth.url(USER, PASSWORD) if auth else tinyproxy.url()
    async with glasspool.Client(proxy=proxy_url) as client:
        for i in range(3):
            r = await client.get(http_origin.url(f"/a{i}"))
            assert r.status == 200 and r.content == f"origin:/a{i}".encode()
        stats = at_rest(client)
        (key,) = stats.hosts
        assert key.proxy is not None and key.proxy.port in (tinyproxy.port, tinyproxy_auth.port)
        assert stats.hosts[key].requests == 3
        assert PASSWORD not in str(key) and PASSWORD not in repr(key)
        if auth:
            assert f"via http://{USER}:***@127.0.0.1:{tinyproxy_auth.port}" in str(key)
    assert_no_credentials(http_origin)


@pytest.mark.parametrize("auth", [False, True])
async def test_http_proxy_connect_to_https_origin(
    tinyproxy: Tinyproxy,
    tinyproxy_auth: Tinyproxy,
    https_origin: Origin,
    tls_certs: TLSCerts,
    auth: bool,
) -> None:
    proxy_url = tinyproxy_auth.url(USER, PASSWORD) if auth else tinyproxy.url()
    async with glasspool.Client(proxy=proxy_url, verify=str(tls_certs.ca_file)) as client:
        for i in range(3):
            r = await client.get(https_origin.url(f"/s{i}"))
            assert r.content == f"origin:/s{i}".encode()
        stats = at_rest(client)
        (key,) = stats.hosts
        assert stats.hosts[key].opened == 1 and stats.hosts[key].reused == 2
        assert str(key).startswith(f"https://localhost:{https_origin.port} via http://")
    assert_no_credentials(https_origin)
    # inside the tunnel the origin sees an ordinary origin-form request
    assert https_origin.heads[0].startswith(b"GET /s0 HTTP/1.1\r\n")


async def test_missing_credentials_raise_proxy_error_407(
    tinyproxy_auth: Tinyproxy, http_origin: Origin, https_origin: Origin, tls_certs: TLSCerts
) -> None:
    async with glasspool.Client(
        proxy=tinyproxy_auth.url(), verify=str(tls_certs.ca_file)
    ) as client:
        # CONNECT (https) and a forwarded request (http) both get a 407
        for url in (https_origin.url("/x"), http_origin.url("/y")):
            with pytest.raises(glasspool.ProxyError) as info:
                await client.get(url)
            err = info.value
            assert isinstance(err, glasspool.NetworkError)
            assert err.status == 407 and "407" in str(err)
            assert err.proxy == f"http://127.0.0.1:{tinyproxy_auth.port}"
            assert f"proxy http://127.0.0.1:{tinyproxy_auth.port}" in str(err)
        at_rest(client)
    assert not http_origin.heads and not https_origin.heads


async def test_wrong_credentials_are_refused_and_never_shown(
    tinyproxy_auth: Tinyproxy, https_origin: Origin, tls_certs: TLSCerts
) -> None:
    bad = tinyproxy_auth.url(USER, "wrong-pw")
    events: list[glasspool.PoolEvent] = []
    async with glasspool.Client(proxy=bad, verify=str(tls_certs.ca_file)) as client:
        client.pool.add_listener(events.append)
        with pytest.raises(glasspool.ProxyError) as info:
            await client.get(https_origin.url("/x"))
        err = info.value
        assert err.status in (401, 407)  # tinyproxy 1.11 answers a bad CONNECT login with 401
        for text in (str(err), err.proxy, repr(err), repr(client), str(client.pool.stats())):
            assert "wrong-pw" not in text
        assert f"{USER}:***@127.0.0.1:{tinyproxy_auth.port}" in str(err)
        at_rest(client)
    assert events and not any("wrong-pw" in str(e) or "wrong-pw" in repr(e) for e in events)
    assert not https_origin.heads


async def test_squid_keeps_forwarded_and_tunnelled_connections_alive(
    squid_auth: Squid, http_origin: Origin, https_origin: Origin, tls_certs: TLSCerts
) -> None:
    # squid keeps the client's connection open after a forwarded response (tinyproxy closes
    # it), so plain http through it reuses connections as https through a tunnel does
    proxy_url = squid_auth.url(USER, PASSWORD)
    events: list[glasspool.PoolEvent] = []
    async with glasspool.Client(proxy=proxy_url, verify=str(tls_certs.ca_file)) as client:
        client.pool.add_listener(events.append)
        for origin in (http_origin, https_origin):
            for i in range(3):
                r = await client.get(origin.url(f"/q{i}"))
                assert r.status == 200 and r.content == f"origin:/q{i}".encode()
        stats = at_rest(client)
        assert len(stats.hosts) == 2
        for key, host in stats.hosts.items():
            assert (host.opened, host.reused, host.requests) == (1, 2, 3), key
            assert PASSWORD not in str(key)
    kinds = [(e.kind, e.reason) for e in events if e.kind in ("tunnel", "tls")]
    assert kinds == [("tunnel", "connect"), ("tls", "origin")]
    assert_no_credentials(http_origin)
    assert_no_credentials(https_origin)
    assert https_origin.heads[0].startswith(b"GET /q0 HTTP/1.1\r\n")


@pytest.mark.parametrize("password", [None, "wrong-pw"])
async def test_squid_refuses_missing_and_wrong_credentials_with_407(
    squid_auth: Squid,
    http_origin: Origin,
    https_origin: Origin,
    tls_certs: TLSCerts,
    password: str | None,
) -> None:
    proxy_url = squid_auth.url() if password is None else squid_auth.url(USER, password)
    async with glasspool.Client(proxy=proxy_url, verify=str(tls_certs.ca_file)) as client:
        for url in (http_origin.url("/x"), https_origin.url("/y"), http_origin.url("/z")):
            with pytest.raises(glasspool.ProxyError) as info:
                await client.get(url)
            err = info.value
            assert err.status == 407, err
            assert "407" in str(err) and f"127.0.0.1:{squid_auth.port}" in str(err)
            assert "wrong-pw" not in str(err) and "wrong-pw" not in err.proxy
        stats = at_rest(client)
        hosts = {key.scheme: host for key, host in stats.hosts.items()}
        # a 407 to a forwarded request is a whole response on a clean connection: kept and
        # reused for the next one; a refused CONNECT leaves no tunnel to keep
        assert (hosts["http"].opened, hosts["http"].reused, hosts["http"].idle) == (1, 1, 1)
        assert (hosts["https"].opened, hosts["https"].idle) == (0, 0)
    assert not http_origin.heads and not https_origin.heads


async def test_refused_connect_raises_proxy_error(tinyproxy: Tinyproxy, refused_port: int) -> None:
    async with glasspool.Client(proxy=tinyproxy.url()) as client:
        with pytest.raises(glasspool.ProxyError) as info:
            await client.get(f"https://127.0.0.1:{refused_port}/")
        assert info.value.status is not None and not 200 <= info.value.status < 300
        assert f"proxy http://127.0.0.1:{tinyproxy.port}" in str(info.value)
        assert f"CONNECT 127.0.0.1:{refused_port}" in str(info.value)
        stats = at_rest(client)
        assert stats.open == 0


async def test_refused_connect_reason_is_sanitized() -> None:
    fake = await DyingProxy(connect_status=b"403 Go\x1b[2J away\x85").start()
    try:
        async with glasspool.Client(proxy=fake.url()) as client:
            with pytest.raises(glasspool.ProxyError) as info:
                await client.get("https://origin.invalid/")
            assert info.value.status == 403
            assert "\x1b" not in str(info.value) and "\\x1b" in str(info.value)
            at_rest(client)
    finally:
        await fake.aclose()


async def test_proxy_unreachable_names_the_proxy(refused_port: int) -> None:
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{refused_port}"
    async with glasspool.Client(proxy=url) as client:
        with pytest.raises(glasspool.ConnectError) as info:
            await client.get("http://origin.invalid/")
        assert f"proxy http://{USER}:***@127.0.0.1:{refused_port}" in str(info.value)
        assert PASSWORD not in str(info.value)
        at_rest(client)


async def test_proxy_dying_mid_tunnel_frees_the_slot(
    https_origin: Origin, tls_certs: TLSCerts
) -> None:
    fake = await DyingProxy().start()
    try:
        async with glasspool.Client(proxy=fake.url(), verify=str(tls_certs.ca_file)) as client:
            assert (await client.get(https_origin.url("/first"))).status == 200
            async with client.stream("GET", https_origin.url("/slow")) as r:
                it = r.aiter_raw()
                assert await it.__anext__()
                await fake.aclose()  # the proxy goes away with the tunnel mid-body
                with pytest.raises((glasspool.NetworkError, glasspool.IncompleteBody)):
                    async for _ in it:
                        pass
            stats = at_rest(client)
            assert stats.open == 0
            # the next request opens a new tunnel ... which fails: the proxy is gone
            with pytest.raises(glasspool.ConnectError):
                await client.get(https_origin.url("/again"))
            at_rest(client)
    finally:
        https_origin.release.set()
        await fake.aclose()


# -------------------------------------------------------------------- SOCKS


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
@pytest.mark.parametrize("auth", [False, True])
async def test_socks_to_http_and_https(
    socks: Microsocks,
    socks_auth: Microsocks,
    http_origin: Origin,
    https_origin: Origin,
    tls_certs: TLSCerts,
    scheme: str,
    auth: bool,
) -> None:
    url = socks_auth.url(scheme, USER, PASSWORD) if auth else socks.url(scheme)
    async with glasspool.Client(proxy=url, verify=str(tls_certs.ca_file)) as client:
        for origin in (http_origin, https_origin):
            for i in range(2):
                r = await client.get(origin.url(f"/k{i}"))
                assert r.content == f"origin:/k{i}".encode()
        stats = at_rest(client)
        assert len(stats.hosts) == 2
        for key, host in stats.hosts.items():
            assert key.proxy is not None and key.proxy.scheme == scheme
            assert host.opened == 1 and host.reused == 1
            assert PASSWORD not in str(key) and PASSWORD not in repr(key)
    assert_no_credentials(http_origin)
    assert http_origin.heads[0].startswith(b"GET /k0 HTTP/1.1\r\n")  # origin form


async def test_socks_wrong_password(socks_auth: Microsocks, http_origin: Origin) -> None:
    async with glasspool.Client(proxy=socks_auth.url("socks5", USER, "nope-pw")) as client:
        with pytest.raises(glasspool.ProxyError) as info:
            await client.get(http_origin.url("/"))
        assert "nope-pw" not in str(info.value)
        assert f"socks5://{USER}:***@127.0.0.1:{socks_auth.port}" in str(info.value)
        at_rest(client)
    assert not http_origin.heads


# ------------------------------------------------------------ HTTPS proxies


async def test_https_proxy_to_http_and_https(
    tinyproxy_auth: Tinyproxy, http_origin: Origin, https_origin: Origin, tls_certs: TLSCerts
) -> None:
    front = await TLSFront(tls_certs.server_context(), tinyproxy_auth.port).start()
    try:
        url = front.url(USER, PASSWORD)
        events: list[glasspool.PoolEvent] = []
        async with glasspool.Client(proxy=url, verify=str(tls_certs.ca_file)) as client:
            client.pool.add_listener(events.append)
            for origin in (http_origin, https_origin):  # https: TLS inside TLS
                for i in range(2):
                    r = await client.get(origin.url(f"/t{i}"))
                    assert r.content == f"origin:/t{i}".encode()
            stats = at_rest(client)
            # tinyproxy closes after each forwarded request; a tunnel is kept and reused
            assert {k.scheme: h.opened for k, h in stats.hosts.items()}["https"] == 1
            assert all("via https://alice:***@localhost:" in str(k) for k in stats.hosts)
    finally:
        await front.aclose()
    # the tunnelled connection: TLS with the proxy, CONNECT, then TLS with the origin
    tunnelled = [e for e in events if e.key.scheme == "https"]
    assert [(e.kind, e.reason) for e in tunnelled][:5] == [
        ("connecting", None),
        ("tls", "proxy"),
        ("tunnel", "connect"),
        ("tls", "origin"),
        ("acquired", "new"),
    ]
    forwarded = [(e.kind, e.reason) for e in events if e.key.scheme == "http"]
    assert ("tls", "proxy") in forwarded and ("tls", "origin") not in forwarded
    assert_no_credentials(http_origin)
    assert_no_credentials(https_origin)


async def test_https_proxy_certificate_is_verified(
    tinyproxy: Tinyproxy, http_origin: Origin, tls_certs: TLSCerts
) -> None:
    front = await TLSFront(tls_certs.server_context(wrong_host=True), tinyproxy.port).start()
    try:
        async with glasspool.Client(proxy=front.url(), verify=str(tls_certs.ca_file)) as client:
            with pytest.raises(glasspool.TLSError, match="proxy https://localhost"):
                await client.get(http_origin.url("/"))
            at_rest(client)
    finally:
        await front.aclose()


# --------------------------------------------------------------- pool keys


async def test_keys_kept_apart(
    tinyproxy: Tinyproxy, tinyproxy_auth: Tinyproxy, http_origin: Origin
) -> None:
    url = http_origin.url("/")
    async with glasspool.Client(proxy=tinyproxy.url()) as client:
        await client.get(url)  # through the client's proxy
        await client.get(url, proxy=None)  # direct
        await client.get(url, proxy=tinyproxy_auth.url(USER, PASSWORD))
        # the same proxy by another name is another proxy
        await client.get(url, proxy=tinyproxy.url().replace("127.0.0.1", "localhost"))
        stats = at_rest(client)
    assert len(stats.hosts) == 4
    shown = sorted(str(k) for k in stats.hosts)
    assert shown[0] == f"http://localhost:{http_origin.port}"
    assert all(h.opened == 1 and h.requests == 1 for h in stats.hosts.values())
    assert not any(PASSWORD in s for s in shown)


async def test_per_request_proxy_follows_redirects_and_events(
    tinyproxy: Tinyproxy, http_origin: Origin
) -> None:
    events: list[glasspool.PoolEvent] = []
    async with glasspool.Client() as client:
        client.pool.add_listener(events.append)
        r = await client.get(http_origin.url("/p"), proxy=tinyproxy.url())
        assert r.status == 200
        at_rest(client)
    assert all(e.key.proxy is not None for e in events)
    assert any(e.kind == "connecting" for e in events)


@pytest.mark.parametrize("kind", ["http", "socks5h"])
async def test_tunnel_event_and_timeline(
    tinyproxy_auth: Tinyproxy,
    socks: Microsocks,
    https_origin: Origin,
    tls_certs: TLSCerts,
    tmp_path: Path,
    kind: str,
) -> None:
    url = tinyproxy_auth.url(USER, PASSWORD) if kind == "http" else socks.url(kind)
    events: list[glasspool.PoolEvent] = []
    async with glasspool.Client(proxy=url, verify=str(tls_certs.ca_file)) as client:
        client.pool.add_listener(events.append)
        timeline = glasspool.Timeline(client.pool)
        await client.get(https_origin.url("/1"))
        await client.get(https_origin.url("/2"))
        at_rest(client)
    kinds = [(e.kind, e.reason) for e in events]
    reason = "connect" if kind == "http" else "socks"
    assert kinds[:4] == [
        ("connecting", None),
        ("tunnel", reason),
        ("tls", "origin"),  # TLS with the origin, inside the tunnel
        ("acquired", "new"),
    ]
    assert kinds.count(("tunnel", reason)) == 1  # the second request reused the tunnel
    assert kinds.count(("tls", "origin")) == 1
    assert events[1].connection_id == events[0].connection_id
    page = timeline.render_html()
    trace = json.dumps(timeline.render_trace())
    assert PASSWORD not in trace
    assert "proxy tunnel ready after" in page
    assert "TLS handshake with the server" in page
    assert PASSWORD not in page and PASSWORD not in "".join(map(str, events))


async def test_bad_proxy_argument() -> None:
    with pytest.raises(glasspool.InvalidURL, match=r"proxy=.*unsupported proxy scheme 'ftp'"):
        glasspool.Client(proxy="ftp://u:pw123@proxy:21")
    with pytest.raises(glasspool.InvalidURL) as info:
        glasspool.Client(proxy="http://u:pw123@proxy:notaport")
    assert "pw123" not in str(info.value)
    async with glasspool.Client() as client:
        with pytest.raises(glasspool.InvalidURL, match="proxy="):
            await client.get("http://example.invalid/", proxy="http://proxy/path")
        at_rest(client)


# -------------------------------------------------------------- environment


def test_no_proxy_rules() -> None:
    rules = NoProxy(
        "example.org, .internal.test,*.corp.test  10.0.0.0/8,192.168.1.5,::1,"
        "[fd00::1]:8443,api.test:8080,fe80::/10"
    )
    yes = [
        ("example.org", 80),
        ("a.b.example.org", 443),
        ("EXAMPLE.ORG.", 80),
        ("internal.test", 80),
        ("x.internal.test", 80),
        ("corp.test", 80),
        ("y.corp.test", 1),
        ("10.1.2.3", 80),
        ("192.168.1.5", 443),
        ("::1", 80),
        ("[::1]", 80),
        ("fd00::1", 8443),
        ("api.test", 8080),
        ("fe80::9", 80),
    ]
    no = [
        ("badexample.org", 80),
        ("example.org.evil", 80),
        ("11.0.0.1", 80),
        ("192.168.1.6", 80),
        ("fd00::1", 443),
        ("api.test", 8081),
        ("other.test", 80),
        ("10.0.0.1.nip.io", 80),
    ]
    for host, port in yes:
        assert rules.matches(host, port), (host, port)
    for host, port in no:
        assert not rules.matches(host, port), (host, port)
    assert NoProxy("*").matches("anything", 1)
    assert not NoProxy("").matches("anything", 1) and not NoProxy(" , ")


def test_env_lower_case_wins_and_cgi_guard() -> None:
    env = EnvProxies(
        {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2", "ALL_PROXY": "p:3"},
        None,
    )
    assert env.http == ProxyIdentity("http", "lower", 2)
    assert env.all == ProxyIdentity("http", "p", 3)
    cgi = EnvProxies({"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, None)
    assert cgi.http is None
    choice = ProxyChoice(None, EnvProxies({"https_proxy": "h:1", "all_proxy": "a:2"}, None))
    assert choice.select(yarl.URL("https://x/")) == ProxyIdentity("http", "h", 1)
    assert choice.select(yarl.URL("http://x/")) == ProxyIdentity("http", "a", 2)


def test_parse_proxy_defaults() -> None:
    assert parse_proxy("socks5h://u:p%40ss@[::1]", source="x", tls=None) == ProxyIdentity(
        "socks5h", "::1", 1080, "u", "p@ss"
    )
    assert str(parse_proxy("https://u:p@h", source="x", tls=None)) == "https://u:***@h:443"


@pytest.mark.parametrize("var", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "http_proxy"])
def test_malformed_env_proxy_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "http://u:hunter2@proxy:99999999")
    with pytest.raises(glasspool.InvalidURL) as info:
        glasspool.Client()
    assert f"environment variable {var}" in str(info.value)
    assert "hunter2" not in str(info.value)
    glasspool.Client(trust_env=False)  # ignored: nothing to close, no connection made


async def test_env_proxy_and_no_proxy_end_to_end(
    monkeypatch: pytest.MonkeyPatch, tinyproxy: Tinyproxy, http_origin: Origin
) -> None:
    monkeypatch.setenv("http_proxy", tinyproxy.url())
    monkeypatch.setenv("NO_PROXY", f"127.0.0.1:{http_origin.port}, .example.invalid")
    proxied = http_origin.url("/e1")  # host "localhost": not in NO_PROXY
    direct = http_origin.url("/e2", host="127.0.0.1")
    async with glasspool.Client() as client:
        assert (await client.get(proxied)).status == 200
        assert (await client.get(direct)).status == 200
        stats = at_rest(client)
    by_host = {k.host: k for k in stats.hosts}
    assert by_host["localhost"].proxy == ProxyIdentity("http", "127.0.0.1", tinyproxy.port)
    assert by_host["127.0.0.1"].proxy is None
    # trust_env=False ignores the environment; an argument beats it
    async with glasspool.Client(trust_env=False) as client:
        await client.get(proxied)
        assert [k.proxy for k in client.pool.stats().hosts] == [None]
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    async with glasspool.Client(proxy=tinyproxy.url()) as client:
        await client.get(direct)  # NO_PROXY does not apply to proxy=
        (key,) = client.pool.stats().hosts
        assert key.proxy is not None and key.proxy.port == tinyproxy.port
        at_rest(client)


async def test_connect_timeout_through_proxy(tls_certs: TLSCerts) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with glasspool.Client(
            proxy=f"http://127.0.0.1:{port}", timeout=glasspool.Timeout(connect=0.2)
        ) as client:
            with pytest.raises(glasspool.ConnectTimeout, match="through proxy"):
                await client.get("https://origin.invalid/")
            at_rest(client)
    finally:
        server.close()
        await server.wait_closed()


async def test_ssl_cert_file_from_env(
    monkeypatch: pytest.MonkeyPatch, https_origin: Origin, tls_certs: TLSCerts
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_certs.ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with glasspool.Client() as client:  # verify=True: the environment's CA file
        assert (await client.get(https_origin.url("/ca"))).status == 200
        at_rest(client)
    async with glasspool.Client(trust_env=False) as client:  # the system's CAs only
        with pytest.raises(glasspool.TLSError):
            await client.get(https_origin.url("/ca"))
        at_rest(client)
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="environment variable SSL_CERT_FILE"):
        glasspool.Client()
    glasspool.Client(verify=False)  # verify=False never reads it


async def test_httpx_transport_takes_proxy(tinyproxy: Tinyproxy, http_origin: Origin) -> None:
    import httpx

    from glasspool.httpx import AsyncTransport

    transport = AsyncTransport(proxy=tinyproxy.url())
    async with httpx.AsyncClient(transport=transport) as client:
        r = await client.get(http_origin.url("/hx"))
        assert r.content == b"origin:/hx"
    (key,) = transport.pool.stats().hosts
    assert key.proxy is not None and key.proxy.port == tinyproxy.port


async def test_httpx_transport_reads_environment_proxies_only_when_asked(
    tinyproxy: Tinyproxy, http_origin: Origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from glasspool.httpx import AsyncTransport

    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url())
    for trust_env, via_proxy in ((None, False), (False, False), (True, True)):
        options = {} if trust_env is None else {"trust_env": trust_env}
        transport = AsyncTransport(**options)
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.get(http_origin.url("/env"))
            assert r.content == b"origin:/env"
        (key,) = transport.pool.stats().hosts
        assert (key.proxy is not None) is via_proxy, (trust_env, str(key))


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer CONNECT"),
        (b"HTTP/1.1 200 OK\r\n\r\nextra bytes", "sent data after its CONNECT reply"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n", "over 65536 bytes"),
    ],
)
async def test_bad_connect_replies(reply: bytes, message: str) -> None:
    fake = await DyingProxy(raw_reply=reply).start()
    try:
        async with glasspool.Client(proxy=fake.url()) as client:
            with pytest.raises(glasspool.ProxyError, match=message) as info:
                await client.get("https://origin.invalid/")
            assert info.value.status is None
            stats = at_rest(client)
            assert stats.open == 0
    finally:
        await fake.aclose()


async def test_a_proxy_closing_instead_of_answering_connect_is_a_proxy_error() -> None:
    heads: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()  # no reply at all

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    proxy = f"http://{USER}:{PASSWORD}@127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        async with glasspool.Client(proxy=proxy) as client:
            with pytest.raises(glasspool.ProxyError, match="without answering CONNECT") as info:
                await client.get("https://origin.invalid/")
            assert info.value.status is None and PASSWORD not in str(info.value)
            assert at_rest(client).open == 0
            # the request never reached the origin: a retry policy tries again, any method
            retry = glasspool.Retry(total=1, backoff=0)
            with pytest.raises(glasspool.ProxyError):
                await client.post("https://origin.invalid/", content=b"x", retry=retry)
            assert at_rest(client).open == 0
    assert len(heads) == 3 and all(h.startswith(b"CONNECT origin.invalid:443 ") for h in heads)


async def test_cancelled_during_connect_frees_the_slot() -> None:
    fake = await DyingProxy(raw_reply=b"HTTP/1.1 200").start()  # never finishes its head
    try:
        async with glasspool.Client(proxy=fake.url()) as client:
            task = asyncio.ensure_future(client.get("https://origin.invalid/"))
            async with asyncio.timeout(10):
                await fake.received.wait()  # the CONNECT reached the proxy
            assert fake.requests and fake.requests[0].startswith(b"CONNECT origin.invalid:443 ")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stats = at_rest(client)
            assert stats.open == 0
    finally:
        await fake.aclose()


async def test_per_request_proxy_on_stream(tinyproxy: Tinyproxy, http_origin: Origin) -> None:
    async with glasspool.Client() as client:
        async with client.stream("GET", http_origin.url("/st"), proxy=tinyproxy.url()) as r:
            assert await r.read() == b"origin:/st"
        (key,) = at_rest(client).hosts
        assert key.proxy is not None and key.proxy.port == tinyproxy.port


def test_socks_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def no_socks(name: str, *args: object) -> object:
        return None if name == "python_socks" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", no_socks)
    with pytest.raises(ImportError, match=r"pip install 'glasspool\[socks\]'") as info:
        glasspool.Client(proxy="socks5://u:pw-x@127.0.0.1:1080")
    assert "pw-x" not in str(info.value)
    monkeypatch.setenv("ALL_PROXY", "socks5h://127.0.0.1:1080")
    with pytest.raises(ImportError, match="environment variable ALL_PROXY"):
        glasspool.Client()


async def test_the_tunnel_is_an_event_on_the_request_span(
    tinyproxy: Tinyproxy, https_origin: Origin, tls_certs: TLSCerts
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import glasspool.otel

    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    async with glasspool.Client(proxy=tinyproxy.url(), verify=str(tls_certs.ca_file)) as client:
        handle = glasspool.otel.instrument(client, tracer_provider=tracers)
        await client.get(https_origin.url("/traced"))
        handle.uninstrument()
    [span] = spans.get_finished_spans()
    names = [event.name for event in span.events]
    connecting = names.index("glasspool.pool.connecting")
    tunnel = names.index("glasspool.pool.tunnel")
    tls = names.index("glasspool.pool.tls")
    assert connecting < tunnel < tls < names.index("glasspool.pool.acquired")
    assert span.events[tunnel].attributes is not None
    assert span.events[tunnel].attributes["glasspool.pool.reason"] == "connect"
    assert span.events[tls].attributes is not None
    assert span.events[tls].attributes["glasspool.pool.reason"] == "origin"
