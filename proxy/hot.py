"""Hits answered from what an earlier hit of this worker prepared: one stat, one fstat, one
write.

The first hit of an entry in a worker takes the full path: a thread call opens its head and
body, checks the body's size and (up to --verify-on-hit-max-size) its checksum, and the
policy decides. What every later hit needs is then kept here: the checked body (bytes
written with the head; from 256 KiB a sealed memory file sent by sendfile; over the check
limit, the open body file, sent by sendfile), the response head rendered once, and the freshness
inputs parsed once (RFC 9111 §4.2.3: the current age grows by the resident time, so
freshness is one subtraction).

Every such hit checks, inline (metadata of page-cached files; a thread hand-off costs far
more than these two syscalls):
- stat(head): the path still names the very head that was read (dev, inode, size,
  mtime), so a purge or a replacement by any worker takes effect for the very next request;
- fstat(body): the body file still has the length its head gives (the size check that
  every hit makes), and was not written since it was checked (inode, size and mtime as
  then: bodies are never modified, so a write means the file can no longer be trusted; the
  bytes sent are the checked ones either way), and still has a name.
When either differs, the entry is dropped here and the request takes the full path, which
removes an entry that turned corrupt.

Only requests that the stored response answers unchanged come here: GET over HTTP/1.1
keep-alive, with no Range, no conditional, no Cache-Control, Pragma or Authorization, for a
fresh 200 stored under its primary key (no Vary) whose head carries Date and no no-cache.
The policy decides everything else in full. Bounded by entries (each holds one descriptor)
and by body bytes held; the least recently used goes first."""

from __future__ import annotations

import fcntl
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.web_response import SERVER_SOFTWARE
from multidict import CIMultiDict

from proxy.observe import HIT, Served, hit_log_head, record_hit, record_request
from proxy.policy.cache_status import CacheStatus
from proxy.policy.directives import cache_control_of
from proxy.policy.freshness import (
    RFC_ONLY,
    Timing,
    TtlPolicy,
    current_age,
    freshness_lifetime,
)
from proxy.policy.targeted import effective_headers
from proxy.respond import abort, client_headers
from proxy.sendfile import send_range
from proxy.wire import _serialize_headers
from storage import SYSTEM_CLOCK, Clock, FileId, OpenEntry

log = structlog.get_logger("pixcache.hot")

# Each entry keeps its body file open (and a sealed copy of a large checked body): at most
# twice this many descriptors (counted in the worker's plan, proxy/client_limits.py).
MAX_HOT_ENTRIES = 256
# Checked bodies this large are kept in sealed memory and sent by sendfile (one copy fewer
# than writing them from a bytes object); smaller ones go out in one write with the head.
SEALED_FROM = 256 * 1024
# Request fields that make the answer depend on more than the stored response.
PERSONAL_FIELDS = (
    "Range",
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "If-Range",
    "Cache-Control",
    "Pragma",
    "Authorization",
)


@dataclass(eq=False)
class HotEntry:
    primary: str  # the key hash, for LRU uses
    head_path: str
    head_id: FileId  # of the head that was read
    fd: int  # the body file, owned here
    body_id: tuple[int, int, int]  # its inode, size and mtime_ns when it was checked
    length: int
    body: bytes | None  # a small checked body, written with the head
    # A large checked body, in sealed memory sent by sendfile; -1: none. Neither this nor
    # `body`: the body is sent from `fd` (over --verify-on-hit-max-size).
    sealed_fd: int
    head: bytes  # status line and fields, without Age and Cache-Status
    # The Cache-Status line up to our ttl value: upstream's members, then ours (RFC 9211 §2).
    status_head: bytes
    lifetime: float  # RFC 9111 §4.2.1 freshness lifetime
    initial_age: float  # §4.2.3 corrected_initial_age, for the policy
    header_age: float  # the same from the stored fields as sent (Age field)
    response_time: float
    log_head: str | None  # the start of its request log line (proxy/observe.py)

    def cost(self) -> int:
        """Bytes of memory the checked body takes."""
        if self.body is not None:
            return len(self.body)
        return self.length if self.sealed_fd >= 0 else 0

    def close(self) -> None:
        os.close(self.fd)
        if self.sealed_fd >= 0:
            os.close(self.sealed_fd)


