"""Validation: conditional requests to the origin (RFC 9111 §4.3), stored header updates
(§3.2, §4.3.4), and answering a client's own conditional request (RFC 9110 §13)."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.policy.directives import Headers, list_values, parse_http_date, single_date
from proxy.policy.hop_by_hop import HOP_BY_HOP

# A client's Range and preconditions are never forwarded on a fill: it fetches the whole,
# unconditional object for everyone, then answers each client's Range and conditions
# itself (RFC 9111 §4.3.1: a cache's own validators are the only conditions it sends).
NOT_FORWARDED_ON_FILL = frozenset(
    {"range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"}
)


def validators_for(stored_headers: Headers) -> CIMultiDict[str]:
    """RFC 9111 §4.3.1: If-None-Match from the stored ETag, If-Modified-Since from its
    Last-Modified."""
    out: CIMultiDict[str] = CIMultiDict()
    if "etag" in stored_headers:
        out["If-None-Match"] = stored_headers["ETag"]
    if "last-modified" in stored_headers:
        out["If-Modified-Since"] = stored_headers["Last-Modified"]
    return out


# RFC 9111 §3.2: every field of the new response replaces the stored one, except fields
# not stored at all (hop-by-hop, §3.1), Content-Length, and the fields whose update would
# break the integrity of the stored response, which §3.2 lets a cache omit: those that
# describe the stored bytes (Content-Encoding, Content-MD5, Content-Range) and the ETag
# that names them.
NOT_UPDATED = HOP_BY_HOP | {
    "content-length",
    "content-encoding",
    "content-md5",
    "content-range",
    "etag",
}


def updated_headers(stored: Headers, newer: Headers) -> list[tuple[str, str]]:
    """The stored fields after freshening them with a 304 (§4.3.4) or a HEAD (§4.3.5)."""
    replaced = {name.lower() for name in newer if name.lower() not in NOT_UPDATED}
    kept = [(n, v) for n, v in stored.items() if n.lower() not in replaced]
    return kept + [(n, v) for n, v in newer.items() if n.lower() in replaced]


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def weak_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2: weak comparison ignores the W/ prefix."""
    return _opaque(a) == _opaque(b)


def strong_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2: both strong and identical."""
    a, b = a.strip(), b.strip()
    return not a.startswith("W/") and not b.startswith("W/") and a == b


def not_modified(request_headers: Headers, response_headers: Headers) -> bool:
    """Whether a GET/HEAD with these conditionals is answered 304 by this response.

    RFC 9110 §13.1.2: If-None-Match uses weak comparison, and `*` matches any current
    representation. §13.1.3: If-Modified-Since only counts without If-None-Match (§13.2.2),
    and only with a valid date; the representation is unmodified if Last-Modified <= that
    date. RFC 9111 §4.3.2: without Last-Modified, a cache uses the stored Date instead; and
    If-Match and If-Unmodified-Since are not applicable to a cache (they are left alone)."""
    if "if-none-match" in request_headers:
        etag = response_headers.get("ETag")
        members = list_values(request_headers, "If-None-Match")
        if "*" in members:
            return True
        return etag is not None and any(weak_match(m, etag) for m in members)
    if "if-modified-since" in request_headers:
        since = single_date(request_headers, "If-Modified-Since")
        modified = single_date(response_headers, "Last-Modified")
        if "last-modified" not in response_headers:
            modified = single_date(response_headers, "Date")
        return since is not None and modified is not None and modified <= since
    return False


# RFC 9110 §15.4.5: a 304 carries the fields a 200 would have had among these.
NOT_MODIFIED_FIELDS = (
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
    "last-modified",
    "age",
)


def not_modified_headers(headers: Headers) -> CIMultiDict[str]:
    return CIMultiDict((n, v) for n, v in headers.items() if n.lower() in NOT_MODIFIED_FIELDS)


def if_range_allows(request_headers: Headers, stored_headers: Headers) -> bool:
    """RFC 9110 §13.1.5: a Range applies only if If-Range (when present) still matches:
    an entity-tag by strong comparison, or a date equal to Last-Modified."""
    value = request_headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        etag = stored_headers.get("ETag")
        return etag is not None and strong_match(value, etag)
    date = parse_http_date(value)
    modified = single_date(stored_headers, "Last-Modified")
    return date is not None and modified is not None and date == modified
