"""An S3 bucket (or an S3-compatible store: MinIO, Ceph, R2) as the origin, on aiobotocore,
with the same five deadlines as the HTTP origin, each failing on its own:

- connect, tls and headers: a stage clock moved by our connector (proxy/origins/s3_stages.py)
  reschedules one asyncio timeout around the S3 call;
- read: the gap before each body chunk, and
- total: one deadline around everything, every retry and the body included; the body's
  deadlines and length are checked by proxy/origins/body_check.py, as for every origin.

A stage that runs out cancels the call, so botocore never retries it; its own retries
(standard mode, MAX_ATTEMPTS in all) cover throttling, 5xx and broken connections, inside the
total deadline. botocore's own timeouts are set past ours, as a backstop only. Every error
names the stage (or S3's error code), the bucket and the key.

Every exception of botocore and aiohttp is mapped here, once, to proxy.errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import aiohttp
import structlog
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Deadlines
from proxy.errors import OriginTimeout, OriginUnavailable
from proxy.origins.base import OriginResponse, text_response
from proxy.origins.body_check import BodyLimits, checked_body
from proxy.origins.s3_client import new_client
from proxy.origins.s3_stages import (
    StageClock,
    between_attempts,
    current_clock,
    stage_seconds,
)
from proxy.redact import describe

log = structlog.get_logger("pixcache.origin")

CHUNK = 256 * 1024
MAX_KEY_BYTES = 1024  # S3's limit; a longer key cannot exist
# Object headers passed on as S3 sent them (besides the ones built from parsed metadata).
PASSED_HEADERS = ("Content-Encoding", "Content-Language", "Content-Disposition", "Expires")
# What a 304 may carry to update the stored response (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = ("ETag", "Last-Modified", "Cache-Control", "Expires", "Date")
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
NOT_MODIFIED_CODES = frozenset({"NotModified", "304"})
# Why S3 refused, in words, for the codes an operator most needs to tell apart.
REFUSALS = {
    "AccessDenied": "access denied",
    "403": "access denied",
    "NoSuchBucket": "no such bucket",
    "InvalidAccessKeyId": "invalid access key id",
    "SignatureDoesNotMatch": "signature does not match (wrong secret key?)",
    "ExpiredToken": "expired credentials",
    "InvalidToken": "invalid session token",
}
CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    ProfileNotFound,
)


def object_key(prefix: str, path_qs: str) -> str | None:
    """The object key a request path names under `prefix`, or None when it names none.

    The query is dropped, the path percent-decoded (as UTF-8), and every segment must be a
    real name: no empty segment (`//`, a trailing `/`, the bare `/`), no `.` or `..`, no
    backslash, no control character. So no request reaches a key outside the prefix, even
    on a store that would normalise `..` or treat `\\` as a separator."""
    path = path_qs.partition("?")[0]
    if not path.startswith("/"):
        return None
    try:
        decoded = unquote_to_bytes(path[1:]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\\" in decoded or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return None
    segments = decoded.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return None
    key = f"{prefix}/{decoded}" if prefix else decoded
    return key if len(key.encode()) <= MAX_KEY_BYTES else None


class S3Timeout(OriginTimeout):
    """A deadline expired; the message names the stage, the bucket and the key."""

    def __init__(self, stage: str, seconds: float, *, origin: str, bucket: str, key: str):
        super().__init__(stage, seconds, origin=origin)
        self.bucket = bucket
        self.object_key = key
        self.message = f"{self.message} (bucket {bucket!r}, key {key!r})"
        self.args = (self.message,)


class S3Unavailable(OriginUnavailable):
    """S3 refused (access denied, no such bucket, bad credentials) or could not be reached;
    `reason` is S3's error code or the kind of failure."""

    def __init__(
        self, reason: str, detail: str, *, stage: str, origin: str, bucket: str, key: str
    ) -> None:
        # S3's error code is safe to show; its message text, and botocore's (which names
        # the endpoint's address), go to the log only.
        super().__init__(
            f"S3 {reason} (bucket {bucket!r}, key {key!r})",
            stage=stage,
            origin=origin,
            detail=detail,
        )
        self.reason = reason
        self.bucket = bucket
        self.object_key = key