class _Sent:
    """What aiohttp gets back for a response written here: prepared and ended already."""

    keep_alive = True

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


SENT: Any = _Sent()


class HotHits:
    """The prepared entries of one worker, by request target."""

    def __init__(
        self,
        max_bytes: int,
        targets: tuple[str, ...] = (),
        ttl_policy: TtlPolicy = RFC_ONLY,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.max_bytes = max_bytes  # 0: off
        self._now = clock.now  # bound once: one attribute load per hit, as time.time was
        self.targets = targets
        self.ttl_policy = ttl_policy
        self._entries: OrderedDict[str, HotEntry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- the hit -----------------------------------------------------------------------
    async def answer(self, request: web.Request, note_use: Any) -> web.StreamResponse | None:
        """The response, written, or None when this request must take the full path
        (nothing has been written then)."""
        key = request.raw_path
        hot = self._entries.get(key)
        if (
            hot is None
            or request.method != "GET"
            or request.version != HttpVersion11
            or not request.keep_alive
        ):
            return None
        headers = request.headers
        for name in PERSONAL_FIELDS:
            if name in headers:
                return None
        if not self._still_valid(key, hot):
            return None
        now = self._now()
        resident = now - hot.response_time
        resident = resident if resident > 0.0 else 0.0
        ttl = hot.lifetime - (hot.initial_age + resident)
        if ttl <= 0:  # stale: the policy decides what happens (§4.2.4, RFC 5861)
            return None
        began = time.monotonic()
        head = hot.head + b"Age: %d\r\n%s%d\r\n\r\n" % (
            int(hot.header_age + resident),
            hot.status_head,
            int(ttl),
        )
        # A descriptor of this hit's own, taken before any await: the entry may be dropped
        # (and its descriptors closed, their numbers reused) while the head is sent.
        try:
            fd = (
                -1
                if hot.body is not None
                else os.dup(hot.sealed_fd if hot.sealed_fd >= 0 else hot.fd)
            )
        except OSError:
            return None  # out of descriptors: the full path answers (or says why not)
        self._entries.move_to_end(key)
        note_use(hot.primary)
        try:
            await _write(request, hot, head, fd)
        except (OSError, EOFError) as exc:  # headers are out: cut it, never look complete
            abort(request)
            if not isinstance(exc, ConnectionError):
                log.error("hot_hit_failed", key=key, error=str(exc))
            record_request(request, Served(499, HIT, client_gone=True), began)
        else:
            record_hit(request, hot.length, began, hot.log_head)
        finally:
            if fd >= 0:
                os.close(fd)
        return SENT

    def _still_valid(self, key: str, hot: HotEntry) -> bool:
        try:
            st = os.stat(hot.head_path)
            body = os.fstat(hot.fd)
        except OSError:
            self._drop(key)
            return False
        if (
            FileId.of(st) != hot.head_id
            or (body.st_ino, body.st_size, body.st_mtime_ns) != hot.body_id
            or not body.st_nlink  # removed from its directory
        ):
            self._drop(key)
            return False
        return True

    # -- keeping an entry --------------------------------------------------------------
    def remember(
        self, request: web.Request, key: str, primary: str, entry: OpenEntry, head_path: str
    ) -> None:
        """After the full path found `entry` under its primary key for `request`: keep what
        later hits need, if this kind of request may be answered here."""
        if self.max_bytes <= 0 or key != request.raw_path or key in self._entries:
            return
        meta = entry.meta
        body = entry.checked
        if (
            meta.status != 200
            or meta.is_vary_marker
            or (body is not None and len(body) > self.max_bytes)
        ):
            return
        stored = CIMultiDict(meta.headers)
        policy = effective_headers(stored, self.targets)
        if "date" not in stored or "no-cache" in cache_control_of(policy):
            return
        try:
            hot = self._prepare(key, primary, entry, head_path, stored, policy)
        except OSError as exc:  # descriptors or memory short: this hit goes on without it
            log.warning("hot_entry_not_kept", key=key, error=str(exc))
            return
        if hot is None:
            return
        self._entries[key] = hot
        self._bytes += hot.cost()
        while len(self._entries) > MAX_HOT_ENTRIES or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _prepare(
        self,
        key: str,
        primary: str,
        entry: OpenEntry,
        head_path: str,
        stored: CIMultiDict[str],
        policy: Any,
    ) -> HotEntry | None:
        meta, body = entry.meta, entry.checked
        timing = Timing(meta.request_time, meta.response_time)
        head, status_head = _render_head(stored, meta.body_length)
        large = body if body is not None and len(body) >= SEALED_FROM else None
        fd = os.dup(entry.fd)
        try:
            body_stat = os.fstat(fd)
            if body_stat.st_size != meta.body_length:
                os.close(fd)
                return None
            sealed_fd = _sealed_copy(large) if large is not None else -1
        except BaseException:
            os.close(fd)
            raise
        return HotEntry(
            primary=primary,
            head_path=head_path,
            head_id=entry.head_id,
            fd=fd,
            body_id=(body_stat.st_ino, body_stat.st_size, body_stat.st_mtime_ns),
            length=meta.body_length,
            body=body if large is None else None,
            sealed_fd=sealed_fd,
            head=head,
            status_head=status_head,
            lifetime=freshness_lifetime(meta.status, policy, timing, ttl_policy=self.ttl_policy),
            initial_age=current_age(policy, timing, meta.response_time),
            header_age=current_age(stored, timing, meta.response_time),
            response_time=meta.response_time,
            log_head=hit_log_head(key, meta.body_length),
        )

    def _drop(self, key: str) -> None:
        hot = self._entries.pop(key, None)
        if hot is not None:
            self._bytes -= hot.cost()
            hot.close()

    def close(self) -> None:
        while self._entries:
            self._drop(next(iter(self._entries)))


def _sealed_copy(body: bytes) -> int:
    """A memory file holding `body`, sealed: nothing, not even this process, can change its
    bytes or its size afterwards (memfd_create(2), F_SEAL_*)."""
    fd = os.memfd_create("pixcache-hot-body", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(body)
        while view:  # a memory file takes it all at once, unless memory runs short
            view = view[os.write(fd, view) :]
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _render_head(stored: CIMultiDict[str], length: int) -> tuple[bytes, bytes]:
    """The head the full path sends for a 200 hit to a plain GET over HTTP/1.1 keep-alive
    (proxy/respond.py and aiohttp's own defaults), without Age, which changes per request,
    and without the empty line that ends it; and apart, its Cache-Status line up to the
    value of our ttl, which is all of that field that changes per request."""
    ours = CacheStatus(hit=True).render() + "; ttl="  # as CacheStatus(hit=True, ttl=...)
    headers = client_headers(stored, ours, age=0)
    del headers["Age"]
    status_line = b"Cache-Status: " + headers.popone("Cache-Status").encode("ascii")
    headers.setdefault("Accept-Ranges", "bytes")
    headers["Content-Length"] = str(length)
    if length:
        headers.setdefault("Content-Type", "application/octet-stream")
    headers.setdefault("Server", SERVER_SOFTWARE)
    return _serialize_headers("HTTP/1.1 200 OK", headers)[:-2], status_line


async def _write(request: web.Request, hot: HotEntry, head: bytes, fd: int) -> None:
    """The head and body: the body's bytes with the head, or by sendfile from `fd`."""
    writer = request.writer
    if hot.body is not None:
        await writer.write_eof(head + hot.body)
        return
    await writer.write(head)
    await writer.drain()
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client connection closed")
    await send_range(transport, fd, 0, hot.length)
    await writer.write_eof()


HOT_KEY = web.AppKey("pixcache.hot", HotHits)
