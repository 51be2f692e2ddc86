"""The image guard and content-codings, as a client decodes them: a gzip or deflate body is
judged by what it decodes to (every member, raw deflate, bytes after it ignored), any other
coding is refused whatever its label, and fills ask the origin only for codings the guard
reads."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from tests.commits import settled
from tests.fake_origin import CHUNK_SIZE, FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, cache_status
from tests.integration.guard_checks import FRESH, refused


async def test_decode_mode_takes_identity_for_no_coding(
    origin: FakeOrigin, make_proxy: MakeProxy, jpeg: bytes
) -> None:
    headers = {**FRESH, "Content-Encoding": "Identity", "Content-Type": "image/jpeg"}
    origin.add("/plain.jpg", Obj(body=jpeg, headers=headers))
    proxy = await make_proxy(origin.url, verify_images="decode")
    await proxy.get("/plain.jpg")
    await settled(proxy.cache_dir)
    resp, body = await proxy.get("/plain.jpg")
    assert body == jpeg and cache_status(resp).startswith("pixcache; hit")


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
