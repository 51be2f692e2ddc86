"""Format classes (proxy/policy/format_class.py): which class a request's Accept puts it in,
read as RFC 9110 §12.5.1 media ranges with §12.4.2 weights."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.policy.format_class import OTHER, canonical_accept, format_class, format_classes
from proxy.policy.negotiation import media_range_weights
from tests.browser_accepts import BROWSER_ACCEPTS

CLASSES = ("avif", "webp", "jxl")


@pytest.mark.parametrize(
    ("accept", "klass"),
    [(a, k) for _, a, k in BROWSER_ACCEPTS],
    ids=[w for w, _, _ in BROWSER_ACCEPTS],
)
def test_browsers(accept: str, klass: str) -> None:
    assert format_class(accept, CLASSES) == klass


@pytest.mark.parametrize(
    ("accept", "classes", "klass"),
    [
        # No Accept, an empty one, wildcards alone: nothing is said about these formats.
        (None, CLASSES, OTHER),
        ("", CLASSES, OTHER),
        ("*/*", CLASSES, OTHER),
        ("image/*", CLASSES, OTHER),
        ("image/*,*/*;q=0.8", CLASSES, OTHER),
        # §12.4.2: q=0 is "not acceptable", however it is written.
        ("image/avif;q=0,image/webp", CLASSES, "webp"),
        ("image/avif;q=0.0,image/webp", CLASSES, "webp"),
        ("image/avif;q=0.000,*/*", CLASSES, OTHER),
        ("image/avif ; Q=0 , image/webp", CLASSES, "webp"),
        # Named twice, once refused: refused.
        ("image/avif,image/avif;q=0,image/webp", CLASSES, "webp"),
        # Weights rank the classes a client accepts...
        ("image/webp;q=0.9,image/avif;q=0.5", CLASSES, "webp"),
        ("image/avif;q=0.5,image/jxl", CLASSES, "jxl"),
        # ...and the setting's order breaks ties.
        ("image/jxl,image/avif", CLASSES, "avif"),
        ("image/jxl,image/avif", ("jxl", "avif"), "jxl"),
        ("image/jxl,image/webp", CLASSES, "webp"),
        ("image/jxl,*/*", CLASSES, "jxl"),
        # Types and subtypes are case-insensitive (§8.3.1); parameters do not matter.
        ("IMAGE/AVIF", CLASSES, "avif"),
        ('image/avif;profile="x,y";q=0.7', CLASSES, "avif"),
        # Only configured classes exist.
        ("image/avif,image/webp", ("webp",), "webp"),
        ("image/avif", ("webp",), OTHER),
        ("image/avif", (), OTHER),
        # A member that breaks the grammar is left out; the others still count.
        ("image/avif;q=2,image/webp", CLASSES, "webp"),
        ("garbage,image/webp", CLASSES, "webp"),
        ("image/avif;q=0.5;foo=bar", CLASSES, OTHER),
        ("image/avifx,image/xavif", CLASSES, OTHER),
    ],
)
def test_rfc9110_12_5_1_accept_to_class(
    accept: str | None, classes: tuple[str, ...], klass: str
) -> None:
    assert format_class(accept, classes) == klass


@pytest.mark.parametrize("klass", [*CLASSES, OTHER])
def test_canonical_accept_is_in_its_own_class(klass: str) -> None:
    """The canonical Accept sent upstream puts the request in its class again: a fill's
    Accept selects the variant it stores."""
    assert format_class(canonical_accept(klass), CLASSES) == klass


def test_canonical_accepts_name_one_modern_format_each() -> None:
    accepts = {k: canonical_accept(k) for k in (*CLASSES, OTHER)}
    for klass, accept in accepts.items():
        named = {t for t, _ in media_range_weights(accept)} & {
            "image/avif",
            "image/webp",
            "image/jxl",
        }
        assert named == (set() if klass == OTHER else {f"image/{klass}"})


@given(st.text(max_size=60))
def test_any_accept_gets_a_class(accept: str) -> None:
    assert format_class(accept, CLASSES) in (*CLASSES, OTHER)


def test_the_setting() -> None:
    assert format_classes("avif, WEBP,,jxl") == ("avif", "webp", "jxl")
    assert format_classes(["webp"]) == ("webp",)
    assert format_classes("") == ()
    for bad in ("png", "other", "avif,avif", True):
        with pytest.raises(ValueError):
            format_classes(bad)
