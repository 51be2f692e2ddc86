"""The image guard: before any byte of a body reaches a client or the disk, libvips
identifies what its bytes are and, for an image, reads its header (sequential access,
header only, nothing decoded) from the first bytes; images over the pixel, dimension or
frame limits are refused with 422 and the rest of the body is never downloaded. An image
the guard cannot clear within its look-ahead (`probe_bytes`, `probe_seconds`) is refused
the same way: it never passes unjudged. Optionally, a whole image is decoded before its
entry is committed.

Decompression bombs, pixel floods and truncated images are what takes image services down
and what caches go on serving for days; this is where pixcache stops them. The declared
Content-Type is never trusted: a PNG labelled image/jpeg is judged as the PNG it is, and an
image labelled text/plain is judged all the same. Nor is Content-Encoding a way around it:
a gzip or deflate body is judged by what it decodes to, as its client will decode it, and
a body in any other coding is refused (fills ask only for codings the guard reads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips

from proxy import metrics
from proxy.content_coding import (
    DECODED_PIECE,
    READ_THROUGH,
    Decoding,
    content_coding,
    decode_file,
)
from proxy.errors import ImageRejected, ProxyError
from proxy.frame_scan import FrameScan, scan_for
from proxy.image_kind import MORE, identify
from proxy.origins.base import OriginResponse

# The first look at a body: every magic number libvips' loaders test is within its first
# 12 bytes (HEIF's brand). Each further look waits until the held bytes have doubled, so a
# body sent one byte at a time costs a few looks (log2 of the look-ahead), not one per byte.
FIRST_LOOK = 16


@dataclass(frozen=True)
class GuardLimits:
    mode: str = "header"  # off, header, decode
    max_width: int = 16384
    max_height: int = 16384
    max_pixels: int = 50_000_000  # per frame, as imgproxy's default
    max_frames: int = 100
    probe_bytes: int = 1 << 20  # most bytes held back while waiting for a readable header
    probe_seconds: float = 5.0  # longest a body is held back before it is judged
    refuse_invalid: bool = False  # refuse (422) a body labelled image/* that is no image


@dataclass(frozen=True)
class Probe:
    """What the header probe found: the format its bytes are (libvips' loader name) and
    its size. `problem` is set for a body labelled as an image whose bytes are no image
    (it is then not stored)."""

    width: int = 0
    height: int = 0
    frames: int = 1
    problem: str = ""
    kind: str = ""


@dataclass(frozen=True)
class Look:
    """One look at the held bytes: `decided` once the body is known to be an image within
    the limits (`probe`) or no image at all (`probe` None). `scan` goes on counting the
    frames of a GIF, WebP or PNG through the rest of the body."""

    decided: bool
    probe: Probe | None = None
    scan: FrameScan | None = None


UNDECIDED = Look(decided=False)


def look(data: bytes, complete: bool, limits: GuardLimits) -> Look:
    """Judge the first bytes of a body (all of it when `complete`). Raises ImageRejected
    for an image over a limit, or one whose header is unreadable though complete."""
    kind = identify(data, complete)
    if kind is MORE:
        return UNDECIDED
    if kind is None:
        return Look(decided=True)
    scan = scan_for(kind)
    if scan is not None:
        scan.feed(data)
    image = read_header(data)
    if image is not None:
        width, height, frames = image_size(image)
    elif complete:
        raise ImageRejected(f"body is a {kind} image whose header cannot be read")
    elif kind == "webp" and scan is not None and scan.canvas_known:
        # libvips reads a WebP only whole; its canvas is in the first 30 bytes (RFC 9649
        # §2.7) and its frames are counted as they stream.
        width = height = frames = 0
    else:
        return UNDECIDED
    if scan is not None:  # frames seen so far, and any frame that reaches past the canvas
        width, height = max(width, scan.width), max(height, scan.height)
        frames = max(frames, scan.frames)
    check_size(width, height, frames, limits)
    return Look(True, Probe(width, height, frames, kind=kind), scan)


def read_header(data: bytes) -> pyvips.Image | None:
    """libvips' header of an image in `data`, or None when it cannot be read (yet)."""
    try:
        return pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error:
        return None


def image_size(image: pyvips.Image) -> tuple[int, int, int]:
    """Width, height of one frame, and frames, as libvips reads them."""
    fields = image.get_fields()
    frames = image.get("n-pages") if "n-pages" in fields else 1
    height = image.get("page-height") if "page-height" in fields else image.height
    return image.width, height, frames


def check_size(width: int, height: int, frames: int, limits: GuardLimits) -> None:
    if width > limits.max_width or height > limits.max_height:
        raise ImageRejected(
            f"image is {width}x{height}, over {limits.max_width}x{limits.max_height}"
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(f"image has {width * height} pixels, over {limits.max_pixels}")
    if frames > limits.max_frames:
        raise ImageRejected(f"image has {frames} frames, over {limits.max_frames}")


class Guard:
    def __init__(self, limits: GuardLimits, decode_workers: int = 2, decode_queue: int = 16):
        self.limits = limits
        self._probe_pool = ThreadPoolExecutor(2, thread_name_prefix="pixcache-probe")
        self._decode_pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="pixcache-decode")
        # Decodes running plus waiting; past it, an image is served but not stored.
        self._decode_slots = asyncio.Semaphore(decode_workers + decode_queue)

    @property
    def enabled(self) -> bool:
        return self.limits.mode != "off"

    @property
    def decodes(self) -> bool:
        """Whether a whole image is decoded before it is stored (decode mode)."""
        return self.limits.mode == "decode"

    async def inspect(
        self, content_type: str, body: AsyncIterator[bytes], coding: str = ""
    ) -> tuple[Probe | None, AsyncIterator[bytes]]:
        """Hold the first bytes of a body until they are judged (decoded first, for a body
        in a content-coding of READ_THROUGH).

        Returns the probe (None when the body is no image) and an iterator over the whole
        body, held bytes first. Raises ImageRejected for an image over a limit, for a body
        not judged within the look-ahead, and (with refuse_invalid) for a body labelled
        image/* whose bytes are no image."""
        held: list[bytes] = []
        decoding = Decoding(coding, self.limits.probe_bytes) if coding else None
        seconds = self.limits.probe_seconds
        try:
            async with asyncio.timeout(seconds):
                found, unjudged = await self._look_ahead(body, held, decoding)
        except TimeoutError:
            raise ImageRejected(f"body not judged within {seconds:g} s") from None
        if found.probe is not None:
            if found.scan is not None:
                found.scan.feed(unjudged)  # the frames go on where the judged bytes end
                check_size(found.scan.width, found.scan.height, found.scan.frames, self.limits)
                watched = _watched(held, body, found.scan, self.limits, decoding)
                return found.probe, watched
            return found.probe, _chain(held, body)
        declared = content_type.split(";")[0].strip().lower()
        if not declared.startswith("image/"):
            return None, _chain(held, body)
        if self.limits.refuse_invalid:
            raise ImageRejected(f"body is not an image, though labelled {declared}")
        return Probe(problem="body is not an image"), _chain(held, body)

    async def _look_ahead(
        self, body: AsyncIterator[bytes], held: list[bytes], decoding: Decoding | None
    ) -> tuple[Look, bytes]:
        """The judgement of the first bytes (decoded, with `decoding`), and the bytes
        past the ones judged that were held (decoded) meanwhile."""
        loop = asyncio.get_running_loop()
        ahead = self.limits.probe_bytes
        plain = held if decoding is None else []  # the bytes judged, as a client sees them
        size, coded, next_look, complete = 0, 0, FIRST_LOOK, False
        while True:
            try:
                chunk = await anext(body)
            except StopAsyncIteration:
                complete = True
            else:
                held.append(chunk)
                if decoding is not None:
                    coded += len(chunk)
                    # Decoded only as far as the look-ahead reaches; the rest stays pending.
                    chunk = decoding.take(chunk, ahead + 1 - size)
                    plain.append(chunk)
                size += len(chunk)
                if size < next_look and coded <= 2 * ahead:
                    continue
            data = b"".join(plain)
            plain[:] = [data] if data else []
            # The look-ahead is exact: nothing past its first `probe_bytes` is looked at.
            judged, whole = (data, complete) if size <= ahead else (data[:ahead], False)
            found = await loop.run_in_executor(self._probe_pool, look, judged, whole, self.limits)
            if found.decided or whole:
                return found, data[len(judged) :]
            if size >= ahead:
                raise ImageRejected(f"image header not within the first {ahead} bytes")
            if coded > 2 * ahead:  # e.g. a gzip header that never ends: nothing decoded
                raise ImageRejected(f"body not decoded within its first {2 * ahead} bytes")
            next_look = min(2 * size, ahead)

    async def judge(self, response: OriginResponse) -> tuple[AsyncIterator[bytes], str, str]:
        """The response's body once its image header was judged (nothing reaches a client
        or the disk before); the problem of an image that only looks broken: it is served,
        not stored ('' when none); and the kind of image it is ('' for no image). A refused
        image raises, and the rest of its body is never downloaded."""
        if not self.enabled or response.status in (204, 304):  # no body (RFC 9110 §6.4.1)
            return response.body, "", ""
        content_type = response.headers.get("Content-Type", "")
        coding = content_coding(response.headers)
        try:
            if coding and coding not in READ_THROUGH:
                # Whatever its label: a client decodes the coding, then maybe an image.
                raise ImageRejected(f"body in content-coding {coding!r} cannot be judged")
            probe, body = await self.inspect(content_type, response.body, coding)
        except ProxyError as exc:
            if isinstance(exc, ImageRejected):
                metrics.GUARD_REJECTIONS.labels("header").inc()
            await response.stop()
            raise
        if probe is None:
            return body, "", ""
        return body, probe.problem, "" if probe.problem else probe.kind

    async def decodes_whole(self, path: Path, headers: Any) -> str:
        """Decode mode: '' if the image in the file (its response's `headers` say in which
        content-coding) decodes completely, else the reason it does not (or that the
        decode queue is full: then the image is not stored either)."""
        if self.limits.mode != "decode":
            return ""
        if self._decode_slots.locked():
            return "decode queue full"
        coding = content_coding(headers)
        async with self._decode_slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._decode_pool, _decode, str(path), coding, self.limits.probe_bytes
            )

    def close(self) -> None:
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)


