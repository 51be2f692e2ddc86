"""The image guard counts the frames of animations as their bytes stream: GIF and WebP
state no count up front, an animated PNG declares one that libvips never reads; a frame over
a limit past the first look cuts the response, and nothing is stored."""

from __future__ import annotations

import gzip

import pytest

from proxy.frame_scan import scan_for
from tests.crafted_images import animation, apng
from tests.fake_origin import CHUNK_SIZE, FakeOrigin, Obj
from tests.integration.conftest import MakeProxy, cache_status
from tests.integration.guard_checks import FRESH, cut_off, refused


@pytest.mark.parametrize("coding", ["", "gzip"])
@pytest.mark.parametrize(("fmt", "side"), [(".gif", 128), (".webp", 220)])
async def test_frames_past_the_first_look_are_counted_as_they_stream(
    origin: FakeOrigin, make_proxy: MakeProxy, fmt: str, side: int, coding: str
) -> None:
    """GIF and WebP give no frame count up front: an animation with few frames in its
    first bytes and many after them is cut off at the frame over the limit (counted in
    the decoded bytes of a gzip body, which is what a client decodes)."""
    frames = animation(40, side, noise=True, fmt=fmt)
    early = scan_for(fmt[1:])
    assert early is not None
    early.feed(frames[: 2 * CHUNK_SIZE])
    assert early.frames < 10  # what a header probe of the first bytes would have seen
    headers = {**FRESH, "Content-Type": "image/" + fmt[1:]}
    sent = frames
    if coding:
        headers["Content-Encoding"] = coding
        sent = gzip.compress(frames)
    origin.add("/anim", Obj(body=sent, headers=headers, chunk_interval=0.02))
    proxy = await make_proxy(origin.url, max_image_frames="10")
    await cut_off(proxy, "/anim")
    relaxed = await make_proxy(origin.url, max_image_frames="40")
    resp, body = await relaxed.get("/anim")
    assert resp.status == 200 and body == sent and "stored" in cache_status(resp)
    assert origin.hits["/anim"] == 2


@pytest.mark.parametrize(("fmt", "side"), [(".gif", 128), (".webp", 220)])
async def test_frames_in_the_bytes_held_past_the_look_ahead_are_counted(
    origin: FakeOrigin, make_proxy: MakeProxy, fmt: str, side: int
) -> None:
    """A chunk can bring more than the look-ahead judges: the frames in the rest of it are
    counted before the stream goes on (a WebP with 40 frames passed a limit of 10)."""
    frames = animation(40, side, noise=True, fmt=fmt)
    headers = {**FRESH, "Content-Type": "image/" + fmt[1:]}
    origin.add("/anim", Obj(body=frames, headers=headers))  # in 64 KiB chunks
    proxy = await make_proxy(origin.url, max_image_frames="10", image_probe_bytes="16K")
    await cut_off(proxy, "/anim")


async def test_an_animated_png_declaring_too_many_frames_gets_422_before_any_byte(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """libvips reads an APNG's first frame only; a browser plays every frame it declares."""
    body = apng(3, 16, declared=5000)
    await refused(origin, make_proxy, body, {"Content-Type": "image/png"}, b"5000 frames, over 100")


async def test_animated_png_frames_past_the_first_look_are_counted_as_they_stream(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    body = apng(40, 128, declared=2)  # declares 2, carries 40 (16 KB each)
    headers = {**FRESH, "Content-Type": "image/png"}
    origin.add("/anim.png", Obj(body=body, headers=headers, chunk_interval=0.02))
    proxy = await make_proxy(origin.url, max_image_frames="10")
    await cut_off(proxy, "/anim.png")
    within = apng(10, 128)
    origin.add("/ten.png", Obj(body=within, headers=headers))
    resp, got = await proxy.get("/ten.png")
    assert resp.status == 200 and got == within and "stored" in cache_status(resp)


async def test_a_png_whose_actl_has_no_frame_control_is_a_still_image(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """An acTL without fcTL chunks is no animation: browsers show the image."""
    animated = apng(1, 16, declared=5000)
    still = animated.replace(animated[animated.index(b"fcTL") - 4 :][:38], b"")
    assert b"fcTL" not in still and b"acTL" in still
    origin.add("/still.png", Obj(body=still, headers={**FRESH, "Content-Type": "image/png"}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/still.png")
    assert resp.status == 200 and body == still
