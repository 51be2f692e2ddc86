"""structlog set-up: JSON lines when stdout is not a TTY, readable lines when it is.

The `request` event, one per request, is the hottest line pixcache writes. When lines are
JSON it is rendered by `request_event` directly, as structlog's chain below would render
it (context variables, the fields, event, level, timestamp; json.dumps with its default
separators), at about a third of the cost; otherwise it goes through structlog like every
other event."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
from typing import Any, TextIO

import structlog

_request_log = structlog.get_logger("pixcache.request")


# Lines written at once: up to the size a pipe writes atomically (PIPE_BUF on Linux), so
# that the lines of several workers sharing stdout never interleave. A line longer than that
# (a path near --max-header-size) goes out in a write of its own, whole into a file but, into
# a pipe, possibly interleaved with another worker's, as structlog's own lines always were.
BATCH_BYTES = 4096


class _RequestLines:
    """`request` events as JSON lines on `stream`. The lines of one turn of the event loop
    go out in one write (at most BATCH_BYTES), at the end of that turn: a busy worker makes
    one write for many requests, an idle one writes each line at once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.encode = json.JSONEncoder().encode
        self._second = -1
        self._second_text = ""
        self._pending: list[str] = []
        self._pending_bytes = 0
        atexit.register(self.flush)

    def write(self, fields: dict[str, Any]) -> None:
        event = structlog.contextvars.get_contextvars()
        event.update(fields)
        event["event"] = "request"
        event["level"] = "info"
        event["timestamp"] = self._timestamp(time.time())
        self.add(self.encode(event) + "\n")

    def head(self, fields: dict[str, Any]) -> str:
        """The start of a line whose fields are known in advance (a hot hit's): the text
        of the context variables and `fields`, up to the comma after the last one."""
        event = structlog.contextvars.get_contextvars()
        event.update(fields)
        return self.encode(event)[:-1] + ", "

    def write_end(self, head: str, duration: float, request_id: str) -> None:
        """A line started by `head`: the same text as `write` gives for its fields."""
        self.add(
            f'{head}"duration": {duration!r}, "request_id": "{request_id}", "event": '
            f'"request", "level": "info", "timestamp": "{self._timestamp(time.time())}"}}\n'
        )

    def add(self, line: str) -> None:
        if self._pending_bytes + len(line) > BATCH_BYTES:
            self.flush()
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: write it now
                self.stream.write(line)
                self.stream.flush()
                return
        self._pending.append(line)
        self._pending_bytes += len(line)  # ASCII: json.dumps escapes the rest

    def flush(self) -> None:
        if self._pending:
            text, self._pending, self._pending_bytes = "".join(self._pending), [], 0
            self.stream.write(text)
            self.stream.flush()

    def _timestamp(self, now: float) -> str:
        """ISO 8601 in UTC with microseconds, as structlog's TimeStamper(fmt="iso")."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1e6):06d}Z"


# How the request event is written: None while the level leaves it out.
_request_lines: _RequestLines | None = None
_request_via_structlog = True


def request_logged() -> bool:
    """Whether the `request` event is written at all (the level may leave it out)."""
    return _request_via_structlog or _request_lines is not None


def request_lines() -> _RequestLines | None:
    """The JSON writer of `request` events, or None when they are not JSON lines."""
    return _request_lines


def request_event(fields: dict[str, Any]) -> None:
    if _request_lines is not None:
        _request_lines.write(fields)
    elif _request_via_structlog:
        _request_log.info("request", **fields)


def configure_logging(log_format: str, level: str) -> None:
    global _request_lines, _request_via_structlog
    as_json = log_format == "json" or (log_format == "auto" and not sys.stdout.isatty())
    renderer = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    threshold = getattr(logging, level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        # One write per line: lines of several worker processes never interleave.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    info = threshold <= logging.INFO
    _request_lines = _RequestLines(sys.stdout) if info and as_json else None
    _request_via_structlog = info and not as_json
