"""pixcache in front of an S3 bucket: a real S3 protocol server (moto in server mode) on
127.0.0.1, reached through a counting forwarder so the tests see every request S3 got. Fills,
hits, coalescing, revalidation, missing keys, keys outside the prefix, refusals, and each
stage of a stalled endpoint (the fake origin's stall modes behind an S3 endpoint URL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from structlog.testing import capture_logs

from proxy.config import Deadlines
from proxy.origins.s3 import S3Origin
from proxy.origins.s3_client import MAX_ATTEMPTS
from tests.clock import FakeClock
from tests.fake_origin import BlackholeServer, FakeOrigin, Obj, SilentTLSServer, pattern_bytes
from tests.integration.conftest import MakeProxy, cache_status

HOST = "127.0.0.1"
BUCKET = "images"
PREFIX = "pics"
ORIGIN = f"s3://{BUCKET}/{PREFIX}"
# The deadlines that should not fire are long, so a stage that waited for one is obvious.
LONG = {
    "connect_timeout": "20",
    "tls_timeout": "20",
    "header_timeout": "20",
    "read_timeout": "20",
    "total_timeout": "40",
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class CountingForwarder:
    """An HTTP forwarder on 127.0.0.1 in front of the S3 server, recording every request
    (method, path, headers). Host is passed on unchanged, so signatures stay valid. Date
    is the test clock's, as if the S3 server ran on it."""

    def __init__(self, target: str, clock: FakeClock) -> None:
        self.target = target
        self.clock = clock
        self.requests: list[tuple[str, str, CIMultiDict[str]]] = []
        self.header_delay = 0.0  # seconds to hold each request before forwarding it
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def count(self, method: str, key: str) -> int:
        path = f"/{BUCKET}/{key}"
        return sum(1 for m, p, _ in self.requests if m == method and p == path)

    async def __aenter__(self) -> CountingForwarder:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.ServerRunner(web.Server(self._handle), shutdown_timeout=0.25)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.url = f"http://{HOST}:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None
        self.requests.append((request.method, request.path, CIMultiDict(request.headers)))
        if self.header_delay:
            await asyncio.sleep(self.header_delay)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = request.headers["Host"]
        async with self._session.request(
            request.method,
            self.target + request.raw_path,
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            if "Date" in response.headers:
                response.headers["Date"] = self.clock.http_date()
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                await response.write(chunk)
            await response.write_eof()
            return response


# moto, boto3 and requests are imported by the fixtures that use them: a quarter of a
# second of every pytest worker's collection otherwise, used by the one that runs these.
@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test credentials from the environment, and nothing from this machine's AWS files."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(moto_url: str, aws_env: None) -> Any:
    """A boto3 client straight to the S3 server (not counted), with an empty bucket."""
    import boto3
    import requests

    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
async def counted(moto_url: str, s3: Any, clock: FakeClock) -> AsyncIterator[CountingForwarder]:
    async with CountingForwarder(moto_url, clock) as forwarder:
        yield forwarder


def s3_settings(endpoint: str, **more: str) -> dict[str, str]:
    return {"s3_endpoint_url": endpoint, **more}


async def test_fill_then_hit_from_the_bucket(
    s3, counted: CountingForwarder, make_proxy: MakeProxy
) -> None:
    body = pattern_bytes(3 * 1024 * 1024 + 17, seed=5)
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}/a.bin",
        Body=body,
        ContentType="application/octet-stream",
        CacheControl="public, max-age=600",
    )
    proxy = await make_proxy(ORIGIN, **s3_settings(counted.url))
    resp, got = await proxy.get("/a.bin")
    assert resp.status == 200 and got == body
    assert "fwd=uri-miss" in cache_status(resp) and "stored" in cache_status(resp)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers["Cache-Control"] == "public, max-age=600"
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/a.bin")
    assert resp.headers["ETag"] == head["ETag"]
    assert resp.headers["Last-Modified"].endswith(" GMT")  # an HTTP-date (RFC 9110 §5.6.7)

    # The object changes in the bucket; the fresh cached copy is what clients get.
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}/a.bin",
        Body=b"changed",
        ContentType="application/octet-stream",
    )
    resp, got = await proxy.get("/a.bin?w=1&x=2")  # a query names the same object key ...
    assert resp.status == 200 and got == b"changed"  # ... but is its own cache entry
    resp, got = await proxy.get("/a.bin")
    assert resp.status == 200 and got == body
    assert cache_status(resp).startswith("pixcache; hit")
    assert counted.count("GET", f"{PREFIX}/a.bin") == 2


