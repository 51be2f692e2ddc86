"""A 304 to a fill's revalidation (RFC 9111 §4.3.4): the stored response with its headers
updated, whether it may still be stored and shared, and its stored body as a stream."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import IncompleteBody
from proxy.fill_head import FillHead
from proxy.origins.base import OriginResponse
from proxy.policy.conditional import updated_headers
from proxy.policy.storable import may_store
from proxy.policy.targeted import effective_headers
from storage import EntryMeta


def freshened(
    old: EntryMeta,
    response: OriginResponse,
    request_headers: CIMultiDictProxy[str],
    targets: tuple[str, ...],
    request_time: float,
    response_time: float,
) -> tuple[FillHead, EntryMeta | None]:
    """The head to serve the stored body with, and the entry to store in place of `old`
    (None when the 304 made the response private or no-store, RFC 9111 §3: it may then be
    neither kept nor shared)."""
    headers = updated_headers(CIMultiDict(old.headers), response.headers)
    if "age" not in response.headers:
        # The old Age described the old response; the 304 is the newer one.
        headers = [(n, v) for n, v in headers if n.lower() != "age"]
    merged = CIMultiDict(headers)
    verdict = may_store("GET", request_headers, old.status, effective_headers(merged, targets))
    head = FillHead(
        old.status,
        CIMultiDictProxy(merged),
        old.body_length,
        verdict,
        old.vary_fields,
        old.vary_values,
        response.timings,
        detail="revalidated" if verdict.ok else "",
        origin_status=response.status,
    )
    if not verdict.ok:
        return head, None
    meta = replace(old, headers=headers, request_time=request_time, response_time=response_time)
    return head, meta


async def read_fd(fd: int, length: int) -> AsyncIterator[bytes]:
    """A stored body as a stream (closes `fd` at the end)."""
    loop = asyncio.get_running_loop()
    try:
        offset = 0
        while offset < length:
            chunk = await loop.run_in_executor(
                None, os.pread, fd, min(1 << 20, length - offset), offset
            )
            if not chunk:
                raise IncompleteBody("stored body shorter than its length")
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)
