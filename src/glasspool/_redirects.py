"""Redirect rules: given a redirect response, what the next request looks like.

Pure functions, no I/O. The client asks :func:`redirect_request` for a
:class:`RedirectPlan` after each 301/302/303/307/308 and carries it out; counting hops and
raising ``TooManyRedirects`` stay in the client.

The rules, in order:

1. ``Location`` is resolved against the current URL (RFC 3986). A Location that arrived
   as UTF-8 but was decoded as Latin-1 by the connection is repaired first. The target
   must be ``http`` or ``https``, with a host and a port in 1..65535. If the Location
   has no fragment, the current URL's fragment is kept (RFC 9110, 10.2.2).
2. 303 turns any method but HEAD into GET; 301 and 302 turn POST into GET (what every
   browser does). The body goes with a method change, and always with a 303. 307 and
   308 keep method and body; a body that cannot be sent again is an error.
3. ``Authorization``, ``Cookie`` and ``Proxy-Authorization`` (every copy, any case) are
   dropped when scheme, host or port differ from the current URL, and stay dropped for
   the rest of the chain (``stripped``), even when a later hop comes back.
4. A dropped body takes ``Content-Type``, ``Content-Length``, ``Transfer-Encoding`` and
   ``Content-Encoding`` with it. ``Host`` is always dropped: the next head recomputes it
   from the new URL.
"""

from __future__ import annotations

from dataclasses import dataclass

import yarl

from ._exceptions import InvalidRequest, InvalidURL
from ._headers import Headers
from ._redact import redact_url
from ._syntax import DEFAULT_PORTS, LOCATION_FORBIDDEN
from ._urls import check_raw_url, validate_absolute

__all__ = ["REDIRECT_STATUSES", "RedirectPlan", "redirect_request"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
"""The statuses :func:`redirect_request` follows."""

_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-Authorization")
_BODY_HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding", "Content-Encoding")


@dataclass(frozen=True, slots=True)
class RedirectPlan:
    """The request to send next, after a redirect.

    Attributes:
        method: the method of the next request.
        url: the absolute next URL.
        headers: the headers of the next request (a new :class:`Headers`).
        keep_body: whether the original body is sent again.
        stripped: whether credentials were dropped on this hop or an earlier one; pass it
            back as ``stripped_once`` for the next hop.
    """

    method: str
    url: yarl.URL
    headers: Headers
    keep_body: bool
    stripped: bool


def _repair_latin1(location: str) -> str:
    """Undo a UTF-8 Location that was decoded as Latin-1; leave anything else alone."""
    if location.isascii():
        return location
    try:
        return location.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return location


def resolve_location(url: yarl.URL, location: str) -> yarl.URL:
    """Resolve a ``Location`` value against ``url`` and check the result.

    Args:
        url: the URL that answered with the redirect.
        location: the raw ``Location`` header value.

    Returns:
        The absolute target, with ``url``'s fragment when ``location`` has none.

    Raises:
        InvalidURL: an empty Location, a control character in it, or a target that is not
            http/https, lacks a host or has a bad port; the message names the scheme.
    """
    location = _repair_latin1(location.strip(" \t"))
    if not location:
        raise InvalidURL(f"the redirect from {redact_url(url, quoted=True)} has an empty Location")
    check_raw_url(location, LOCATION_FORBIDDEN, "redirect Location")
    try:
        target = url.join(yarl.URL(location))
    except ValueError as exc:
        raise InvalidURL(
            f"redirect Location {redact_url(location, quoted=True)} is not a valid URL: {exc}"
        ) from exc
    if target.scheme not in DEFAULT_PORTS:
        raise InvalidURL(
            f"redirect from {redact_url(url, quoted=True)} to "
            f"{redact_url(location, quoted=True)} uses the unsupported scheme "
            f"{target.scheme!r}; only http and https are followed"
        )
    validate_absolute(target, "redirect target")
    if not target.raw_fragment and url.raw_fragment:
        target = target.with_fragment(url.fragment)
    return target


def _origin(url: yarl.URL) -> tuple[str, str, int | None]:
    return (url.scheme, (url.raw_host or "").lower(), url.port)


def _next_method(status: int, method: str) -> str:
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


def redirect_request(
    response_status: int,
    method: str,
    url: yarl.URL,
    location: str,
    headers: Headers,
    body_replayable: bool,
    stripped_once: bool,
) -> RedirectPlan:
    """Plan the request that follows a redirect response (see the module rules).

    >>> plan = redirect_request(
    ...     302, "POST", yarl.URL("https://a.example/login"), "https://b.example/home",
    ...     Headers({"Authorization": "Bearer x", "Content-Type": "text/plain"}), True, False)
    >>> plan.method, str(plan.url), plan.headers.raw, plan.keep_body, plan.stripped
    ('GET', 'https://b.example/home', [], False, True)

    Args:
        response_status: the redirect status, one of :data:`REDIRECT_STATUSES`.
        method: the method of the request that was redirected.
        url: the URL of the request that was redirected.
        location: the ``Location`` header of the response.
        headers: the headers that request was sent with (not modified).
        body_replayable: ``False`` only when the request had a streamed body, which was
            consumed by the first send; ``True`` for bytes or no body.
        stripped_once: ``RedirectPlan.stripped`` of the previous hop, ``False`` at first.

    Returns:
        The :class:`RedirectPlan` for the next request.

    Raises:
        ValueError: ``response_status`` is not a redirect status.
        InvalidURL: the Location is empty, malformed or not http/https.
        InvalidRequest: a 307/308 must resend a streamed body, which cannot be replayed;
            send the body as bytes, or turn ``follow_redirects`` off.
    """
    if response_status not in REDIRECT_STATUSES:
        raise ValueError(f"status {response_status} is not a redirect status (301-308)")
    target = resolve_location(url, location)
    new_method = _next_method(response_status, method)
    keep_body = response_status != 303 and new_method == method
    if keep_body and not body_replayable:
        raise InvalidRequest(
            f"{response_status} redirect of {method} {redact_url(url, quoted=True)} to "
            f"{redact_url(target, quoted=True)} needs the request body again, but it was "
            "streamed and cannot be replayed; send the body as bytes or turn "
            "follow_redirects off"
        )
    stripped = stripped_once or _origin(target) != _origin(url)
    drop = ["Host"]
    if stripped:
        drop += _CREDENTIAL_HEADERS
    if not keep_body:
        drop += _BODY_HEADERS
    new_headers = headers.copy()
    for name in drop:
        new_headers.discard(name)
    return RedirectPlan(new_method, target, new_headers, keep_body, stripped)
