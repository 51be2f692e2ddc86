"""Vary markers: how the variants of one URL are stored (RFC 9111 §4.1).

A response that varies on request fields is stored under a variant key: the hash of its
URL's primary key, a variant id and the request's values of those fields. At the primary
key, a marker names the fields and the id, so a lookup can tell which variant a request
selects. A commit writes a new marker (with a new id, so the variants of the old fields are
never selected again) when the response varies on other fields than the marker names.

Only storage reads and writes markers. Which request values select a variant, and when a
stored one matches, is the proxy's caching policy: it comes in as a `Selector`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from storage.entry import CorruptEntry, EntryMeta
from storage.layout import variant_key_hash
from storage.lookup import OpenEntry, read_head
from storage.temp import TempBody


class Selector(Protocol):
    """The request's side of selecting a stored variant (RFC 9111 §4.1)."""

    def values(self, fields: tuple[str, ...]) -> dict[str, str | None]:
        """This request's values of `fields`, as they select a variant."""
        ...

    def matches(self, fields: tuple[str, ...], stored: dict[str, str | None]) -> bool:
        """Whether a variant stored with `stored` values of `fields` answers this request."""
        ...


@dataclass
class Found:
    """What a lookup found for a request: the entry, or None and why not."""

    entry: OpenEntry | None  # owned by the caller, who closes its `fd`
    # Where this request's response is stored, or would be: the variant's key under a marker.
    key_hash: str
    miss: str = ""  # "uri-miss": nothing stored for the URL; "vary-miss": no such variant


@dataclass(frozen=True)
class Marker:
    fields: tuple[str, ...]
    vary_id: str


def follow(
    marker: OpenEntry,
    primary: str,
    select: Selector,
    open_at: Callable[[str], OpenEntry | None],
) -> tuple[OpenEntry | None, str]:
    """The variant `marker` names for the request `select` speaks for, and its key hash;
    None when none is stored or the one stored does not match. Closes the marker."""
    os.close(marker.fd)
    fields = marker.meta.vary_fields
    variant = variant_key_hash(primary, marker.meta.vary_id, select.values(fields))
    selected = open_at(variant)
    if selected is not None and not select.matches(fields, selected.meta.vary_values):
        os.close(selected.fd)  # a hash collision or a foreign file: never serve it
        selected = None
    return selected, variant


def marker_at(head: Path) -> Marker | None:
    """The marker stored at the primary key's `head`, if one is (runs in a thread). A head
    that is unreadable or corrupt is no marker: the commit replaces it."""
    try:
        found = read_head(head)
    except (CorruptEntry, OSError):
        return None
    if found is None or not found[0].is_vary_marker:
        return None
    return Marker(found[0].vary_fields, found[0].vary_id)


def marker_for(meta: EntryMeta, vary_id: str, empty: TempBody) -> EntryMeta:
    """The marker that names `meta`'s fields and the variant id it is stored under; its
    body is the empty temp file `empty`."""
    return EntryMeta(
        key=meta.key,
        status=0,
        headers=[],
        request_time=meta.request_time,
        response_time=meta.response_time,
        body_length=0,
        sha256=empty.sha256,
        vary_fields=meta.vary_fields,
        is_vary_marker=True,
        vary_id=vary_id,
        body_id=empty.body_id,
        crc32=empty.crc32,
    )
