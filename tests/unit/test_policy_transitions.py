"""The two pure transitions: what a request gets (on_request) and what a fill does with
the origin's answer (on_response), one table per RFC section, each row citing its rule."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.policy.freshness import Timing, TtlPolicy
from proxy.policy.storable import Verdict
from proxy.policy.transitions import (
    Bypass,
    Fetch,
    Freshen,
    NotCached,
    PolicyOptions,
    Serve,
    Store,
    StoredView,
    Unshare,
    Validate,
    freshened,
    on_request,
    on_response,
)

T0 = 1_700_000_000.0
OPTIONS = PolicyOptions()


def h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def stored(cc: str | None, *extra: tuple[str, str], status: int = 200) -> StoredView:
    headers = [("Cache-Control", cc)] if cc is not None else []
    return StoredView(status, h(*headers, *extra), Timing(T0, T0))


# -- on_request: RFC 9111 §4 (nothing stored), §4.2 (fresh/stale) ---------------------------


@pytest.mark.parametrize(
    ("view", "after", "expected"),
    [
        # §4: nothing stored: the request is forwarded, with the reason Cache-Status gives.
        (None, 0, Fetch("uri-miss")),
        # §4.2: fresh while the lifetime exceeds the current age.
        (stored("max-age=60"), 10, Serve(50.0)),
        # §4.2: stale once it does not: validate (§4.3.1).
        (stored("max-age=60"), 61, Validate("stale")),
        # §5.2.2.4: no-cache in the stored response: validate even when fresh.
        (stored("no-cache, max-age=600"), 0, Validate("stale")),
        # RFC 5861 §3: stale within stale-while-revalidate: serve now, refresh behind.
        (stored("max-age=1, stale-while-revalidate=60"), 5, Serve(-4.0, refresh=True)),
    ],
)
def test_rfc9111_4_and_4_2_on_request(
    view: StoredView | None, after: float, expected: object
) -> None:
    assert on_request(view, h(), T0 + after, OPTIONS) == expected


def test_rfc9111_4_1_an_absent_variant_is_a_vary_miss() -> None:
    assert on_request(None, h(), T0, OPTIONS, absent="vary-miss") == Fetch("vary-miss")


# -- on_request: RFC 9111 §5.2.1 request directives, §3.5 Authorization -----------------


@pytest.mark.parametrize(
    ("view", "request_pairs", "expected"),
    [
        # §5.2.1.7: only-if-cached with nothing usable: 504, never a forward.
        (None, [("Cache-Control", "only-if-cached")], NotCached("uri-miss")),
        (stored("max-age=0"), [("Cache-Control", "only-if-cached")], NotCached("stale")),
        # §5.2.1.7: only-if-cached with a fresh response: served.
        (stored("max-age=60"), [("Cache-Control", "only-if-cached")], Serve(60.0)),
        # §5.2.1.5: no-store in the request: fetched for this client alone, nothing stored.
        (None, [("Cache-Control", "no-store")], Bypass("request", "no-store")),
        # §5.2.1.4: no-cache in the request: validate the stored response first.
        (stored("max-age=60"), [("Cache-Control", "no-cache")], Validate("request")),
        # §5.2.1.1: max-age in the request bounds the age it accepts.
        (
            stored("max-age=600", ("Age", "100")),
            [("Cache-Control", "max-age=50")],
            Validate("request"),
        ),
        # §3.5: a response stored without public / s-maxage / must-revalidate never
        # answers a request with Authorization.
        (stored("max-age=60"), [("Authorization", "Bearer x")], Bypass("request", "authorization")),
        (stored("public, max-age=60"), [("Authorization", "Bearer x")], Serve(60.0)),
    ],
)
def test_rfc9111_5_2_1_and_3_5_on_request(
    view: StoredView | None, request_pairs: list[tuple[str, str]], expected: object
) -> None:
    assert on_request(view, h(*request_pairs), T0, OPTIONS) == expected


# -- on_request: RFC 5861 §4 and the operator's options ---------------------------------------


def test_rfc5861_4_stale_if_error_travels_with_the_validation() -> None:
    outcome = on_request(stored("max-age=1, stale-if-error=300"), h(), T0 + 10, OPTIONS)
    assert outcome == Validate("stale", stale_if_error=300.0)


def test_operator_grace_lets_a_stale_entry_answer_when_the_origin_fails() -> None:
    outcome = on_request(stored("max-age=1"), h(), T0 + 10, PolicyOptions(grace=120.0))
    assert outcome == Validate("stale", stale_if_error=120.0)


def test_operator_ttl_bound_shortens_a_stored_lifetime() -> None:
    options = PolicyOptions(ttl=TtlPolicy(max_error_ttl=60.0))
    view = stored("max-age=31536000", status=504)
    assert on_request(view, h(), T0 + 30, options) == Serve(30.0)
    assert on_request(view, h(), T0 + 61, options) == Validate("stale")


def test_rfc9213_2_1_a_targeted_field_decides_before_cache_control() -> None:
    view = stored("no-store", ("CDN-Cache-Control", "max-age=60"))
    assert on_request(view, h(), T0, PolicyOptions(targets=("CDN-Cache-Control",))) == Serve(60.0)


# -- on_response: RFC 9111 §3 (storing), §4.3.3-4.3.4 (validation answers) ------------------


@pytest.mark.parametrize(
    ("validating", "status", "response_pairs", "request_pairs", "expected"),
    [
        # §3: a storable response is stored and shared.
        (False, 200, [("Cache-Control", "max-age=60")], [], Store(Verdict(True))),
        # §4.3.4: a 304 to our conditional request freshens the stored response.
        (True, 304, [], [], Freshen()),
        # §3 / §5.2.2.7: private is for one client: it goes to the one that asked.
        (False, 200, [("Cache-Control", "private")], [], Unshare(Verdict(False, "private"))),
        # §3 / §5.2.2.5: no-store.
        (False, 200, [("Cache-Control", "no-store")], [], Unshare(Verdict(False, "no-store"))),
        # §4.3.3: a 5xx to a revalidation must not replace the stored response.
        (
            True,
            503,
            [("Cache-Control", "max-age=60")],
            [],
            Unshare(Verdict(False, "origin-error")),
        ),
        # ... while a 5xx to a plain fetch is stored like any storable response.
        (False, 503, [("Cache-Control", "max-age=60")], [], Store(Verdict(True))),
        # §3.5: a response to a request with Authorization is shared only if it says so.
        (
            False,
            200,
            [("Cache-Control", "max-age=60")],
            [("Authorization", "Bearer x")],
            Unshare(Verdict(False, "authorization")),
        ),
        (
            False,
            200,
            [("Cache-Control", "public, max-age=60")],
            [("Authorization", "Bearer x")],
            Store(Verdict(True)),
        ),
    ],
)
def test_rfc9111_3_and_4_3_on_response(
    validating: bool,
    status: int,
    response_pairs: list[tuple[str, str]],
    request_pairs: list[tuple[str, str]],
    expected: object,
) -> None:
    outcome = on_response(validating, status, h(*response_pairs), h(*request_pairs), OPTIONS)
    assert outcome == expected


@pytest.mark.parametrize(
    ("stored_cc", "new_fields", "age_kept", "shared"),
    [
        ("max-age=60", [("Cache-Control", "max-age=120")], False, True),
        ("max-age=60", [("Age", "5")], True, True),
        ("max-age=60", [("Cache-Control", "private")], False, False),
        ("max-age=60", [("Cache-Control", "no-store")], False, False),
    ],
)
def test_rfc9111_4_3_4_a_304_updates_the_stored_response(
    stored_cc: str, new_fields: list[tuple[str, str]], age_kept: bool, shared: bool
) -> None:
    old = h(("Cache-Control", stored_cc), ("ETag", '"a"'), ("Age", "30"), ("Content-Length", "9"))
    headers, verdict = freshened(200, old, h(*new_fields), h(), PolicyOptions())
    fields = CIMultiDict(headers)
    assert fields["ETag"] == '"a"' and fields["Content-Length"] == "9"  # §3.2: kept
    assert ("Age" in fields) is age_kept  # the old Age described the old response
    assert verdict.ok is shared
