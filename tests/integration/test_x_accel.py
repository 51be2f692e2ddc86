"""X-Accel-Redirect mode, pixcache's side: a hit that nginx asked to send itself is answered
with the stored headers and the body file's internal URI; everything else as before. The
nginx side (tests/system/test_nginx_x_accel.py) runs the shipped config with a real nginx."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.x_accel import NGINX_RESTORES, RENAMED, STORED_PREFIX
from storage.layout import Layout
from tests.commits import settled
from tests.fake_origin import FakeOrigin, Obj, pattern_bytes
from tests.integration.conftest import MakeProxy, Proxy, cache_status

PREFIX = "/_pixcache/bodies/"
INVITE = {"X-Sendfile-Type": "X-Accel-Redirect"}
HEADERS = {
    "Cache-Control": "max-age=600",
    "Content-Type": "application/octet-stream",
    "ETag": '"v1"',
    "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT",
    "Content-Disposition": 'inline; filename="a.bin"',
    "Access-Control-Allow-Origin": "*",
}
BODY = pattern_bytes(300_000, seed=7)


async def stored_proxy(origin: FakeOrigin, make_proxy: MakeProxy, **settings: str) -> Proxy:
    origin.add("/a.bin", Obj(body=BODY, headers=HEADERS))
    proxy = await make_proxy(origin.url, **settings)
    resp, body = await proxy.get("/a.bin", headers=INVITE)
    assert resp.status == 200 and body == BODY  # a miss is streamed by pixcache itself
    assert "X-Accel-Redirect" not in resp.headers
    await settled(proxy.cache_dir, entry=True)
    return proxy


def body_file(proxy: Proxy, uri: str) -> bytes:
    assert uri.startswith(PREFIX)
    bucket, name = uri.removeprefix(PREFIX).split("/")
    return (Layout(proxy.cache_dir).bodies / bucket / name).read_bytes()


async def test_a_hit_nginx_asked_for_names_the_body_file(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    proxy = await stored_proxy(origin, make_proxy, x_accel_redirect=PREFIX)
    resp, body = await proxy.get("/a.bin", headers=INVITE)
    assert resp.status == 200
    assert body == b"" and resp.headers["Content-Length"] == "0"
    assert cache_status(resp).startswith("pixcache; hit")
    # The file nginx will send holds exactly the origin's body.
    assert body_file(proxy, resp.headers["X-Accel-Redirect"]) == BODY
    for name, value in HEADERS.items():
        # Fields nginx would keep under their own names travel renamed; nginx restores them.
        sent_as = STORED_PREFIX + name if name.lower() in RENAMED else name
        assert resp.headers.getall(sent_as) == [value], name
        assert sent_as == name or name not in resp.headers
    assert int(resp.headers["Age"]) >= 0
    assert origin.hits["/a.bin"] == 1


@pytest.mark.parametrize(
    "extra",
    [
        {},  # nginx did not ask (a client straight to pixcache)
        {"Range": "bytes=0-99"},
        {"If-None-Match": '"v0"'},
        {"If-Modified-Since": "Sat, 05 Nov 1994 08:49:37 GMT"},
        {"If-Match": '"v1"'},
        {"If-Unmodified-Since": "Mon, 07 Nov 1994 08:49:37 GMT"},
    ],
    ids=["not-asked", "range", "inm", "ims", "if-match", "ius"],
)
async def test_other_hits_are_answered_by_pixcache(
    origin: FakeOrigin, make_proxy: MakeProxy, extra: dict[str, str]
) -> None:
    """Ranges and conditionals are judged against the stored validators, never left to
    nginx, which would judge them by the body file's own size and mtime."""
    proxy = await stored_proxy(origin, make_proxy, x_accel_redirect=PREFIX)
    headers = {**(INVITE if extra else {}), **extra}
    resp, body = await proxy.get("/a.bin", headers=headers)
    assert "X-Accel-Redirect" not in resp.headers
    assert cache_status(resp).startswith("pixcache; hit")
    if "Range" in extra:
        assert resp.status == 206 and body == BODY[:100]
    else:
        assert resp.status == 200 and body == BODY


async def test_head_is_answered_by_pixcache(origin: FakeOrigin, make_proxy: MakeProxy) -> None:
    proxy = await stored_proxy(origin, make_proxy, x_accel_redirect=PREFIX)
    async with proxy.client.head(proxy.url + "/a.bin", headers=INVITE) as resp:
        assert resp.status == 200 and "X-Accel-Redirect" not in resp.headers
        assert resp.headers["Content-Length"] == str(len(BODY))


async def test_off_by_default(origin: FakeOrigin, make_proxy: MakeProxy) -> None:
    proxy = await stored_proxy(origin, make_proxy)
    resp, body = await proxy.get("/a.bin", headers=INVITE)
    assert resp.status == 200 and body == BODY
    assert "X-Accel-Redirect" not in resp.headers


