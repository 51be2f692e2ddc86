"""An origin response is exactly as long as its framing says (RFC 9112 §6.3).

aiohttp's response parser goes on parsing after a response whose Content-Length it has
counted off: bytes the origin sent beyond it are read as the start of another response,
and when they are not one, the parser fails, taking the complete response with it. Those
bytes are not part of the message; §6.3 lets the recipient answer with the message and
drop the connection. So the parser is only ever given the bytes of the current response:
its heads (1xx interim ones included) and then exactly Content-Length bytes of body.
Whatever follows is dropped, and the connection is marked to close: it never answers
another request.

Only what can be counted is cut: a chunked body, a body delimited by the connection's
close, or a head whose end cannot be found reaches the parser as before. Cutting can only
ever give the parser fewer bytes than today, never other ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HEAD_END = b"\r\n\r\n"
# Statuses whose response ends with its head whatever it declares (RFC 9112 §6.3 (1)).
BODILESS_STATUSES = frozenset({204, 304})


class ExactLengthParser:
    """Wraps aiohttp's response parser of one connection; `on_excess` is called once, with
    the log event that says why, when bytes beyond the response arrive or may (the
    connection must then never be reused)."""

    def __init__(
        self, parser: Any, *, skip_payload: bool, on_excess: Callable[[str], None]
    ) -> None:
        self._parser = parser
        self._skip_payload = skip_payload  # a response to HEAD: no body, whatever it says
        self._on_excess = on_excess
        self._body_left: int | None = None  # body bytes still to come; None: in a head
        self._counting = True  # False once the framing is not a plain Content-Length
        self._excess = False
        self._head_seen = b""  # the last bytes of the head so far, to find its end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def feed_eof(self) -> Any:
        return self._parser.feed_eof()

    def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
        if not data:
            # aiohttp's parser pauses while a body's reader is full and is resumed with an
            # empty feed, which drains the bytes it holds: those were counted already.
            return self._parser.feed_data(data)  # type: ignore[no-any-return]
        messages: list[Any] = []
        upgraded, tail = False, b""
        while data and not self._excess:
            if not self._counting:
                return self._feed(messages, data)
            if self._body_left is None:
                cut = self._end_of_head(data)
                piece, data = (data, b"") if cut is None else (data[:cut], data[cut:])
                found, upgraded, tail = self._parser.feed_data(piece)
                messages.extend(found)
                for message, _payload in found:
                    self._after_head(message)
                if upgraded:
                    self._counting = False
                    return messages, upgraded, tail + data
                continue
            if self._body_left == 0:
                self._excess = True  # RFC 9112 §6.3: not part of this response
                self._on_excess("body_longer_than_length")
                break
            take = min(self._body_left, len(data))
            found, upgraded, tail = self._parser.feed_data(data[:take])
            messages.extend(found)
            self._body_left -= take
            data = data[take:]
        return messages, upgraded, tail

    def _feed(self, messages: list[Any], data: bytes) -> tuple[Any, bool, bytes]:
        found, upgraded, tail = self._parser.feed_data(data)
        return [*messages, *found], upgraded, tail

    def _end_of_head(self, data: bytes) -> int | None:
        """Where in `data` the head being received ends, or None if not in `data`."""
        seen = self._head_seen
        at = (seen + data).find(HEAD_END)
        if at < 0:
            self._head_seen = (seen + data[-3:])[-3:]
            return None
        self._head_seen = b""
        return at + len(HEAD_END) - len(seen)

    def _after_head(self, message: Any) -> None:
        """How much body follows the head the parser just gave us."""
        code = message.code
        if 100 <= code < 200 and code != 101:
            self._body_left = None  # an interim response: another head follows
            return
        if self._skip_payload or code in BODILESS_STATUSES:
            self._body_left = 0
            if code == 204 and _declares_content(message.headers):
                # RFC 9110 §15.3.5: a 204 has no content. One whose origin thinks it has
                # may send it late, where it would be read as the next request's answer.
                self._excess = True
                self._on_excess("bodiless_response_declares_content")
            return
        length = message.headers.get("Content-Length")
        if message.chunked or length is None or not length.isdigit():
            self._counting = False  # framed otherwise: the parser alone decides
            return
        self._body_left = int(length)


def _declares_content(headers: Any) -> bool:
    length = headers.get("Content-Length", "0").strip()
    return "Transfer-Encoding" in headers or not length.isdigit() or int(length) > 0
