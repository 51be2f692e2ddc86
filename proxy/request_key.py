"""A request as the cache keys it: its target through the key rule (proxy/policy/cache_key.py)
and, with format classes on, its Accept replaced by its class's canonical Accept
(proxy/policy/format_class.py). The handler takes the keyed request once, at the top, and
everything after it (the key, the Vary selection, the fields a fill forwards, the target the
origin is asked for) reads that one request, so what is keyed and what is fetched are the
same thing. docs/cache-key.md describes the rule for operators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.config import Config
from proxy.policy.cache_key import IDENTITY, QueryRule, cache_target
from proxy.policy.format_class import canonical_accept, format_class


@dataclass(frozen=True)
class RequestKeying:
    query: QueryRule = IDENTITY
    classes: tuple[str, ...] = ()  # format classes in order of preference; (): Accept as sent

    @classmethod
    def of(cls, config: Config) -> RequestKeying:
        query = QueryRule(
            config.sort_query_params, config.drop_query_params, config.signed_query_params
        )
        return cls(query, config.vary_accept_classes)

    def target(self, path_qs: str) -> str:
        """The one key rule: for requests, for invalidations and for purges."""
        return cache_target(path_qs, self.query)

    def keyed(self, request: web.Request) -> web.Request:
        """`request` itself when the rule changes nothing, else a copy with the normalised
        target and Accept (the same connection, body and state)."""
        url = request.rel_url
        target = self.target(url.raw_path_qs)
        headers = None
        if self.classes:
            accept = request.headers.getall("Accept", ())
            wanted = canonical_accept(format_class(", ".join(accept), self.classes))
            if list(accept) != [wanted]:
                headers = CIMultiDict(request.headers)
                headers.popall("Accept", None)
                headers["Accept"] = wanted
        changes: dict[str, Any] = {}
        if target != url.raw_path_qs:
            path, _, query = target.partition("?")
            # Built from its parts: a path such as `//x` must stay a path, never a host.
            changes["rel_url"] = URL.build(path=path, query_string=query, encoded=True)
        if headers is None:
            return request.clone(**changes) if changes else request
        try:
            return request.clone(**changes, headers=headers)
        except UnicodeEncodeError:
            # aiohttp re-encodes the raw header lines as strict UTF-8, which obs-text
            # (RFC 9110 §5.5, kept as surrogate escapes, proxy/wire.py) cannot be. Nothing on
            # the request path reads the raw lines; the parsed fields are what is forwarded.
            keyed = request.clone(**changes)
            keyed._headers = CIMultiDictProxy(headers)  # noqa: SLF001
            return keyed


AS_RECEIVED = RequestKeying()  # the rule off: every request keyed and fetched as it came
