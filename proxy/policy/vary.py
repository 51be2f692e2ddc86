"""Secondary cache keys (RFC 9111 §4.1)."""

from __future__ import annotations

import hashlib

from proxy.policy.directives import Headers, list_values
from proxy.policy.negotiation import canonical_value

# Request fields that carry credentials. A stored response that varies on one (RFC 9111
# §4.1) keeps a digest of the request's value in its head, a file on disk, never the
# credential itself. (Entries stored by earlier versions hold the value itself: each is a
# vary-miss once, then stored again.)
CREDENTIAL_FIELDS = frozenset({"authorization", "proxy-authorization", "cookie"})


def vary_fields(response_headers: Headers) -> tuple[str, ...]:
    """The header names a response varies on, lower-cased, sorted, without duplicates."""
    return tuple(sorted({name.lower() for name in list_values(response_headers, "Vary")}))


def normalized_value(request_headers: Headers, name: str) -> str | None:
    """A request header's field lines combined and their whitespace runs collapsed: the
    first step of selecting_value (and all that versions before it stored).

    RFC 9111 §4.1: values may be normalised (whitespace, combining of several field lines)
    before comparing, so "gzip,  br" and "gzip, br" select the same variant. An absent header
    is distinct from an empty one."""
    lines = request_headers.getall(name, ())
    if not lines:
        return None
    return ", ".join(" ".join(line.split()) for line in lines)


def selecting_value(request_headers: Headers, name: str) -> str | None:
    """A request header's value as it selects a variant: normalised, then in its field's
    canonical form (RFC 9111 §4.1: "normalizing both header field values in a way that is
    known to have identical semantics"; proxy/policy/negotiation.py says which fields).

    Entries stored by earlier versions hold the value as normalized_value gave it. Every
    canonical form is a fixed point (its own canonical form), so such an entry matches a
    request exactly when its stored value is this request's canonical value, which means
    its own request was equivalent to this one; otherwise it is a vary-miss."""
    value = normalized_value(request_headers, name)
    if value is None:
        return None
    if name.lower() in CREDENTIAL_FIELDS:
        # Equal credentials give equal digests, so variants are told apart as before.
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
    return canonical_value(name, value)


def vary_values(fields: tuple[str, ...], request_headers: Headers) -> dict[str, str | None]:
    return {name: selecting_value(request_headers, name) for name in fields}


def vary_matches(
    fields: tuple[str, ...], stored_values: dict[str, str | None], request_headers: Headers
) -> bool:
    """§4.1: a stored response is selected only if every field it varies on matches."""
    if "*" in fields:
        return False
    return vary_values(fields, request_headers) == {n: stored_values.get(n) for n in fields}


class RequestVary:
    """A request's side of selecting a stored variant (§4.1), as a lookup asks for it
    (storage.Selector): storage follows its Vary markers, these rules choose."""

    def __init__(self, request_headers: Headers) -> None:
        self.request_headers = request_headers

    def values(self, fields: tuple[str, ...]) -> dict[str, str | None]:
        return vary_values(fields, self.request_headers)

    def matches(self, fields: tuple[str, ...], stored: dict[str, str | None]) -> bool:
        return vary_matches(fields, stored, self.request_headers)