async def test_an_origins_nginx_control_fields_never_pass(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """An origin's X-Accel-Redirect would make the nginx in front serve any internal location;
    nginx's X-Sendfile-Type would invite the origin to answer with one."""
    hostile = {
        **HEADERS,
        "X-Accel-Redirect": "/_pixcache/bodies/../../etc/passwd",
        "X-Accel-Buffering": "no",
    }
    origin.add("/h.bin", Obj(body=b"h" * 100, headers=hostile))
    proxy = await make_proxy(origin.url, x_accel_redirect=PREFIX)
    for _ in range(2):  # the miss, then the stored entry
        resp, body = await proxy.get("/h.bin")
        assert body == b"h" * 100
        assert "X-Accel-Redirect" not in resp.headers and "X-Accel-Buffering" not in resp.headers
        await settled(proxy.cache_dir, entry=True)
    resp, _ = await proxy.get("/h.bin", headers=INVITE)
    assert resp.headers.getall("X-Accel-Redirect") != [hostile["X-Accel-Redirect"]]
    assert len(resp.headers.getall("X-Accel-Redirect")) == 1
    forwarded = [headers for _, target, headers in origin.requests if target == "/h.bin"]
    assert forwarded and all("X-Sendfile-Type" not in h for h in forwarded)


async def test_a_replaced_entry_names_its_new_body(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """The old body file is removed once its entry is replaced; the next hit names the new."""
    proxy = await stored_proxy(origin, make_proxy, x_accel_redirect=PREFIX)
    first, _ = await proxy.get("/a.bin", headers=INVITE)
    old_uri = first.headers["X-Accel-Redirect"]
    new_body = pattern_bytes(1000, seed=8)
    origin.add("/a.bin", Obj(body=new_body, headers={**HEADERS, "ETag": '"v2"'}))
    resp, body = await proxy.get("/a.bin", headers={"Cache-Control": "no-cache"})
    assert resp.status == 200 and body == new_body
    await settled(proxy.cache_dir)
    second, _ = await proxy.get("/a.bin", headers=INVITE)
    new_uri = second.headers["X-Accel-Redirect"]
    assert new_uri != old_uri and second.headers["ETag"] == '"v2"'
    assert body_file(proxy, new_uri) == new_body
    with pytest.raises(FileNotFoundError):
        body_file(proxy, old_uri)


async def test_a_stored_field_nginx_would_drop_keeps_the_hit_with_pixcache(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """nginx delivers only the fields the shipped config names; an entry with another one is
    sent by pixcache, so the client still gets every stored field."""
    origin.add("/c.bin", Obj(body=b"c" * 500, headers={**HEADERS, "X-Image-Id": "42"}))
    proxy = await make_proxy(origin.url, x_accel_redirect=PREFIX)
    await proxy.get("/c.bin")
    await settled(proxy.cache_dir, entry=True)
    resp, body = await proxy.get("/c.bin", headers=INVITE)
    assert "X-Accel-Redirect" not in resp.headers
    assert body == b"c" * 500 and resp.headers["X-Image-Id"] == "42"
    assert cache_status(resp).startswith("pixcache; hit")


async def test_repeated_field_lines_reach_nginx_as_one(
    origin: FakeOrigin, make_proxy: MakeProxy
) -> None:
    """nginx restores a field from one $upstream_http_* line; a list field's lines are
    combined (RFC 9110 §5.3). Set-Cookie lines never are."""
    app = web.Application()

    async def twice(request: web.Request) -> web.Response:
        resp = web.Response(body=b"l" * 100, headers={"Cache-Control": "max-age=600"})
        resp.headers.add("Link", "</a.css>; rel=preload")
        resp.headers.add("Link", "</b.js>; rel=preload")
        return resp

    app.router.add_get("/l.bin", twice)
    async with TestServer(app, host="127.0.0.1") as server:
        proxy = await make_proxy(str(server.make_url("")).rstrip("/"), x_accel_redirect=PREFIX)
        await proxy.get("/l.bin")
        await settled(proxy.cache_dir, entry=True)
        resp, _ = await proxy.get("/l.bin", headers=INVITE)
    assert "X-Accel-Redirect" in resp.headers
    assert resp.headers.getall("Link") == ["</a.css>; rel=preload, </b.js>; rel=preload"]


def test_pixcache_and_the_shipped_nginx_config_agree_on_the_fields() -> None:
    """The fields pixcache counts on nginx to restore are those the config's add_header lines
    restore, each from the name pixcache sends it under; and the fallback hides nothing
    (nothing of the first answer is kept that the second could not replace)."""
    conf = (Path(__file__).parents[2] / "nginx" / "pixcache-x-accel.conf").read_text()
    restored = re.findall(r"^\s*add_header\s+([\w-]+)\s+\$upstream_http_([\w]+);", conf, re.M)
    assert restored, "no add_header lines found"
    for name, variable in restored:
        sent_as = STORED_PREFIX + name if name.lower() in RENAMED else name
        assert variable == sent_as.lower().replace("-", "_"), name
    assert {name.lower() for name, _ in restored} == NGINX_RESTORES
    assert "proxy_hide_header" not in conf
