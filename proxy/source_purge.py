"""Purge by source: every stored derivative of one source image (POST /purge?source=URL).

Which source a request names is read from its path by the configured grammar
(proxy/source_url.py). Each entry carries its source as a purge tag, indexed with the entry,
so a purge by source is a purge by that tag, recorded like one: a fill in flight in any
worker process that would commit a derivative of the source drops it (Store.commit checks
the recorded purges against the entry's tags). Entries the tag cannot find (indexed under
another grammar, or missing from the index) are found by their paths (storage/derivatives.py).

Across instances there is nothing shared: `pixcache purge --source URL --instances ...`
sends the purge to each instance."""

from __future__ import annotations

from proxy.fills import Fills
from proxy.source_url import canonical_source, source_of, source_tag, tags_prefix
from storage import Store, keys_derived


def source_purge_problem(grammar: str, value: str) -> str | None:
    """Why `value` cannot be purged by source, or None."""
    if grammar == "none":
        return (
            "purge by source needs the image service's URL grammar: set --source-grammar "
            "(PIXCACHE_SOURCE_GRAMMAR) to imgproxy, imagor or thumbor"
        )
    if canonical_source(value) is None:
        return "source must be the source image's URL, in printable characters"
    return None


async def derivatives_of(store: Store, fills: Fills, grammar: str, value: str) -> set[str]:
    """Record the purge of `value`'s derivatives (so that no fill in flight commits one),
    and return the keys of every stored one."""
    source = canonical_source(value)
    tag = source_tag(grammar, source)
    await store.record_purge("tag", tag)
    fills.invalidate(lambda fill: source_of(fill.key, grammar) == source)
    return await keys_derived(
        store, tag, tags_prefix(grammar), lambda path: source_of(path, grammar) == source
    )
