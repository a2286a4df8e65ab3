"""Cookies: client.cookies (a jar over http.cookiejar), cookies= on the client and per
request, Set-Cookie on redirect hops, RFC 6265 rules, and the Set-Cookie cap, against
httpbin under gunicorn and a FaultServer."""

from __future__ import annotations

import http.cookiejar
from collections.abc import Iterator

import pytest

import glasspool
from glasspool._cookies import (
    MAX_COOKIE_BYTES,
    MAX_COOKIES,
    MAX_COOKIES_PER_DOMAIN,
    MAX_SET_COOKIES,
)
from tests.faults import FaultServer
from tests.httpbinproc import run_httpbin


@pytest.fixture(scope="module")
def httpbin_url() -> Iterator[str]:
    yield from run_httpbin()


async def test_set_cookie_on_a_redirect_hop_is_kept_and_sent(httpbin_url: str) -> None:
    async with glasspool.Client(trust_env=False) as client:
        response = await client.get(f"{httpbin_url}/cookies/set", params={"k": "v"})
        assert len(response.history) == 1  # the 302 carried the Set-Cookie
        assert response.json()["cookies"] == {"k": "v"}
        assert client.cookies["k"] == "v" and list(client.cookies) == ["k"]


async def test_client_and_request_cookies(httpbin_url: str) -> None:
    async with glasspool.Client(trust_env=False, cookies={"a": "1", "b": "2"}) as client:
        seen = (await client.get(f"{httpbin_url}/cookies", cookies={"b": "3", "c": "4"})).json()
        assert seen["cookies"] == {"a": "1", "b": "3", "c": "4"}  # merged; per request wins
        assert dict.fromkeys(client.cookies) == {"a": None, "b": None}  # not stored
        assert (await client.get(f"{httpbin_url}/cookies")).json()["cookies"] == {
            "a": "1",
            "b": "2",
        }


async def test_explicit_cookie_header_wins(httpbin_url: str) -> None:
    async with glasspool.Client(trust_env=False, cookies={"a": "1"}) as client:
        response = await client.get(f"{httpbin_url}/cookies", headers={"Cookie": "z=9"})
        assert response.json()["cookies"] == {"z": "9"}


async def test_secure_and_expired_cookies(httpbin_url: str) -> None:
    async with glasspool.Client(trust_env=False) as client:
        await client.get(
            f"{httpbin_url}/response-headers",
            params=[("Set-Cookie", "s=1; Secure"), ("Set-Cookie", "plain=1")],
        )
        assert "s" in client.cookies  # stored, but only sent over https
        seen = (await client.get(f"{httpbin_url}/cookies")).json()["cookies"]
        assert seen == {"plain": "1"}
        await client.get(
            f"{httpbin_url}/response-headers", params={"Set-Cookie": "plain=; Max-Age=0"}
        )
        assert "plain" not in client.cookies


async def test_path_rule(httpbin_url: str) -> None:
    async with glasspool.Client(trust_env=False) as client:
        await client.get(
            f"{httpbin_url}/response-headers", params={"Set-Cookie": "p=1; Path=/anything"}
        )
        assert (await client.get(f"{httpbin_url}/cookies")).json()["cookies"] == {}
        seen = (await client.get(f"{httpbin_url}/anything/x")).json()["headers"]
        assert seen.get("Cookie") == "p=1"


async def test_set_cookie_fields_per_response_are_capped(httpbin_url: str) -> None:
    many = [("Set-Cookie", f"n{i}=1") for i in range(MAX_SET_COOKIES + 10)]
    async with glasspool.Client(trust_env=False) as client:
        await client.get(f"{httpbin_url}/response-headers", params=many)
        assert len(client.cookies) == MAX_SET_COOKIES


async def test_host_only_cookies_stay_with_their_host(httpbin_url: str) -> None:
    async with FaultServer() as other:
        async with glasspool.Client(trust_env=False) as client:
            await client.get(f"{httpbin_url}/cookies/set", params={"k": "v"})
            await client.get(other.url("/direct", host="localhost"))
            target = other.url("/redirected", host="localhost")
            response = await client.get(f"{httpbin_url}/redirect-to", params={"url": target})
            assert response.status == 200
            hop = response.history[0].request
            assert hop is not None and hop.headers.get("Cookie") == "k=v"
    assert [r.target for r in other.requests] == ["/direct", "/redirected"]
    assert all(r.header("cookie") is None for r in other.requests)


