"""Format classes (--vary-accept-classes): an origin that answers `Vary: Accept` and picks
its output format from Accept, as imgproxy and imagor do with automatic AVIF/WebP, is asked
at most once per class for one image, with the class's canonical Accept, whatever Accept
strings the browsers send; every client gets the bytes of its own class's format."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import pyvips
from aiohttp import web
from multidict import CIMultiDict

from proxy.policy.format_class import canonical_accept
from proxy.policy.vary import selecting_value
from tests.browser_accepts import BROWSER_ACCEPTS
from tests.commits import settled
from tests.integration.conftest import MakeProxy, Proxy
from tests.raw_client import exchange

CLASSES = "avif,webp,jxl"


def _image(fmt: str) -> bytes:
    picture = pyvips.Image.black(24, 16).bandjoin([60, 120]).copy(interpretation="srgb")
    return picture.write_to_buffer(f".{fmt}")


IMAGES = {"avif": _image("avif"), "webp": _image("webp"), "jpeg": _image("jpg")}
FORMAT_OF_CLASS = {"avif": "avif", "webp": "webp", "other": "jpeg"}


class NegotiatingOrigin:
    """Renders /photo in the best format the Accept names, like imgproxy's auto-format:
    it looks for each format's media type in Accept (weights and all: it is the cache's
    job to send it something it reads right)."""

    def __init__(self) -> None:
        self.accepts: list[str | None] = []
        self._runner: web.ServerRunner | None = None
        self.url = ""

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        accept = request.headers.get("Accept")
        self.accepts.append(accept)
        text = accept or ""
        fmt = "avif" if "image/avif" in text else "webp" if "image/webp" in text else "jpeg"
        headers = {
            "Content-Type": f"image/{fmt}",
            "Vary": "Accept",
            "Cache-Control": "public, max-age=600",
        }
        return web.Response(body=IMAGES[fmt], headers=headers)

    async def __aenter__(self) -> NegotiatingOrigin:
        self._runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def fetches_by_class(self) -> collections.Counter[str]:
        """Origin fetches per class, told apart by the canonical Accept each was sent."""
        classes = {canonical_accept(k): k for k in ("avif", "webp", "jxl", "other")}
        return collections.Counter(
            classes.get(a or "", f"not canonical: {a}") for a in self.accepts
        )


@pytest.fixture
async def negotiating() -> AsyncIterator[NegotiatingOrigin]:
    async with NegotiatingOrigin() as origin:
        yield origin


async def fetch(proxy: Proxy, accept: str) -> tuple[int, bytes, str, str]:
    resp, body = await proxy.get("/photo", headers={"Accept": accept})
    return resp.status, body, resp.headers.get("Content-Type", ""), resp.headers["Cache-Status"]


async def test_twenty_browsers_one_origin_fetch_per_class(
    negotiating: NegotiatingOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(negotiating.url, vary_accept_classes=CLASSES)
    for who, accept, klass in BROWSER_ACCEPTS:
        status, body, content_type, _ = await fetch(proxy, accept)
        fmt = FORMAT_OF_CLASS[klass]
        assert (status, content_type) == (200, f"image/{fmt}"), who
        assert body == IMAGES[fmt], who
        await settled(proxy.cache_dir)
    present = {klass for _, _, klass in BROWSER_ACCEPTS}
    assert negotiating.fetches_by_class() == {klass: 1 for klass in present}
    # Every browser again, all at once: all hits, nothing more reaches the origin.
    again = await asyncio.gather(*(fetch(proxy, accept) for _, accept, _ in BROWSER_ACCEPTS))
    for (who, _, klass), (status, body, _, cache) in zip(BROWSER_ACCEPTS, again, strict=True):
        assert (status, body) == (200, IMAGES[FORMAT_OF_CLASS[klass]]), who
        assert cache.startswith("pixcache; hit"), who
    assert len(negotiating.accepts) == len(present)


async def test_concurrent_browsers_coalesce_per_class(
    negotiating: NegotiatingOrigin, make_proxy: MakeProxy
) -> None:
    """Once the image is known to vary (its Vary marker is stored), browsers of every class
    arriving together make one fill per class."""
    proxy = await make_proxy(negotiating.url, vary_accept_classes=CLASSES)
    for _ in range(250):  # until the Vary marker and the first variant serve a hit
        if (await fetch(proxy, "*/*"))[3].startswith("pixcache; hit"):
            break
        await settled(proxy.cache_dir)
    else:
        raise AssertionError("the first variant was never stored")
    answers = await asyncio.gather(*(fetch(proxy, accept) for _, accept, _ in BROWSER_ACCEPTS))
    for (who, _, klass), (status, body, _, _) in zip(BROWSER_ACCEPTS, answers, strict=True):
        assert (status, body) == (200, IMAGES[FORMAT_OF_CLASS[klass]]), who
    assert max(negotiating.fetches_by_class().values()) == 1
    assert set(negotiating.fetches_by_class()) == {k for _, _, k in BROWSER_ACCEPTS}


async def test_a_cold_burst_of_browsers_makes_one_fetch_per_class(
    negotiating: NegotiatingOrigin, make_proxy: MakeProxy
) -> None:
    """All twenty at once on an empty cache: the first fill's response turns out to vary;
    requests of other classes wait for its marker and then share one fill per class."""
    proxy = await make_proxy(negotiating.url, vary_accept_classes=CLASSES)
    answers = await asyncio.gather(*(fetch(proxy, accept) for _, accept, _ in BROWSER_ACCEPTS))
    for (who, _, klass), (status, body, _, _) in zip(BROWSER_ACCEPTS, answers, strict=True):
        assert (status, body) == (200, IMAGES[FORMAT_OF_CLASS[klass]]), who
    present = {k for _, _, k in BROWSER_ACCEPTS}
    assert negotiating.fetches_by_class() == {klass: 1 for klass in present}


async def test_refused_formats_and_wildcards(
    negotiating: NegotiatingOrigin, make_proxy: MakeProxy
) -> None:
    """`image/avif;q=0` is a refusal: that client gets WebP, though an origin reading the raw
    string would have sent it AVIF; `*/*` alone and no Accept at all are the fallback."""
    proxy = await make_proxy(negotiating.url, vary_accept_classes=CLASSES)
    _, body, content_type, _ = await fetch(proxy, "image/avif;q=0, image/webp, */*;q=0.5")
    assert (content_type, body) == ("image/webp", IMAGES["webp"])
    await settled(proxy.cache_dir)
    async with proxy.client.get(proxy.url + "/photo", skip_auto_headers=["Accept"]) as resp:
        assert (resp.headers["Content-Type"], await resp.read()) == ("image/jpeg", IMAGES["jpeg"])
    assert negotiating.accepts == [canonical_accept("webp"), canonical_accept("other")]


async def test_off_by_default_each_accept_string_is_a_variant(
    negotiating: NegotiatingOrigin, make_proxy: MakeProxy
) -> None:
    """Today's behaviour, kept when the setting is off: the origin sees each client's own
    Accept, and each Accept that means something else is its own variant and render."""
    proxy = await make_proxy(negotiating.url)
    for _, accept, _ in BROWSER_ACCEPTS:
        await fetch(proxy, accept)
        await settled(proxy.cache_dir)
    distinct = {selecting_value(CIMultiDict(Accept=a), "Accept") for _, a, _ in BROWSER_ACCEPTS}
    assert len(negotiating.accepts) == len(distinct) > 3
    assert set(negotiating.accepts) <= {accept for _, accept, _ in BROWSER_ACCEPTS}


async def test_a_request_with_obs_text_fields_is_keyed_too(
    negotiating: NegotiatingOrigin, make_proxy: MakeProxy
) -> None:
    """A field value with octets above 0x7F (RFC 9110 §5.5 obs-text) does not stop the
    Accept from being replaced."""
    proxy = await make_proxy(negotiating.url, vary_accept_classes=CLASSES)
    port = urlsplit(proxy.url).port
    assert port is not None
    request = (
        b"GET /photo HTTP/1.1\r\nHost: x\r\nAccept: image/webp,*/*\r\n"
        b"X-Note: caf\xe9\r\nConnection: close\r\n\r\n"
    )
    response = await exchange(port, request)
    assert response.status == 200 and response.body == IMAGES["webp"]
    assert negotiating.accepts == [canonical_accept("webp")]
