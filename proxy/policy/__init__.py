"""Pure HTTP caching policy (RFC 9111, RFC 9110, RFC 9211).

Nothing in this package imports asyncio or aiohttp, and every function that depends on the
time takes `now` as an argument, so each rule can be checked with a table or a property test.
Header collections are multidict's case-insensitive multi-maps.
"""
