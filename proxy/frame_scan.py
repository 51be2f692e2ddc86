"""Reading the size and frames of a GIF, WebP or animated PNG as its bytes stream past.

Neither GIF nor WebP states its frame count up front: a GIF is a run of image descriptors
ended by a trailer, an animated WebP a run of ANMF chunks. libvips counts them in whatever
bytes it is given, so a header probe of the first bytes only sees the first frames, and an
animation with a few frames up front and thousands after them would pass. An animated PNG
declares its frames, but libvips reads its first frame only. These scanners walk the block
structure of the whole body as it streams (a few bytes read per block, the rest skipped)
so the guard can count every frame, and so a WebP, which libvips reads only whole, gets
its canvas size from the first bytes.
"""

from __future__ import annotations

import struct


class FrameScan:
    """Canvas and frames of one image seen so far; `feed` it every byte, in order."""

    def __init__(self) -> None:
        self.width = 0  # canvas, or the largest extent a frame reached, if larger
        self.height = 0
        self.canvas_known = False
        self.frames = 0
        self.done = False  # the structure ended (or broke): nothing further counts
        self._carry = b""  # the start of a field split across two chunks
        self._skip = 0  # bytes to pass over before the next field
        self._need = 0  # length of the next field
        self._state = ""
        self.offset = 0  # bytes fed so far, up to the end of the last field taken

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.done:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                self.offset += step
                view = view[step:]
                continue
            take = self._need - len(self._carry)
            if len(view) < take:
                self._carry += bytes(view)
                self.offset += len(view)
                return
            field = self._carry + bytes(view[:take])
            self._carry = b""
            self.offset += take
            view = view[take:]
            self._take(field)

    def _expect(self, state: str, need: int, skip: int = 0) -> None:
        self._state, self._need, self._skip = state, need, skip

    def _extend(self, right: int, bottom: int) -> None:
        self.width, self.height = max(self.width, right), max(self.height, bottom)

    def _take(self, field: bytes) -> None:
        raise NotImplementedError


class GifScan(FrameScan):
    """GIF89a (https://www.w3.org/Graphics/GIF/spec-gif89a.txt): header and logical
    screen (§17-18), then extension blocks and images made of data sub-blocks (§15),
    then the trailer (§27). Each image descriptor (§20) is one frame."""

    def __init__(self) -> None:
        super().__init__()
        self._expect("header", 13)

    def _take(self, field: bytes) -> None:
        state = self._state
        if state == "header":
            if field[:4] != b"GIF8":
                self.done = True
                return
            width, height, packed = struct.unpack_from("<HHB", field, 6)
            self._extend(width, height)
            self.canvas_known = True
            self._expect("block", 1, _color_table(packed))
        elif state == "block":
            if field == b"\x2c":  # image separator
                self._expect("image", 9)
            elif field == b"\x21":  # extension introducer, then its label
                self._expect("label", 1)
            else:  # the trailer (0x3B), or bytes no decoder reads on from
                self.done = True
        elif state == "label":
            self._expect("sub-block", 1)
        elif state == "image":
            left, top, width, height, packed = struct.unpack("<HHHHB", field)
            self.frames += 1
            self._extend(left + width, top + height)
            self._expect("lzw", 1, _color_table(packed))
        elif state == "lzw":
            self._expect("sub-block", 1)
        elif state == "sub-block":
            size = field[0]
            if size == 0:
                self._expect("block", 1)
            else:
                self._expect("sub-block", 1, size)


def _color_table(packed: int) -> int:
    # GIF89a §18, §20: a flag in the top bit, the table's size in the low three bits.
    return 3 * (2 << (packed & 7)) if packed & 0x80 else 0