async def test_default_cache_control_for_objects_without_one(
    s3, counted: CountingForwarder, make_proxy: MakeProxy
) -> None:
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}/plain.bin",
        Body=b"png",
        ContentType="application/octet-stream",
    )
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{PREFIX}/dated.bin",
        Body=b"png",
        Expires="Wed, 21 Oct 2037 07:28:00 GMT",
    )
    proxy = await make_proxy(
        ORIGIN, **s3_settings(counted.url, s3_default_cache_control="public, max-age=77")
    )
    resp, _ = await proxy.get("/plain.bin")
    assert resp.headers["Cache-Control"] == "public, max-age=77"
    # An object with its own Expires keeps it; the default would override it (RFC 9111 §5.3).
    resp, _ = await proxy.get("/dated.bin")
    assert "Cache-Control" not in resp.headers
    assert resp.headers["Expires"] == "Wed, 21 Oct 2037 07:28:00 GMT"


async def test_concurrent_cold_requests_fetch_the_object_once(
    s3, counted: CountingForwarder, make_proxy: MakeProxy
) -> None:
    body = pattern_bytes(8 * 1024 * 1024, seed=9)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/big.bin", Body=body, CacheControl="max-age=600")
    proxy = await make_proxy(ORIGIN, **s3_settings(counted.url))
    counted.header_delay = 0.3  # the fill is still in flight when all 50 have arrived
    results = await asyncio.gather(*(proxy.get("/big.bin") for _ in range(50)))
    assert all(resp.status == 200 and got == body for resp, got in results)
    assert counted.count("GET", f"{PREFIX}/big.bin") == 1
    assert any("collapsed" in cache_status(resp) for resp, _ in results)


async def test_stale_entry_is_revalidated_with_a_304(
    s3, counted: CountingForwarder, make_proxy: MakeProxy, clock: FakeClock
) -> None:
    body = pattern_bytes(100_000, seed=2)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/r.bin", Body=body, CacheControl="max-age=1")
    proxy = await make_proxy(ORIGIN, **s3_settings(counted.url))
    first, _ = await proxy.get("/r.bin")
    etag = first.headers["ETag"]
    clock.advance(2.2)  # max-age=1 and Date has whole seconds: surely stale now
    resp, got = await proxy.get("/r.bin")
    assert resp.status == 200 and got == body
    status = cache_status(resp)
    assert "fwd=stale" in status and "fwd-status=304" in status
    _, _, conditional = [r for r in counted.requests if r[0] == "GET"][-1]
    assert conditional["If-None-Match"] == etag
    # The 304 refreshed the entry: fresh again, a hit, and still one full download.
    resp, got = await proxy.get("/r.bin")
    assert cache_status(resp).startswith("pixcache; hit") and got == body
    assert counted.count("GET", f"{PREFIX}/r.bin") == 2


@pytest.mark.parametrize(
    ("configured", "stored"), [("", False), ("public, max-age=60", True)], ids=["default", "set"]
)
async def test_missing_key_is_a_404(
    s3, counted: CountingForwarder, make_proxy: MakeProxy, configured: str, stored: bool
) -> None:
    settings = s3_settings(counted.url, s3_not_found_cache_control=configured)
    proxy = await make_proxy(ORIGIN, **settings)
    for _ in range(2):
        resp, got = await proxy.get("/missing.bin")
        assert resp.status == 404 and got == b"not found\n"
    # Stored only when the operator gave missing keys a freshness lifetime.
    assert counted.count("GET", f"{PREFIX}/missing.bin") == (1 if stored else 2)
    assert cache_status(resp).startswith("pixcache; hit") == stored


