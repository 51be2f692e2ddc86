"""Freshness as a client sees it through pixcache: the operator's bounds on freshness
lifetimes (--max-error-ttl, --max-ttl, --default-ttl), Age parsing (RFC 9111 §5.1) and
HTTP-date parsing of Expires (RFC 9110 §5.6.7, RFC 9111 §5.3).

Real sockets throughout: a client, pixcache and an origin on loopback. Expiry is awaited
by polling the proxy until the entry is refetched, bounded by a deadline well past the
lifetime under test."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from tests.clock import FakeClock
from tests.fake_origin import FakeOrigin, Obj
from tests.integration.conftest import MakeProxy, Proxy
from tests.integration.test_http_semantics import is_hit, origin_headers, params, ttl_of

A_YEAR = "max-age=31536000"
OCTETS = "application/octet-stream"  # not an image: the image guard stays out of this
# Lifetimes under test are 2 s: Date has one-second resolution, so a response can arrive
# up to a second old; 2 s leaves at least one second in which it must be a hit.
SHORT = 2
DEADLINE = 10.0  # far past SHORT: only a proxy that never refetches reaches it
STEP = 0.1  # seconds the clock moves between two requests


async def refetched_after(
    proxy: Proxy, origin: FakeOrigin, path: str, cap: int, clock: FakeClock
) -> float:
    """Request `path`, moving the clock STEP at a time, until the proxy goes to the origin
    again; every answer before that is a hit whose ttl is within `cap`. Returns the
    seconds of the clock it took."""
    waited = 0.0
    while waited < DEADLINE:
        resp, _ = await proxy.get(path)
        if origin.hits[path] == 2:
            assert not is_hit(resp) and "fwd=stale" in params(resp)
            return waited
        assert is_hit(resp) and 0 <= ttl_of(resp) <= cap
        assert origin.hits[path] == 1
        clock.advance(STEP)
        waited += STEP
    raise AssertionError(f"{path} was never refetched within {DEADLINE} s")


# -- --max-error-ttl: an error is never pinned for as long as the origin says --------------


async def test_error_with_a_year_of_max_age_is_refetched_after_max_error_ttl(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    origin.add("/err", Obj(body=b"down", status=504, headers={"Cache-Control": A_YEAR}))
    proxy = await make_proxy(origin.url, max_error_ttl=str(SHORT))
    resp, body = await proxy.get("/err")
    assert resp.status == 504 and body == b"down"
    assert "stored" in params(resp) and 0 <= ttl_of(resp) <= SHORT  # ttl= shows the bound
    resp, body = await proxy.get("/err")
    assert resp.status == 504 and body == b"down" and is_hit(resp)
    assert 0 <= ttl_of(resp) <= SHORT
    assert origin.hits["/err"] == 1
    await refetched_after(proxy, origin, "/err", SHORT, clock)
    assert origin.hits["/err"] == 2


async def test_error_lifetime_is_bounded_to_60_seconds_by_default(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/err", Obj(body=b"down", status=504, headers={"Cache-Control": A_YEAR}))
    resp, _ = await proxy.get("/err")
    assert "stored" in params(resp) and 0 < ttl_of(resp) <= 60
    resp, body = await proxy.get("/err")
    assert resp.status == 504 and body == b"down" and is_hit(resp)
    assert 0 < ttl_of(resp) <= 60
    assert origin.hits["/err"] == 1


async def test_success_is_not_bounded_by_max_error_ttl(origin: FakeOrigin, proxy: Proxy) -> None:
    origin.add("/ok", Obj(body=b"ok", headers={"Cache-Control": A_YEAR, "Content-Type": OCTETS}))
    await proxy.get("/ok")
    resp, _ = await proxy.get("/ok")
    assert is_hit(resp) and ttl_of(resp) > 31536000 - 60


# -- --max-ttl: the longest lifetime any response gets ------------------------------------


async def test_max_ttl_bounds_a_long_max_age(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    headers = {"Cache-Control": "max-age=3600", "Content-Type": OCTETS}
    origin.add("/img", Obj(body=b"pixels", headers=headers))
    proxy = await make_proxy(origin.url, max_ttl=str(SHORT))
    resp, _ = await proxy.get("/img")
    assert "stored" in params(resp) and 0 <= ttl_of(resp) <= SHORT
    # Later hits are answered from the worker's prepared entries (proxy/hot.py): the bound
    # holds there too, or the entry would never be refetched.
    await refetched_after(proxy, origin, "/img", SHORT, clock)
    resp, body = await proxy.get("/img")
    assert body == b"pixels" and is_hit(resp) and ttl_of(resp) <= SHORT


# -- --default-ttl: a lifetime for a cacheable response that gives none ---------------------


async def test_default_ttl_stores_and_serves_a_response_without_freshness(
    origin: FakeOrigin, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    origin.add("/plain", Obj(body=b"plain", headers={"Content-Type": OCTETS}))
    proxy = await make_proxy(origin.url, default_ttl=str(SHORT))
    resp, _ = await proxy.get("/plain")
    assert "stored" in params(resp) and 0 <= ttl_of(resp) <= SHORT
    await refetched_after(proxy, origin, "/plain", SHORT, clock)


async def test_without_default_ttl_a_response_without_freshness_is_not_stored(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/plain", Obj(body=b"plain", headers={"Content-Type": OCTETS}))
    resp, _ = await proxy.get("/plain")
    assert "stored" not in params(resp)
    resp, _ = await proxy.get("/plain")
    assert not is_hit(resp) and origin.hits["/plain"] == 2


# -- RFC 9111 §5.1: Age ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "fresh"),
    [
        ("abc", True),  # invalid: ignored, so the response is fresh for its max-age
        ("-5", True),
        ("7200.0", True),
        ("", True),
        ("1, 2", True),  # a list: the first member counts
        ("0, 7200", True),
        ("7200, 0", False),  # the first member is older than max-age=600
        ("7200", False),
    ],
    ids=lambda v: repr(v),
)
async def test_rfc9111_5_1_age_first_member_counts_and_invalid_is_ignored(
    origin: FakeOrigin, proxy: Proxy, age: str, fresh: bool
) -> None:
    """§5.1: a list-based Age: "use the first member"; an invalid one: "ignore the field".
    An invalid Age leaves the response fresh (it is not taken to make it stale)."""
    headers = {"Cache-Control": "max-age=600", "Age": age, "ETag": '"a"', "Content-Type": OCTETS}
    origin.add("/aged", Obj(body=b"a", headers=headers))
    resp, _ = await proxy.get("/aged")
    assert "stored" in params(resp)
    resp, body = await proxy.get("/aged")
    assert body == b"a" and is_hit(resp) is fresh
    assert origin.hits["/aged"] == (1 if fresh else 2)


# -- RFC 9110 §5.6.7 and RFC 9111 §5.3: Expires --------------------------------------------


def _in_an_hour(form: str) -> str:
    """A date an hour ahead in one of the three HTTP-date forms."""
    if form == "imf":
        return formatdate(time.time() + 3600, usegmt=True)
    if form == "imf-upper-case":  # §5.6.7: recipients are robust to the letters' case
        return formatdate(time.time() + 3600, usegmt=True).upper()
    moment = time.gmtime(time.time() + 3600)
    if form == "rfc850":
        return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", moment)
    return time.strftime("%a %b %e %H:%M:%S %Y", moment)  # asctime, day padded with SP


@pytest.mark.parametrize("form", ["imf", "imf-upper-case", "rfc850", "asctime"])
async def test_rfc9110_5_6_7_every_date_form_is_a_valid_expires(
    origin: FakeOrigin, proxy: Proxy, form: str
) -> None:
    origin.add("/exp", Obj(body=b"e", headers={"Expires": _in_an_hour(form), "ETag": '"e"'}))
    await proxy.get("/exp")
    resp, _ = await proxy.get("/exp")
    assert is_hit(resp) and 3500 < ttl_of(resp) <= 3600
    assert origin.hits["/exp"] == 1


@pytest.mark.parametrize(
    "expires",
    [
        "Thu, 18 Aug 50 02:01:18 GMT",  # two-digit year
        "Thu 18 Aug 2050 02:01:18 GMT",  # no comma
        "Thu, 18  Aug  2050 02:01:18 GMT",  # extra spaces
        "Thu, 18-Aug-2050 02:01:18 GMT",  # dashes
        "Thu, 18 Aug 2050 02.01.18 GMT",  # periods
        "Thu, 18 Aug 2050 2:01:18 GMT",  # one-digit hour
        "Thu, 18 Aug 2050 02:01:18 UTC",  # not GMT
        "0",
    ],
)
async def test_rfc9111_5_3_an_invalid_expires_is_already_expired(
    origin: FakeOrigin, proxy: Proxy, expires: str
) -> None:
    """§5.3: invalid date formats represent "a time in the past (i.e., already expired)":
    stored, and revalidated on the next request."""
    origin.add("/exp", Obj(body=b"e", headers={"Expires": expires, "ETag": '"e"'}))
    await proxy.get("/exp")
    resp, body = await proxy.get("/exp")
    assert body == b"e" and not is_hit(resp) and "fwd=stale" in params(resp)
    assert origin_headers(origin, "/exp")[-1]["If-None-Match"] == '"e"'


# -- RFC 9111 §4: a request that joins a fill after the origin answered reuses its response -


@pytest.mark.parametrize(
    ("headers", "reused"),
    [
        ({"Cache-Control": "max-age=600"}, True),  # fresh: reused, one origin request
        ({"Cache-Control": "max-age=600, no-cache"}, False),  # §5.2.2.4: validate first
        ({"Cache-Control": "max-age=0"}, False),  # stale on arrival
        ({"Expires": "0"}, False),  # §5.3: already expired
        ({"Cache-Control": "max-age=600", "Age": "700"}, False),  # older than its lifetime
    ],
    ids=["fresh", "no-cache", "max-age-0", "expires-0", "age-past-max-age"],
)
async def test_rfc9111_4_a_late_joiner_reuses_only_a_fresh_response(
    origin: FakeOrigin, proxy: Proxy, headers: dict[str, str], reused: bool
) -> None:
    """A request that arrives while a fill is still streaming, after the origin's answer
    came in, is served from that fill only if the answer may be reused for it like a
    stored response: fresh, or stale where allowed. Otherwise it validates the response
    once stored (§4.3.1), as it would any stored response."""
    slow = Obj(size=256 * 1024, seed=3, chunk_interval=0.02, headers={**headers, "ETag": '"s"'})
    origin.add("/slow", slow)
    async with proxy.client.get(proxy.url + "/slow") as first:
        assert first.status == 200  # the fill has its head and is still streaming
        second, body = await proxy.get("/slow")
        assert second.status == 200 and len(body) == 256 * 1024
        assert ("collapsed" in params(second)) is reused
        assert origin.hits["/slow"] == (1 if reused else 2)
        if not reused:
            assert origin_headers(origin, "/slow")[-1]["If-None-Match"] == '"s"'
        assert len(await first.read()) == 256 * 1024
