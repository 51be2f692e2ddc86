"""The small values a fill shares with the handler: what the origin answered (FillHead)
and what every fill obeys (FillSettings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from multidict import CIMultiDictProxy

from proxy.guard import Guard
from proxy.policy.storable import Verdict
from proxy.policy.transitions import DEFAULT_POLICY, PolicyOptions
from proxy.tracing import NO_TRACING, Tracing


@dataclass(frozen=True)
class FillSettings:
    max_object_size: int | None = None
    guard: Guard | None = None
    policy: PolicyOptions = DEFAULT_POLICY  # what the caching rules read
    tracing: Tracing = NO_TRACING  # spans of each fill's steps (proxy/tracing)


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
    image: str = ""  # the kind of image the guard found the body to be ('' for none)

    @property
    def shared(self) -> bool:
        return self.verdict.ok
