"""Auth: Basic (auth= and URL userinfo), Digest (RFC 7616), .netrc, custom auth flows and
credentials on redirects, against httpbin under gunicorn and a FaultServer."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import yarl

import glasspool
from tests.faults import FaultServer
from tests.httpbinproc import run_httpbin


@pytest.fixture(scope="module")
def httpbin_url() -> Iterator[str]:
    yield from run_httpbin()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_basic_auth_on_client_and_per_request(httpbin_url: str) -> None:
    url = f"{httpbin_url}/basic-auth/u/p"
    async with glasspool.Client(trust_env=False, auth=("u", "p")) as client:
        assert (await client.get(url)).json() == {"authenticated": True, "user": "u"}
        assert (await client.get(url, auth=("u", "wrong"))).status == 401
        assert (await client.get(url, auth=None)).status == 401  # None: without the client's
        async with client.stream("GET", url, auth=None) as streamed:
            assert streamed.status == 401
        assert (await client.get(url)).status == 200
    async with glasspool.Client(trust_env=False) as client:
        assert (await client.get(url)).status == 401
        assert (await client.get(url, auth=("u", "p"))).status == 200


async def test_url_userinfo_is_sent_as_basic_and_redacted(httpbin_url: str) -> None:
    url = httpbin_url.replace("//", "//u:s3cret@") + "/basic-auth/u/s3cret"
    async with glasspool.Client(trust_env=False) as client:
        response = await client.get(url)
        assert response.status == 200
        assert "u:s3cret" not in repr(response.request)  # the path holds it, not the userinfo
        assert "u:s3cret" not in str(client.pool.stats())


@pytest.mark.parametrize("bad", [("u",), ("u", "p", "x"), ("u", 1), "u:p", ["u", "p"]])
async def test_bad_auth_shapes_raise_type_error_naming_auth(bad: object) -> None:
    with pytest.raises(TypeError, match="auth="):
        glasspool.Client(auth=bad)  # type: ignore[arg-type]
    async with glasspool.Client(trust_env=False) as client:
        with pytest.raises(TypeError, match="auth="):
            await client.get("http://127.0.0.1:9/", auth=bad)


def test_auth_reprs_hide_credentials() -> None:
    assert "pw" not in repr(glasspool.BasicAuth("u", "pw"))
    assert "pw" not in repr(glasspool.DigestAuth("u", "pw"))


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_digest_auth_and_the_pool_at_rest(httpbin_url: str, algorithm: str) -> None:
    url = f"{httpbin_url}/digest-auth/auth/u/p/{algorithm}"
    async with glasspool.Client(trust_env=False) as client:
        events: list[glasspool.PoolEvent] = []
        client.pool.add_listener(events.append)
        response = await client.get(url, auth=glasspool.DigestAuth("u", "p"))
        assert response.status == 200, response.text
        assert response.json() == {"authenticated": True, "user": "u"}
        header = response.request.headers["Authorization"] if response.request else ""
        assert header.startswith("Digest ") and f"algorithm={algorithm}" in header
        assert "qop=auth" in header and "nc=00000001" in header
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0
        acquired = [e.reason for e in events if e.kind == "acquired"]
        assert acquired == ["new", "reused"]  # the 401's connection carried the answer
        assert (await client.get(url, auth=glasspool.DigestAuth("u", "bad"))).status == 401


async def test_digest_counts_nonces_on_later_requests(httpbin_url: str) -> None:
    digest = glasspool.DigestAuth("u", "p")
    url = f"{httpbin_url}/digest-auth/auth/u/p/MD5"
    async with glasspool.Client(trust_env=False, auth=digest) as client:
        first = await client.get(url)
        second = await client.get(url)
    assert first.status == 200 and second.status == 200
    assert second.request is not None
    assert "nc=00000002" in second.request.headers["Authorization"]


async def test_digest_is_not_replayed_with_a_streamed_body(httpbin_url: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x"

    url = f"{httpbin_url}/digest-auth/auth/u/p/MD5"
    async with glasspool.Client(trust_env=False) as client:
        digest = glasspool.DigestAuth("u", "p")
        response = await client.request("GET", url, content=body(), auth=digest)
        assert response.status == 401  # returned as it is: the body cannot be sent again
        assert client.pool.stats().in_use == 0


class _ChallengeFirst(glasspool.Auth):
    """A custom flow: send nothing, and answer a 401 with Basic credentials."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    def auth_flow(
        self, request: glasspool.Request
    ) -> Generator[glasspool.Request, glasspool.Response, None]:
        response = yield request
        self.statuses.append(response.status)
        if response.status == 401:
            request.headers["Authorization"] = _basic("u", "p")
            response = yield request
            self.statuses.append(response.status)


