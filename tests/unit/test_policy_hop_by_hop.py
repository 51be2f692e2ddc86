"""Connection-specific fields and Via (RFC 9110 §7.6.1, §7.6.3)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.policy.hop_by_hop import end_to_end, with_via


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


END_TO_END = [
    ("Content-Type", "image/png"),
    ("ETag", '"v1"'),
    ("Cache-Control", "max-age=60"),
    ("Link", "</a.png>; rel=preload"),
    ("Link", "</b.png>; rel=preload"),
]


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Anything-Else",
        "transfer-encoding",
        "KEEP-ALIVE",
    ],
)
def test_rfc9110_7_6_1_connection_specific_fields_are_removed(name: str) -> None:
    out = end_to_end(h(*END_TO_END, (name, "x")))
    assert name not in out
    assert list(out.items()) == END_TO_END


def test_rfc9110_7_6_1_fields_named_by_connection_are_removed() -> None:
    headers = h(
        ("Connection", "close, X-Hop-One"),
        ("connection", "x-hop-two"),
        ("X-Hop-One", "1"),
        ("x-hop-two", "2"),
        ("X-HOP-TWO", "3"),
        ("X-Kept", "4"),
    )
    assert list(end_to_end(headers).items()) == [("X-Kept", "4")]


def test_rfc9110_7_6_1_drop_removes_extra_fields_case_insensitively() -> None:
    headers = h(*END_TO_END, ("Content-Length", "10"))
    out = end_to_end(headers, drop=frozenset({"content-length", "etag"}))
    assert "Content-Length" not in out
    assert "ETag" not in out
    assert out.getall("Link") == ["</a.png>; rel=preload", "</b.png>; rel=preload"]


def test_rfc9110_7_6_1_end_to_end_returns_a_copy() -> None:
    headers = h(*END_TO_END, ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"))
    out = end_to_end(headers)
    out.add("X-New", "1")
    assert "X-New" not in headers
    assert headers.getall("Keep-Alive") == ["timeout=5"]


def test_rfc9110_7_6_3_via_is_appended_after_existing_entries() -> None:
    headers = h(("Via", "1.0 fred, 1.1 p.example.net"), ("Content-Type", "image/png"))
    with_via(headers, "1.1", "pixcache")
    assert headers.getall("Via") == ["1.0 fred, 1.1 p.example.net", "1.1 pixcache"]


def test_rfc9110_7_6_3_via_is_added_when_absent() -> None:
    headers = h()
    with_via(headers, "2", "pixcache")
    assert headers.getall("Via") == ["2 pixcache"]
