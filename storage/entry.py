"""What a stored entry is, and its on-disk encoding.

An entry is two files. Its head (entries/ab/<hash>) holds the metadata as JSON, then a fixed
footer that gives the metadata's length. Its body (bodies/ab/<hash>.<body_id>) holds exactly
the body's bytes, so a hit sends the whole file with sendfile, or nginx does (X-Accel-Redirect).

Bodies are immutable and never renamed over: each commit writes a body under a new id, then
renames the head that names it into place. That rename is the switch, so a reader sees the
old entry or the new one, whole. A head whose body is missing is treated as corrupt.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import cached_property
from typing import Any

FOOTER = struct.Struct(">8sQ")
MAGIC = b"PIXCACH2"  # 1 was the one-file layout of earlier versions
# Metadata bigger than this is refused on read: it can only come from a foreign file.
MAX_META_BYTES = 1 << 20
BODY_ID = re.compile(r"[0-9a-f]{32}")


class Problem(StrEnum):
    """What is wrong with a corrupt entry."""

    SIZE_MISMATCH = "size mismatch"
    BAD_FOOTER = "bad footer"
    BAD_METADATA = "bad metadata"
    MISSING_BODY = "missing body"
    CHECKSUM_MISMATCH = "checksum mismatch"
    READ_ERROR = "read error"


class CorruptEntry(Exception):
    """The file is not a complete entry (wrong size, bad footer, unreadable metadata)."""

    def __init__(self, problem: Problem, reason: str, file_id: Any = None) -> None:
        super().__init__(reason)
        self.problem = problem
        self.file_id = file_id  # which file was found corrupt, when known (storage.fileid.FileId)


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
    # Names the body file; set by the store when it commits the body.
    body_id: str = ""
    # zlib.crc32 of the body, set by the store when it commits the body: what a hit checks,
    # at three times the speed of SHA-256 (bit rot, not an attacker, is what a hit looks
    # for). None in heads written before it existed: a hit checks the SHA-256 instead.
    crc32: int | None = None

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        # The fields in their declared order, as dataclasses.asdict gives them, without the
        # deep copy of every value asdict makes first (several times slower, every commit).
        data = {name: getattr(self, name) for name in _FIELD_ORDER}
        meta = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
        return meta + FOOTER.pack(MAGIC, len(meta))

    @classmethod
    def decode(cls, raw: bytes) -> EntryMeta:
        """Parse metadata, checking every field's type: a file whose metadata is valid JSON
        of the wrong shape is as corrupt as one that is not JSON at all."""
        try:
            data = json.loads(raw)
            if not _FIELD_NAMES - _OPTIONAL_FIELDS <= set(_typed(data, dict)) <= _FIELD_NAMES:
                raise KeyError(f"fields {sorted(data)}")
            crc32 = data.get("crc32")
            meta = cls(
                key=_typed(data["key"], str),
                status=_typed(data["status"], int),
                headers=[
                    (_typed(n, str), _typed(v, str))
                    for n, v in (_typed(pair, list) for pair in _typed(data["headers"], list))
                ],
                request_time=float(_typed(data["request_time"], int | float)),
                response_time=float(_typed(data["response_time"], int | float)),
                body_length=_typed(data["body_length"], int),
                sha256=_typed(data["sha256"], str),
                vary_fields=tuple(_typed(f, str) for f in _typed(data["vary_fields"], list)),
                vary_values={
                    _typed(k, str): None if v is None else _typed(v, str)
                    for k, v in _typed(data["vary_values"], dict).items()
                },
                is_vary_marker=_typed(data["is_vary_marker"], bool),
                vary_id=_typed(data["vary_id"], str),
                body_id=_typed(data["body_id"], str),
                crc32=None if crc32 is None else _typed(crc32, int),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CorruptEntry(Problem.BAD_METADATA, f"unreadable metadata: {exc!r}") from exc
        if meta.body_length < 0:
            raise CorruptEntry(Problem.BAD_METADATA, "negative body length")
        if meta.crc32 is not None and not 0 <= meta.crc32 < 1 << 32:
            raise CorruptEntry(Problem.BAD_METADATA, f"unreadable metadata: crc32 {meta.crc32}")
        if not BODY_ID.fullmatch(meta.body_id):
            raise CorruptEntry(
                Problem.BAD_METADATA, f"unreadable metadata: body id {meta.body_id!r}"
            )
        return meta

    def file_size(self) -> int:
        """Bytes the entry takes on disk: body and head."""
        return self.body_length + len(self.encode())


def new_body_id() -> str:
    return uuid.uuid4().hex


_FIELD_ORDER = tuple(f.name for f in fields(EntryMeta))
_FIELD_NAMES = frozenset(_FIELD_ORDER)
# Fields that heads written by earlier versions lack.
_OPTIONAL_FIELDS = frozenset({"crc32"})


def _typed(value: Any, kind: Any) -> Any:
    # bool is an int in Python; a JSON true is never a valid length or status.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TypeError(f"{value!r} is not {kind}")
    return value


def parse_footer(footer: bytes, file_size: int) -> int:
    """The metadata length a footer declares, checked against the file's size."""
    if len(footer) != FOOTER.size:
        raise CorruptEntry(Problem.BAD_FOOTER, "file shorter than a footer")
    magic, meta_len = FOOTER.unpack(footer)
    if magic != MAGIC:
        raise CorruptEntry(Problem.BAD_FOOTER, "bad footer magic")
    if meta_len > MAX_META_BYTES or meta_len + FOOTER.size > file_size:
        raise CorruptEntry(Problem.BAD_FOOTER, "metadata length out of range")
    return meta_len