async def test_custom_auth_flow_answers_a_challenge(httpbin_url: str) -> None:
    flow = _ChallengeFirst()
    async with glasspool.Client(trust_env=False) as client:
        response = await client.get(f"{httpbin_url}/basic-auth/u/p", auth=flow)
        assert response.status == 200
        assert flow.statuses == [401, 200]
        assert client.pool.stats().in_use == 0
        assert "Authorization" not in client.headers  # the flow changed only its copy
        assert (await client.get(f"{httpbin_url}/basic-auth/u/p")).status == 401


async def test_auth_flow_that_yields_nothing_is_a_type_error(httpbin_url: str) -> None:
    class Empty(glasspool.Auth):
        def auth_flow(
            self, request: glasspool.Request
        ) -> Generator[glasspool.Request, glasspool.Response, None]:
            return
            yield request

    async with glasspool.Client(trust_env=False) as client:
        with pytest.raises(TypeError, match="yielded no request"):
            await client.get(httpbin_url, auth=Empty())


async def test_credentials_are_not_sent_to_another_origin(httpbin_url: str) -> None:
    async with FaultServer() as other:
        target = other.url("/landing")
        async with glasspool.Client(trust_env=False, auth=("u", "p")) as client:
            response = await client.get(
                f"{httpbin_url}/redirect-to", params={"url": target}, cookies={"c": "1"}
            )
            assert response.status == 200 and len(response.history) == 1
            first = response.history[0].request
            assert first is not None and first.headers["Authorization"] == _basic("u", "p")
        userinfo = httpbin_url.replace("//", "//u:p@")
        async with glasspool.Client(trust_env=False) as client:
            await client.get(f"{userinfo}/redirect-to", params={"url": target})
    assert [r.target for r in other.requests] == ["/landing", "/landing"]
    for seen in other.requests:
        assert seen.header("authorization") is None
        assert seen.header("cookie") is None


async def test_same_origin_redirect_keeps_auth(httpbin_url: str) -> None:
    async with glasspool.Client(trust_env=False, auth=("u", "p")) as client:
        response = await client.get(f"{httpbin_url}/redirect-to", params={"url": "/basic-auth/u/p"})
        assert response.status == 200 and len(response.history) == 1


