"""Our own small error hierarchy. Each origin maps its library's exceptions into these once,
at its boundary; the handler only ever sees these and turns them into a status."""

from __future__ import annotations


class ProxyError(Exception):
    """Base: every error that reaches the handler knows the status it becomes.

    `message` is composed by pixcache from what it knows (stage, seconds, an S3 error code,
    an image's size) and may reach the client; `detail` is the library's own text (a repr,
    an OS error with addresses) and goes to the log only, redacted (proxy/redact.py): it may
    carry the forwarded request's URL and header values (invariant 7)."""

    status = 502
    event = "proxy_error"
    stage: str | None = None  # which stage of an origin fetch failed, where one did
    # Seconds each stage of the failed fetch took before it failed, where the origin timed
    # them (its OriginResponse.timings): traces place the failed stage after them.
    timings: dict[str, float] | None = None

    def __init__(self, message: str, *, origin: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.origin = origin
        self.detail = detail


class OriginTimeout(ProxyError):
    """A deadline expired; `stage` names which: connect, tls, headers, read or total."""

    status = 504
    event = "origin_timeout"

    def __init__(self, stage: str, seconds: float, *, origin: str = "") -> None:
        super().__init__(f"origin {stage} timeout after {seconds:g}s", origin=origin)
        self.stage = stage
        self.seconds = seconds


class OriginUnavailable(ProxyError):
    """The origin could not be reached or broke the protocol (refused, reset, bad response)."""

    event = "origin_unavailable"

    def __init__(self, message: str, *, stage: str, origin: str = "", detail: str = "") -> None:
        super().__init__(message, origin=origin, detail=detail)
        self.stage = stage


class IncompleteBody(ProxyError):
    """The body ended early: fewer bytes than Content-Length, or a chunked body cut off."""

    event = "incomplete_body"
    stage = "read"


class LengthMismatch(ProxyError):
    """An origin adapter handed on more, or fewer, body bytes than the Content-Length it
    reported: the fill's own check, whatever the adapter enforced (invariant 2)."""

    event = "body_length_mismatch"
    stage = "read"


class InternalError(ProxyError):
    """A bug of ours; the client still gets a response that says what the cache did."""

    status = 500
    event = "internal_error"


class NotCached(ProxyError):
    """RFC 9111 §5.2.1.7: only-if-cached and nothing stored may answer."""

    status = 504
    event = "not_cached"


class Overloaded(ProxyError):
    """Too many fills, or too much memory: 503 with Retry-After; hits are still served."""

    status = 503
    event = "overloaded"
    retry_after = 1


class ImageRejected(ProxyError):
    """Over a limit, or not judged within the look-ahead: 422, with the reason; nothing
    stored, the rest never downloaded."""

    status = 422
    event = "image_rejected"
