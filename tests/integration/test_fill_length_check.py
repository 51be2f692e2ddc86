"""Invariant 2 at the chokepoint: whatever an origin adapter enforces, the fill itself
compares the body bytes it received with the Content-Length the adapter reported, and a
body of the wrong length is neither stored nor sent as complete."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from proxy.app import FILLS_KEY
from proxy.origins.base import OriginResponse
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy

CACHEABLE = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}


def lie_about_length(fills, by: int) -> None:  # noqa: ANN001 - the app's Fills
    """Make the fills' origin adapter report a Content-Length `by` bytes off the body it
    hands on, as an adapter with a bug in its framing would."""
    real_fetch = fills.origin.fetch

    async def fetch(*args, **kwargs) -> OriginResponse:  # noqa: ANN002, ANN003
        response = await real_fetch(*args, **kwargs)
        assert response.content_length is not None
        return dataclasses.replace(response, content_length=response.content_length + by)

    fills.origin.fetch = fetch


@pytest.mark.parametrize("by", [7, -7], ids=["claims-more", "claims-fewer"])
async def test_a_body_of_the_wrong_length_is_never_stored_or_sent_whole(
    origin: FakeOrigin, make_proxy: MakeProxy, by: int
) -> None:
    body = pattern_bytes(300_000, seed=11)
    origin.add("/lying.png", Obj(body=body, headers=CACHEABLE))
    proxy = await make_proxy(origin.url, verify_images="off")
    lie_about_length(proxy.app[FILLS_KEY], by)
    declared = len(body) + by

    for attempt in (1, 2):
        async with proxy.client.get(proxy.url + "/lying.png") as resp:
            assert resp.headers.get("Content-Length") == str(declared)
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()  # cut short: never a complete-looking body
        # Nothing was stored, so the next request goes to the origin again.
        assert origin.hits["/lying.png"] == attempt
    assert proxy.entry_files() == []
    assert proxy.temp_files() == []
