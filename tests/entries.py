"""Writing real entries in tests: the way a fill writes them (TempBody, then the commit)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from storage.entry import EntryMeta
from storage.layout import Layout, primary_key_hash
from storage.lookup import read_head
from storage.temp import TempBody


def meta_for(temp: TempBody, key: str = "/a.png") -> EntryMeta:
    """Metadata that describes exactly what `temp` holds."""
    return EntryMeta(
        key=key,
        status=200,
        headers=[("Content-Type", "image/png")],
        request_time=1.0,
        response_time=2.0,
        body_length=temp.written,
        sha256=temp.sha256,
        body_id=temp.body_id,
    )


async def commit(
    layout: Layout, body: bytes, key: str = "/a.png", *, vary_marker: bool = False
) -> Path:
    """A committed entry for `key` with `body`; returns its head."""
    temp = TempBody.create(layout.tmp)
    try:
        for start in range(0, len(body), 65536):
            await temp.append(body[start : start + 65536])
        meta = meta_for(temp, key)
        if vary_marker:
            meta = replace(meta, vary_fields=("accept",), is_vary_marker=True, vary_id="v1")
        head = layout.entry_path(primary_key_hash(key))
        await temp.commit(meta, head)
        return head
    finally:
        temp.discard()


def body_of(head: Path) -> Path:
    """The body file a head names, resolved the way a lookup resolves it."""
    found = read_head(head)
    assert found is not None
    return Layout.of_entry(head).body_path(head.name, found[0].body_id)
