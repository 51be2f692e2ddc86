"""What of a library's error text may be logged: values of credential-bearing fields never.

Exception texts (an aiohttp repr carries the request it failed on, headers included) are
logged for operators but must not spread a client's Cookie or Authorization into log
pipelines that many people read."""

from __future__ import annotations

import re

SENSITIVE_FIELDS = ("cookie", "set-cookie", "authorization", "proxy-authorization", "x-api-key")

# `'Cookie': 'a=b'` (a multidict or dict repr) and `Cookie: a=b` (a header block).
_NAMES = "|".join(SENSITIVE_FIELDS)
_QUOTED = re.compile(
    r"""(['"])(""" + _NAMES + r""")\1(\s*[:,]\s*)(['"])(?:\\.|(?!\4).)*\4""", re.IGNORECASE
)
_PLAIN = re.compile(r"(?im)^(\s*(?:" + _NAMES + r")\s*:\s*).*$")


def redact(text: str) -> str:
    """`text` with the values of SENSITIVE_FIELDS replaced by <redacted>."""
    text = _QUOTED.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}<redacted>{m[4]}", text)
    return _PLAIN.sub(r"\1<redacted>", text)


def describe(exc: BaseException) -> str:
    """A library exception for the log: its type and text, credentials redacted."""
    return redact(f"{type(exc).__name__}: {exc}")
