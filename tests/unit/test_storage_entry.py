"""The on-disk encoding of an entry's head: metadata JSON (naming the body file), fixed footer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.entry import (
    BODY_ID,
    FOOTER,
    MAGIC,
    MAX_META_BYTES,
    CorruptEntry,
    EntryMeta,
    new_body_id,
    parse_footer,
)

BODY_ID_HEX = "0123456789abcdef" * 2


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
        "body_id": BODY_ID_HEX,
    }
    fields.update(overrides)
    return EntryMeta(**fields)  # type: ignore[arg-type]


def fields_of(meta: EntryMeta) -> dict[str, object]:
    return json.loads(meta.encode()[: -FOOTER.size])


def with_fields(**changes: object) -> bytes:
    """Valid metadata JSON with some fields replaced (a value of ... removes the field)."""
    data = {**fields_of(make_meta()), **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "meta",
    [
        make_meta(),
        make_meta(headers=[], vary_fields=(), vary_values={}, body_length=0, sha256=""),
        make_meta(status=0, is_vary_marker=True, vary_id="f" * 32),
        make_meta(key="/lone-surrogate-\udcff/\u00e9\u00e8"),
        make_meta(body_id="f" * 32),
    ],
)
def test_encode_decode_round_trip(meta: EntryMeta) -> None:
    raw = meta.encode()
    magic, meta_len = FOOTER.unpack(raw[-FOOTER.size :])
    assert magic == MAGIC
    assert meta_len == len(raw) - FOOTER.size
    decoded = EntryMeta.decode(raw[: -FOOTER.size])
    assert decoded == meta
    assert decoded.body_id == meta.body_id
    assert isinstance(decoded.vary_fields, tuple)
    assert all(isinstance(pair, tuple) for pair in decoded.headers)


def test_magic_is_not_the_one_file_format() -> None:
    """Heads of this format must never be mistaken for entries of the one-file format."""
    assert MAGIC == b"PIXCACH2"
    assert make_meta().encode()[-FOOTER.size :][:8] != b"PIXCACH1"


def test_encoding_is_ascii_json() -> None:
    raw = make_meta().encode()[: -FOOTER.size]
    raw.decode("ascii")
    assert json.loads(raw)["headers"][3] == ["X-Name", "caf\u00e9 \u2603"]
    assert json.loads(raw)["body_id"] == BODY_ID_HEX


def test_file_size_is_body_plus_head() -> None:
    meta = make_meta(body_length=777)
    assert meta.file_size() == 777 + len(meta.encode())


def test_new_body_ids_are_valid_and_distinct() -> None:
    ids = {new_body_id() for _ in range(1000)}
    assert len(ids) == 1000
    for body_id in ids:
        assert BODY_ID.fullmatch(body_id)
        EntryMeta.decode(make_meta(body_id=body_id).encode()[: -FOOTER.size])


def test_metadata_without_a_body_id_is_not_a_head() -> None:
    """The default (no body committed yet) never decodes: such a head names no body."""
    raw = make_meta(body_id="").encode()[: -FOOTER.size]
    with pytest.raises(CorruptEntry):
        EntryMeta.decode(raw)


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
        with_fields(sha256=...),
        with_fields(extra=1),
        with_fields(headers=[["a", "b", "c"]]),
        with_fields(headers=[["a"]]),
        with_fields(headers=5),
        with_fields(vary_fields=None),
        with_fields(body_length=-1),
        # The metadata of the one-file format: no body id.
        with_fields(body_id=...),
    ],
    ids=lambda raw: raw[:40].decode("latin-1"),
)
def test_decode_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(CorruptEntry):
        EntryMeta.decode(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", None),
        ("status", "200"),
        ("status", True),
        ("status", 200.0),
        ("body_length", "1234"),
        ("body_length", 1234.0),
        ("body_length", True),
        ("request_time", "1"),
        ("sha256", None),
        # Iterables of the wrong shape: a string or an object is not a list of pairs.
        ("headers", ""),
        ("headers", ["ab"]),
        ("headers", {"ab": "c"}),
        ("headers", [[1, "v"]]),
        ("vary_fields", "accept"),
        ("vary_fields", {"accept": 1}),
        ("vary_fields", [1]),
        ("vary_values", [["accept", "x"]]),
        ("vary_values", {"accept": 1}),
        ("is_vary_marker", 0),
        ("vary_id", 1),
        ("body_id", 1),
        ("body_id", None),
    ],
)
def test_decode_refuses_wrong_typed_fields(field: str, value: object) -> None:
    with pytest.raises(CorruptEntry):
        EntryMeta.decode(with_fields(**{field: value}))


@pytest.mark.parametrize(
    "body_id",
    [
        "",
        "0" * 31,
        "0" * 33,
        "0123456789ABCDEF" * 2,  # body ids are lower-case hex
        "g" * 32,
        "0" * 32 + "\n",
        "../../../../etc/passwd",
        "../" + "0" * 29,
        "0" * 16 + "/" + "0" * 15,
    ],
)
def test_decode_refuses_a_body_id_that_is_not_32_hex(body_id: str) -> None:
    """The body id becomes part of a path: anything but 32 hex digits is refused."""
    with pytest.raises(CorruptEntry):
        EntryMeta.decode(with_fields(body_id=body_id))


def footer(meta_len: int, magic: bytes = MAGIC) -> bytes:
    return FOOTER.pack(magic, meta_len)


@pytest.mark.parametrize(
    ("data", "file_size", "expected"),
    [
        (footer(100), 116, 100),
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
        (footer(10, b"PIXCACH1"), 100),  # the one-file format
        (footer(10, b"\0" * 8), 100),
        (footer(10, b"pixcach2"), 100),
        (footer(85), 100),  # metadata + footer larger than the file
        (footer(MAX_META_BYTES + 1), 10 * MAX_META_BYTES),  # absurd metadata length
        (footer(2**64 - 1), 2**40),
    ],
)
def test_parse_footer_refuses_bad_footers(data: bytes, file_size: int) -> None:
    with pytest.raises(CorruptEntry):
        parse_footer(data, file_size)


@pytest.mark.parametrize("crc32", [0, 1, 0xFFFFFFFF, None])
def test_crc32_round_trips(crc32: int | None) -> None:
    meta = make_meta(crc32=crc32)
    assert EntryMeta.decode(meta.encode()[: -FOOTER.size]) == meta


def test_a_head_written_before_crc32_existed_is_read() -> None:
    """Older heads lack the field: they decode, and hits check their SHA-256 instead."""
    decoded = EntryMeta.decode(with_fields(crc32=...))
    assert decoded.crc32 is None
    assert decoded == make_meta()


@pytest.mark.parametrize("value", ["1", True, 1.0, -1, 1 << 32, [1]])
def test_decode_refuses_a_crc32_that_is_not_32_bits(value: object) -> None:
    with pytest.raises(CorruptEntry):
        EntryMeta.decode(with_fields(crc32=value))


def test_encode_writes_every_field_as_asdict_would() -> None:
    """encode() lists the fields by hand (for speed): a field added to EntryMeta and not to
    encode() would be silently dropped from every head."""
    import dataclasses
    import json

    from storage.entry import FOOTER, EntryMeta

    meta = EntryMeta(
        key="/a?b",
        status=200,
        headers=[("Content-Type", "image/png"), ("X-Ü", "\udcff")],
        request_time=1.5,
        response_time=2.5,
        body_length=3,
        sha256="0" * 64,
        vary_fields=("accept",),
        vary_values={"accept": None},
        body_id="ab" * 16,
        crc32=7,
    )
    expected = json.dumps(dataclasses.asdict(meta), separators=(",", ":"), ensure_ascii=True)
    assert meta.encode()[: -FOOTER.size] == expected.encode()
    assert EntryMeta.decode(meta.encode()[: -FOOTER.size]) == meta


def test_the_head_path_of_a_lookup_is_the_layouts(tmp_path: Path) -> None:
    from storage.store import Store

    store = Store(tmp_path / "cache")
    try:
        key_hash = "ab" + "0" * 62
        assert store.head_path(key_hash) == str(store.layout.entry_path(key_hash))
    finally:
        store.close()
