"""nginx/consistent-hash.conf with query normalisation on: the spellings of one URL (tracking
parameters, parameter order) reach one pixcache instance, which fetches the object once; the
fleet keeps one home per URL (docs/cache-key.md)."""

from __future__ import annotations

from pathlib import Path

from tests.fake_origin import pattern_bytes
from tests.system.procs import free_port, start_origin, start_pixcache, stop
from tests.system.test_nginx import get, origin_hits, pytestmark, render, running_nginx

__all__ = ["pytestmark"]  # skipped, as the other nginx tests are, without an nginx binary

KEY_RULE = ("--sort-query-params", "true", "--drop-query-params", "utm_*,fbclid,gclid")
SPELLINGS = [
    "?w=100&h=50",
    "?h=50&w=100&utm_source=news",
    "?fbclid=IwAR&w=100&h=50",
    "?utm_medium=mail&h=50&gclid=x&w=100&utm_campaign=c",
]


async def test_every_spelling_of_a_url_has_the_same_home(tmp_path: Path) -> None:
    paths = [f"/img{i}.jpg" for i in range(12)]
    origin_proc, origin_url = start_origin({p: (4096, i) for i, p in enumerate(paths)})
    procs = []
    try:
        ports = [free_port() for _ in range(2)]
        for i, port in enumerate(ports):
            procs.append(start_pixcache(origin_url, tmp_path / f"cache{i}", port, *KEY_RULE))
        port = free_port()
        conf = render("consistent-hash.conf", tmp_path, port, ports)
        with running_nginx(tmp_path, conf, port):
            for spelling in SPELLINGS:
                for i, path in enumerate(paths):
                    url = f"http://127.0.0.1:{port}{path}{spelling}"
                    status, body, _ = await get(url)
                    assert status == 200 and body == pattern_bytes(4096, i), url
        hits = await origin_hits(origin_url)
        # One fetch per object in the whole fleet: all four spellings met the entry the
        # first one left on the object's one home.
        assert {p: hits.get(p) for p in paths} == dict.fromkeys(paths, 1)
        homes = [
            sum(1 for f in (tmp_path / f"cache{i}" / "entries").rglob("*") if f.is_file())
            for i in range(2)
        ]
        assert all(homes), homes  # both instances are homes of some objects
    finally:
        for proc in procs:
            stop(proc)
        stop(origin_proc)
