"""The image guard (header probe and optional full decode): bombs and floods get 422
before a single body byte reaches the client; broken or fake images are never stored."""

from __future__ import annotations

import pytest
import pyvips

from tests.fake_origin import FakeOrigin, Obj
from tests.integration.conftest import MakeProxy, cache_status

FRESH = {"Cache-Control": "max-age=600"}


@pytest.fixture(scope="module")
def png_bomb() -> bytes:
    """20000x20000 pixels (400 megapixels) in about 50 KB: a 1-bit, all-black PNG."""
    black = pyvips.Image.black(20000, 20000).cast("uchar")
    return black.write_to_buffer(".png", compression=9, bitdepth=1)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    gradient = (pyvips.Image.xyz(400, 300)[0] * 255 / 400).cast("uchar")
    return gradient.write_to_buffer(".jpg", Q=90)


@pytest.fixture(scope="module")
def animated_gif() -> bytes:
    frames = [(pyvips.Image.black(16, 16) + 40 * i).cast("uchar") for i in range(5)]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 16)
    return strip.write_to_buffer(".gif")


async def test_png_bomb_gets_422_before_any_body_byte_and_is_not_stored(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    assert len(png_bomb) < 100_000
    origin.add("/bomb.png", Obj(body=png_bomb, headers={**FRESH, "Content-Type": "image/png"}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/bomb.png")
    assert resp.status == 422
    assert b"20000x20000" in body and not body.startswith(b"\x89PNG")
    assert "image_rejected" in cache_status(resp)
    assert proxy.entry_files() == [] and proxy.temp_files() == []
    # Nothing was stored: the next request asks the origin again (and is refused again).
    resp, _ = await proxy.get("/bomb.png")
    assert resp.status == 422 and origin.hits["/bomb.png"] == 2


async def test_a_bomb_with_the_wrong_content_type_is_caught_by_its_magic_bytes(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    origin.add("/x.bin", Obj(body=png_bomb, headers={**FRESH, "Content-Type": "text/plain"}))
    proxy = await make_proxy(origin.url)
    resp, _ = await proxy.get("/x.bin")
    assert resp.status == 422


async def test_animation_over_the_frame_limit_gets_422(
    origin: FakeOrigin, make_proxy: MakeProxy, animated_gif: bytes
) -> None:
    origin.add("/a.gif", Obj(body=animated_gif, headers={**FRESH, "Content-Type": "image/gif"}))
    proxy = await make_proxy(origin.url, max_image_frames="3")
    resp, body = await proxy.get("/a.gif")
    assert resp.status == 422 and b"5 frames" in body
    relaxed = await make_proxy(origin.url, max_image_frames="10")
    resp, body = await relaxed.get("/a.gif")
    assert resp.status == 200 and body == animated_gif


async def test_a_real_image_within_limits_is_stored_and_served(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes
) -> None:
    origin.add("/ok.jpg", Obj(body=jpeg, headers={**FRESH, "Content-Type": "image/jpeg"}))
    proxy = await make_proxy(origin.url, verify_images="decode")
    resp, body = await proxy.get("/ok.jpg")
    assert resp.status == 200 and body == jpeg and "stored" in cache_status(resp)
    await proxy.store.flush_uses()
    resp, body = await proxy.get("/ok.jpg")
    assert body == jpeg and cache_status(resp).startswith("pixcache; hit")


async def test_decode_mode_never_stores_a_truncated_jpeg_sent_chunked(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes
) -> None:
    half = jpeg[: len(jpeg) // 2]
    origin.add(
        "/cut.jpg",
        Obj(body=half, chunked=True, headers={**FRESH, "Content-Type": "image/jpeg"}),
    )
    proxy = await make_proxy(origin.url, verify_images="decode")
    resp, body = await proxy.get("/cut.jpg")
    # The origin ended its chunked body properly: the client gets what it sent...
    assert resp.status == 200 and body == half
    # ...but it does not decode, so it is never stored.
    assert proxy.entry_files() == []
    await proxy.get("/cut.jpg")
    assert origin.hits["/cut.jpg"] == 2


async def test_header_mode_stores_a_truncated_png_whose_header_reads(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """Only decode mode can tell a cut image by its pixels; header mode checks headers."""
    png = pyvips.Image.black(300, 300).cast("uchar").write_to_buffer(".png")
    origin.add(
        "/cut.png", Obj(body=png[: len(png) // 2], headers={**FRESH, "Content-Type": "image/png"})
    )
    header_only = await make_proxy(origin.url)
    resp, _ = await header_only.get("/cut.png")
    assert "stored" in cache_status(resp)
    decoding = await make_proxy(origin.url, verify_images="decode")
    resp, _ = await decoding.get("/cut.png")
    assert decoding.entry_files() == []


async def test_html_error_page_sent_as_jpeg_is_not_stored_or_is_refused(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    page = b"<html><body>502 Bad Gateway from the image service</body></html>"
    origin.add("/err.jpg", Obj(body=page, headers={**FRESH, "Content-Type": "image/jpeg"}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/err.jpg")
    assert resp.status == 200 and body == page
    assert "stored" not in cache_status(resp)
    assert 'detail="not-a-valid-image"' in cache_status(resp)
    assert proxy.entry_files() == []
    strict = await make_proxy(origin.url, refuse_invalid_images="true")
    resp, _ = await strict.get("/err.jpg")
    assert resp.status == 422


async def test_guard_off_passes_everything(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    origin.add("/bomb.png", Obj(body=png_bomb, headers={**FRESH, "Content-Type": "image/png"}))
    proxy = await make_proxy(origin.url, verify_images="off")
    resp, body = await proxy.get("/bomb.png")
    assert resp.status == 200 and body == png_bomb