class S3Origin:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        deadlines: Deadlines,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str = "auto",
        default_cache_control: str = "",
        not_found_cache_control: str = "",
        ca_file: Path | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.name = f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
        self.deadlines = deadlines
        self.endpoint_url = endpoint_url
        self.region = region
        self.addressing_style = addressing_style
        self.default_cache_control = default_cache_control
        self.not_found_cache_control = not_found_cache_control
        self.ca_file = ca_file
        self._client: Any = None
        self._exit = contextlib.AsyncExitStack()
        self._client_lock = asyncio.Lock()

    async def _s3(self) -> Any:
        """The one client of this origin, made in the running loop on first use."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._exit.enter_async_context(
                        new_client(
                            self.deadlines,
                            endpoint_url=self.endpoint_url,
                            region=self.region,
                            addressing_style=self.addressing_style,
                            ca_file=self.ca_file,
                        )
                    )
                    self._client.meta.events.register("response-received.s3.*", between_attempts)
        return self._client

    async def fetch(
        self,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse:
        if method not in ("GET", "HEAD"):
            return text_response(405, "an S3 origin is read-only\n", allow="GET, HEAD")
        key = object_key(self.prefix, path_qs)
        if key is None:  # never sent to S3
            return text_response(404, "not found\n", self.not_found_cache_control)
        params = {"Bucket": self.bucket, "Key": key, **_conditions(headers)}
        clock = StageClock(self.deadlines)
        token = current_clock.set(clock)
        stage: str | None = None  # the stage that ran when the S3 call ended
        deadline = _loop_time() + self.deadlines.total
        try:
            async with asyncio.timeout_at(deadline):
                client = await self._s3()
                async with asyncio.timeout(None) as stage_timer:
                    clock.timer = stage_timer
                    try:
                        if method == "HEAD":
                            result = await client.head_object(**params)
                        else:
                            result = await client.get_object(**params)
                    finally:
                        stage = clock.stage
                        clock.enter(None)
        except ClientError as exc:
            return self._answer_for(exc, key, clock.timings)
        except (BotoCoreError, aiohttp.ClientError) as exc:
            raise self._unreachable(exc, key) from exc
        except TimeoutError:  # ours: a stage's, or the total one
            expired = clock.timer is not None and clock.timer.expired()
            raise self._timeout(stage if expired and stage else "total", key) from None
        except OSError as exc:
            raise self._unreachable(exc, key) from exc
        finally:
            current_clock.reset(token)
        out = self._object_headers(result)
        if method == "HEAD":
            return OriginResponse(200, out, _empty(), result.get("ContentLength"), clock.timings)
        stream = result["Body"]
        limits = BodyLimits(self.deadlines.read, deadline, lambda stage: self._timeout(stage, key))
        # botocore checks the length (and a checksum S3 sent) at the end of `read` too; a
        # mismatch is an IncompleteBody, never a complete-looking body.
        body = checked_body(
            _chunks(stream),
            limits,
            expected=result.get("ContentLength"),
            origin=self.name,
            broken=(
                IncompleteReadError,
                ResponseStreamingError,
                FlexibleChecksumError,
                aiohttp.ClientError,
                OSError,
            ),
            what=f"body of {key!r}",
            timings=clock.timings,
        )
        return OriginResponse(
            status=200,
            headers=out,
            body=body,
            content_length=result.get("ContentLength"),
            timings=clock.timings,
            close=_closer(stream),
            limits=limits,
        )

    def _object_headers(self, result: dict[str, Any]) -> CIMultiDictProxy[str]:
        """Object metadata as HTTP. Cache-Control from the object's own, else (when it has
        no Expires either) the configured default; x-amz-meta-* is not passed on."""
        sent = result["ResponseMetadata"].get("HTTPHeaders", {})
        out: CIMultiDict[str] = CIMultiDict()
        if content_type := result.get("ContentType"):
            out["Content-Type"] = content_type
        if (length := result.get("ContentLength")) is not None:
            out["Content-Length"] = str(length)
        if etag := result.get("ETag"):
            out["ETag"] = etag
        if isinstance(modified := result.get("LastModified"), datetime):
            out["Last-Modified"] = format_datetime(modified.astimezone(UTC), usegmt=True)
        for name in PASSED_HEADERS:
            if value := sent.get(name.lower()):
                out[name] = value
        cache_control = result.get("CacheControl")
        if not cache_control and "Expires" not in out:
            cache_control = self.default_cache_control
        if cache_control:
            out["Cache-Control"] = cache_control
        out["Date"] = sent.get("date") or formatdate(usegmt=True)
        return CIMultiDictProxy(out)

    def _answer_for(self, exc: ClientError, key: str, timings: dict[str, float]) -> OriginResponse:
        """S3's error answers: 304 and 404 are answers; every other one is a failure."""
        code = str(exc.response.get("Error", {}).get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        if code in NOT_MODIFIED_CODES or status == 304:
            sent = meta.get("HTTPHeaders", {})
            out = CIMultiDict(
                (name, sent[name.lower()]) for name in NOT_MODIFIED_HEADERS if name.lower() in sent
            )
            return OriginResponse(304, CIMultiDictProxy(out), _empty(), None, timings)
        # A 404 without a code is a HEAD's: it cannot tell a missing key from a missing bucket.
        if code in NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            missing = text_response(404, "not found\n", self.not_found_cache_control)
            missing.timings = timings
            return missing
        detail = REFUSALS.get(code) or str(exc.response.get("Error", {}).get("Message", ""))
        raise S3Unavailable(
            code or f"HTTP {status}",
            detail or "error response",
            stage="headers",
            origin=self.name,
            bucket=self.bucket,
            key=key,
        ) from exc

    def _unreachable(self, exc: Exception, key: str) -> OriginTimeout | OriginUnavailable:
        where = {"origin": self.name, "bucket": self.bucket, "key": key}
        if isinstance(exc, CREDENTIAL_ERRORS):
            return S3Unavailable("credentials", describe(exc), stage="credentials", **where)
        if isinstance(exc, ConnectTimeoutError):  # botocore's backstop
            return self._timeout("connect", key)
        if isinstance(exc, ReadTimeoutError):
            return self._timeout("headers", key)
        if isinstance(exc, SSLError):
            return S3Unavailable("TLS handshake failed", describe(exc), stage="tls", **where)
        if isinstance(exc, EndpointConnectionError):
            return S3Unavailable("cannot connect", describe(exc), stage="connect", **where)
        return S3Unavailable("no valid response", describe(exc), stage="headers", **where)

    def _timeout(self, stage: str, key: str) -> S3Timeout:
        seconds = stage_seconds(self.deadlines, stage)
        return S3Timeout(stage, seconds, origin=self.name, bucket=self.bucket, key=key)

    async def prepare(self) -> None:
        """Make the client at start: botocore loads its service model and the credentials
        are resolved, which can take longer than a short total deadline on a busy machine.
        A failure here is left to the first fetch, which tries again within its deadline."""
        try:
            async with asyncio.timeout(self.deadlines.total):
                await self._s3()
        except (TimeoutError, BotoCoreError, OSError) as exc:
            log.warning("s3_client_not_ready", origin=self.name, error=describe(exc))

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _conditions(headers: CIMultiDict[str]) -> dict[str, Any]:
    """Request validators as GetObject parameters. RFC 9110 §13.2.2: If-Modified-Since is
    ignored when If-None-Match is present (S3 would combine them its own way)."""
    if etags := headers.get("If-None-Match"):
        return {"IfNoneMatch": etags}
    if since := headers.get("If-Modified-Since"):
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return {}  # RFC 9110 §13.1.3: an invalid date is ignored
        return {"IfModifiedSince": when if when.tzinfo else when.replace(tzinfo=UTC)}
    return {}


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _chunks(stream: Any) -> AsyncGenerator[bytes, None]:
    """The object's bytes as botocore reads them (deadlines and length: body_check.py)."""
    ended = False
    try:
        while chunk := await stream.read(CHUNK):
            yield chunk
        ended = True
    finally:
        if not ended:  # a connection whose body was not read to its end is not reused
            stream.close()


def _closer(stream: Any) -> Any:
    async def close() -> None:
        stream.close()

    return close
