"""The Cache-Status response field (RFC 9211)."""

from __future__ import annotations

import re

import http_sf
import pytest

from proxy.policy.cache_status import (
    CacheStatus,
    appended,
    cache_status_field,
    upstream_cache_status,
)

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


@pytest.mark.parametrize(
    "status",
    [
        CacheStatus(),
        CacheStatus(hit=True, ttl=-30),
        CacheStatus(fwd="uri-miss", fwd_status=200, stored=True, collapsed=True),
        CacheStatus(fwd="stale", detail='quote " and \\ and \u2603'),
        CacheStatus(hit=True, ttl=10.0**20),  # clamped to the 15 digits of an Integer
    ],
)
def test_rfc9211_2_our_entry_is_one_valid_list_member(status: CacheStatus) -> None:
    """RFC 9211 §2: Cache-Status is a List; our entry is one member: the cache's name as a
    Token, with §2.1-§2.8 as parameters of their types."""
    [(name, params)] = http_sf.parse(status.render().encode(), tltype="list")
    assert name == http_sf.Token("pixcache")
    assert params.get("hit", False) is status.hit
    assert params.get("stored", False) is status.stored
    assert params.get("collapsed", False) is status.collapsed
    if status.fwd is not None:
        assert params["fwd"] == http_sf.Token(status.fwd)
    if status.fwd_status is not None:
        assert params["fwd-status"] == status.fwd_status
    if status.ttl is not None:
        assert params["ttl"] == max(-(10**15) + 1, min(10**15 - 1, int(status.ttl)))
    if status.detail is not None:
        assert isinstance(params["detail"], str)


OURS = "pixcache; fwd=uri-miss; stored"


@pytest.mark.parametrize(
    ("upstream_lines", "sent"),
    [
        # §2: the members of the caches before us come first, ours last.
        (["upstream; hit"], "upstream; hit, pixcache; fwd=uri-miss; stored"),
        (
            ['origin-cache; fwd=uri-miss; stored, "CDN Edge"; hit; ttl=12'],
            'origin-cache; fwd=uri-miss; stored, "CDN Edge"; hit; ttl=12, ' + OURS,
        ),
        # RFC 8941 §4.2: several field lines are one List, combined in order.
        (["a; hit", "b; fwd=miss"], "a; hit, b; fwd=miss, " + OURS),
        (["  a; hit  ", "", "b"], "a; hit, b, " + OURS),
        # Upstream members are passed on as upstream wrote them.
        (["a;hit;ttl=5"], "a;hit;ttl=5, " + OURS),
        # No upstream field, or an empty one: ours alone.
        ([], OURS),
        ([""], OURS),
        (["   "], OURS),
        # RFC 8941 §4.2: a value that does not parse as a List is ignored as a whole.
        (["upstream; hit;"], OURS),
        (["upstream hit"], OURS),
        (["upstream; ttl=1.2.3"], OURS),
        (["a,"], OURS),
        (['a; detail="unterminated'], OURS),
        (["caf\u00e9; hit"], OURS),
        (["a; hit", "b c"], OURS),  # one bad line spoils the combined value
    ],
)
def test_rfc9211_2_our_entry_is_appended_to_upstreams(upstream_lines: list[str], sent: str) -> None:
    assert cache_status_field(upstream_lines, OURS) == sent
    kept = upstream_cache_status(upstream_lines)
    assert appended(kept, OURS) == sent
    if kept is not None:
        assert http_sf.parse(sent.encode(), tltype="list")[-1][0] == http_sf.Token("pixcache")
