"""The Cache-Status response field (RFC 9211)."""

from __future__ import annotations

import re

import pytest

from proxy.policy.cache_status import CacheStatus

# RFC 8941 §3.3.3: sf-string = DQUOTE *chr DQUOTE; chr = unescaped / escaped;
# unescaped = %x20-21 / %x23-5B / %x5D-7E; escaped = "\" ( DQUOTE / "\" )
SF_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"')


@pytest.mark.parametrize(
    ("status", "rendered"),
    [
        (CacheStatus(), "pixcache"),
        # §2.1: hit; §2.4: ttl.
        (CacheStatus(hit=True, ttl=376), "pixcache; hit; ttl=376"),
        # §2.2 fwd, §2.3 fwd-status, §2.5 stored.
        (
            CacheStatus(fwd="uri-miss", fwd_status=200, stored=True),
            "pixcache; fwd=uri-miss; fwd-status=200; stored",
        ),
        (
            CacheStatus(fwd="stale", fwd_status=304, ttl=-5),
            "pixcache; fwd=stale; fwd-status=304; ttl=-5",
        ),
        # §2.6 collapsed.
        (CacheStatus(fwd="miss", collapsed=True), "pixcache; fwd=miss; collapsed"),
        (
            CacheStatus(fwd="bypass", detail="authorization"),
            'pixcache; fwd=bypass; detail="authorization"',
        ),
        # Every parameter together, in the documented order.
        (
            CacheStatus(
                hit=True,
                fwd="vary-miss",
                fwd_status=200,
                ttl=0,
                stored=True,
                collapsed=True,
                detail="x",
            ),
            'pixcache; hit; fwd=vary-miss; fwd-status=200; ttl=0; stored; collapsed; detail="x"',
        ),
    ],
)
def test_rfc9211_2_render(status: CacheStatus, rendered: str) -> None:
    assert status.render() == rendered


@pytest.mark.parametrize(
    ("ttl", "rendered"),
    [(0.0, "ttl=0"), (59.9, "ttl=59"), (-30.0, "ttl=-30"), (2**31, "ttl=2147483648")],
)
def test_rfc9211_2_4_ttl_is_an_integer_and_may_be_negative(ttl: float, rendered: str) -> None:
    out = CacheStatus(hit=True, ttl=ttl).render()
    assert out == f"pixcache; hit; {rendered}"


@pytest.mark.parametrize(
    ("detail", "rendered"),
    [
        ("plain text", '"plain text"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\there\nnewline", '"tab?here?newline"'),
        ("caf\u00e9 \u2603", '"caf? ?"'),
        ("\x7f", '"?"'),
    ],
)
def test_rfc9211_2_8_detail_is_an_escaped_sf_string(detail: str, rendered: str) -> None:
    out = CacheStatus(detail=detail).render()
    assert out == f"pixcache; detail={rendered}"
    assert SF_STRING.fullmatch(rendered)


def test_rfc9211_2_8_empty_detail_is_left_out() -> None:
    assert CacheStatus(fwd="miss", detail="").render() == "pixcache; fwd=miss"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (CacheStatus(hit=True, ttl=5), "hit"),
        (CacheStatus(fwd="stale", fwd_status=304), "stale"),
        (CacheStatus(fwd="bypass"), "bypass"),
        (CacheStatus(), "miss"),
    ],
)
def test_rfc9211_outcome_word_for_logs(status: CacheStatus, outcome: str) -> None:
    assert status.outcome == outcome
