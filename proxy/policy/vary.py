"""Secondary cache keys (RFC 9111 §4.1)."""

from __future__ import annotations

from proxy.policy.directives import Headers, list_values


def vary_fields(response_headers: Headers) -> tuple[str, ...]:
    """The header names a response varies on, lower-cased, sorted, without duplicates."""
    return tuple(sorted({name.lower() for name in list_values(response_headers, "Vary")}))


def normalized_value(request_headers: Headers, name: str) -> str | None:
    """A request header's value as it takes part in a key.

    RFC 9111 §4.1: values may be normalised (whitespace, combining of several field lines)
    before comparing, so "gzip,  br" and "gzip, br" select the same variant. An absent header
    is distinct from an empty one."""
    lines = request_headers.getall(name, ())
    if not lines:
        return None
    return ", ".join(" ".join(line.split()) for line in lines)


def vary_values(fields: tuple[str, ...], request_headers: Headers) -> dict[str, str | None]:
    return {name: normalized_value(request_headers, name) for name in fields}


def vary_matches(
    fields: tuple[str, ...], stored_values: dict[str, str | None], request_headers: Headers
) -> bool:
    """§4.1: a stored response is selected only if every field it varies on matches."""
    if "*" in fields:
        return False
    return vary_values(fields, request_headers) == {n: stored_values.get(n) for n in fields}