async def _raw_get(url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target exactly as given (client libraries normalise `..`)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.bin",
        "/%2e%2e/secret.bin",
        "/a/%2E%2E/%2E%2E/secret.bin",
        "/x%2F..%2F..%2Fsecret.bin",
        "/./secret.bin",
        "//secret.bin",
        "/dir/",
        "/",
        "/a%5C..%5Csecret.bin",
        "/%00secret.bin",
        "/%ff.bin",
    ],
)
async def test_paths_outside_the_prefix_never_reach_s3(
    s3, counted: CountingForwarder, make_proxy: MakeProxy, target: str
) -> None:
    s3.put_object(Bucket=BUCKET, Key="secret.bin", Body=b"outside the prefix")
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/secret.bin", Body=b"inside, but not by that name")
    proxy = await make_proxy(ORIGIN, **s3_settings(counted.url))
    status, body = await _raw_get(proxy.url, target)
    assert status in (400, 404)
    assert b"outside" not in body and b"inside" not in body
    assert counted.requests == []


async def test_other_methods_are_refused(
    s3, counted: CountingForwarder, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(ORIGIN, **s3_settings(counted.url))
    async with proxy.client.post(proxy.url + "/a.bin", data=b"x") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET, HEAD"
    assert counted.requests == []


async def test_head_uses_head_object(s3, moto_url: str) -> None:
    s3.put_object(
        Bucket=BUCKET, Key=f"{PREFIX}/h.bin", Body=b"12345", ContentType="application/octet-stream"
    )
    origin = S3Origin(BUCKET, PREFIX, Deadlines(), endpoint_url=moto_url)
    try:
        response = await origin.fetch("HEAD", "/h.bin", CIMultiDict())
        assert response.status == 200 and response.content_length == 5
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert [chunk async for chunk in response.body] == []
        missing = await origin.fetch("HEAD", "/nope.bin", CIMultiDict())
        assert missing.status == 404
    finally:
        await origin.close()


async def test_missing_bucket_is_a_502_that_says_so(
    s3, counted: CountingForwarder, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy("s3://no-such-bucket/p", **s3_settings(counted.url))
    with capture_logs() as logs:
        resp, body = await proxy.get("/a.bin")
    assert resp.status == 502
    assert "origin_unavailable stage=headers" in cache_status(resp)
    assert b"NoSuchBucket" in body
    [event] = [e for e in logs if e["event"] == "origin_unavailable"]
    assert event["stage"] == "headers" and event["origin"] == "s3://no-such-bucket/p"
    assert "NoSuchBucket" in event["error"] and "'no-such-bucket'" in event["error"]
    assert "'p/a.bin'" in event["error"]
    assert proxy.entry_files() == []


@pytest.fixture
def iam_enforced(moto_url: str, s3: Any) -> Iterator[dict[str, str]]:
    """Keys of an IAM user without any permission, with moto checking every request."""
    import boto3
    import requests

    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        yield {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf", timeout=10)


@pytest.mark.parametrize(
    ("who", "code"), [("nobody", "AccessDenied"), ("stranger", "InvalidAccessKeyId")]
)
async def test_refusals_are_502s_that_name_the_reason(
    iam_enforced: dict[str, str],
    moto_url: str,
    make_proxy: MakeProxy,
    monkeypatch: pytest.MonkeyPatch,
    who: str,
    code: str,
) -> None:
    if who == "nobody":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_enforced["id"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_enforced["secret"])
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    proxy = await make_proxy(ORIGIN, **s3_settings(moto_url))
    with capture_logs() as logs:
        resp, body = await proxy.get("/a.bin")
    assert resp.status == 502 and code.encode() in body
    [event] = [e for e in logs if e["event"] == "origin_unavailable"]
    assert code in event["error"] and f"'{BUCKET}'" in event["error"]


async def test_missing_credentials_are_a_502(
    s3, moto_url: str, make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    proxy = await make_proxy(ORIGIN, **s3_settings(moto_url))
    with capture_logs() as logs:
        resp, _ = await proxy.get("/a.bin")
    assert resp.status == 502
    assert "origin_unavailable stage=credentials" in cache_status(resp)
    [event] = [e for e in logs if e["event"] == "origin_unavailable"]
    assert "credentials" in event["error"]


# -- deadlines: every stage fails on its own, naming the stage, the bucket and the key --


def _timeout_event(logs: list[dict], stage: str) -> dict:
    [event] = [e for e in logs if e.get("event") == "origin_timeout" and e.get("stage") == stage]
    return event


async def _get(proxy, path: str) -> tuple[aiohttp.ClientResponse, bytes]:
    # Which deadline fired shows in Cache-Status (stage=...); how soon is bench/'s business.
    async with proxy.client.get(proxy.url + path) as resp:
        try:
            body = await resp.read()
        except aiohttp.ClientPayloadError:
            body = b"<aborted>"
    return resp, body


async def test_connect_stage(aws_env: None, make_proxy: MakeProxy) -> None:
    async with BlackholeServer() as blackhole:
        settings = {**LONG, "connect_timeout": "0.5"}
        proxy = await make_proxy(ORIGIN, **s3_settings(blackhole.url, **settings))
        with capture_logs() as logs:
            resp, body = await _get(proxy, "/x.bin")
    assert resp.status == 504 and "stage=connect" in cache_status(resp)
    event = _timeout_event(logs, "connect")
    assert f"'{BUCKET}'" in event["error"] and f"'{PREFIX}/x.bin'" in event["error"]
    assert b"connect timeout" in body and f"'{PREFIX}/x.bin'".encode() in body


async def test_tls_stage(aws_env: None, make_proxy: MakeProxy) -> None:
    async with SilentTLSServer() as silent:
        settings = {**LONG, "tls_timeout": "0.5"}
        proxy = await make_proxy(ORIGIN, **s3_settings(silent.url, **settings))
        with capture_logs() as logs:
            resp, _ = await _get(proxy, "/x.bin")
    assert resp.status == 504 and "stage=tls" in cache_status(resp)
    assert f"'{PREFIX}/x.bin'" in _timeout_event(logs, "tls")["error"]


async def test_headers_stage(aws_env: None, make_proxy: MakeProxy) -> None:
    # Accepts the connection, reads the request, never answers.
    async with SilentTLSServer() as silent:
        endpoint = f"http://{HOST}:{silent.port}"
        settings = {**LONG, "header_timeout": "0.5"}
        proxy = await make_proxy(ORIGIN, **s3_settings(endpoint, **settings))
        with capture_logs() as logs:
            resp, _ = await _get(proxy, "/x.bin")
    assert resp.status == 504 and "stage=headers" in cache_status(resp)
    assert f"'{PREFIX}/x.bin'" in _timeout_event(logs, "headers")["error"]


def _s3_object(body_size: int, **kw: object) -> Obj:
    """What GetObject answers, from the fake origin playing an S3 endpoint (path style)."""
    headers = {
        "ETag": '"fake"',
        "Content-Type": "application/octet-stream",
        "Cache-Control": "max-age=600",
    }
    return Obj(size=body_size, seed=4, headers=headers, **kw)  # type: ignore[arg-type]


async def test_read_stage_after_part_of_the_body(aws_env: None, make_proxy: MakeProxy) -> None:
    size = 1024 * 1024
    async with FakeOrigin() as fake:
        fake.add(f"/{BUCKET}/{PREFIX}/slow.bin", _s3_object(size, mode="pause"))
        settings = {**LONG, "read_timeout": "0.5"}
        proxy = await make_proxy(ORIGIN, **s3_settings(fake.url, **settings))
        received = b""
        with capture_logs() as logs:
            async with proxy.client.get(proxy.url + "/slow.bin") as resp:
                assert resp.status == 200  # the headers went out before the stall
                with pytest.raises(aiohttp.ClientPayloadError):
                    async for chunk in resp.content.iter_any():
                        received += chunk
    # Streamed: the first half reached the client before the origin stalled.
    assert received == pattern_bytes(size // 2, seed=4)
    assert f"'{PREFIX}/slow.bin'" in _timeout_event(logs, "read")["error"]
    assert proxy.entry_files() == [] and proxy.temp_files() == []


async def test_body_cut_short_is_never_stored(aws_env: None, make_proxy: MakeProxy) -> None:
    async with FakeOrigin() as fake:
        fake.add(f"/{BUCKET}/{PREFIX}/cut.bin", _s3_object(512 * 1024, mode="short"))
        proxy = await make_proxy(ORIGIN, **s3_settings(fake.url, **LONG))
        with capture_logs() as logs:
            resp, body = await _get(proxy, "/cut.bin")
    assert resp.status == 200 and body == b"<aborted>"  # never a complete-looking body
    assert [e for e in logs if e.get("event") == "incomplete_body"]
    assert proxy.entry_files() == [] and proxy.temp_files() == []


async def test_total_deadline_covers_the_whole_fetch(aws_env: None, make_proxy: MakeProxy) -> None:
    async with FakeOrigin() as fake:
        fake.add(f"/{BUCKET}/{PREFIX}/late.bin", _s3_object(10, header_delay=5))
        settings = {**LONG, "total_timeout": "0.8"}
        proxy = await make_proxy(ORIGIN, **s3_settings(fake.url, **settings))
        with capture_logs() as logs:
            resp, _ = await _get(proxy, "/late.bin")
    assert resp.status == 504 and "stage=total" in cache_status(resp)
    assert _timeout_event(logs, "total")


async def test_retries_are_bounded(aws_env: None, make_proxy: MakeProxy) -> None:
    slow_down = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    async with FakeOrigin() as fake:
        path = f"/{BUCKET}/{PREFIX}/busy.bin"
        fake.add(path, Obj(body=slow_down, status=503, headers={"Content-Type": "application/xml"}))
        proxy = await make_proxy(ORIGIN, **s3_settings(fake.url, **LONG))
        resp, body = await _get(proxy, "/busy.bin")
        assert resp.status == 502 and b"SlowDown" in body
        assert fake.hits[path] == MAX_ATTEMPTS
        # However many retries would be allowed, they all share the total deadline: with
        # each answer 0.2 s in coming, a third attempt would start past 0.3 s.
        fake.add(path, Obj(body=slow_down, status=503, header_delay=0.2))
        fast = await make_proxy(ORIGIN, **s3_settings(fake.url, **{**LONG, "total_timeout": "0.3"}))
        resp, _ = await _get(fast, "/busy.bin")
        assert resp.status == 504 and "stage=total" in cache_status(resp)
        assert fake.hits[path] - MAX_ATTEMPTS < MAX_ATTEMPTS


async def test_https_endpoint(aws_env: None, make_proxy: MakeProxy, tmp_path: Path) -> None:
    async with FakeOrigin(tls=True) as fake:
        ca_file = tmp_path / "ca.pem"
        fake.ca.cert_pem.write_to_path(str(ca_file))
        fake.add(f"/{BUCKET}/{PREFIX}/tls.bin", _s3_object(70_000))
        proxy = await make_proxy(ORIGIN, **s3_settings(fake.url, origin_ca_file=str(ca_file)))
        resp, body = await proxy.get("/tls.bin")
    assert resp.status == 200 and body == pattern_bytes(70_000, seed=4)