def test_cookies_is_dict_like() -> None:
    jar = glasspool.Cookies({"a": "1"})
    jar["b"] = "2"
    jar.set("c", "3", domain="example.org")
    assert (jar["a"], jar.get("c", domain="example.org"), jar.get("x", "d")) == ("1", "3", "d")
    assert sorted(jar) == ["a", "b", "c"] and len(jar) == 3 and "b" in jar
    del jar["a"]
    jar.delete("c")
    assert list(jar) == ["b"]
    with pytest.raises(KeyError):
        jar["a"]
    jar.clear()
    assert len(jar) == 0 and "2" not in repr(glasspool.Cookies({"b": "2"}))


def test_cookies_wraps_a_cookiejar_and_copies_cookies() -> None:
    std = http.cookiejar.CookieJar()
    wrapped = glasspool.Cookies(std)
    wrapped["a"] = "1"
    assert wrapped.jar is std and len(std) == 1
    copy = glasspool.Cookies(wrapped)
    copy["b"] = "2"
    assert len(std) == 1 and len(copy) == 2


@pytest.mark.parametrize("bad", [["a=1"], "a=1", 3])
def test_bad_cookies_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="cookies="):
        glasspool.Client(cookies=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name, value", [("a;b", "1"), ("a", "1\r\nX: y"), ("", "1")])
def test_bad_cookie_characters_raise_value_error(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="cookie"):
        glasspool.Cookies({name: value})


def _setting(prefix: str, count: int, size: int = 0) -> glasspool.MockTransport:
    """A mock server whose every response sets ``count`` cookies named for the request's
    host and path (``<prefix><host>-<path>-<i>``), each value ``size`` bytes long."""

    def handler(request: glasspool.Request) -> glasspool.MockResponse:
        tag = f"{prefix}{request.url.host}-{request.url.path.strip('/')}"
        value = "v" * size
        headers = [("Set-Cookie", f"{tag}-{i}={value}; Path=/") for i in range(count)]
        return glasspool.MockResponse(200, headers)

    return glasspool.MockTransport(handler)


async def test_a_domain_keeps_its_newest_cookies_up_to_the_cap() -> None:
    async with glasspool.Client(transport=_setting("c", MAX_SET_COOKIES)) as client:
        for page in ("one", "two", "three"):
            await client.get(f"http://a.test/{page}")
        names = list(client.cookies)
    assert len(names) == MAX_COOKIES_PER_DOMAIN
    assert all(name.startswith("ca.test-three-") for name in names)


async def test_the_jar_holds_at_most_max_cookies_oldest_domains_first() -> None:
    hosts = [f"h{i:03}.test" for i in range(MAX_COOKIES // MAX_COOKIES_PER_DOMAIN + 10)]
    transport = _setting("c", MAX_COOKIES_PER_DOMAIN)
    async with glasspool.Client(transport=transport, cookies={"mine": "1"}) as client:
        for host in hosts:
            await client.get(f"http://{host}/p")
        kept = {cookie.domain for cookie in client.cookies.jar}
        assert len(client.cookies) == MAX_COOKIES
        assert client.cookies["mine"] == "1"  # set by the user: counted, never pushed out
    assert kept == {""} | set(hosts[10:])  # the first-set domains made room
    store = client.cookies.jar._cookies  # type: ignore[attr-defined]
    assert set(store) == kept  # no empty domain left behind


async def test_a_cookie_over_4096_bytes_is_ignored() -> None:
    fits = MAX_COOKIE_BYTES - len("ca.test-p-0=; Path=/")
    async with glasspool.Client(transport=_setting("c", 1, fits)) as client:
        await client.get("http://a.test/p")
        assert len(client.cookies) == 1
    async with glasspool.Client(transport=_setting("c", 1, fits + 1)) as client:
        await client.get("http://a.test/p")
        assert len(client.cookies) == 0
