"""The on-disk encoding of an entry: body, metadata JSON, fixed footer."""

from __future__ import annotations

import json

import pytest

from storage.entry import FOOTER, MAGIC, MAX_META_BYTES, CorruptEntry, EntryMeta, parse_footer


def make_meta(**overrides: object) -> EntryMeta:
    fields: dict[str, object] = {
        "key": "/img/cat.png?w=100",
        "status": 200,
        "headers": [
            ("Content-Type", "image/png"),
            ("Link", "</a>; rel=preload"),
            ("Link", "</b>; rel=preload"),
            ("X-Name", "caf\u00e9 \u2603"),
        ],
        "request_time": 1_700_000_000.25,
        "response_time": 1_700_000_000.5,
        "body_length": 1234,
        "sha256": "ab" * 32,
        "vary_fields": ("accept", "dpr"),
        "vary_values": {"accept": "image/webp", "dpr": None},
    }
    fields.update(overrides)
    return EntryMeta(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "meta",
    [
        make_meta(),
        make_meta(headers=[], vary_fields=(), vary_values={}, body_length=0, sha256=""),
        make_meta(status=0, is_vary_marker=True, vary_id="f" * 32),
        make_meta(key="/lone-surrogate-\udcff/\u00e9\u00e8"),
    ],
)
def test_encode_decode_round_trip(meta: EntryMeta) -> None:
    raw = meta.encode()
    magic, meta_len = FOOTER.unpack(raw[-FOOTER.size :])
    assert magic == MAGIC
    assert meta_len == len(raw) - FOOTER.size
    decoded = EntryMeta.decode(raw[: -FOOTER.size])
    assert decoded == meta
    assert isinstance(decoded.vary_fields, tuple)
    assert all(isinstance(pair, tuple) for pair in decoded.headers)


def test_encoding_is_ascii_json() -> None:
    raw = make_meta().encode()[: -FOOTER.size]
    raw.decode("ascii")
    assert json.loads(raw)["headers"][3] == ["X-Name", "caf\u00e9 \u2603"]


def test_file_size_is_body_plus_metadata_plus_footer() -> None:
    meta = make_meta(body_length=777)
    assert meta.file_size() == 777 + len(meta.encode())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"{garbage",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        b"42",
        b'"a string"',
        b"{}",
        # A field missing, an unknown field, headers that are not pairs.
        json.dumps(
            {k: v for k, v in json.loads(make_meta().encode()[:-16]).items() if k != "sha256"}
        ).encode(),
        json.dumps({**json.loads(make_meta().encode()[:-16]), "extra": 1}).encode(),
        json.dumps(
            {**json.loads(make_meta().encode()[:-16]), "headers": [["a", "b", "c"]]}
        ).encode(),
        json.dumps({**json.loads(make_meta().encode()[:-16]), "headers": 5}).encode(),
        json.dumps({**json.loads(make_meta().encode()[:-16]), "vary_fields": None}).encode(),
    ],
)
def test_decode_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(CorruptEntry):
        EntryMeta.decode(raw)


def footer(meta_len: int, magic: bytes = MAGIC) -> bytes:
    return FOOTER.pack(magic, meta_len)


@pytest.mark.parametrize(
    ("data", "file_size", "expected"),
    [
        (footer(100), 116, 100),  # empty body
        (footer(100), 5000, 100),
        (footer(0), 16, 0),
        (footer(MAX_META_BYTES), MAX_META_BYTES + 16, MAX_META_BYTES),
    ],
)
def test_parse_footer_accepts_a_consistent_footer(
    data: bytes, file_size: int, expected: int
) -> None:
    assert parse_footer(data, file_size) == expected


@pytest.mark.parametrize(
    ("data", "file_size"),
    [
        (b"", 0),
        (footer(10)[:-1], 100),  # shorter than a footer
        (footer(10) + b"\0", 100),  # longer than a footer
        (footer(10, b"PIXCACH2"), 100),  # another format version
        (footer(10, b"\0" * 8), 100),
        (footer(10, b"pixcach1"), 100),
        (footer(85), 100),  # metadata + footer larger than the file
        (footer(MAX_META_BYTES + 1), 10 * MAX_META_BYTES),  # absurd metadata length
        (footer(2**64 - 1), 2**40),
    ],
)
def test_parse_footer_refuses_bad_footers(data: bytes, file_size: int) -> None:
    with pytest.raises(CorruptEntry):
        parse_footer(data, file_size)
