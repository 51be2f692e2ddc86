"""The source image of a request path, per image service URL grammar: tables of real-looking
URLs (signed and unsigned, plain and base64, encoded sources, sources with their own query
strings) and garbage that must give "no source", never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.source_url import GRAMMARS, canonical_source, source_of, source_tag, tags_prefix

CURIOSITY = "http://example.com/images/curiosity.jpg"
CURIOSITY_B64 = "aHR0cDovL2V4YW1wbGUuY29tL2ltYWdlcy9jdXJpb3NpdHkuanBn"
CAT_Q = "https://cdn.example.org/photos/2024/cat.png?v=3&w=1"
CAT_Q_B64 = "aHR0cHM6Ly9jZG4uZXhhbXBsZS5vcmcvcGhvdG9zLzIwMjQvY2F0LnBuZz92PTMmdz0x"
SIG = "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"  # 43 chars: base64url HMAC-SHA256
HMAC = "1kV5-zJdMHm8rYtAGfUMCxc4HNI="  # 28 chars: base64url HMAC-SHA1, padded

IMGPROXY = [
    # plain sources, unsigned and signed
    (f"/insecure/rs:fit:300:300/plain/{CURIOSITY}", CURIOSITY),
    (f"/unsafe/w:300/plain/{CURIOSITY}@webp", CURIOSITY),
    (f"/_/resize:fill:300:400:0/gravity:sm/quality:80/plain/{CURIOSITY}@png", CURIOSITY),
    (f"/{SIG}/rs:fill:300:400:0/g:sm/plain/{CURIOSITY}", CURIOSITY),
    (f"/{SIG}/plain/{CURIOSITY}", CURIOSITY),  # no options at all
    # percent-encoded plain source, and one with its escaped query string
    ("/insecure/w:300/plain/http%3A%2F%2Fexample.com%2Fimages%2Fcuriosity.jpg", CURIOSITY),
    (
        "/insecure/w:300/plain/https%3A%2F%2Fcdn.example.org%2Fphotos%2F2024%2Fcat.png"
        "%3Fv%3D3%26w%3D1@avif",
        CAT_Q,
    ),
    # an unescaped query string arrives as the request's query: still the source's
    ("/insecure/w:300/plain/https://cdn.example.org/photos/2024/cat.png?v=3&w=1", CAT_Q),
    ("/insecure/w:300/plain/https://cdn.example.org/photos/2024/cat.png?v=3&w=1@webp", CAT_Q),
    # an @ inside the source (userinfo) is not an extension
    ("/insecure/w:1/plain/http://user@example.com/a.jpg", "http://user@example.com/a.jpg"),
    ("/insecure/w:1/plain/s3://bucket/dir/a.jpg", "s3://bucket/dir/a.jpg"),
    ("/insecure/w:1/plain/local:///pics/a.jpg", "local:///pics/a.jpg"),
    # a merged slash (nginx merge_slashes) and an upper-case host are the same source
    ("/insecure/w:300/plain/http:/example.com/images/curiosity.jpg", CURIOSITY),
    ("/insecure/w:300/plain/HTTP://EXAMPLE.com/images/curiosity.jpg", CURIOSITY),
    # base64 sources, with and without extension, padded, split into chunks
    (f"/insecure/rs:fit:300:300/{CURIOSITY_B64}", CURIOSITY),
    (f"/insecure/rs:fit:300:300/{CURIOSITY_B64}.png", CURIOSITY),
    (f"/{SIG}/rs:fit:300:300:0/g:no/{CURIOSITY_B64}.webp", CURIOSITY),
    (f"/{SIG}/w:100/{CAT_Q_B64}.jpg", CAT_Q),
    (
        f"/insecure/w:100/{CURIOSITY_B64[:20]}/{CURIOSITY_B64[20:40]}/{CURIOSITY_B64[40:]}.png",
        CURIOSITY,
    ),
    ("/insecure/w:5/czM6Ly9idWNrZXQvZm9sZGVyL2RvZy53ZWJw", "s3://bucket/folder/dog.webp"),
    ("/insecure/w:5/aW1hZ2VzL3JlbGF0aXZlLmpwZw==.png", "images/relative.jpg"),
    (f"/insecure/{CURIOSITY_B64}", CURIOSITY),  # no options
    # legacy basic URLs
    (f"/{SIG}/fill/300/400/sm/0/{CURIOSITY_B64}.png", CURIOSITY),
    (f"/insecure/fit/100/0/ce/1/{CURIOSITY_B64}", CURIOSITY),
    # presets-only mode: preset names without `pr:`
    (f"/insecure/thumbnail/plain/{CURIOSITY}", CURIOSITY),
    (f"/insecure/thumbnail/sharp/plain/{CURIOSITY}@webp", CURIOSITY),
    # encrypted sources cannot be read; garbage has no source
    ("/insecure/w:300/enc/LS0tLS1CRUdJTiBSU0Eg", None),
    ("/", None),
    ("/favicon.ico", None),
    ("/img/cat.jpg", None),
    ("/insecure", None),
    ("/insecure/w:300", None),
    ("/insecure/w:300/plain/", None),
    ("/insecure/w:300/plain/@webp", None),
    ("/insecure/w:300/!!!notbase64!!!.png", None),
    ("/insecure/w:300/a", None),  # a base64 length no encoder makes
    ("/insecure/w:300/gICA", None),  # decodes to bytes that are not UTF-8
    ("/insecure/w:300/aGVsbG8gd29ybGQ", None),  # "hello world": holds a space
    ("/insecure/w:300/plain/http%3A%2F%2Fexample.com%2F%00.jpg", None),  # NUL
    ("not-a-path", None),
    ("", None),
]

THUMBOR = [
    ("/unsafe/300x200/smart/example.com/images/a.jpg", "example.com/images/a.jpg"),
    (f"/{HMAC}/300x200/{CURIOSITY}", CURIOSITY),
    (f"/{HMAC}/fit-in/300x200/{CURIOSITY}", CURIOSITY),
    ("/unsafe/trim/10x20:300x400/fit-in/-300x-200/left/top/smart/" + CURIOSITY, CURIOSITY),
    ("/unsafe/trim:bottom-right:10/adaptive-full-fit-in/origx200/" + CURIOSITY, CURIOSITY),
    ("/unsafe/meta/300x200/" + CURIOSITY, CURIOSITY),
    ("/unsafe/debug/x200/center/middle/" + CURIOSITY, CURIOSITY),
    ("/unsafe/filters:quality(80):format(webp)/" + CURIOSITY, CURIOSITY),
    (
        "/unsafe/300x0/filters:watermark(example.com/logo.png,10,-10,50):grayscale()/" + CURIOSITY,
        CURIOSITY,
    ),
    # encoded image, with its own (escaped, or unescaped) query string
    ("/unsafe/300x200/http%3A%2F%2Fexample.com%2Fimages%2Fcuriosity.jpg", CURIOSITY),
    (
        "/unsafe/300x200/https%3A%2F%2Fcdn.example.org%2Fphotos%2F2024%2Fcat.png%3Fv%3D3%26w%3D1",
        CAT_Q,
    ),
    ("/unsafe/300x200/https://cdn.example.org/photos/2024/cat.png?v=3&w=1", CAT_Q),
    ("/unsafe/" + CURIOSITY, CURIOSITY),
    (
        "/unsafe/300x200/https:/example.com/images/curiosity.jpg",
        "https://example.com/images/curiosity.jpg",
    ),
    # garbage
    ("/unsafe/300x200/", None),
    ("/unsafe/300x200/smart", None),
    ("/unsafe/filters:quality(80)", None),  # filters never end: no image
    ("/unsafe", None),
    ("/images/a.jpg", None),  # no hash or `unsafe`
    ("/short/300x200/a.jpg", None),
    ("/", None),
]

IMAGOR_ONLY = [
    ("/unsafe/fit-in/stretch/300x200/" + CURIOSITY, CURIOSITY),
    ("/unsafe/fit-in/300x200/10x20:30x40/left/" + CURIOSITY, CURIOSITY),
    ("/params/unsafe/300x200/" + CURIOSITY, CURIOSITY),
    (
        f"/{HMAC}/fit-in/200x150/filters:fill(yellow):watermark(raw.githubusercontent.com/"
        "cshum/imagor/master/testdata/gopher-front.png,repeat,bottom,0,40,40)/" + CURIOSITY,
        CURIOSITY,
    ),
    (
        "/unsafe/500x500/top/https%3A%2F%2Fraw.githubusercontent.com%2Fcshum%2Fimagor%2Fmaster"
        "%2Ftestdata%2Fdancing-banana.gif",
        "https://raw.githubusercontent.com/cshum/imagor/master/testdata/dancing-banana.gif",
    ),
]


@pytest.mark.parametrize(("path", "source"), IMGPROXY)
def test_imgproxy(path: str, source: str | None) -> None:
    assert source_of(path, "imgproxy") == source


@pytest.mark.parametrize(("path", "source"), THUMBOR)
def test_thumbor(path: str, source: str | None) -> None:
    assert source_of(path, "thumbor") == source


@pytest.mark.parametrize(("path", "source"), THUMBOR + IMAGOR_ONLY)
def test_imagor(path: str, source: str | None) -> None:
    assert source_of(path, "imagor") == source


@pytest.mark.parametrize("path", [row[0] for row in IMGPROXY + THUMBOR])
def test_grammar_none_names_no_source(path: str) -> None:
    assert source_of(path, "none") is None


def test_every_derivative_of_one_source_shares_its_tag_and_others_do_not() -> None:
    paths = [
        f"/insecure/rs:fit:300:300/plain/{CURIOSITY}",
        "/insecure/w:50/plain/http%3A%2F%2Fexample.com%2Fimages%2Fcuriosity.jpg@webp",
        f"/{SIG}/rs:fill:10:10/{CURIOSITY_B64}.avif",
    ]
    tags = {source_tag("imgproxy", source_of(p, "imgproxy")) for p in paths}
    assert len(tags) == 1
    other = source_of("/insecure/w:50/plain/http://example.com/images/other.jpg", "imgproxy")
    assert source_tag("imgproxy", other) not in tags
    tag = tags.pop()
    assert tag.startswith(tags_prefix("imgproxy")) and " " not in tag
    assert source_tag("imgproxy", None) == tags_prefix("imgproxy") + "none"


def test_canonical_source_keeps_path_and_query_case() -> None:
    assert canonical_source("HTTPS://Example.COM/A.jpg?X=Y") == "https://example.com/A.jpg?X=Y"
    assert canonical_source("  ") is None
    assert canonical_source("http://[::1/a.jpg") == "http://[::1/a.jpg"  # unbalanced: as is


@given(st.text(max_size=200), st.sampled_from(GRAMMARS))
def test_any_text_gives_a_source_or_none_never_an_error(text: str, grammar: str) -> None:
    found = source_of("/" + text, grammar)
    assert found is None or (found and found.isprintable())


@given(
    st.lists(st.text(alphabet="abcxyz0129:/%-_.=()@?&", max_size=12), max_size=12),
    st.sampled_from(GRAMMARS),
)
def test_url_like_garbage_never_raises(parts: list[str], grammar: str) -> None:
    source_of("/" + "/".join(parts), grammar)
