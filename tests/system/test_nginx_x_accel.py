"""nginx/pixcache-x-accel.conf, run by a real nginx on 127.0.0.1, in front of a fake pixcache
that answers as pixcache does in X-Accel-Redirect mode: for a request carrying
`X-Sendfile-Type: X-Accel-Redirect`, the stored headers, an empty body and an
X-Accel-Redirect to the body file under <cache-dir>/bodies/ab/; for any other, the stored
response itself (marked X-Direct here)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.x_accel import redirect_headers
from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj
from tests.system.procs import free_port, start_pixcache, stop
from tests.system.test_nginx import NGINX, nginx_args, render, running_nginx

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="no nginx binary found (.ci/run installs Debian's nginx-light)"
)

CONF = "pixcache-x-accel.conf"
PREFIX = "/_pixcache/bodies/"  # the internal location of the shipped config
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>' * 2000
# A stored response with every field the config names, and the ones nginx keeps itself.
STORED = [
    ("Content-Type", "image/svg+xml"),
    ("Content-Encoding", "gzip"),
    ("ETag", '"v1-5f3a"'),
    ("Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"),
    ("Cache-Control", "public, max-age=3600"),
    ("Expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
    ("Vary", "Accept"),
    ("Age", "42"),
    ("Cache-Status", "pixcache; hit; ttl=3558"),
    ("Via", "1.1 pixcache"),
    ("Link", "<https://img.example/a.svg>; rel=canonical"),
    ("Content-Language", "en"),
    ("Content-Location", "/a.svg"),
    ("Content-Disposition", 'inline; filename="a.svg"'),
    ("Accept-Ranges", "bytes"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Expose-Headers", "Age"),
    ("Timing-Allow-Origin", "*"),
    ("Cross-Origin-Resource-Policy", "cross-origin"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'"),
    ("Surrogate-Key", "logo svg"),
]
# What nginx sets itself: never pixcache's, never twice.
NGINX_OWN = ("Content-Length", "Date", "Server")


@dataclass
class Entry:
    body: bytes
    headers: list[tuple[str, str]]
    file: Path
    # What a request without X-Sendfile-Type gets instead of the entry, if set.
    direct: tuple[int, list[tuple[str, str]], bytes] | None = None


@dataclass
class FakePixcache:
    cache_dir: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    # (path with query, X-Sendfile-Type or None, request headers, upstream connection)
    seen: list[tuple[str, str | None, dict[str, str], object]] = field(default_factory=list)

    def store(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> Entry:
        """A committed entry: its body file at bodies/ab/<64 hex>.<32 hex>."""
        name = f"{hashlib.sha256(path.encode()).hexdigest()}.{uuid.uuid4().hex}"
        file = self.cache_dir / "bodies" / "ab" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(body)
        self.entries[path] = entry = Entry(body, headers, file)
        return entry

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sendfile_type = request.headers.get("X-Sendfile-Type")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append((request.path_qs, sendfile_type, dict(request.headers), peer))
        entry = self.entries.get(request.path)
        if entry is None:
            return web.Response(status=404, text="not cached\n")
        # Like pixcache, this fake redirects only when nginx asks; unlike pixcache, it does
        # so for conditional and range requests too, to show what nginx does with them.
        if sendfile_type == "X-Accel-Redirect":
            # pixcache's own redirect answer.
            uri = PREFIX + "ab/" + entry.file.name
            return web.Response(body=b"", headers=redirect_headers(CIMultiDict(entry.headers), uri))
        if entry.direct is not None:  # the entry changed between the two requests
            status, headers, body = entry.direct
            resp = web.Response(status=status, body=body)
        else:
            resp, headers = web.Response(body=entry.body), entry.headers
        resp.headers["X-Direct"] = "1"
        for name, value in headers:
            resp.headers.add(name, value)
        return resp


@pytest.fixture
async def pixcache(aiohttp_server, tmp_path: Path) -> AsyncIterator[tuple[FakePixcache, int]]:
    fake = FakePixcache(tmp_path / "pixcache-cache")  # where render() points nginx
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    yield fake, server.port


@pytest.fixture
def nginx(pixcache: tuple[FakePixcache, int], tmp_path: Path) -> Iterator[str]:
    """The shipped config in front of the fake; the base URL."""
    port = free_port()
    conf = render(CONF, tmp_path, port, [pixcache[1]])
    with running_nginx(tmp_path, conf, port):
        yield f"http://127.0.0.1:{port}"


async def fetch(url: str, **headers: str) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    # No decompression: the body must arrive as stored, gzip and all.
    async with aiohttp.ClientSession(auto_decompress=False) as client:
        async with client.get(url, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers


def assert_stored_headers_once(
    headers: CIMultiDictProxy[str], stored: list[tuple[str, str]]
) -> None:
    for name, value in stored:
        assert headers.getall(name, []) == [value], name
    for name in NGINX_OWN:
        assert len(headers.getall(name, [])) == 1, name


def test_x_accel_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    conf = render(CONF, tmp_path, free_port(), [free_port()])
    result = subprocess.run([*nginx_args(tmp_path, conf), "-t"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_hit_body_is_sent_by_nginx_from_the_file_with_the_stored_headers(
    pixcache: tuple[FakePixcache, int], nginx: str
) -> None:
    fake, _ = pixcache
    body = gzip.compress(SVG)
    entry = fake.store("/logo.svg", body, STORED)
    # The body file is newer than the stored Last-Modified: nginx's own would differ.
    assert entry.file.stat().st_mtime > 1577836800

    for _ in range(6):
        status, got, headers = await fetch(nginx + "/logo.svg?w=64")
        assert status == 200 and got == body
        assert_stored_headers_once(headers, STORED)
        assert headers["Content-Length"] == str(len(body))  # not pixcache's 0
        assert "X-Accel-Redirect" not in headers and "X-Direct" not in headers

    # Every request asked for, and got, a redirect: pixcache never sent the body.
    assert [(p, t) for p, t, _, _ in fake.seen] == [("/logo.svg?w=64", "X-Accel-Redirect")] * 6
    # The empty redirect answers leave the upstream connection reusable: at most one per
    # nginx worker (2).
    assert len({peer for *_, peer in fake.seen}) <= 2


async def test_fields_pixcache_did_not_send_stay_absent(
    pixcache: tuple[FakePixcache, int], nginx: str
) -> None:
    fake, _ = pixcache
    body = os.urandom(50_000)
    fake.store("/bare", body, [("Cache-Control", "max-age=60")])

    status, got, headers = await fetch(nginx + "/bare")
    assert status == 200 and got == body
    assert headers.getall("Cache-Control") == ["max-age=60"]
    # No ETag, Last-Modified or Content-Type made up by nginx from the file.
    for name in ("ETag", "Last-Modified", "Content-Type", "Vary", "Age"):
        assert name not in headers, name
    # pixcache's own (it answers Range requests), once: not nginx's too.
    assert headers.getall("Accept-Ranges") == ["bytes"]


@pytest.mark.parametrize(
    "conditional",
    [
        {"If-None-Match": '"v1-5f3a"'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": "Wed, 01 Jan 2031 00:00:00 GMT"},
        {"If-Unmodified-Since": "Wed, 01 Jan 2020 00:00:00 GMT"},
        {"If-Match": '"v1-5f3a"'},
        {"Range": "bytes=0-99"},
    ],
    ids=lambda h: "-".join(f"{k}:{v}" for k, v in h.items()),
)
async def test_a_redirected_conditional_or_range_request_is_answered_by_pixcache(
    pixcache: tuple[FakePixcache, int], nginx: str, conditional: dict[str, str]
) -> None:
    # Checked against the body file, each of these would get a 304 or 412 made up by nginx
    # (or a range it cannot honour); nginx hands them back to pixcache instead.
    fake, _ = pixcache
    body = gzip.compress(SVG)
    fake.store("/logo.svg", body, STORED)

    status, got, headers = await fetch(nginx + "/logo.svg", **conditional)
    # The fake's own answer (it does not evaluate validators): not nginx's 304 or 412.
    assert status == 200 and got == body
    assert headers.get("X-Direct") == "1"
    assert_stored_headers_once(headers, STORED)

    (first, second) = fake.seen
    assert first[:2] == ("/logo.svg", "X-Accel-Redirect")
    assert second[:2] == ("/logo.svg", None)
    for name, value in conditional.items():
        assert second[2].get(name) == value, name


async def test_body_file_gone_falls_back_to_pixcache_streaming_it(
    pixcache: tuple[FakePixcache, int], nginx: str, tmp_path: Path
) -> None:
    fake, _ = pixcache
    body = os.urandom(200_000)
    fake.store("/photo.jpg", body, STORED).file.unlink()  # purged after pixcache answered

    # A client's own X-Sendfile-Type is not passed on to the fallback either.
    status, got, headers = await fetch(
        nginx + "/photo.jpg?w=300&q=80", **{"X-Sendfile-Type": "X-Accel-Redirect"}
    )
    assert status == 200 and got == body
    assert headers.get("X-Direct") == "1"
    assert_stored_headers_once(headers, STORED)

    # Asked again with the client's URI, without X-Sendfile-Type.
    assert [(p, t) for p, t, _, _ in fake.seen] == [
        ("/photo.jpg?w=300&q=80", "X-Accel-Redirect"),
        ("/photo.jpg?w=300&q=80", None),
    ]
    # An expected race, not an error worth a log line.
    assert "No such file" not in (tmp_path / "nginx.stderr").read_text()


async def test_the_fallback_carries_only_the_second_answers_fields(
    pixcache: tuple[FakePixcache, int], nginx: str
) -> None:
    """The body file is gone because the entry was purged or replaced: pixcache's second
    answer (here a 502) must not go out with the first answer's Cache-Control, Expires or
    Content-Disposition, which a cache in front would keep for a year."""
    fake, _ = pixcache
    old = [
        ("Content-Type", "image/jpeg"),
        ("Cache-Control", "public, max-age=31536000, immutable"),
        ("Expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
        ("Content-Disposition", 'attachment; filename="old.jpg"'),
        ("ETag", '"old"'),
    ]
    entry = fake.store("/gone.jpg", b"old", old)
    entry.file.unlink()
    entry.direct = (502, [("Content-Type", "text/plain"), ("Cache-Control", "no-store")], b"x")

    status, got, headers = await fetch(nginx + "/gone.jpg")
    assert status == 502 and got == b"x"
    assert headers.getall("Cache-Control") == ["no-store"]
    assert headers.getall("Content-Type") == ["text/plain"]
    for name in ("Expires", "Content-Disposition", "ETag", "Accept-Ranges"):
        assert name not in headers, name
    assert not any(name.lower().startswith("x-pixcache-") for name in headers)


async def test_body_files_are_not_reachable_from_outside(
    pixcache: tuple[FakePixcache, int], nginx: str
) -> None:
    fake, _ = pixcache
    entry = fake.store("/logo.svg", b"secret-ish", STORED)

    status, got, _ = await fetch(nginx + PREFIX + "ab/" + entry.file.name)
    assert status == 404 and got != b"secret-ish"
    assert fake.seen == []  # nginx answered without asking pixcache


# -- the real thing: `pixcache serve --x-accel-redirect` behind the shipped config -------------


@dataclass
class Stack:
    url: str  # nginx
    cache_dir: Path
    log: Path  # pixcache's JSON request log

    def requests(self, path: str) -> list[dict[str, object]]:
        events = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return [e for e in events if e.get("event") == "request" and e.get("path") == path]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, FakeOrigin]]:
    cache_dir = tmp_path / "pixcache-cache"  # where render() points nginx's alias
    log = tmp_path / "pixcache.log"
    async with FakeOrigin() as origin:
        port, nginx_port = free_port(), free_port()
        proc = start_pixcache(origin.url, cache_dir, port, "--x-accel-redirect", PREFIX, log=log)
        try:
            conf = render(CONF, tmp_path, nginx_port, [port])
            with running_nginx(tmp_path / "nginx", conf, nginx_port):
                yield Stack(f"http://127.0.0.1:{nginx_port}", cache_dir, log), origin
        finally:
            stop(proc)


SAMPLES = Path(__file__).parents[2] / "proxy" / "samples"
JPEG = (SAMPLES / "gradient.jpg").read_bytes()  # real images: the guard stores them
PNG = (SAMPLES / "gradient.png").read_bytes()
ORIGIN_HEADERS = {
    "Content-Type": "image/jpeg",
    "Cache-Control": "public, max-age=600",
    "ETag": '"jpeg-v1"',
    "Last-Modified": "Wed, 01 Jan 2020 00:00:00 GMT",
    "Link": "<https://img.example/a.jpg>; rel=canonical",
    "Access-Control-Allow-Origin": "*",
    "Surrogate-Key": "gallery a",
}


async def test_pixcache_hits_are_sent_by_nginx_with_the_origins_headers(
    stack: tuple[Stack, FakeOrigin],
) -> None:
    s, origin = stack
    body = JPEG
    origin.add("/a.jpg", Obj(body=body, headers=ORIGIN_HEADERS))
    status, got, headers = await fetch(s.url + "/a.jpg")
    assert status == 200 and got == body
    assert headers["Cache-Status"].startswith("pixcache; fwd=uri-miss")
    await settled(s.cache_dir, entry=True)

    for _ in range(3):
        status, got, headers = await fetch(s.url + "/a.jpg")
        assert status == 200 and got == body
        assert headers["Cache-Status"].startswith("pixcache; hit")
        for name, value in ORIGIN_HEADERS.items():
            assert headers.getall(name) == [value], name
        assert int(headers["Age"]) >= 0 and "pixcache" in headers["Via"]
        assert headers["Content-Length"] == str(len(body))
        assert "X-Accel-Redirect" not in headers
    assert origin.hits["/a.jpg"] == 1
    for _ in range(500):  # the request events of the last hits reach the log (bounded)
        if len(events := s.requests("/a.jpg")) >= 4:
            break
        await asyncio.sleep(0.01)
    assert [e.get("x_accel_redirect", False) for e in events] == [False, True, True, True]

    # Conditional and range requests are pixcache's to answer, against the stored validators.
    status, got, headers = await fetch(s.url + "/a.jpg", **{"If-None-Match": '"jpeg-v1"'})
    assert status == 304 and got == b"" and headers["ETag"] == '"jpeg-v1"'
    status, got, headers = await fetch(s.url + "/a.jpg", Range="bytes=10-19")
    assert status == 206 and got == body[10:20]


async def test_a_replaced_entry_is_sent_from_its_new_body(stack: tuple[Stack, FakeOrigin]) -> None:
    s, origin = stack
    origin.add("/p.jpg", Obj(body=JPEG, headers=ORIGIN_HEADERS))
    await fetch(s.url + "/p.jpg")
    await settled(s.cache_dir, entry=True)
    status, got, _ = await fetch(s.url + "/p.jpg")
    assert got == JPEG
    # The image changes; the entry is replaced through a request that must revalidate.
    new_headers = {**ORIGIN_HEADERS, "ETag": '"v2"', "Content-Type": "image/png"}
    origin.add("/p.jpg", Obj(body=PNG, headers=new_headers))
    status, got, _ = await fetch(s.url + "/p.jpg", **{"Cache-Control": "no-cache"})
    assert status == 200 and got == PNG
    await settled(s.cache_dir)
    status, got, headers = await fetch(s.url + "/p.jpg")
    assert status == 200 and got == PNG and headers["ETag"] == '"v2"'
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Status"].startswith("pixcache; hit")
    bodies = [p for p in (s.cache_dir / "bodies").glob("??/*")]
    assert [p.read_bytes() for p in bodies] == [PNG]  # the old body is gone
