"""Canonical forms of request field values, so that requests that ask for the same thing
select the same stored variant (RFC 9111 §4.1) and requests that do not, do not.

RFC 9111 §4.1 lets a cache normalise selecting fields "in a way that is known to have
identical semantics, according to the header field's specification (e.g., reordering
field values when order is not significant; case-normalization, where values are defined
to be case-insensitive)". We know the grammar and semantics of the proactive-negotiation
fields, and canonicalise exactly these (NEGOTIATION_FIELDS):

- Accept (RFC 9110 §12.5.1): media ranges; type, subtype and parameter names lower-cased
  (§8.3.1), as is the value of `charset` (§8.3.2); a parameter value quoted only when it
  must be (§5.6.6: token and quoted-string forms are equivalent); parameters in order.
- Accept-Charset (§12.5.2): charset names lower-cased (§8.3.2).
- Accept-Encoding (§12.5.3): content codings lower-cased (§8.4.1).
- Accept-Language (§12.5.4): language ranges lower-cased (RFC 4647 §2.1).

In all four: whitespace around `,` and `;` dropped and empty list members ignored
(§5.6.1, §5.6.6); the weight kept with its member, written canonically (§12.4.2: `q=1` and
no weight are the same, `q=0.50` is `q=0.5`); members sorted, since §12.4.2 makes weights,
not positions, express preference. (RFC 9110 §12.5.4 notes that some recipients treat the
order of equally weighted languages as a preference, though it "cannot be relied upon";
user agents give each language its own weight.) A value that does not follow its field's
grammar is not reinterpreted: it gets only the list form below, which no canonical value
equals.

Every other field is read as a list (as combining its field lines already does, RFC 9110
§5.3): whitespace around its top-level commas is dropped, its members kept in order."""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.policy.directives import _split_outside_quotes

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'  # §5.6.4
_IS_TOKEN = re.compile(_TOKEN + r"\Z")
# §5.6.6: parameters = *( OWS ";" OWS [ parameter ] ); parameter = name "=" value.
_MEDIA_PARAMETER = re.compile(rf"[ \t]*;[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED}))?")
# §12.4.2: weight = OWS ";" OWS "q=" qvalue, the only parameter of the other fields.
_WEIGHT_PARAMETER = re.compile(rf"[ \t]*;[ \t]*({_TOKEN})=({_TOKEN})")
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
_MEDIA_RANGE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_CHARSET = re.compile(_TOKEN)  # token or "*", which is a token
_CODING = re.compile(_TOKEN)  # content-coding, "identity" or "*"
_LANGUAGE_RANGE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*")  # RFC 4647 §2.1


def list_form(value: str) -> str:
    """A list field's value with the whitespace around its top-level commas dropped
    (RFC 9110 §5.6.1): `a ,b` and `a, b` are the same value."""
    return ", ".join(member.strip(" \t") for member in _split_outside_quotes(value))


def canonical_value(name: str, value: str) -> str:
    """The form of `value` (already combined from its field lines) that takes part in a
    secondary cache key for field `name`."""
    canonicalise = NEGOTIATION_FIELDS.get(name.lower())
    canonical = canonicalise(value) if canonicalise is not None else None
    return canonical if canonical is not None else list_form(value)


def _members(value: str) -> list[str]:
    """§5.6.1: a recipient ignores empty list members and the whitespace around them."""
    return [m.strip(" \t") for m in _split_outside_quotes(value) if m.strip(" \t")]


def _weight(qvalue: str) -> str | None:
    """The canonical `;q=` suffix of a qvalue ("" for the default 1), None if invalid."""
    if not _QVALUE.match(qvalue):
        return None
    if qvalue.startswith("1"):
        return ""
    return ";q=0" + (f".{decimals}" if (decimals := qvalue[2:].rstrip("0")) else "")


def _parameters(text: str, pattern: re.Pattern[str]) -> list[tuple[str, str]] | None:
    """The name=value pairs of `text` (names lower-cased, values as sent), empty ones
    skipped; None when `text` is not a run of `pattern`."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = pattern.match(text, pos)
        if match is None or match.end() == pos:
            return None
        if match.group(1):
            out.append((match.group(1).lower(), match.group(2)))
        pos = match.end()
    return out


def _weighted_items(item: re.Pattern[str]) -> Callable[[str], str | None]:
    """Canonicalise a list of `item [ weight ]` (Accept-Charset, -Encoding, -Language)."""

    def canonicalise(value: str) -> str | None:
        out = []
        for member in _members(value):
            match = item.match(member)
            params = _parameters(member[match.end() :], _WEIGHT_PARAMETER) if match else None
            if match is None or params is None or len(params) > 1:
                return None
            weight: str | None = ""
            if params:
                name, qvalue = params[0]
                weight = _weight(qvalue) if name == "q" else None
            if weight is None:
                return None
            out.append(match.group().lower() + weight)
        return ", ".join(sorted(out))

    return canonicalise


def _accept(value: str) -> str | None:
    """Canonicalise Accept: `media-range [ weight ]` members (RFC 9110 §12.5.1)."""
    out = []
    for member in _members(value):
        match = _MEDIA_RANGE.match(member)
        if match is None:
            return None
        kind, subtype = match.group(1).lower(), match.group(2).lower()
        params = _parameters(member[match.end() :], _MEDIA_PARAMETER)
        if params is None or (kind == "*" and subtype != "*"):
            return None
        weight: str | None = ""
        if params and params[-1][0] == "q":  # the weight ends the member
            weight = _weight(params.pop()[1])
        if weight is None or any(name == "q" for name, _ in params):  # q=... then more
            return None
        rendered = [f"{kind}/{subtype}"]
        for name, raw in params:
            text = _unquoted(raw).lower() if name == "charset" else _unquoted(raw)
            rendered.append(f"{name}={_quoted_if_needed(text)}")
        out.append(";".join(rendered) + weight)
    return ", ".join(sorted(out))


def media_range_weights(value: str) -> list[tuple[str, float]]:
    """The members of an Accept value as (lower-cased `type/subtype`, weight) pairs, in
    order (RFC 9110 §12.5.1, §12.4.2: no weight is q=1). A member that does not follow the
    grammar is left out, the rest still count: one odd member should not change what the
    others say."""
    out = []
    for member in _members(value):
        match = _MEDIA_RANGE.match(member)
        params = _parameters(member[match.end() :], _MEDIA_PARAMETER) if match else None
        if match is None or params is None:
            continue
        weight = 1.0
        if params and params[-1][0] == "q":
            qvalue = params.pop()[1]
            if not _QVALUE.match(qvalue):
                continue
            weight = float(qvalue)
        if any(name == "q" for name, _ in params):
            continue
        out.append((f"{match.group(1)}/{match.group(2)}".lower(), weight))
    return out


def _unquoted(value: str) -> str:
    if not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def _quoted_if_needed(text: str) -> str:
    if _IS_TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


NEGOTIATION_FIELDS: dict[str, Callable[[str], str | None]] = {
    "accept": _accept,
    "accept-charset": _weighted_items(_CHARSET),
    "accept-encoding": _weighted_items(_CODING),
    "accept-language": _weighted_items(_LANGUAGE_RANGE),
}