class WebpScan(FrameScan):
    """WebP container (RFC 9649): a RIFF header, then chunks of FourCC, size and payload
    padded to even length (§2.3). The canvas comes from VP8X (§2.7), or for a still image
    from its VP8 (RFC 6386 §9.1) or VP8L (RFC 9649 §3.2.2) bitstream header; an animation
    has one ANMF chunk per frame (§2.7.1.1)."""

    def __init__(self) -> None:
        super().__init__()
        self._animated = False
        self._riff_end = 0
        self._payload_rest = 0
        self._expect("riff", 12)

    def _take(self, field: bytes) -> None:
        state = self._state
        if state == "riff":
            if field[:4] != b"RIFF" or field[8:12] != b"WEBP":
                self.done = True
                return
            self._riff_end = 8 + struct.unpack_from("<I", field, 4)[0]
            self._expect("chunk", 8)
        elif state == "chunk":
            if self.offset > self._riff_end:  # bytes past the RIFF size are not read
                self.done = True
                return
            fourcc = field[:4]
            (size,) = struct.unpack_from("<I", field, 4)
            padded = size + (size & 1)
            wanted = {b"VP8X": 10, b"VP8 ": 10, b"VP8L": 5, b"ANMF": 12}.get(fourcc, 0)
            if wanted and size >= wanted:
                self._payload_rest = padded - wanted
                self._expect(fourcc.decode("latin-1"), wanted)
            else:
                self._expect("chunk", 8, padded)
        else:
            self._chunk(state, field)
            self._expect("chunk", 8, self._payload_rest)

    def _chunk(self, fourcc: str, payload: bytes) -> None:
        if fourcc == "VP8X":
            self._animated = bool(payload[0] & 0x02)
            width = 1 + int.from_bytes(payload[4:7], "little")
            height = 1 + int.from_bytes(payload[7:10], "little")
            self._canvas(width, height)
            self.frames = max(self.frames, 0 if self._animated else 1)
        elif fourcc == "VP8 " and not self.canvas_known:
            # Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height.
            width, height = struct.unpack_from("<HH", payload, 6)
            self._canvas(width & 0x3FFF, height & 0x3FFF)
            self.frames = 1
        elif fourcc == "VP8L" and not self.canvas_known:
            # Signature 0x2f, then 14 bits width - 1 and 14 bits height - 1.
            (bits,) = struct.unpack_from("<I", payload, 1)
            self._canvas(1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
            self.frames = 1
        elif fourcc == "ANMF" and self._animated:
            x = 2 * int.from_bytes(payload[0:3], "little")
            y = 2 * int.from_bytes(payload[3:6], "little")
            width = 1 + int.from_bytes(payload[6:9], "little")
            height = 1 + int.from_bytes(payload[9:12], "little")
            self.frames += 1
            self._extend(x + width, y + height)

    def _canvas(self, width: int, height: int) -> None:
        self._extend(width, height)
        self.canvas_known = True


class PngScan(FrameScan):
    """PNG (ISO/IEC 15948 §5.3) and its animation, APNG (PNG, third edition, §4.4):
    a signature, then chunks of length, type, data and CRC. The canvas is IHDR's. An
    animation declares its frames in acTL, which must come before the first IDAT, and has
    one fcTL per frame, with the frame's size and offset. libvips (and so an image service)
    reads the first frame only, but a browser plays them all: they are counted."""

    def __init__(self) -> None:
        super().__init__()
        self._declared = 0  # the frames acTL declares (0: no acTL)
        self._controls = 0  # fcTL chunks so far
        self._rest = 0  # bytes of the chunk being read after its fields, CRC included
        self._expect("signature", 8)

    def _take(self, field: bytes) -> None:
        state = self._state
        if state == "signature":
            if field != b"\x89PNG\r\n\x1a\n":
                self.done = True
                return
            self.frames = 1
            self._expect("chunk", 8)
        elif state == "chunk":
            length, kind = struct.unpack(">I4s", field)
            if kind == b"IEND" or length >= 1 << 31 or (kind == b"IDAT" and not self._declared):
                self.done = True  # the end, a broken length, or a still image's data
                return
            wanted = {b"IHDR": 8, b"acTL": 4, b"fcTL": 20}.get(kind, 0)
            if wanted and length >= wanted:
                self._rest = length - wanted + 4
                self._expect(kind.decode("latin-1"), wanted)
            else:
                self._expect("chunk", 8, length + 4)
        else:
            self._chunk(state, field)
            self._expect("chunk", 8, self._rest)

    def _chunk(self, kind: str, data: bytes) -> None:
        if kind == "IHDR":
            self._extend(*struct.unpack(">II", data))
            self.canvas_known = True
        elif kind == "acTL":
            self._declared = max(1, struct.unpack(">I", data)[0])
        elif kind == "fcTL":  # an animation (an acTL without one shows as a still image)
            _sequence, width, height, left, top = struct.unpack(">IIIII", data)
            self._controls += 1
            self.frames = max(self.frames, self._declared, self._controls)
            self._extend(left + width, top + height)


def scan_for(kind: str) -> FrameScan | None:
    """A scanner for formats whose frames are counted as they stream; None for others."""
    if kind == "gif":
        return GifScan()
    if kind == "webp":
        return WebpScan()
    if kind == "png":
        return PngScan()
    return None
