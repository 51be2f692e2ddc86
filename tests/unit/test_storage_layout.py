"""The cache directory layout: names are hashes, crash leftovers are swept at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage.entry import new_body_id
from storage.layout import Layout, primary_key_hash, variant_key_hash
from storage.store import Store

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path / "cache")
    layout.create()
    return layout


@pytest.mark.parametrize(
    "key",
    [
        "/img/cat.png",
        "/../../etc/passwd",
        "../../../../etc/passwd",
        "/a/%2e%2e/%2e%2e/etc/passwd",
        "/\0nul",
        "/" + "a" * 5000,
        "/caf\u00e9/\udcff",
        "",
    ],
)
def test_entry_paths_are_hashes_under_entries(layout: Layout, key: str) -> None:
    key_hash = primary_key_hash(key)
    assert HEX64.fullmatch(key_hash)
    path = layout.entry_path(key_hash)
    relative = path.relative_to(layout.entries)
    assert relative.parts == (key_hash[:2], key_hash)
    assert path.resolve().parent.parent == layout.entries.resolve()
    assert path.parent.is_dir()  # create() made every fan-out directory
    for fragment in ("etc", "passwd", "..", "img", "cat"):
        assert fragment not in str(relative)


def test_primary_key_hash_is_stable_and_distinct() -> None:
    assert primary_key_hash("/a.png") == primary_key_hash("/a.png")
    keys = ["/a.png", "/a.png?w=1", "/A.png", "/a.png ", "/b.png"]
    assert len({primary_key_hash(k) for k in keys}) == len(keys)


def test_variant_key_hash_depends_on_values_not_their_order() -> None:
    primary = primary_key_hash("/a.png")
    one = variant_key_hash(primary, "v1", {"accept": "image/webp", "dpr": "2"})
    same = variant_key_hash(primary, "v1", {"dpr": "2", "accept": "image/webp"})
    assert one == same
    assert HEX64.fullmatch(one)
    others = {
        variant_key_hash(primary, "v1", {"accept": "image/avif", "dpr": "2"}),
        variant_key_hash(primary, "v2", {"accept": "image/webp", "dpr": "2"}),
        variant_key_hash(primary_key_hash("/b.png"), "v1", {"accept": "image/webp", "dpr": "2"}),
        # RFC 9111 §4.1: an absent field and an empty one select different variants.
        variant_key_hash(primary, "v1", {"accept": "image/webp", "dpr": None}),
        variant_key_hash(primary, "v1", {"accept": "image/webp", "dpr": ""}),
    }
    assert one not in others
    assert len(others) == 5
    assert one != primary


def test_body_paths_are_named_by_key_hash_and_body_id(layout: Layout) -> None:
    key_hash = primary_key_hash("/img/cat.png")
    body_id = new_body_id()
    path = layout.body_path(key_hash, body_id)
    assert path.relative_to(layout.bodies).parts == (key_hash[:2], f"{key_hash}.{body_id}")
    assert path.parent.is_dir()  # create() made every fan-out directory
    assert layout.body_path(key_hash, new_body_id()) != path
    assert layout.body_path(primary_key_hash("/img/dog.png"), body_id) != path


def test_layout_of_an_entry_is_the_one_it_belongs_to(layout: Layout) -> None:
    key_hash = primary_key_hash("/img/cat.png")
    assert Layout.of_entry(layout.entry_path(key_hash)) == layout


def test_create_makes_tmp_and_256_fan_out_directories(layout: Layout) -> None:
    assert layout.tmp.is_dir()
    for top in (layout.entries, layout.bodies):
        names = sorted(p.name for p in top.iterdir())
        assert names == [f"{i:02x}" for i in range(256)]
    layout.create()  # idempotent
    layout.check_writable()
    assert list(layout.tmp.iterdir()) == []


def test_sweep_removes_temp_leftovers_only(layout: Layout) -> None:
    for name in ("123-aaa.tmp", "123-aaa.head", "456-bbb.tmp", ".probe-9"):
        (layout.tmp / name).write_bytes(b"partial")
    key_hash = primary_key_hash("/kept.png")
    head = layout.entry_path(key_hash)
    head.write_bytes(b"a committed head")
    body = layout.body_path(key_hash, new_body_id())
    body.write_bytes(b"a committed body")
    assert layout.sweep_temp_files() == 4
    assert list(layout.tmp.iterdir()) == []
    assert head.read_bytes() == b"a committed head"
    assert body.read_bytes() == b"a committed body"
    assert layout.sweep_temp_files() == 0


def test_sweep_of_one_process_leaves_the_others_temp_files(layout: Layout) -> None:
    for name in ("123-aaa.tmp", "123-aaa.head", "456-bbb.tmp", "456-bbb.head"):
        (layout.tmp / name).write_bytes(b"partial")
    assert layout.sweep_temp_files(123) == 2
    assert sorted(p.name for p in layout.tmp.iterdir()) == ["456-bbb.head", "456-bbb.tmp"]


def test_store_prepare_sweeps_leftovers(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    store.prepare()
    (store.layout.tmp / "999-crashed.tmp").write_bytes(b"half an image")
    assert Store(tmp_path / "cache").prepare() == 1
    assert list(store.layout.tmp.iterdir()) == []
