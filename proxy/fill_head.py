"""The small values a fill shares with the handler: what the origin answered (FillHead),
what every fill obeys (FillSettings), what it revalidates (Stale); and how a fill reads
an answer (a 206 carrying the whole representation) or a storage fault."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.guard import Guard
from proxy.origins.base import OriginResponse
from proxy.policy.ranges import whole_representation
from proxy.policy.storable import Verdict
from proxy.policy.transitions import DEFAULT_POLICY, PolicyOptions
from proxy.tracing import NO_TRACING, Tracing
from storage import EntryMeta

# Request fields a fill never forwards: it fetches the whole, unconditional object for
# everyone, whatever the client that started it asked for.
NOT_FORWARDED_ON_FILL = frozenset(
    {"range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"}
)


@dataclass(frozen=True)
class FillSettings:
    """What every fill of this instance obeys, from the configuration."""

    max_object_size: int | None = None
    guard: Guard | None = None
    policy: PolicyOptions = DEFAULT_POLICY  # what the caching rules read
    tracing: Tracing = NO_TRACING  # spans of each fill's steps (proxy/tracing)


@dataclass
class Stale:
    """A stored response to revalidate: a descriptor of its file (owned by the fill)."""

    fd: int
    meta: EntryMeta


@dataclass
class FillHead:
    status: int
    headers: CIMultiDictProxy[str]
    content_length: int | None
    verdict: Verdict
    vary_fields: tuple[str, ...]
    vary_values: dict[str, str | None]
    timings: dict[str, float] = field(default_factory=dict)
    stored: bool = True  # admitted to the store (it may still be dropped later)
    detail: str = ""
    origin_status: int = 0  # what the origin answered, when not `status` (a 304)

    @property
    def shared(self) -> bool:
        return self.verdict.ok


def complete_if_whole(response: OriginResponse) -> OriginResponse:
    """A 206 whose Content-Range spans the whole representation, as the complete 200 it
    is (RFC 9111 §3.4), so it is stored and answers any later range. Any other 206 stays a
    206, which is never stored (proxy/policy/storable.py) nor served as a 200. Only with
    a Content-Length, which the origin's body is checked against (body_check.py)."""
    if response.status != 206 or response.content_length is None:
        return response
    length = whole_representation(response.headers.get("Content-Range"), response.content_length)
    if length is None or len(response.headers.getall("Content-Range")) != 1:
        return response
    headers = CIMultiDict(response.headers)
    del headers["Content-Range"]
    return replace(response, status=200, headers=CIMultiDictProxy(headers), content_length=length)


class LeaderSlot:
    """A response that is not shareable, handed to the request that started the fill
    (the leader) and to nobody else; closed if the leader never takes it."""

    def __init__(self) -> None:
        self._slot: asyncio.Future[OriginResponse] = asyncio.get_running_loop().create_future()
        self._claimed = False

    async def hand(self, response: OriginResponse) -> None:
        if self._slot.done():  # the leader went away; nobody may have this response
            await response.close()
        else:
            self._slot.set_result(response)

    def claim(self) -> OriginResponse:
        self._claimed = True
        return self._slot.result()

    async def release(self) -> None:
        if not self._slot.done():
            self._slot.cancel()
        elif not self._slot.cancelled() and not self._claimed:
            self._claimed = True
            await self._slot.result().close()
