"""What image format a body's bytes are, whatever its Content-Type says.

libvips decides: `vips_foreign_find_load_buffer` asks every buffer loader of this build
whether the bytes are its format, exactly as `pyvips.Image.new_from_buffer` (and so an
image service built on libvips) does before it loads them. Two corrections, both towards
treating more bodies as images, never fewer:

- TIFF: libvips' TIFF test opens the file with libtiff, which needs the image directory;
  that may sit at the end of the file, so a TIFF prefix is "no known format". The TIFF
  magic numbers decide instead (TIFF 6.0 §2, BigTIFF).
- SVG: libvips takes any UTF-8 text containing "<svg" for SVG (an HTML page with an inline
  icon, say), while librsvg only loads a document whose root element is <svg>. The root
  element decides, read past the XML declaration, comments and the DOCTYPE (XML 1.0 §2.8);
  gzip-compressed SVG (SVGZ) is inflated first, as libvips does.
"""

from __future__ import annotations

import re
import zlib
from enum import Enum

from pyvips import ffi, vips_lib


class Undecided(Enum):
    """More bytes are needed before the kind of a body is known."""

    MORE = "more"


MORE = Undecided.MORE

# TIFF 6.0 §2 (byte order, then 42) and BigTIFF (43).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_GZIP_MAGIC = b"\x1f\x8b"
# How much of an SVGZ body is inflated to find its root element.
_SVGZ_WINDOW = 64 << 10
_LOADER_NAME = re.compile(r"VipsForeignLoad(\w+?)(?:Buffer)?$")
_FORMATS = {"nsgif": "gif", "jpeg": "jpeg", "svg": "svg"}


def identify(data: bytes, complete: bool) -> str | None | Undecided:
    """The format of `data` ("png", "jpeg", "gif", "webp", "heif", "tiff", "svg", ...);
    None when it is no image libvips can load; MORE when only more bytes can tell (never
    once `complete`, when `data` is the whole body)."""
    loader = find_loader(data)
    if loader == "svg" or (loader is None and not complete and _may_become_svg(data)):
        root = _svg_root(data, complete)
        if root is MORE:
            return MORE
        return "svg" if root and loader == "svg" else None
    if loader is not None:
        return loader
    if data[:4] in _TIFF_MAGIC:
        return "tiff"
    return None


def find_loader(data: bytes) -> str | None:
    """libvips' own answer: the short name of the loader that claims `data`, or None."""
    found = vips_lib.vips_foreign_find_load_buffer(data, len(data))
    if found == ffi.NULL:
        vips_lib.vips_error_clear()  # "not a known format" is an answer, not an error
        return None
    name = ffi.string(found).decode()
    match = _LOADER_NAME.match(name)
    short = match.group(1).lower() if match else name.lower()
    return _FORMATS.get(short, short)


def _may_become_svg(data: bytes) -> bool:
    # Text that so far is only an XML prolog may still turn out to be an SVG document.
    return _svg_root(data, complete=False) is MORE


def _svg_root(data: bytes, complete: bool) -> bool | Undecided:
    """Whether the root element of the XML document in `data` is <svg>."""
    if data.startswith(_GZIP_MAGIC):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            text = inflater.decompress(data, _SVGZ_WINDOW)
        except zlib.error:
            return False
        complete = complete or inflater.eof or len(text) >= _SVGZ_WINDOW
    else:
        text = data
    name = _root_element(text)
    if name is MORE:
        return False if complete else MORE
    assert isinstance(name, str)
    # librsvg wants an <svg> root ("XML does not have <svg> root"); a prefixed name such
    # as <svg:svg> may be bound to the SVG namespace, so it counts too.
    return name.lower().rpartition(":")[2] == "svg"


_SPACE = b" \t\r\n"
_NAME_END = re.compile(rb"[\s/>]")


def _root_element(text: bytes) -> str | Undecided:
    """The name of the first element in `text` ("" when `text` is no XML), past the
    prolog: declaration, processing instructions, comments, DOCTYPE (XML 1.0 §2.8)."""
    at = 3 if text.startswith(b"\xef\xbb\xbf") else 0  # UTF-8 byte order mark
    while True:
        while at < len(text) and text[at] in _SPACE:
            at += 1
        if at >= len(text):
            return MORE
        if text[at : at + 1] != b"<":
            return ""
        if text.startswith(b"<?", at):
            end = _end_of(text, b"?>", at + 2)
        elif text.startswith(b"<!--", at):
            end = _end_of(text, b"-->", at + 4)
        elif text.startswith(b"<!", at):
            end = _doctype_end(text, at + 2)
        else:
            match = _NAME_END.search(text, at + 1)
            if match is None:
                return MORE if len(text) - at < 256 else ""
            return text[at + 1 : match.start()].decode("utf-8", "replace")
        if end < 0:  # the declaration or comment has not ended yet
            return MORE
        at = end + 1


def _end_of(text: bytes, closer: bytes, at: int) -> int:
    """Where the last byte of the first `closer` from `at` is, or -1 if there is none."""
    found = text.find(closer, at)
    return -1 if found < 0 else found + len(closer) - 1


def _doctype_end(text: bytes, at: int) -> int:
    """Where the DOCTYPE declaration starting at `at` ends (its '>'), or -1 if not yet.

    Quoted literals and comments may hold '>' and ']' (XML 1.0 §2.8, [28]-[29]), so they
    are skipped whole: else a literal like "]><html>" would hide the real root element."""
    in_subset = False
    while at < len(text):
        char = text[at : at + 1]
        if char in (b'"', b"'"):
            at = text.find(char, at + 1)
            if at < 0:
                return -1
        elif text.startswith(b"<!--", at):
            at = _end_of(text, b"-->", at + 4)
            if at < 0:
                return -1
        elif text.startswith(b"<?", at):
            at = _end_of(text, b"?>", at + 2)
            if at < 0:
                return -1
        elif char == b"[":
            in_subset = True
        elif char == b"]":
            in_subset = False
        elif char == b">" and not in_subset:
            return at
        at += 1
    return -1
