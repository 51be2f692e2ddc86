"""The image guard (header probe and optional full decode): bombs and floods get 422
before a single body byte reaches the client; broken or fake images are never stored."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import pyvips
from aiohttp import web

from proxy.frame_scan import scan_for
from tests.commits import settled
from tests.crafted_images import (
    animation,
    apng,
    jpeg_with_app_segments,
    png_header_bomb,
    sample,
    svg,
    tiff_bomb,
)
from tests.fake_origin import CHUNK_SIZE, FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status

FRESH = {"Cache-Control": "max-age=600"}


async def cut_off(proxy: Proxy, path: str) -> None:
    """The response starts (its head judged fine) and is cut when a frame past the first
    bytes is over a limit; nothing is stored."""
    async with proxy.client.get(proxy.url + path) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert proxy.entry_files() == []


async def refused(
    origin: FakeOrigin,
    make_proxy: MakeProxy,
    body: bytes,
    headers: dict[str, str],
    reason: bytes,
    **settings: str,
) -> None:
    """The guard refuses this (fresh) response with 422 and `reason`; nothing is stored."""
    origin.add("/judged", Obj(body=body, headers={**FRESH, **headers}))
    proxy = await make_proxy(origin.url, **settings)
    resp, text = await proxy.get("/judged")
    assert resp.status == 422 and reason in text, (resp.status, text)
    assert proxy.entry_files() == [] and proxy.temp_files() == []


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


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_decode_mode_decodes_a_coded_image_as_its_client_will(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes, coding: str
) -> None:
    headers = {**FRESH, "Content-Encoding": coding, "Content-Type": "image/jpeg"}
    whole = gzip.compress(jpeg) if coding == "gzip" else zlib.compress(jpeg)
    cut = gzip.compress(jpeg[: len(jpeg) // 2]) if coding == "gzip" else zlib.compress(jpeg[:-900])
    origin.add("/whole.jpg", Obj(body=whole, headers=headers))
    origin.add("/cut.jpg", Obj(body=cut, headers=headers))
    proxy = await make_proxy(origin.url, verify_images="decode")
    for path in ("/whole.jpg", "/cut.jpg"):
        async with proxy.client.get(proxy.url + path, auto_decompress=False) as resp:
            assert resp.status == 200 and await resp.read() == origin.objects[path].body
    await settled(proxy.cache_dir)
    resp, _ = await proxy.get("/whole.jpg")
    assert cache_status(resp).startswith("pixcache; hit")
    resp, _ = await proxy.get("/cut.jpg")  # its image does not decode: never stored
    assert "hit" not in cache_status(resp) and origin.hits["/cut.jpg"] == 2


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


@pytest.mark.parametrize("label", ["image/png", "text/html", ""])
async def test_a_gzip_coded_bomb_is_judged_as_the_image_it_decodes_to(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes, label: str
) -> None:
    """A client decodes Content-Encoding: gzip before it decodes the image (and a browser
    decodes an image whatever its label): the guard judges the decoded bytes."""
    headers = {"Content-Encoding": "gzip", "Content-Type": label}
    await refused(origin, make_proxy, gzip.compress(png_bomb), headers, b"20000x20000")


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate"])
async def test_a_coded_image_within_the_limits_passes_as_the_origin_sent_it(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes, coding: str
) -> None:
    coded = zlib.compress(jpeg) if coding == "deflate" else gzip.compress(jpeg)
    headers = {**FRESH, "Content-Encoding": coding, "Content-Type": "image/jpeg"}
    origin.add("/coded.jpg", Obj(body=coded, headers=headers))
    proxy = await make_proxy(origin.url)
    for expect in ("stored", "hit"):
        async with proxy.client.get(proxy.url + "/coded.jpg", auto_decompress=False) as resp:
            assert resp.status == 200 and await resp.read() == coded
            assert resp.headers["Content-Encoding"] == coding
            assert expect in cache_status(resp)
            await settled(proxy.cache_dir, entry=True)


async def test_a_gzip_header_that_never_ends_is_not_held_past_the_look_ahead(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    # FNAME set: a file name, ended by a NUL that never comes; nothing decodes meanwhile.
    endless = b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\xff" + b"a" * (3 << 20)
    headers = {"Content-Encoding": "gzip", "Content-Type": "image/png"}
    reason = b"not decoded within its first 2097152 bytes"
    await refused(origin, make_proxy, endless, headers, reason, image_probe_bytes=str(1 << 20))


@pytest.mark.parametrize("label", ["image/png", "text/plain"])
async def test_a_body_in_a_coding_the_guard_cannot_read_is_refused(
    origin: FakeOrigin, make_proxy: MakeProxy, label: str
) -> None:
    """Whatever its label: a client decodes the coding, then (a browser, for an <img>)
    the image in it."""
    headers = {"Content-Encoding": "br", "Content-Type": label}
    reason = b"content-coding 'br' cannot be judged"
    await refused(origin, make_proxy, b"\x0b\x02\x80hello\x03", headers, reason)


@pytest.mark.parametrize(
    ("verify", "asked", "forwarded"),
    [
        ("header", "br, gzip;q=0.8, zstd, *;q=0.1, identity", "gzip;q=0.8, identity"),
        ("header", "br, *", "identity"),  # none left: identity, not "any" (no field)
        ("header", "", "identity"),
        ("off", "br, gzip;q=0.8, zstd, *;q=0.1, identity", None),
    ],
)
async def test_with_the_guard_on_a_fill_asks_only_for_codings_it_can_read(
    origin: FakeOrigin,
    make_proxy: MakeProxy,
    verify: str,
    asked: str,
    forwarded: str | None,
) -> None:
    origin.add("/a.jpg", Obj(body=b"x", headers=FRESH))
    proxy = await make_proxy(origin.url, verify_images=verify)
    resp, _ = await proxy.get("/a.jpg", headers={"Accept-Encoding": asked})
    assert resp.status == 200
    assert origin.requests[-1][2].get("Accept-Encoding") == (forwarded or asked)


def multi_member(png_bomb: bytes) -> bytes:
    return gzip.compress(b"") + gzip.compress(png_bomb)


def raw_deflate(png_bomb: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(png_bomb) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "code"),
    [("gzip", multi_member), ("deflate", raw_deflate)],
    ids=["second-gzip-member", "raw-deflate"],
)
async def test_a_bomb_in_a_form_lenient_clients_decode_is_judged_too(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes, coding: str, code: Any
) -> None:
    headers = {"Content-Encoding": coding, "Content-Type": "text/plain"}
    await refused(origin, make_proxy, code(png_bomb), headers, b"20000x20000")


async def test_a_coded_body_that_does_not_decode_is_refused(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes
) -> None:
    broken = gzip.compress(jpeg)[:40] + b"not deflate at all" * 100
    headers = {"Content-Encoding": "gzip", "Content-Type": "image/jpeg"}
    await refused(origin, make_proxy, broken, headers, b"does not decode as gzip")


async def test_a_coded_body_longer_than_the_look_ahead_in_one_chunk_is_judged(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    text = pattern_bytes(400_000, seed=3).hex().encode()  # compresses about 2:1
    coded = gzip.compress(text)
    assert len(coded) > CHUNK_SIZE
    headers = {**FRESH, "Content-Encoding": "gzip", "Content-Type": "text/plain"}
    origin.add("/text", Obj(body=coded, headers=headers))
    proxy = await make_proxy(origin.url, image_probe_bytes="16K")
    async with proxy.client.get(proxy.url + "/text", auto_decompress=False) as resp:
        assert resp.status == 200 and await resp.read() == coded


async def test_a_request_fetched_alone_is_judged_as_a_fill_is(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    # RFC 9111 §5.2.1.5: no-store in a request: fetched for it alone, never stored.
    origin.add("/bomb.png", Obj(body=png_bomb, headers={**FRESH, "Content-Type": "image/png"}))
    proxy = await make_proxy(origin.url)
    resp, body = await proxy.get("/bomb.png", headers={"Cache-Control": "no-store"})
    assert resp.status == 422 and b"20000x20000" in body


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


async def test_a_response_without_a_body_is_not_judged_by_its_coding(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    headers = {**FRESH, "Content-Encoding": "br"}
    origin.add("/empty", Obj(body=b"", status=204, headers=headers))
    proxy = await make_proxy(origin.url)
    resp, _ = await proxy.get("/empty")
    assert resp.status == 204


@pytest.mark.parametrize(
    ("coding", "tail"),
    [("gzip", b"\r\n<!-- trailing -->\r\n"), ("deflate", b"\x03\x00" * 50_000)],
    ids=["gzip-then-text", "deflate-then-empty-streams"],
)
async def test_bytes_after_a_coded_body_are_ignored_as_clients_ignore_them(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes, coding: str, tail: bytes
) -> None:
    body = (gzip.compress(jpeg) if coding == "gzip" else raw_deflate(jpeg)) + tail
    headers = {**FRESH, "Content-Encoding": coding, "Content-Type": "image/jpeg"}
    origin.add("/tail.jpg", Obj(body=body, headers=headers))
    proxy = await make_proxy(origin.url)
    async with proxy.client.get(proxy.url + "/tail.jpg", auto_decompress=False) as resp:
        assert resp.status == 200 and await resp.read() == body


async def test_a_gzip_body_of_too_many_members_is_refused(
    origin: FakeOrigin, make_proxy: MakeProxy, png_bomb: bytes
) -> None:
    body = gzip.compress(b"") * 64 + gzip.compress(png_bomb)
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    await refused(origin, make_proxy, body, headers, b"over 64 members")


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
