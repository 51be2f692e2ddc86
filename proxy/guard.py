"""The image guard: before any byte of an image reaches a client or the disk, libvips reads
its header (sequential access, header only, nothing decoded) from the first bytes; images
over the pixel, dimension or frame limits are refused with 422 and the rest of the body is
never downloaded. Optionally, a whole image is decoded before its entry is committed.

Decompression bombs, pixel floods and truncated images are what takes image services down
and what caches go on serving for days; this is where pixcache stops them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyvips

from proxy.errors import ProxyError

# Magic numbers of the formats libvips reads, and the Content-Type each implies.
_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (4, b"ftypavif", "image/avif"),
    (4, b"ftypavis", "image/avif"),
    (4, b"ftypheic", "image/heic"),
    (4, b"ftypmif1", "image/heif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"BM", "image/bmp"),
]
# How many leading bytes the magic numbers need.
SNIFF_BYTES = 16


class ImageRejected(ProxyError):
    """Over a limit: 422, with the reason; nothing stored, the rest never downloaded."""

    status = 422
    event = "image_rejected"


@dataclass(frozen=True)
class GuardLimits:
    mode: str = "header"  # off, header, decode
    max_width: int = 16384
    max_height: int = 16384
    max_pixels: int = 50_000_000  # per frame, as imgproxy's default
    max_frames: int = 100
    probe_bytes: int = 1 << 20  # most bytes held back while waiting for a readable header
    probe_seconds: float = 5.0
    refuse_invalid: bool = False  # refuse (422) what claims to be an image and is not


@dataclass(frozen=True)
class Probe:
    """What the header probe found. `problem` is set when the body is not a readable
    image of its declared type (it is then not stored)."""

    width: int = 0
    height: int = 0
    frames: int = 1
    problem: str = ""


def sniff(head: bytes) -> str | None:
    """The image type the first bytes announce, if any."""
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def _same_family(declared: str, sniffed: str) -> bool:
    aliases = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/heif": "image/heic"}
    d, s = aliases.get(declared, declared), aliases.get(sniffed, sniffed)
    return d == s or {d, s} <= {"image/heic", "image/avif"}


def read_header(data: bytes) -> pyvips.Image | None:
    """libvips' header of an image in `data`, or None when it cannot be read (yet)."""
    try:
        return pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error:
        return None


def check_limits(image: pyvips.Image, limits: GuardLimits) -> Probe:
    fields = image.get_fields()
    frames = image.get("n-pages") if "n-pages" in fields else 1
    width, height = image.width, image.height
    if "page-height" in fields:
        height = image.get("page-height")
    probe = Probe(width, height, frames)
    if width > limits.max_width or height > limits.max_height:
        raise ImageRejected(
            f"image is {width}x{height}, over {limits.max_width}x{limits.max_height}"
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(f"image has {width * height} pixels, over {limits.max_pixels}")
    if frames > limits.max_frames:
        raise ImageRejected(f"image has {frames} frames, over {limits.max_frames}")
    return probe


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

    async def inspect(
        self, content_type: str, body: AsyncIterator[bytes]
    ) -> tuple[Probe | None, AsyncIterator[bytes]]:
        """Hold the first bytes of a body until its header can be judged.

        Returns the probe (None when the body is not an image) and an iterator over the
        whole body, held bytes first. Raises ImageRejected for a body over a limit, or
        (with refuse_invalid) one that claims to be an image and is not a readable one."""
        held: list[bytes] = []
        size = 0
        declared = content_type.split(";")[0].strip().lower()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.probe_seconds
        probe: Probe | None = None
        async for chunk in body:
            held.append(chunk)
            size += len(chunk)
            if size < SNIFF_BYTES and not declared.startswith("image/"):
                continue
            data = b"".join(held)
            sniffed = sniff(data)
            if not declared.startswith("image/") and sniffed is None:
                break  # not an image: nothing to hold back
            if sniffed is None or (
                declared.startswith("image/") and not _same_family(declared, sniffed)
            ):
                if declared.startswith("image/") and "svg" not in declared:
                    probe = Probe(problem=f"body is not {declared}")
                break
            image = await self._read_header(data, deadline)
            if image is not None:
                probe = check_limits(image, self.limits)
                break
            if size >= self.limits.probe_bytes or loop.time() >= deadline:
                probe = Probe(problem="image header unreadable")
                break
        if probe is not None and probe.problem and self.limits.refuse_invalid:
            raise ImageRejected(probe.problem)
        return probe, _chain(held, body)

    async def _read_header(self, data: bytes, deadline: float) -> pyvips.Image | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                return await loop.run_in_executor(self._probe_pool, read_header, data)
        except TimeoutError:
            return None

    async def decodes_whole(self, path: Path) -> str:
        """Decode mode: '' if the file decodes completely, else the reason it does not
        (or that the decode queue is full: then the image is not stored either)."""
        if self.limits.mode != "decode":
            return ""
        if self._decode_slots.locked():
            return "decode queue full"
        async with self._decode_slots:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._decode_pool, _decode, str(path))

    def close(self) -> None:
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)


def _decode(path: str) -> str:
    """Decode every pixel, failing on a truncated file (libvips fail_on=truncated)."""
    try:
        image = pyvips.Image.new_from_file(path, access="sequential", fail_on="truncated")
        image.avg()  # pulls every pixel through the decoder, a strip at a time
    except pyvips.Error as exc:
        return "image does not decode: " + str(exc).splitlines()[0][:200]
    return ""


async def _chain(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in held:
        yield chunk
    async for chunk in rest:
        yield chunk