async def test_netrc_when_trust_env(
    httpbin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login u password p\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    url = f"{httpbin_url}/basic-auth/u/p"
    async with glasspool.Client() as client:
        assert (await client.get(url)).status == 200
        assert (await client.get(url, auth=("u", "other"))).status == 401  # auth= wins
    async with glasspool.Client(trust_env=False) as client:
        assert (await client.get(url)).status == 401


# RFC 7616, 3.9.1: the worked example, for both algorithms.
_RFC_CHALLENGE = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
_RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def _challenge(request: glasspool.Request, value: str) -> glasspool.Response:
    return glasspool.Response(401, headers={"WWW-Authenticate": value}, request=request)


@pytest.mark.parametrize(
    "alg, expected",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_matches_the_rfc_7616_example(
    alg: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("glasspool._auth.secrets.token_hex", lambda n: _RFC_CNONCE)
    request = glasspool.Request("GET", yarl.URL("http://www.example.org/dir/index.html"))
    flow = glasspool.DigestAuth("Mufasa", "Circle of Life").auth_flow(request)
    assert "Authorization" not in next(flow).headers
    answer = flow.send(_challenge(request, _RFC_CHALLENGE.format(alg=alg))).headers
    header = answer["Authorization"]
    assert f'response="{expected}"' in header
    assert 'uri="/dir/index.html"' in header and "nc=00000001" in header
    assert 'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"' in header


def test_digest_answers_stale_once_more_then_gives_up() -> None:
    request = glasspool.Request("GET", yarl.URL("http://h.example/x"))
    flow = glasspool.DigestAuth("u", "p").auth_flow(request)
    next(flow)
    first = flow.send(_challenge(request, 'Digest realm="r", nonce="n1", qop="auth"'))
    assert 'nonce="n1"' in first.headers["Authorization"]
    stale = 'Digest realm="r", nonce="n2", qop="auth", stale=true'
    second = flow.send(_challenge(request, stale))
    assert 'nonce="n2"' in second.headers["Authorization"]
    assert "nc=00000001" in second.headers["Authorization"]  # a new nonce counts from 1
    with pytest.raises(StopIteration):
        flow.send(_challenge(request, stale.replace("n2", "n3")))


def test_digest_shared_by_requests_in_flight_answers_each() -> None:
    # Two requests go out before either sees the challenge; the second must answer the
    # nonce the first has taken up (with the next count), not take it for a refusal.
    digest = glasspool.DigestAuth("u", "p")
    challenge = 'Digest realm="r", nonce="n1", qop="auth"'
    request_a = glasspool.Request("GET", yarl.URL("http://h.example/a"))
    request_b = glasspool.Request("GET", yarl.URL("http://h.example/b"))
    flow_a, flow_b = digest.auth_flow(request_a), digest.auth_flow(request_b)
    assert "Authorization" not in next(flow_a).headers
    assert "Authorization" not in next(flow_b).headers
    answer_a = flow_a.send(_challenge(request_a, challenge)).headers["Authorization"]
    answer_b = flow_b.send(_challenge(request_b, challenge)).headers["Authorization"]
    assert 'nonce="n1"' in answer_a and "nc=00000001" in answer_a
    assert 'nonce="n1"' in answer_b and "nc=00000002" in answer_b
    # refused again with the nonce it answered: wrong credentials, no third try
    with pytest.raises(StopIteration):
        flow_b.send(_challenge(request_b, challenge))


async def test_digest_shared_by_concurrent_first_requests() -> None:
    count, arrived = 5, asyncio.Event()
    bare: list[str] = []

    async def handler(request: glasspool.Request) -> glasspool.MockResponse:
        if "Authorization" not in request.headers:
            bare.append(request.url.path)
            if len(bare) == count:
                arrived.set()
            await asyncio.wait_for(arrived.wait(), 5)  # every first request is out
            value = 'Digest realm="r", nonce="n1", qop="auth"'
            return glasspool.MockResponse(401, {"WWW-Authenticate": value})
        return glasspool.MockResponse(200, content=request.headers["Authorization"].encode())

    async with glasspool.Client(
        transport=glasspool.MockTransport(handler), auth=glasspool.DigestAuth("u", "p")
    ) as client:
        urls = [f"http://h.example/{i}" for i in range(count)]
        responses = await asyncio.gather(*(client.get(url) for url in urls))
    assert [r.status for r in responses] == [200] * count
    counts = sorted(r.text.split("nc=")[1][:8] for r in responses)
    assert counts == [f"{n:08x}" for n in range(1, count + 1)]


def test_digest_ignores_non_digest_challenges() -> None:
    request = glasspool.Request("GET", yarl.URL("http://h.example/x"))
    flow = glasspool.DigestAuth("u", "p").auth_flow(request)
    next(flow)
    with pytest.raises(StopIteration):
        flow.send(_challenge(request, 'Basic realm="r"'))


async def test_a_flow_error_gives_the_connection_back(httpbin_url: str) -> None:
    url = f"{httpbin_url}/digest-auth/auth/u/p/SHA-512"
    async with glasspool.Client(trust_env=False) as client:
        with pytest.raises(ValueError, match="unsupported algorithm 'SHA-512'"):
            await client.get(url, auth=glasspool.DigestAuth("u", "p"))
        stats = client.pool.stats()
        assert stats.in_use == 0 and stats.waiting == 0


async def test_a_flow_that_never_stops_is_cut_after_four_requests(httpbin_url: str) -> None:
    class Forever(glasspool.Auth):
        def auth_flow(
            self, request: glasspool.Request
        ) -> Generator[glasspool.Request, glasspool.Response, None]:
            while True:
                yield request

    async with glasspool.Client(trust_env=False) as client:
        events: list[glasspool.PoolEvent] = []
        client.pool.add_listener(events.append)
        response = await client.get(f"{httpbin_url}/bytes/10", auth=Forever())
        assert response.status == 200 and len(response.content) == 10
        assert sum(e.kind == "acquired" for e in events) == 4
        assert client.pool.stats().in_use == 0
