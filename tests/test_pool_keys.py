"""Pool-key isolation: a connection is shared only under the same origin and TLS identity.

Issue 6, item 2. A pooled connection carries the security decisions made when it was
opened: which host, and whether (and against what) the certificate was verified. Reusing
it for a request that asked for different TLS settings silently downgrades that request;
requests CVE-2024-35195 is this bug (a first ``verify=False`` request to a host made
later requests to it skip verification). Here:

- a hypothesis property: changing any single field of a :class:`PoolKey` (scheme, host,
  port, verify, CA, client certificate, SSL context, ``server_hostname``) changes the key,
  both for keys built directly and for keys built the way the client builds them
  (``pool_key_for`` + ``_connect.tls_identity``);
- end to end against a TLS loopback server with a trustme certificate: a connection opened
  with verification off is never handed to a key that asks for verification, and the
  connection opened for that key really is verified (or fails verification).

The ``Client`` API has one TLS configuration per client (``verify=``, ``cert=``; no
per-request TLS), so the second key is asked of the client's own pool directly.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import ssl
import subprocess
import sys
from typing import Any

import pytest
import yarl
from hypothesis import given
from hypothesis import strategies as st

from glasspool import Client, PoolEvent, PoolKey, Timeout, TLSError, TLSIdentity
from glasspool._connect import tls_identity
from glasspool._urls import pool_key_for
from tests.nginx import TLSCerts
from tests.rawserver import RawServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TIMEOUT = Timeout(5, total=10)

# Two distinct contexts: keys compare contexts by identity, so these must never be equal.
CONTEXTS = (ssl.create_default_context(), ssl.create_default_context())

hosts = st.sampled_from(["127.0.0.1", "::1", "localhost", "example.org", "xn--bcher-kva.example"])
ports = st.integers(min_value=1, max_value=65535)
paths = st.one_of(st.none(), st.sampled_from(["/etc/ca.pem", "/etc/ssl/certs", "/tmp/other.pem"]))
certs = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["/c/a.pem", "/c/b.pem"]), st.sampled_from([None, "/c/a.key"])),
)
contexts = st.one_of(st.none(), st.sampled_from(CONTEXTS))
names = st.one_of(st.none(), st.sampled_from(["127.0.0.1", "localhost", "api.example.org"]))
identities = st.builds(
    TLSIdentity,
    verify=st.booleans(),
    ca_path=paths,
    client_cert=certs,
    context=contexts,
    server_hostname=names,
)
keys = st.builds(PoolKey, scheme=st.just("https"), host=hosts, port=ports, tls=identities)

KEY_FIELDS = {"scheme": st.sampled_from(["http", "https"]), "host": hosts, "port": ports}
TLS_FIELDS = {
    "verify": st.booleans(),
    "ca_path": paths,
    "client_cert": certs,
    "context": contexts,
    "server_hostname": names,
}


def changed(key: PoolKey, field: str, value: Any) -> PoolKey:
    """``key`` with one field (of the key or of its TLS identity) set to ``value``."""
    if field in KEY_FIELDS:
        return dataclasses.replace(key, **{field: value})
    assert key.tls is not None
    return dataclasses.replace(key, tls=dataclasses.replace(key.tls, **{field: value}))


def current(key: PoolKey, field: str) -> Any:
    """The value of one field of the key or of its TLS identity."""
    return getattr(key, field) if field in KEY_FIELDS else getattr(key.tls, field)


@given(key=keys, data=st.data())
def test_property_changing_any_single_field_changes_the_key(key: PoolKey, data: Any) -> None:
    fields = {**KEY_FIELDS, **TLS_FIELDS}
    field = data.draw(st.sampled_from(sorted(fields)), label="field")
    value = data.draw(fields[field].filter(lambda v: v != current(key, field)), label="value")
    other = changed(key, field, value)
    assert other != key
    assert len({key, other}) == 2  # also distinct as dict keys (the pool's per-key maps)
    assert changed(key, field, current(key, field)) == key  # and equal again when restored
    assert hash(changed(key, field, current(key, field))) == hash(key)


VERIFY_VALUES: list[Any] = [True, False, "/etc/ca.pem", "/etc/ssl/certs", *CONTEXTS]
CERT_VALUES: list[Any] = [None, "/c/both.pem", ("/c/a.pem", None), ("/c/a.pem", "/c/a.key")]
SNI_VALUES: list[Any] = [None, "localhost", "api.example.org"]


@st.composite
def client_settings(draw: st.DrawFn) -> dict[str, Any]:
    """What decides a request's key in the client: its URL and the client's TLS options."""
    return {
        "scheme": "https",
        "host": draw(st.sampled_from(["127.0.0.1", "localhost", "example.org", "[::1]"])),
        "port": draw(ports),
        "verify": draw(st.sampled_from(VERIFY_VALUES)),
        "cert": draw(st.sampled_from(CERT_VALUES)),
        "server_hostname": draw(st.sampled_from(SNI_VALUES)),
    }


def client_key(settings: dict[str, Any]) -> PoolKey:
    """The key the client computes for these settings (as ``Client._send_single`` does)."""
    url = yarl.URL(f"{settings['scheme']}://{settings['host']}:{settings['port']}/x")
    cert = settings["cert"]
    identity = tls_identity(settings["verify"], cert, settings["server_hostname"])
    return pool_key_for(url, identity)


SETTING_CHOICES: dict[str, Any] = {
    "scheme": st.sampled_from(["http", "https"]),
    "host": st.sampled_from(["127.0.0.1", "localhost", "example.org", "[::1]"]),
    "port": ports,
    "verify": st.sampled_from(VERIFY_VALUES),
    "cert": st.sampled_from(CERT_VALUES),
    "server_hostname": st.sampled_from(SNI_VALUES),
}


def same_setting(field: str, a: Any, b: Any) -> bool:
    """Whether two values of a setting mean the same thing (contexts by identity)."""
    if field == "cert":  # "file" and ("file", None) are the same certificate
        a, b = (a, None) if isinstance(a, str) else a, (b, None) if isinstance(b, str) else b
    if isinstance(a, ssl.SSLContext) or isinstance(b, ssl.SSLContext):
        return a is b
    return bool(a == b and type(a) is type(b))


@given(settings=client_settings(), data=st.data())
def test_property_the_client_key_changes_with_every_setting(
    settings: dict[str, Any], data: Any
) -> None:
    field = data.draw(st.sampled_from(sorted(SETTING_CHOICES)), label="field")
    value = data.draw(
        SETTING_CHOICES[field].filter(lambda v: not same_setting(field, v, settings[field])),
        label="value",
    )
    key, other = client_key(settings), client_key({**settings, field: value})
    assert other != key
    assert client_key(dict(settings)) == key


def test_tls_settings_do_not_split_plain_http_pools_but_scheme_does() -> None:
    url = yarl.URL("http://127.0.0.1:8080/")
    on, off = tls_identity(True, None, None), tls_identity(False, None, None)
    assert pool_key_for(url, on) == pool_key_for(url, off)
    assert pool_key_for(url, on).tls is None
    assert pool_key_for(url.with_scheme("https"), on) != pool_key_for(url, on)


def test_equivalent_spellings_of_one_origin_share_a_key() -> None:
    identity = tls_identity(True, None, None)
    same = ["https://Example.ORG/a", "https://example.org:443/b", "https://example.org/?q"]
    assert len({pool_key_for(yarl.URL(u), identity) for u in same}) == 1


def test_a_context_with_verification_off_is_recorded_as_such() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    assert tls_identity(ctx, None, None).verify is False
    assert tls_identity(ctx, None, None) != tls_identity(False, None, None)  # by identity


# ----------------------------------------------------------------------------- end to end


def reasons(events: list[PoolEvent], kind: str) -> list[str | None]:
    """The reasons of the events of one kind, in order."""
    return [e.reason for e in events if e.kind == kind]


def peer_cert(lease: Any) -> Any:
    """The server certificate as verified by the connection; ``{}`` when not verified."""
    return lease.conn.handle.get_extra_info("ssl_object").getpeercert()


async def test_a_connection_opened_without_verification_never_serves_a_verifying_key(
    tls_certs: TLSCerts,
) -> None:
    events: list[PoolEvent] = []
    server = RawServer(replies=[OK] * 4, ssl_context=tls_certs.server_context())
    async with server, Client(verify=False, timeout=TIMEOUT) as client:
        client.pool.add_listener(events.append)
        url = f"https://127.0.0.1:{server.port}/"
        assert (await client.get(url)).content == b"ok"
        (off,) = client.pool.stats().hosts
        assert off.tls is not None and off.tls.verify is False
        assert client.pool.stats().idle == 1
        # The same origin, asking for verification against the test CA.
        on = dataclasses.replace(off, tls=tls_identity(str(tls_certs.ca_file), None, None))
        assert on != off
        lease = await client.pool.acquire(on, timeout=5, connect_timeout=5)
        try:
            assert not lease.reused
            assert peer_cert(lease)["subjectAltName"]  # this handshake verified the server
        finally:
            client.pool.release(lease, reason="closed", close_reason="not_reusable")
        assert reasons(events, "acquired") == ["new", "new"]
        # The unverified connection is still idle under its own key, and still unverified.
        lease = await client.pool.acquire(off, timeout=5, connect_timeout=5)
        try:
            assert lease.reused and peer_cert(lease) == {}
        finally:
            client.pool.release(lease, reason="closed", close_reason="not_reusable")
        stats = client.pool.stats()
        assert (stats.in_use, stats.connecting, stats.waiting, stats.open) == (0, 0, 0, 0)


async def test_a_verifying_key_fails_where_verification_fails(tls_certs: TLSCerts) -> None:
    """Verification on (system trust store, which lacks the test CA) must refuse the server."""
    server = RawServer(replies=[OK] * 2, ssl_context=tls_certs.server_context())
    async with server, Client(verify=False, timeout=TIMEOUT) as client:
        url = f"https://127.0.0.1:{server.port}/"
        assert (await client.get(url)).content == b"ok"
        (off,) = client.pool.stats().hosts
        on = dataclasses.replace(off, tls=tls_identity(True, None, None))
        with pytest.raises(TLSError, match=r"certificate verification failed for 127\.0\.0\.1"):
            await client.pool.acquire(on, timeout=5, connect_timeout=5)
        stats = client.pool.stats()
        assert (stats.in_use, stats.connecting, stats.idle) == (0, 0, 1)


async def test_wrong_host_certificate_with_and_without_verification(tls_certs: TLSCerts) -> None:
    server = RawServer(replies=[OK] * 2, ssl_context=tls_certs.server_context(wrong_host=True))
    async with server:
        url = f"https://127.0.0.1:{server.port}/"
        async with Client(verify=str(tls_certs.ca_file), timeout=TIMEOUT) as strict:
            with pytest.raises(TLSError, match=r"127\.0\.0\.1"):
                await strict.get(url)
            assert strict.pool.stats().open == 0
        async with Client(verify=False, timeout=TIMEOUT) as lax:
            assert (await lax.get(url)).content == b"ok"
            (off,) = lax.pool.stats().hosts
            sni = dataclasses.replace(
                off, tls=tls_identity(str(tls_certs.ca_file), None, "example.invalid")
            )
            lease = await lax.pool.acquire(sni, timeout=5, connect_timeout=5)
            try:  # verified against the name the certificate carries, sent in SNI
                assert not lease.reused and peer_cert(lease)["subjectAltName"]
            finally:
                lax.pool.release(lease, reason="closed", close_reason="not_reusable")


async def test_the_callers_ssl_context_is_the_one_used(tls_certs: TLSCerts) -> None:
    mine = tls_certs.client_context()
    # two replies: after its last one the server closes, and a closed idle connection is
    # not handed out again
    server = RawServer(replies=[OK] * 2, ssl_context=tls_certs.server_context())
    async with server, Client(verify=mine, timeout=TIMEOUT) as client:
        assert (await client.get(f"https://127.0.0.1:{server.port}/")).content == b"ok"
        (key,) = client.pool.stats().hosts
        assert key.tls is not None and key.tls.context is mine and key.tls.verify is True
        lease = await client.pool.acquire(key, timeout=5, connect_timeout=5)
        try:
            assert lease.reused and lease.conn is not None
            assert lease.conn.handle.get_extra_info("ssl_object").context is mine
        finally:
            client.pool.release(lease)


async def test_a_client_certificate_cannot_be_combined_with_a_context(tls_certs: TLSCerts) -> None:
    server = RawServer(replies=[OK], ssl_context=tls_certs.server_context())
    async with server:
        client = Client(verify=tls_certs.client_context(), cert="/nonexistent/client.pem")
        async with client:
            with pytest.raises(ValueError, match="cert= cannot be combined with an SSLContext"):
                await client.get(f"https://127.0.0.1:{server.port}/", timeout=TIMEOUT)
            assert client.pool.stats().open == 0
        assert server.connections == 0


def test_a_key_unpickled_in_another_process_hashes_as_that_process_builds_it(
    tmp_path: Any,
) -> None:
    # String hashes are salted per process: a cached hash must not travel with the key.
    key = PoolKey("https", "api.example.org", 443, TLSIdentity(ca_path="/etc/ca.pem"))
    (tmp_path / "key.pickle").write_bytes(pickle.dumps(key))
    check = (
        "import pickle, sys\n"
        "from glasspool import PoolKey, TLSIdentity\n"
        f"key = pickle.loads(open({str(tmp_path / 'key.pickle')!r}, 'rb').read())\n"
        "fresh = PoolKey('https', 'api.example.org', 443, TLSIdentity(ca_path='/etc/ca.pem'))\n"
        "assert key == fresh and hash(key) == hash(fresh), (hash(key), hash(fresh))\n"
        "assert {fresh: 1}[key] == 1\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert copy.deepcopy(key) == key and hash(copy.deepcopy(key)) == hash(key)
