"""The image guard (header probe and optional full decode): bombs and floods get 422
before a single body byte reaches the client; broken or fake images are never stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import pyvips
from aiohttp import web

from tests.commits import settled
from tests.crafted_images import (
    jpeg_with_app_segments,
    png_header_bomb,
    sample,
    svg,
    tiff_bomb,
)
from tests.fake_origin import CHUNK_SIZE, FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, cache_status
from tests.integration.guard_checks import FRESH


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


async def test_decode_mode_stores_bodies_that_are_no_image(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """Only images are decoded; a text body is stored as in header mode."""
    origin.add("/a.txt", Obj(body=b"some text", headers={**FRESH, "Content-Type": "text/plain"}))
    proxy = await make_proxy(origin.url, verify_images="decode")
    await proxy.get("/a.txt")
    await settled(proxy.cache_dir)
    resp, body = await proxy.get("/a.txt")
    assert body == b"some text" and cache_status(resp).startswith("pixcache; hit")


async def test_header_mode_stores_a_truncated_png_whose_header_reads(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """Only decode mode can tell a cut image by its pixels; header mode checks headers."""
    # Noise, so the pixel data is large and half the file holds everything before it.
    png = pyvips.Image.gaussnoise(300, 300, seed=1).cast("uchar").write_to_buffer(".png")
    cut = png[: len(png) // 2]
    assert pyvips.Image.new_from_buffer(cut, "", access="sequential").width == 300
    origin.add("/cut.png", Obj(body=cut, headers={**FRESH, "Content-Type": "image/png"}))
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


# -- the format is what the bytes are; nothing passes unjudged ----------------------------


class StreamingOrigin:
    """A real aiohttp origin on loopback serving one body 64 KiB at a time, which records
    how many bytes it wrote and whether the client closed the connection before the end."""

    def __init__(self, head: bytes, filler: int, content_type: str) -> None:
        self.head, self.filler, self.content_type = head, filler, content_type
        self.length = len(head) + filler
        self.sent = 0
        self.completed = False
        self.ended = asyncio.Event()
        self._runner: web.ServerRunner | None = None
        self.url = ""

    async def __aenter__(self) -> StreamingOrigin:
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.25)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        headers = {**FRESH, "Content-Type": self.content_type}
        resp = web.StreamResponse(headers=headers)
        resp.content_length = self.length
        await resp.prepare(request)
        try:
            for chunk in self._chunks():
                await resp.write(chunk)  # waits for the socket to drain
                self.sent += len(chunk)
            await resp.write_eof()
            self.completed = True
        except ConnectionResetError:
            pass  # the client is gone; so is the rest of the body
        finally:
            self.ended.set()
        return resp

    def _chunks(self) -> Iterator[bytes]:
        yield self.head
        for offset in range(0, self.filler, CHUNK_SIZE):
            yield pattern_bytes(min(CHUNK_SIZE, self.filler - offset), seed=3, offset=offset)


async def test_png_bomb_labelled_jpeg_is_refused_before_any_byte_and_the_origin_cut_off(
    make_proxy: MakeProxy,
) -> None:
    bomb = png_header_bomb(60000, 60000)
    assert len(bomb) < 1000
    # 64 MiB follow the bomb: more than any socket buffer holds, so the origin can only
    # finish if pixcache reads them all.
    async with StreamingOrigin(bomb, 64 << 20, "image/jpeg") as origin:
        proxy = await make_proxy(origin.url)
        resp, body = await proxy.get("/bomb.jpg")
        assert resp.status == 422
        assert b"60000x60000" in body and b"PNG" not in body
        assert "image_rejected" in cache_status(resp)
        assert proxy.entry_files() == [] and proxy.temp_files() == []
        await asyncio.wait_for(origin.ended.wait(), 30)
        assert not origin.completed and origin.sent < origin.length


async def test_jpeg_whose_frame_header_is_past_the_look_ahead_is_refused(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """The frame header (SOF) and the scan header after it must be within the first
    --image-probe-bytes (1 MiB): past them the image is refused, not passed unjudged."""
    late = jpeg_with_app_segments(sample("gradient.jpg"), (1 << 20) + 1)
    origin.add("/late.jpg", Obj(body=late, headers={**FRESH, "Content-Type": "image/jpeg"}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/late.jpg")
    assert resp.status == 422 and b"not within the first 1048576 bytes" in body
    assert proxy.entry_files() == []
    resp, _ = await proxy.get("/late.jpg")
    assert resp.status == 422 and origin.hits["/late.jpg"] == 2
    # Within a larger look-ahead it is an ordinary 320x240 JPEG.
    roomy = await make_proxy(origin.url, image_probe_bytes="2M")
    resp, body = await roomy.get("/late.jpg")
    assert resp.status == 200 and body == late and "stored" in cache_status(resp)


async def test_jpeg_with_large_segments_inside_the_look_ahead_is_judged_and_stored(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    padded = jpeg_with_app_segments(sample("gradient.jpg"), 600_000)
    origin.add("/padded.jpg", Obj(body=padded, headers={**FRESH, "Content-Type": "image/jpeg"}))
    proxy = await make_proxy(origin.url, max_image_width="319")
    resp, body = await proxy.get("/padded.jpg")
    assert resp.status == 422 and b"320x240" in body  # its header was read, past 600 KB
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/padded.jpg")
    assert resp.status == 200 and body == padded and "stored" in cache_status(resp)


@pytest.mark.parametrize("name", ["gradient.jpg", "gradient.png", "gradient-small.webp"])
@pytest.mark.parametrize("label", ["declared", "image/jpeg", "application/octet-stream"])
async def test_every_sample_passes_unchanged_whatever_its_label(
    origin: FakeOrigin, make_proxy: MakeProxy, name: str, label: str
) -> None:
    image = sample(name)
    declared = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
    content_type = declared[name.rpartition(".")[2]] if label == "declared" else label
    origin.add("/" + name, Obj(body=image, headers={**FRESH, "Content-Type": content_type}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/" + name)
    assert resp.status == 200 and body == image and "stored" in cache_status(resp)
    assert resp.headers["Content-Type"] == content_type


@pytest.mark.parametrize(
    "image",
    [sample("gradient.jpg"), sample("gradient-small.webp"), png_header_bomb(60000, 60000)],
    ids=["jpeg", "webp", "png-bomb"],
)
async def test_an_image_sent_one_byte_at_a_time_is_judged_the_same(
    origin: FakeOrigin, make_proxy: MakeProxy, image: bytes
) -> None:
    headers = {**FRESH, "Content-Type": "image/jpeg"}
    origin.add("/slow", Obj(body=image, headers=headers, mode="trickle", trickle_interval=0))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/slow")
    if image.startswith(b"\x89PNG"):
        assert resp.status == 422 and proxy.entry_files() == []
    else:
        assert resp.status == 200 and body == image and "stored" in cache_status(resp)


async def test_an_image_not_judged_within_the_probe_seconds_is_refused(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    # The origin sends the first half (APP segments only), then stalls for 30 s.
    late = jpeg_with_app_segments(sample("gradient.jpg"), 300_000)
    headers = {**FRESH, "Content-Type": "image/jpeg"}
    origin.add("/stall.jpg", Obj(body=late, headers=headers, mode="pause"))
    proxy = await make_proxy(origin.url, image_probe_seconds="0.5")
    resp, body = await proxy.get("/stall.jpg")
    assert resp.status == 422 and b"not judged within 0.5 s" in body
    assert proxy.entry_files() == [] and proxy.temp_files() == []


@pytest.mark.parametrize(
    ("image", "content_type", "reason"),
    [
        (svg(100000, 100000), "text/plain", b"100000x100000"),
        (svg(100000, 100000, prolog='<!DOCTYPE svg [<!ENTITY a "]><p>">]>'), "image/svg+xml",
         b"100000x100000"),
        (tiff_bomb(100000, 100000), "image/png", b"100000x100000"),
        (tiff_bomb(100000, 100000, directory_at=2 << 20), "image/tiff", b"not within"),
    ],
    ids=["svg-as-text", "svg-behind-a-doctype", "tiff-as-png", "tiff-directory-at-the-end"],
)  # fmt: skip
async def test_svg_and_tiff_bombs_are_refused_whatever_their_label(
    origin: FakeOrigin, make_proxy: MakeProxy, image: bytes, content_type: str, reason: bytes
) -> None:
    origin.add("/x", Obj(body=image, headers={**FRESH, "Content-Type": content_type}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/x")
    assert resp.status == 422 and reason in body
    assert proxy.entry_files() == []


@pytest.mark.parametrize(
    ("page", "content_type"),
    [
        (b'<!DOCTYPE html>\n<html><body><svg width="100000" height="100000"></svg></body></html>',
         "text/html"),
        (b'{"icon": "<svg width=\\"100000\\" height=\\"100000\\"/>"}', "application/json"),
        (b"plain words, " * 20_000, "text/plain"),
    ],
    ids=["html-with-inline-svg", "json", "long-text"],
)  # fmt: skip
async def test_text_bodies_pass_unchanged_and_are_stored(
    origin: FakeOrigin, make_proxy: MakeProxy, page: bytes, content_type: str
) -> None:
    origin.add("/page", Obj(body=page, headers={**FRESH, "Content-Type": content_type}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/page")
    assert resp.status == 200 and body == page and "stored" in cache_status(resp)


@pytest.mark.parametrize("cache_control", ["private", "no-store"])
async def test_responses_that_are_not_shareable_are_judged_too(
    origin: FakeOrigin, make_proxy: MakeProxy, cache_control: str
) -> None:
    headers = {"Cache-Control": cache_control, "Content-Type": "image/jpeg"}
    origin.add("/bomb", Obj(body=png_header_bomb(60000, 60000), headers=headers))
    origin.add("/ok.jpg", Obj(body=sample("gradient.jpg"), headers=headers))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/bomb")
    assert resp.status == 422 and b"60000x60000" in body
    resp, body = await proxy.get("/ok.jpg")
    assert resp.status == 200 and body == sample("gradient.jpg")
    assert proxy.entry_files() == []


async def test_a_request_fetched_alone_is_judged_as_a_fill_is(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    # RFC 9111 §5.2.1.5: no-store in a request: fetched for it alone, never stored.
    origin.add("/bomb.png", Obj(body=png_bomb, headers={**FRESH, "Content-Type": "image/png"}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/bomb.png", headers={"Cache-Control": "no-store"})
    assert resp.status == 422 and b"20000x20000" in body


async def test_a_range_fetched_alone_is_judged_too(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    whole = f"bytes 0-{len(png_bomb) - 1}/{len(png_bomb)}"
    headers = {**FRESH, "Content-Type": "image/png", "Content-Range": whole}
    origin.add("/bomb.png", Obj(body=png_bomb, status=206, headers=headers))
    proxy = await make_proxy(origin.url)
    fields = {"Cache-Control": "no-store", "Range": "bytes=0-"}
    resp, body = await proxy.get("/bomb.png", headers=fields)
    assert resp.status == 422 and b"20000x20000" in body
