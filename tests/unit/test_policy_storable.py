"""Storing responses and reusing stored ones (RFC 9111 §3, §3.5, §4, §5.2, §5.4)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.policy.freshness import Timing
from proxy.policy.reuse import Action, decide_reuse
from proxy.policy.storable import may_serve_stored, may_store, sharing_key

FRESH = ("Cache-Control", "max-age=60")


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


# -- RFC 9111 §3: storing responses ---------------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "get", "Get"])
def test_rfc9111_3_only_get_is_stored(method: str) -> None:
    verdict = may_store(method, h(), 200, h(FRESH))
    assert not verdict.ok
    assert verdict.reason == "method"


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_rfc9111_3_understood_final_statuses_are_stored(status: int) -> None:
    assert may_store("GET", h(), status, h(FRESH)).ok


@pytest.mark.parametrize("status", [100, 101, 206, 304])
def test_rfc9111_3_non_final_partial_and_not_modified_are_never_stored(status: int) -> None:
    verdict = may_store("GET", h(), status, h(FRESH))
    assert (verdict.ok, verdict.reason) == (False, "status")


@pytest.mark.parametrize("status", [302, 303, 307, 400, 401, 403, 500, 503, 599])
def test_rfc9111_3_other_statuses_are_stored_only_with_explicit_freshness(status: int) -> None:
    assert may_store("GET", h(), status, h(FRESH)).ok
    validator_only = h(("ETag", '"x"'), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"))
    assert not may_store("GET", h(), status, validator_only).ok


def test_rfc9111_5_2_2_3_must_understand_overrides_no_store_for_known_statuses() -> None:
    cc = ("Cache-Control", "max-age=60, must-understand, no-store")
    assert may_store("GET", h(), 200, h(cc)).ok
    verdict = may_store("GET", h(), 599, h(cc))
    assert (verdict.ok, verdict.reason) == (False, "must-understand")


@pytest.mark.parametrize(
    ("request_pairs", "response_pairs"),
    [
        ([("Cache-Control", "no-store")], [FRESH]),
        ([("Cache-Control", "No-Store")], [FRESH]),
        ([], [("Cache-Control", "max-age=60, no-store")]),
        ([], [("Cache-Control", "max-age=60"), ("Cache-Control", "NO-STORE")]),
    ],
)
def test_rfc9111_3_no_store_in_request_or_response_is_not_stored(
    request_pairs: list[tuple[str, str]], response_pairs: list[tuple[str, str]]
) -> None:
    verdict = may_store("GET", h(*request_pairs), 200, h(*response_pairs))
    assert (verdict.ok, verdict.reason) == (False, "no-store")


@pytest.mark.parametrize(
    "cache_control", ["private, max-age=60", 'private="Set-Cookie", max-age=60', "PRIVATE"]
)
def test_rfc9111_3_shared_cache_does_not_store_private(cache_control: str) -> None:
    verdict = may_store("GET", h(), 200, h(("Cache-Control", cache_control)))
    assert (verdict.ok, verdict.reason) == (False, "private")


def test_rfc9111_5_2_2_4_no_cache_response_may_still_be_stored() -> None:
    assert may_store("GET", h(), 200, h(("Cache-Control", "no-cache, max-age=60"))).ok


@pytest.mark.parametrize(
    ("response_cc", "stored"),
    [
        ("max-age=60", False),
        ("no-cache, max-age=60", False),
        ("public, max-age=60", True),
        ("must-revalidate, max-age=60", True),
        ("s-maxage=60", True),
        ("max-age=60, S-MAXAGE=60", True),
    ],
)
def test_rfc9111_3_5_authorization_needs_an_explicit_shared_directive(
    response_cc: str, stored: bool
) -> None:
    request = h(("authorization", "Bearer abc"))
    verdict = may_store("GET", request, 200, h(("Cache-Control", response_cc)))
    assert verdict.ok is stored
    if not stored:
        assert verdict.reason == "authorization"
    # Without Authorization the same response is stored.
    assert may_store("GET", h(), 200, h(("Cache-Control", response_cc))).ok


@pytest.mark.parametrize("vary", [["*"], ["Accept, *"], ["Accept", "*"], [" * "]])
def test_rfc9111_4_1_vary_star_is_not_stored(vary: list[str]) -> None:
    response = h(FRESH, *(("Vary", line) for line in vary))
    verdict = may_store("GET", h(), 200, response)
    assert (verdict.ok, verdict.reason) == (False, "vary-star")


def test_rfc9111_4_1_vary_on_fields_is_stored() -> None:
    assert may_store("GET", h(), 200, h(FRESH, ("Vary", "Accept, Accept-Encoding"))).ok


@pytest.mark.parametrize(
    ("status", "pairs", "stored"),
    [
        # Explicit freshness, even zero or already expired, is freshness information.
        (200, [("Cache-Control", "max-age=0")], True),
        (200, [("Cache-Control", "s-maxage=10")], True),
        (200, [("Expires", "Sun, 06 Nov 2094 08:49:37 GMT")], True),
        (200, [("Expires", "0")], True),
        # A validator on a heuristically cacheable status: it can be revalidated.
        (200, [("ETag", '"v1"')], True),
        (404, [("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")], True),
        (200, [("Cache-Control", "public"), ("ETag", '"v1"')], True),
        # Neither freshness nor a validator: never stored (our stricter rule).
        (200, [], False),
        (200, [("Cache-Control", "public")], False),
        (200, [("Cache-Control", "no-cache")], False),
        (200, [("Content-Type", "image/png"), ("Content-Length", "10")], False),
        (301, [("Location", "/elsewhere")], False),
    ],
)
def test_rfc9111_3_no_freshness_and_no_validator_is_not_stored(
    status: int, pairs: list[tuple[str, str]], stored: bool
) -> None:
    verdict = may_store("GET", h(), status, h(*pairs))
    assert verdict.ok is stored
    assert verdict.reason == ("" if stored else "no-freshness")


# -- RFC 9111 §3.5 and §4: reusing a stored response ----------------------------------------


@pytest.mark.parametrize(
    ("request_pairs", "stored_cc", "ok"),
    [
        ([], "max-age=60", True),
        ([("Authorization", "Basic eDp5")], "max-age=60", False),
        ([("Authorization", "Basic eDp5")], "public, max-age=60", True),
        ([("Authorization", "Basic eDp5")], "must-revalidate, max-age=60", True),
        ([("Authorization", "Basic eDp5")], "s-maxage=60", True),
        ([("AUTHORIZATION", "")], "max-age=60", False),
    ],
)
def test_rfc9111_3_5_stored_response_reused_with_authorization_only_if_allowed(
    request_pairs: list[tuple[str, str]], stored_cc: str, ok: bool
) -> None:
    verdict = may_serve_stored(h(*request_pairs), h(("Cache-Control", stored_cc)))
    assert verdict.ok is ok
    assert verdict.reason == ("" if ok else "authorization")


@pytest.mark.parametrize(
    ("request_pairs", "stored_pairs", "expected"),
    [
        ([], [FRESH], False),
        # §5.2.2.4: no-cache in the stored response.
        ([], [("Cache-Control", "no-cache, max-age=60")], True),
        ([], [("Cache-Control", "max-age=60"), ("Cache-Control", "No-Cache")], True),
        ([], [("Cache-Control", 'no-cache="Set-Cookie", max-age=60')], True),
        # §5.2.1.4: no-cache in the request.
        ([("Cache-Control", "no-cache")], [FRESH], True),
        ([("Cache-Control", "max-stale, NO-CACHE")], [FRESH], True),
        # §5.4: Pragma: no-cache counts only when the request has no Cache-Control.
        ([("Pragma", "no-cache")], [FRESH], True),
        ([("Pragma", "NO-CACHE")], [FRESH], True),
        ([("Pragma", "x-foo, no-cache")], [FRESH], True),
        ([("Pragma", "x-foo"), ("Pragma", "no-cache")], [FRESH], True),
        ([("Pragma", "no-cache"), ("Cache-Control", "max-age=600")], [FRESH], False),
        ([("Pragma", "no-cache"), ("Cache-Control", "")], [FRESH], False),
        ([("Pragma", "x-foo")], [FRESH], False),
        ([("Pragma", "no-cache=1")], [FRESH], False),
    ],
)
def test_rfc9111_5_2_and_5_4_needs_revalidation(
    request_pairs: list[tuple[str, str]], stored_pairs: list[tuple[str, str]], expected: bool
) -> None:
    """A fresh stored response is validated first exactly when these directives say so."""
    now = 1_700_000_000.0
    reuse = decide_reuse(200, h(*stored_pairs), Timing(now, now), h(*request_pairs), now)
    assert (reuse.action is Action.VALIDATE) is expected


def test_rfc9111_3_5_only_the_same_credentials_share_a_fetch() -> None:
    anyone = sharing_key("/a.jpg", CIMultiDict())
    alice = sharing_key("/a.jpg", CIMultiDict({"Authorization": "Basic YWxpY2U6eA=="}))
    bob = sharing_key("/a.jpg", CIMultiDict({"Authorization": "Basic Ym9iOng="}))
    assert anyone == "/a.jpg"
    assert len({anyone, alice, bob}) == 3
    assert alice == sharing_key("/a.jpg", CIMultiDict({"Authorization": "Basic YWxpY2U6eA=="}))
    assert "YWxpY2U" not in alice  # the credentials themselves are never part of a key
