"""A hit checks a small body's SHA-256 before sending it (invariant 1): a bit flipped in a
stored body is never served, whatever the request asks for; the entry is removed as corrupt
and the request is answered from the origin. Bodies over --verify-on-hit-max-size keep
going by sendfile with their size checked (the scrubber checks their bytes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

import proxy.sendfile
from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status

SMALL = pattern_bytes(50 * 1024, seed=41)
LARGE = pattern_bytes(200 * 1024, seed=42)
HEADERS = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"}
ETAG = '"v1"'
# Flipped bit's offset: inside the range requested below, so serving that range from the
# rotten file would show.
FLIP_AT = 30_000
# The scrubber is on by default and could find the rotten body first; these tests are about
# what a hit finds.
NO_SCRUB = {"scrub_rate": "0"}


def body_files(proxy: Proxy) -> list[Path]:
    return sorted(p for p in (proxy.cache_dir / "bodies").glob("??/*") if p.is_file())


def flip_bit(path: Path, at: int = FLIP_AT) -> None:
    """One bit of the body rots; its size (and so the hit's size check) stays the same."""
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x10]))


def corrupt_found_on_hits() -> float:
    labels = {"found_by": "hit"}
    return REGISTRY.get_sample_value("pixcache_corrupt_entries_total", labels) or 0.0


