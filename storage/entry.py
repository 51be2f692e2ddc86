"""What a stored entry is, and its on-disk encoding.

An entry is one file: the body, then the metadata as JSON, then a fixed footer that gives the
metadata's length. Body first means a hit sends bytes [0, body_length) with sendfile, and the
metadata becomes visible in the same rename as the body: a reader sees all of it or none.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field

FOOTER = struct.Struct(">8sQ")
MAGIC = b"PIXCACH1"
# Metadata bigger than this is refused on read: it can only come from a foreign file.
MAX_META_BYTES = 1 << 20


class CorruptEntry(Exception):
    """The file is not a complete entry (wrong size, bad footer, unreadable metadata)."""


@dataclass(frozen=True)
class EntryMeta:
    key: str
    status: int
    headers: list[tuple[str, str]]
    request_time: float
    response_time: float
    body_length: int
    sha256: str
    vary_fields: tuple[str, ...] = ()
    vary_values: dict[str, str | None] = field(default_factory=dict)
    # A Vary marker names the fields a URL varies on; its variants live under `vary_id`.
    is_vary_marker: bool = False
    vary_id: str = ""

    def encode(self) -> bytes:
        meta = json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=True).encode()
        return meta + FOOTER.pack(MAGIC, len(meta))

    @classmethod
    def decode(cls, raw: bytes) -> EntryMeta:
        try:
            data = json.loads(raw)
            data["headers"] = [(str(n), str(v)) for n, v in data["headers"]]
            data["vary_fields"] = tuple(data["vary_fields"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptEntry(f"unreadable metadata: {exc}") from exc

    def file_size(self) -> int:
        return self.body_length + len(self.encode())


def parse_footer(footer: bytes, file_size: int) -> int:
    """The metadata length a footer declares, checked against the file's size."""
    if len(footer) != FOOTER.size:
        raise CorruptEntry("file shorter than a footer")
    magic, meta_len = FOOTER.unpack(footer)
    if magic != MAGIC:
        raise CorruptEntry("bad footer magic")
    if meta_len > MAX_META_BYTES or meta_len + FOOTER.size > file_size:
        raise CorruptEntry("metadata length out of range")
    return meta_len
