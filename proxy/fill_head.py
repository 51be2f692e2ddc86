"""The small values a fill shares with the handler: what the origin answered (FillHead),
what every fill obeys (FillSettings), what it revalidates (Stale), and the slot that
hands a response that is not shareable to the leader alone (LeaderSlot)."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDictProxy

from proxy.guard import Guard
from proxy.origins.base import OriginResponse
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


class LeaderSlot:
    """A response that is not shareable, handed to the request that started the fill
    (the leader) and to nobody else; closed if the leader never takes it."""

    def __init__(self) -> None:
        self._response: OriginResponse | None = None
        self._open = True  # the leader may still claim it

    async def hand(self, response: OriginResponse) -> None:
        if self._open:
            self._response = response
        else:  # the leader went away; nobody may have this response
            await response.close()

    def claim(self) -> OriginResponse:
        response, self._response = self._response, None
        assert response is not None, "claimed once, after the fill handed it"
        return response

    async def release(self) -> None:
        self._open = False
        response, self._response = self._response, None
        if response is not None:
            await response.close()
