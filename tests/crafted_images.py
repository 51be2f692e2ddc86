"""Hostile and ordinary images built byte by byte for the image guard's tests.

Bombs are written by hand (struct, zlib) so that a header can claim any size without
anything of that size ever being encoded."""

from __future__ import annotations

import functools
import random
import struct
import zlib
from pathlib import Path

import pyvips

SAMPLES = Path(__file__).resolve().parent.parent / "proxy" / "samples"


def png_header_bomb(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG whose header claims width x height; its one IDAT holds a few
    rows, so the file is a few KB (PNG spec §11.2.2 IHDR, §11.2.4 IDAT)."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then the packed pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(row * 4, 9))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_with_app_segments(jpeg: bytes, at_least: int) -> bytes:
    """`jpeg` with APP9 segments of junk right after SOI, `at_least` bytes of them, so its
    frame header (SOF) comes that far into the file (ITU T.81 §B.2.4.6: a segment's length
    field counts itself, at most 65535)."""
    assert jpeg[:2] == b"\xff\xd8"
    segments = bytearray()
    while len(segments) < at_least:
        payload = b"pixcache-test".ljust(65533, b"\x00")
        segments += b"\xff\xe9" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + bytes(segments) + jpeg[2:]


def tiff_bomb(width: int, height: int, directory_at: int = 8) -> bytes:
    """An uncompressed 8-bit greyscale little-endian TIFF claiming width x height, whose
    image file directory sits at `directory_at` (TIFF 6.0 §2: the header points to it;
    writers may put it after the strips). The one strip holds 16 bytes."""
    strip_at = 8 if directory_at > 8 else 8 + 2 + 9 * 12 + 4
    tags = [
        (256, 4, width),  # ImageWidth, LONG
        (257, 4, height),  # ImageLength
        (258, 3, 8),  # BitsPerSample, SHORT
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # PhotometricInterpretation: black is zero
        (273, 4, strip_at),  # StripOffsets
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),  # RowsPerStrip: one strip
        (279, 4, 16),  # StripByteCounts
    ]
    directory = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        directory += struct.pack("<HHI", tag, kind, 1) + packed
    directory += struct.pack("<I", 0)  # no next directory
    header = b"II*\x00" + struct.pack("<I", directory_at)
    if directory_at > 8:
        filler = bytes(directory_at - 8)  # the strip, then padding up to the directory
        return header + filler + directory
    return header + directory + bytes(16)


def svg(width: int, height: int, prolog: str = "") -> bytes:
    return (
        f'{prolog}<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        '<rect width="10" height="10" fill="red"/></svg>'
    ).encode()


@functools.cache  # the same animation serves several tests, and a noise GIF takes a second
def animation(frames: int, side: int, *, noise: bool = False, fmt: str = ".gif") -> bytes:
    """An animated GIF or WebP of `frames` frames, side x side each. Noise frames
    compress badly, so each frame takes about side * side bytes."""
    pages = []
    for index in range(frames):
        page = pyvips.Image.gaussnoise(side, side, mean=128, sigma=60, seed=index)
        pages.append(page.cast("uchar") if noise else (pyvips.Image.black(side, side) + index))
    strip = pyvips.Image.arrayjoin([page.cast("uchar") for page in pages], across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", side)
    return strip.write_to_buffer(fmt)


def apng(frames: int, side: int, *, declared: int | None = None, seed: int = 0) -> bytes:
    """An animated PNG (PNG third edition §4.4) of `frames` grey frames of side x side
    random pixels (so each takes about side * side bytes), acTL declaring `declared`
    frames (as many as there are by default)."""
    rows = random.Random(seed).randbytes(side * side)
    image = zlib.compress(b"".join(b"\0" + rows[i : i + side] for i in range(0, len(rows), side)))
    parts = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)),
        _png_chunk(b"acTL", struct.pack(">II", frames if declared is None else declared, 0)),
    ]
    sequence = 0
    for index in range(frames):
        control = struct.pack(">IIIIIHHBB", sequence, side, side, 0, 0, 1, 10, 0, 0)
        parts.append(_png_chunk(b"fcTL", control))
        sequence += 1
        if index == 0:
            parts.append(_png_chunk(b"IDAT", image))
        else:
            parts.append(_png_chunk(b"fdAT", struct.pack(">I", sequence) + image))
            sequence += 1
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()