async def stored(
    origin: FakeOrigin, make_proxy: MakeProxy, path: str, body: bytes, **settings: str
) -> Proxy:
    origin.add(path, Obj(body=body, headers={**HEADERS, "ETag": ETAG}))
    proxy = await make_proxy(origin.url, **NO_SCRUB, **settings)
    resp, got = await proxy.get(path)
    assert resp.status == 200 and got == body
    await settled(proxy.cache_dir, entry=True)
    resp, got = await proxy.get(path)
    assert got == body and cache_status(resp).startswith("pixcache; hit")
    return proxy


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The byte counts of every os.sendfile call pixcache makes (the real call is made)."""
    calls: list[int] = []
    real = os.sendfile

    def recording(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(proxy.sendfile.os, "sendfile", recording)
    yield calls


async def test_a_flipped_bit_is_never_served_and_the_entry_is_replaced(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await stored(origin, make_proxy, "/a.bin", SMALL)
    [rotten] = body_files(proxy)
    flip_bit(rotten)
    found_before = corrupt_found_on_hits()
    with capture_logs() as logs:
        resp, got = await proxy.get("/a.bin")
    assert resp.status == 200
    assert got == SMALL, "the origin's bytes, not the flipped ones"
    assert "hit" not in cache_status(resp).split("; ")
    assert origin.hits["/a.bin"] == 2  # fetched again
    assert corrupt_found_on_hits() == found_before + 1
    assert any(
        e["event"] == "corrupt_entry" and e.get("found_by") == "hit" and e["log_level"] == "warning"
        for e in logs
    )
    # The rotten entry is gone, replaced by the one just fetched.
    await settled(proxy.cache_dir, entry=True)
    [fresh] = body_files(proxy)
    assert fresh != rotten and not rotten.exists()
    assert fresh.read_bytes() == SMALL
    resp, got = await proxy.get("/a.bin")
    assert got == SMALL and cache_status(resp).startswith("pixcache; hit")
    assert origin.hits["/a.bin"] == 2


RequestKind = tuple[str, dict[str, str], Callable[[int, bytes], bool]]
KINDS: dict[str, RequestKind] = {
    # A range covering the flipped byte: 206 with the origin's bytes of that range.
    "range": (
        "GET",
        {"Range": f"bytes={FLIP_AT - 100}-{FLIP_AT + 99}"},
        lambda status, got: status == 206 and got == SMALL[FLIP_AT - 100 : FLIP_AT + 100],
    ),
    # A fill may answer several ranges with the whole body (RFC 9110 §14.2).
    "multipart range": (
        "GET",
        {"Range": f"bytes=0-9,{FLIP_AT}-{FLIP_AT + 9}"},
        lambda status, got: (
            (status == 200 and got == SMALL)
            or (status == 206 and SMALL[:10] in got and SMALL[FLIP_AT : FLIP_AT + 10] in got)
        ),
    ),
    "HEAD": ("HEAD", {}, lambda status, got: status == 200 and got == b""),
    "conditional": ("GET", {"If-None-Match": ETAG}, lambda status, got: status == 304),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_no_request_is_answered_from_a_flipped_body(
    origin: FakeOrigin, make_proxy: MakeProxy, kind: str
) -> None:
    """Ranges, HEAD and conditional requests open the entry like any hit, so they find the
    rotten body too: it is removed before anything is answered from it."""
    method, headers, answered_right = KINDS[kind]
    proxy = await stored(origin, make_proxy, "/a.bin", SMALL)
    [rotten] = body_files(proxy)
    flip_bit(rotten)
    found_before = corrupt_found_on_hits()
    async with proxy.client.request(method, proxy.url + "/a.bin", headers=headers) as resp:
        got = await resp.read()
    assert answered_right(resp.status, got), (resp.status, len(got))
    assert "hit" not in cache_status(resp).split("; ")
    assert corrupt_found_on_hits() == found_before + 1
    assert not rotten.exists()
    assert origin.hits["/a.bin"] == 2
    await settled(proxy.cache_dir)
    resp, got = await proxy.get("/a.bin")
    assert resp.status == 200 and got == SMALL


async def test_a_flipped_body_is_not_handed_to_nginx(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """X-Accel-Redirect mode: a small body is checked before nginx is told to send its
    file; a rotten one is fetched again and streamed by pixcache."""
    prefix = "/_pixcache/bodies/"
    proxy = await stored(origin, make_proxy, "/a.bin", SMALL, x_accel_redirect=prefix)
    [rotten] = body_files(proxy)
    flip_bit(rotten)
    invite = {"X-Sendfile-Type": "X-Accel-Redirect"}
    resp, got = await proxy.get("/a.bin", headers=invite)
    assert resp.status == 200 and got == SMALL
    assert "X-Accel-Redirect" not in resp.headers
    assert origin.hits["/a.bin"] == 2
    await settled(proxy.cache_dir, entry=True)
    resp, got = await proxy.get("/a.bin", headers=invite)
    assert got == b"" and resp.headers["X-Accel-Redirect"].startswith(prefix)
    [fresh] = body_files(proxy)
    assert resp.headers["X-Accel-Redirect"].endswith(f"/{fresh.parent.name}/{fresh.name}")
    assert fresh.read_bytes() == SMALL


async def test_a_checked_body_is_sent_from_the_bytes_checked(
    origin: FakeOrigin, make_proxy: MakeProxy, sendfile_calls: list[int]
) -> None:
    proxy = await stored(origin, make_proxy, "/a.bin", SMALL)
    sendfile_calls.clear()
    resp, got = await proxy.get("/a.bin")
    assert got == SMALL and cache_status(resp).startswith("pixcache; hit")
    resp, got = await proxy.get("/a.bin", headers={"Range": "bytes=0-9,100-109"})
    assert resp.status == 206 and SMALL[100:110] in got
    assert sendfile_calls == []  # never re-read from the file


@pytest.mark.parametrize("limit", ["100K", "0"])
async def test_a_body_over_the_limit_goes_by_sendfile(
    origin: FakeOrigin, make_proxy: MakeProxy, sendfile_calls: list[int], limit: str
) -> None:
    proxy = await stored(origin, make_proxy, "/large.bin", LARGE, verify_on_hit_max_size=limit)
    sendfile_calls.clear()
    resp, got = await proxy.get("/large.bin")
    assert got == LARGE and cache_status(resp).startswith("pixcache; hit")
    assert sum(sendfile_calls) == len(LARGE)
    assert origin.hits["/large.bin"] == 1
