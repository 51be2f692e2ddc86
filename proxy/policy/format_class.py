"""Image format classes: what a request's Accept says about the formats its client decodes,
reduced to a few classes, so that an origin that varies on Accept (imgproxy's and imagor's
automatic WebP/AVIF, thumbor's auto_webp) renders each image at most once per class instead
of once per browser's Accept string.

With classes configured (--vary-accept-classes avif,webp,jxl), a request's Accept is replaced,
before it is keyed or forwarded, by the canonical Accept of its class (`canonical_accept`).
Every request of a class then selects the same variant (RFC 9111 §4.1: the secondary key is
the canonical value) and the origin sees the same Accept from all of them, so it renders the
same bytes for all of them: no client's Accept shapes what another receives.

A class is supported when the Accept names its media type explicitly with a weight above
zero (RFC 9110 §12.5.1, §12.4.2: `image/avif;q=0` means "not acceptable"). `image/*` and
`*/*` do not count: browsers that decode none of these formats send them as well. Among the
supported classes the one of highest weight wins, ties going to the class listed first in
the setting; with none, the class is `other` (no Accept, `*/*` alone, an old browser's list).
"""

from __future__ import annotations

from typing import Any

from proxy.policy.cache_key import setting_items
from proxy.policy.negotiation import media_range_weights

OTHER = "other"
MEDIA_TYPES = {"avif": "image/avif", "webp": "image/webp", "jxl": "image/jxl"}


def format_class(accept: str | None, classes: tuple[str, ...]) -> str:
    """The class, of `classes` (in order of preference), that `accept` asks for."""
    if not accept or not classes:
        return OTHER
    weights: dict[str, list[float]] = {}
    for media_range, weight in media_range_weights(accept):
        weights.setdefault(media_range, []).append(weight)
    best, best_weight = OTHER, 0.0
    for name in classes:
        stated = weights.get(MEDIA_TYPES[name])
        # Named twice with different weights: a refusal wins, since sending a format the
        # client cannot decode is worse than sending the fallback.
        if not stated or min(stated) == 0.0:
            continue
        if max(stated) > best_weight:
            best, best_weight = name, max(stated)
    return best


def canonical_accept(name: str) -> str:
    """The Accept sent for every request of class `name`: its media type alone among the
    modern formats (origins look for the type's name in Accept), then the usual fallbacks."""
    if name == OTHER:
        return "image/*,*/*;q=0.8"
    return f"{MEDIA_TYPES[name]},image/*;q=0.8,*/*;q=0.5"


def format_classes(raw: Any) -> tuple[str, ...]:
    """--vary-accept-classes: class names in order of preference, e.g. 'avif,webp'; empty
    for off. Raises ValueError with what is wrong."""
    known = ", ".join(MEDIA_TYPES)
    if isinstance(raw, bool):
        raise ValueError(f"must be format classes from {known}, got {raw!r}")
    names = [item.lower() for item in setting_items(raw)]
    for name in names:
        if name not in MEDIA_TYPES:
            raise ValueError(
                f"{name!r} is not a format class; use some of {known} "
                "(every other request is in the class 'other')"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"names a class twice: {raw!r}")
    return tuple(names)