def _decode(path: str, coding: str = "", floor: int = 1 << 20) -> str:
    """Decode every pixel, failing on a truncated file (libvips fail_on=truncated); a body
    in a content-coding is decoded into a file beside it first (as Decoding allows)."""
    plain = f"{path}.plain" if coding else path
    try:
        if coding:
            decode_file(path, plain, coding, floor)
        image = pyvips.Image.new_from_file(plain, access="sequential", fail_on="truncated")
        image.avg()  # pulls every pixel through the decoder, a strip at a time
    except pyvips.Error as exc:
        return "image does not decode: " + str(exc).splitlines()[0][:200]
    except ImageRejected as exc:
        return exc.message
    except OSError as exc:  # no room for the decoded copy (ENOSPC), or the file went away
        return f"image not decoded: {exc.strerror or exc}"
    finally:
        if plain != path:
            Path(plain).unlink(missing_ok=True)
    return ""


async def _chain(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk


async def _watched(
    held: list[bytes],
    rest: AsyncIterator[bytes],
    scan: FrameScan,
    limits: GuardLimits,
    decoding: Decoding | None,
) -> AsyncIterator[bytes]:
    """The body, every frame past the held bytes counted as it streams (decoded, with
    `decoding`). The response has begun by then, so a frame over a limit cuts it (the
    client sees an aborted body) and nothing is stored; the rest is never downloaded."""

    def count(coded: bytes) -> None:
        """Feed the scanner what `coded` adds (with `decoding`, what it left pending too)."""
        try:
            while not scan.done:
                plain = coded if decoding is None else decoding.take(coded, DECODED_PIECE)
                coded = b""
                if not plain:
                    return
                scan.feed(plain)
                check_size(scan.width, scan.height, scan.frames, limits)
        except ImageRejected:
            metrics.GUARD_REJECTIONS.labels("stream").inc()
            raise

    for chunk in held:
        yield chunk
    try:
        async for chunk in rest:
            count(chunk)
            yield chunk
        count(b"")  # the end of the decoded body
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()
