"""The request path as a client sees it: hits, misses, what is stored and what is not,
headers forwarded, invalidation, Vary, and that the origin comes only from configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path

from yarl import URL

from tests.clock import FakeClock
from tests.fake_origin import FakeOrigin, Obj
from tests.integration.conftest import Proxy, cache_status

CACHEABLE = {
    "Cache-Control": "max-age=600",
    "Content-Type": "application/octet-stream",
    "ETag": '"v1"',
}
# A real JPEG, so the image guard's header probe passes it.
SAMPLE_JPEG = (Path(__file__).parents[2] / "proxy" / "samples" / "gradient.jpg").read_bytes()


async def test_miss_then_hit_serves_identical_bytes_and_stored_headers(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    body = SAMPLE_JPEG
    origin.add(
        "/a.jpg",
        Obj(
            body=body,
            headers={
                **CACHEABLE,
                "Content-Type": "image/jpeg",
                "Last-Modified": "Sun, 06 Nov 1994 08:49:37 GMT",
            },
        ),
    )
    first, first_body = await proxy.get("/a.jpg")
    assert first.status == 200 and first_body == body
    assert cache_status(first).startswith("pixcache; fwd=uri-miss; fwd-status=200")
    assert "stored" in cache_status(first)

    second, second_body = await proxy.get("/a.jpg")
    assert second.status == 200 and second_body == body
    assert cache_status(second).startswith("pixcache; hit; ttl=")
    # The origin's validators reach the client unchanged on a hit.
    assert second.headers["ETag"] == '"v1"'
    assert second.headers["Last-Modified"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert second.headers["Content-Type"] == "image/jpeg"
    assert int(second.headers["Age"]) >= 0
    assert "pixcache" in second.headers["Via"]
    assert origin.hits["/a.jpg"] == 1


async def test_head_fills_from_a_get_and_sends_no_body(origin: FakeOrigin, proxy: Proxy) -> None:
    origin.add("/h.jpg", Obj(body=b"x" * 1000, headers=CACHEABLE))
    async with proxy.client.head(proxy.url + "/h.jpg") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1000"
        assert await resp.read() == b""
    # The fill the HEAD started goes on after the HEAD was answered; a GET joins or hits it.
    resp, body = await proxy.get("/h.jpg")
    assert body == b"x" * 1000
    resp, body = await proxy.get("/h.jpg")
    assert body == b"x" * 1000 and cache_status(resp).startswith("pixcache; hit")
    assert [m for m, p, _ in origin.requests if p == "/h.jpg"] == ["GET"]


async def test_responses_that_must_not_be_stored_go_to_the_origin_each_time(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/nostore", Obj(body=b"a", headers={"Cache-Control": "no-store"}))
    origin.add("/private", Obj(body=b"b", headers={"Cache-Control": "private, max-age=60"}))
    # RFC 9111 §3 allows heuristics here, but with no freshness and no validator we never store.
    origin.add("/bare", Obj(body=b"c"))
    for path in ("/nostore", "/private", "/bare"):
        for _ in range(2):
            resp, _ = await proxy.get(path)
            assert resp.status == 200
            assert "stored" not in cache_status(resp)
        assert origin.hits[path] == 2
    assert proxy.entry_files() == []


async def test_request_no_store_bypasses_and_request_no_cache_refetches(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/r", Obj(body=b"r", headers=CACHEABLE))
    await proxy.get("/r")
    resp, _ = await proxy.get("/r", headers={"Cache-Control": "no-cache"})
    assert cache_status(resp).startswith("pixcache; fwd=request")
    assert origin.hits["/r"] == 2
    resp, _ = await proxy.get("/r")
    assert cache_status(resp).startswith("pixcache; hit")
    # RFC 9111 §5.2.1.5: request no-store forbids storing the response, not using a stored one.
    origin.add("/r2", Obj(body=b"r2", headers=CACHEABLE))
    resp, _ = await proxy.get("/r2", headers={"Cache-Control": "no-store"})
    assert "fwd=request" in cache_status(resp) and "stored" not in cache_status(resp)
    resp, _ = await proxy.get("/r2")
    assert cache_status(resp).startswith("pixcache; fwd=uri-miss")
    assert origin.hits["/r2"] == 2


async def test_unsafe_method_is_forwarded_and_invalidates(origin: FakeOrigin, proxy: Proxy) -> None:
    origin.add("/p.jpg", Obj(body=b"old", headers=CACHEABLE))
    await proxy.get("/p.jpg")
    resp, _ = await proxy.get("/p.jpg")
    assert cache_status(resp).startswith("pixcache; hit")
    async with proxy.client.post(proxy.url + "/p.jpg", data=b"payload") as posted:
        assert posted.status == 200
        assert "fwd=method" in cache_status(posted)
    assert ("POST", "/p.jpg") in [(m, p) for m, p, _ in origin.requests]
    resp, _ = await proxy.get("/p.jpg")
    assert cache_status(resp).startswith("pixcache; fwd=uri-miss")
    assert origin.hits["/p.jpg"] == 3  # GET, POST, GET again


async def test_hop_by_hop_request_fields_are_not_forwarded(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/hop", Obj(body=b"h", headers=CACHEABLE))
    await proxy.get(
        "/hop",
        headers={
            "Connection": "X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "X-Passed": "yes",
        },
    )
    _, _, seen = [r for r in origin.requests if r[1] == "/hop"][0]
    lowered = {k.lower(): v for k, v in seen.items()}
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert name not in lowered, name
    assert lowered["x-passed"] == "yes"
    assert "pixcache" in lowered["via"]


async def test_absolute_form_target_and_host_never_select_another_server(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/only-here", Obj(body=b"ours", headers=CACHEABLE))
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET http://198.51.100.7:81/only-here HTTP/1.1\r\n"
        b"Host: 198.51.100.7:81\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert raw.endswith(b"ours")
    assert origin.hits["/only-here"] == 1


async def test_vary_stores_one_entry_per_variant(origin: FakeOrigin, proxy: Proxy) -> None:
    origin.add("/v.jpg", Obj(body=b"variant", headers={**CACHEABLE, "Vary": "Accept"}))
    webp = {"Accept": "image/webp"}
    avif = {"Accept": "image/avif"}
    for headers in (webp, avif):
        resp, _ = await proxy.get("/v.jpg", headers=headers)
        assert "stored" in cache_status(resp)
    # Whitespace differences normalise to the same variant (RFC 9111 §4.1).
    resp, _ = await proxy.get("/v.jpg", headers={"Accept": "  image/webp "})
    assert cache_status(resp).startswith("pixcache; hit")
    resp, _ = await proxy.get("/v.jpg", headers=avif)
    assert cache_status(resp).startswith("pixcache; hit")
    resp, _ = await proxy.get("/v.jpg", headers={"Accept": "image/png"})
    assert cache_status(resp).startswith("pixcache; fwd=vary-miss")
    assert origin.hits["/v.jpg"] == 3


async def test_equivalent_accept_encodings_select_one_variant(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """RFC 9111 §4.1: selecting fields are compared in a form with identical semantics:
    content codings are case-insensitive and their order is not significant (RFC 9110
    §8.4.1, §12.5.3), so these two requests share one origin fetch; a request that accepts
    other codings does not."""
    origin.add("/e.jpg", Obj(body=b"encoded", headers={**CACHEABLE, "Vary": "Accept-Encoding"}))
    resp, _ = await proxy.get("/e.jpg", headers={"Accept-Encoding": "gzip, br"})
    assert "stored" in cache_status(resp)
    resp, body = await proxy.get("/e.jpg", headers={"accept-encoding": "BR,gzip"})
    assert body == b"encoded" and cache_status(resp).startswith("pixcache; hit")
    assert origin.hits["/e.jpg"] == 1
    resp, _ = await proxy.get("/e.jpg", headers={"Accept-Encoding": "gzip"})
    assert cache_status(resp).startswith("pixcache; fwd=vary-miss")
    assert origin.hits["/e.jpg"] == 2


async def test_vary_star_is_never_served_from_cache(origin: FakeOrigin, proxy: Proxy) -> None:
    origin.add("/star", Obj(body=b"*", headers={**CACHEABLE, "Vary": "*"}))
    await proxy.get("/star")
    resp, _ = await proxy.get("/star")
    assert "hit" not in cache_status(resp).split("; ")
    assert origin.hits["/star"] == 2


async def test_authorization_requests_are_not_served_from_shared_entries(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    origin.add("/auth", Obj(body=b"secret", headers=CACHEABLE))
    await proxy.get("/auth")
    resp, _ = await proxy.get("/auth", headers={"Authorization": "Bearer t"})
    assert "hit" not in cache_status(resp).split("; ")
    assert origin.hits["/auth"] == 2
    # A response marked public may be reused for authorized requests (RFC 9111 §3.5).
    origin.add(
        "/auth-public",
        Obj(body=b"ok", headers={**CACHEABLE, "Cache-Control": "public, max-age=60"}),
    )
    await proxy.get("/auth-public")
    resp, _ = await proxy.get("/auth-public", headers={"Authorization": "Bearer t"})
    assert cache_status(resp).startswith("pixcache; hit")


async def test_stale_entry_is_fetched_again_and_replaced(
    origin: FakeOrigin, proxy: Proxy, clock: FakeClock
) -> None:
    origin.add("/stale", Obj(body=b"one", headers={"Cache-Control": "max-age=1"}))
    await proxy.get("/stale")
    clock.advance(1.2)
    origin.add("/stale", Obj(body=b"two", headers={"Cache-Control": "max-age=60"}))
    resp, body = await proxy.get("/stale")
    assert body == b"two" and cache_status(resp).startswith("pixcache; fwd=stale")
    resp, body = await proxy.get("/stale")
    assert body == b"two" and cache_status(resp).startswith("pixcache; hit")


async def test_every_response_carries_cache_status_even_errors(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    resp, _ = await proxy.get("/missing")
    assert resp.status == 404
    assert cache_status(resp).startswith("pixcache; fwd=uri-miss; fwd-status=404")


async def test_a_bug_in_one_request_still_answers_with_cache_status(
    origin: FakeOrigin, proxy: Proxy, monkeypatch
) -> None:
    origin.add("/ok.jpg", Obj(body=b"fine", headers=CACHEABLE))

    async def broken_lookup(key_hash: str, select: object):
        raise RuntimeError("injected")

    with monkeypatch.context() as patch:
        patch.setattr(proxy.store, "lookup", broken_lookup)
        resp, _ = await proxy.get("/ok.jpg")
        assert resp.status == 500
        assert 'detail="internal_error"' in cache_status(resp)
    # The worker lives on and serves the next request.
    resp, body = await proxy.get("/ok.jpg")
    assert resp.status == 200 and body == b"fine"


async def test_the_origin_receives_the_target_exactly_as_the_client_wrote_it(
    origin: FakeOrigin, proxy: Proxy
) -> None:
    """Image services sign the path as written: an escaped source URL must reach them with
    its escapes, or every signed URL would be refused."""
    source = "https%3A%2F%2Fimages.example.com%2Fcat.jpg%3Fv%3D2"
    target = f"/sig/rs:fit:300/plain/{source}@webp"
    decoded = "/sig/rs:fit:300/plain/https://images.example.com/cat.jpg?v=2@webp"
    origin.add(decoded, Obj(body=b"derivative", headers=CACHEABLE))
    async with proxy.client.get(URL(proxy.url + target, encoded=True)) as resp:
        assert (resp.status, await resp.read()) == (200, b"derivative")
    assert [raw for _, raw, _ in origin.requests] == [target]
    # Characters that are no URL characters reach the origin escaped, never raw.
    async with proxy.client.get(URL(proxy.url + "/a{b}|c.jpg", encoded=True)) as resp:
        await resp.read()
    assert origin.requests[-1][1] == "/a%7Bb%7D%7Cc.jpg"
