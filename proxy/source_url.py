"""Which source image a request for a derivative names, read by the URL grammar of the image
service pixcache stands in front of, so that every derivative of one source can be purged
together (`POST /purge?source=...`).

Pure: no I/O, and no input makes it raise. A path the grammar cannot read has no source
(None), and is simply never found by a purge by source.

Grammars (the first path segment is always a signature, or the word for "unsigned"; pixcache
does not check signatures: the image service does):

- imgproxy: /SIGNATURE/OPTION:ARGS/.../plain/SOURCE[@EXT]
            /SIGNATURE/OPTION:ARGS/.../BASE64URL(SOURCE)[.EXT]   (may be split by /)
            /SIGNATURE/TYPE/WIDTH/HEIGHT/GRAVITY/ENLARGE/BASE64URL(SOURCE)[.EXT] (legacy)
  A plain source may be percent-encoded; a source encrypted with /enc/ cannot be read.
- thumbor:  /HMAC|unsafe/[debug/][meta/][trim[:..]/][AxB:CxD/][(adaptive-)(full-)fit-in/]
            [-]Wx[-]H/[halign/][valign/][smart/][filters:NAME(ARGS):.../]IMAGE
- imagor:   as thumbor, with [stretch/] after fit-in and [GxH:IxJ/] padding after the size,
            optionally under /params/.

An IMAGE (or plain SOURCE) may carry its own query string, escaped or not: an unescaped one
arrives as the request's query and is taken as the source's. Sources are compared in one
canonical form (`canonical_source`): percent-decoded, scheme and host in lower case, and
`https:/host` (one slash, as a proxy that merges slashes sends it) read as `https://host`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

GRAMMARS = ("none", "imgproxy", "imagor", "thumbor")
# How many leading path segments may be tried off a base64 source (presets-only imgproxy
# URLs name presets without the `pr:` prefix): bounds the work on a hostile path.
MOST_PRESET_SEGMENTS = 8
TAG_PREFIX = "pixcache-source-"

_EXTENSION = re.compile(r"[A-Za-z0-9]{1,10}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_LEGACY_TYPES = frozenset({"fit", "fill", "fill-down", "force", "auto"})
_DIGITS = re.compile(r"\d+")
# thumbor/imagor: an HMAC (base64url, padded or not, maybe truncated) or `unsafe`.
_HASH = re.compile(r"[A-Za-z0-9_=-]{16,}")
_NUMBER = r"-?\d+(?:\.\d+)?"
# The optional path options, in the order the grammars fix; each takes one segment.
_THUMBOR_STEPS = (
    re.compile(r"debug"),
    re.compile(r"meta"),
    re.compile(r"trim(?::(?:top-left|bottom-right))?(?::\d+)?"),
    re.compile(rf"{_NUMBER}x{_NUMBER}:{_NUMBER}x{_NUMBER}"),  # manual crop
    re.compile(r"(?:adaptive-)?(?:full-)?fit-in"),
    re.compile(r"stretch"),  # imagor
    re.compile(r"(?:-?(?:\d+|orig))?x(?:-?(?:\d+|orig))?"),  # size, - flips
    re.compile(r"\d+x\d+(?::\d+x\d+)?"),  # imagor padding
    re.compile(r"left|right|center"),
    re.compile(r"top|bottom|middle"),
    re.compile(r"smart"),
)
_SCHEME_ONE_SLASH = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/(?=[^/])")


def source_of(path_qs: str, grammar: str) -> str | None:
    """The canonical source image the request path names, or None (none readable, or the
    grammar is `none`)."""
    if grammar == "none" or not path_qs.startswith("/"):
        return None
    path, _, query = path_qs[1:].partition("?")
    try:
        if grammar == "imgproxy":
            found = _imgproxy(path.split("/"), query)
        elif grammar in ("imagor", "thumbor"):
            found = _thumbor_family(path.split("/"), query, imagor=grammar == "imagor")
        else:
            return None
    except (ValueError, UnicodeError):  # a malformed URL is a path with no source
        return None
    return None if found is None else canonical_source(found)


def canonical_source(text: str) -> str | None:
    """One spelling per source: scheme and host lower case (RFC 3986 §6.2.2.1), a scheme's
    lost slash restored. None for text that cannot be a source (empty, control characters)."""
    text = text.strip()
    if not text or not text.isprintable():
        return None
    text = _SCHEME_ONE_SLASH.sub(r"\1://", text, count=1)
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced [ in the host
        return text
    if not parts.scheme or not parts.netloc:
        return text
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=_lower_host(parts)))


def _lower_host(parts: SplitResult) -> str:
    userinfo, at, host = parts.netloc.rpartition("@")
    return f"{userinfo}{at}{host.lower()}"


def source_tag(grammar: str, source: str | None) -> str:
    """The purge tag of every entry derived from `source` (one word, whatever the source)."""
    if source is None:
        return f"{TAG_PREFIX}{grammar}-none"
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{TAG_PREFIX}{grammar}-{digest}"


def source_tags(path_qs: str, grammar: str) -> tuple[str, ...]:
    """The purge tags an entry stored for `path_qs` gets from its source: one, or none when
    no grammar is configured."""
    if grammar == "none":
        return ()
    return (source_tag(grammar, source_of(path_qs, grammar)),)


def tags_prefix(grammar: str) -> str:
    """What the source tag of every entry indexed under `grammar` starts with."""
    return f"{TAG_PREFIX}{grammar}-"


# -- imgproxy ----------------------------------------------------------------------------
def _imgproxy(segments: list[str], query: str) -> str | None:
    if len(segments) < 2 or not segments[0]:
        return None
    rest = segments[1:]  # after the signature (or `insecure`, `unsafe`, `_`...)
    if _is_legacy(rest):
        return _base64_source(rest[5:])
    start = 0
    while start < len(rest) and ":" in rest[start]:
        start += 1  # processing options are NAME:ARGS; base64 never holds a colon
    if start == len(rest):
        return None
    # `plain` ends the options; in presets-only mode bare preset names may come before it.
    for at in range(start, min(len(rest), start + MOST_PRESET_SEGMENTS + 1)):
        if rest[at] == "plain":
            return _plain_source("/".join(rest[at + 1 :]), query)
        if rest[at] == "enc" or not _BASE64URL.fullmatch(rest[at].partition(".")[0] or "-"):
            break
    if rest[start] == "enc":
        return None  # encrypted with the service's key: not readable here
    for skip in range(min(len(rest) - start, MOST_PRESET_SEGMENTS + 1)):
        found = _base64_source(rest[start + skip :])
        if found is not None:
            return found
    return None


def _is_legacy(rest: list[str]) -> bool:
    return (
        len(rest) >= 6
        and rest[0] in _LEGACY_TYPES
        and bool(_DIGITS.fullmatch(rest[1]))
        and bool(_DIGITS.fullmatch(rest[2]))
        and rest[4] in ("0", "1")
    )


def _plain_source(raw: str, query: str) -> str | None:
    if query:
        raw = f"{raw}?{query}"
    # `@EXT` asks for an output format; a source holding @ escapes it (imgproxy's rule).
    head, at, ext = raw.rpartition("@")
    if at and _EXTENSION.fullmatch(ext):
        raw = head
    return unquote(raw) or None


def _base64_source(chunks: list[str]) -> str | None:
    text = "".join(chunks).partition(".")[0]  # `.EXT`: base64url has no dot
    if not text or not _BASE64URL.fullmatch(text):
        return None
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not decoded or not decoded.isprintable() or any(c.isspace() for c in decoded):
        return None
    return decoded


# -- thumbor and imagor -------------------------------------------------------------------
def _thumbor_family(segments: list[str], query: str, *, imagor: bool) -> str | None:
    at = 1 if imagor and segments[0] == "params" else 0
    if at >= len(segments) or not (segments[at] == "unsafe" or _HASH.fullmatch(segments[at])):
        return None
    at += 1
    for step in _THUMBOR_STEPS:
        if at < len(segments) and step.fullmatch(segments[at]):
            at += 1
    image = "/".join(segments[at:])
    if image.startswith("filters:"):
        end = _filters_end(image)
        if end is None:
            return None
        image = image[end + 1 :]
    if not image:
        return None
    if query:
        image = f"{image}?{query}"
    return unquote(image)


def _filters_end(text: str) -> int | None:
    """Where `filters:...` ends: the first / outside parentheses (a filter's argument may
    be a URL, e.g. watermark(https://host/logo.png,...))."""
    depth = 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "/" and depth == 0:
            return index
    return None
