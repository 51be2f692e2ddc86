"""The image guard's judgement of a body's first bytes (proxy/guard.py `look`), of what
format they are (proxy/image_kind.py) and of GIF and WebP frames as they stream
(proxy/frame_scan.py), with the real libvips."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import pyvips

from proxy.frame_scan import GifScan, WebpScan
from proxy.guard import GuardLimits, ImageRejected, _decode, check_size, look
from proxy.image_kind import MORE, identify
from tests.crafted_images import animation, png_header_bomb, sample, svg, tiff_bomb

LIMITS = GuardLimits()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (sample("gradient.jpg"), "jpeg"),
        (sample("gradient.png"), "png"),
        (sample("gradient-small.webp"), "webp"),
        (animation(3, 8), "gif"),
        (tiff_bomb(10, 10), "tiff"),
        (svg(10, 10), "svg"),
        (svg(10, 10, prolog='<?xml version="1.0"?>\n<!-- made by hand -->\n'), "svg"),
        (svg(10, 10, prolog='<!DOCTYPE svg [<!ENTITY a "]><html>">]>'), "svg"),
        (gzip.compress(svg(10, 10)), "svg"),
        (b'<!DOCTYPE html><html><body><svg width="9" height="9"/></body></html>', None),
        (b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><svg/></html>', None),
        (b'{"svg": "<svg/>"}', None),
        (b"GIF is a word, not an image", None),
        (b"", None),
    ],
    ids=lambda value: value if isinstance(value, str) or value is None else None,
)
def test_the_bytes_decide_the_format(data: bytes, kind: str | None) -> None:
    assert identify(data, complete=True) == kind


def test_a_tiff_is_a_tiff_before_libvips_can_read_its_directory() -> None:
    late = tiff_bomb(10, 10, directory_at=1 << 20)
    assert identify(late[:4096], complete=False) == "tiff"
    assert look(late[:4096], False, LIMITS).decided is False


def test_an_xml_prolog_waits_for_its_root_element() -> None:
    prolog = b'<?xml version="1.0"?>\n<!-- a comment that goes on'
    assert identify(prolog, complete=False) is MORE
    assert identify(prolog, complete=True) is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (png_header_bomb(100000, 100000)[:64], "100000x100000"),
        (tiff_bomb(100000, 100000), "100000x100000"),
        (svg(100000, 100000), "100000x100000"),
        (svg(9000, 9000), "81000000 pixels"),
        (animation(120, 8, noise=True), "120 frames"),
    ],
    ids=["png-first-64-bytes", "tiff", "svg", "svg-pixels", "gif-frames"],
)
def test_an_image_over_a_limit_is_rejected_from_its_first_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected, match=reason):
        look(data, False, LIMITS)


def test_an_image_whose_header_never_reads_is_rejected_once_complete() -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    assert look(broken, False, LIMITS).decided is False
    with pytest.raises(ImageRejected, match="png image whose header cannot be read"):
        look(broken, True, LIMITS)


def test_a_heif_image_is_judged_whole() -> None:
    avif = pyvips.Image.gaussnoise(64, 48, seed=2).cast("uchar").write_to_buffer(".avif")
    assert look(avif[: len(avif) // 2], False, LIMITS).decided is False
    found = look(avif, True, LIMITS)
    assert found.probe is not None and (found.probe.kind, found.probe.width) == ("heif", 64)


def _webp_header(width: int, height: int, *, animated: bool) -> bytes:
    # RFC 9649 §2.7: VP8X flags (animation is bit 1), then canvas width - 1, height - 1.
    vp8x = bytes([0x02 if animated else 0, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", 4 + len(chunk) + 100_000) + b"WEBP" + chunk


def test_a_webp_canvas_is_read_from_its_first_bytes() -> None:
    with pytest.raises(ImageRejected, match="60000x60000"):
        look(_webp_header(60000, 60000, animated=False) + bytes(40), False, LIMITS)
    found = look(_webp_header(600, 400, animated=False) + bytes(40), False, LIMITS)
    assert found.probe is not None and (found.probe.width, found.probe.height) == (600, 400)


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_scans_count_every_frame_whatever_the_chunking(step: int) -> None:
    for scan, data in ((GifScan(), animation(23, 12, noise=True)),
                       (WebpScan(), animation(23, 12, noise=True, fmt=".webp"))):  # fmt: skip
        for at in range(0, len(data), step):
            scan.feed(data[at : at + step])
        assert (scan.frames, scan.width, scan.height) == (23, 12, 12)


def _gif(frames: list[tuple[int, int]]) -> bytes:
    """A GIF89a with a 10x10 screen and one frame per (width, height), each at 0,0 with a
    2-colour local table and one byte of LZW data (GIF89a §18, §20, §22)."""
    out = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    for width, height in frames:
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0x80)
        out += b"\x00\x00\x00\xff\xff\xff" + b"\x02" + b"\x01\x44" + b"\x00"
    return out + b"\x3b"


def test_a_gif_frame_reaching_past_the_limits_is_seen() -> None:
    scan = GifScan()
    scan.feed(_gif([(10, 10), (10, 10), (60000, 1)]))
    assert scan.frames == 3 and scan.width == 60000 and scan.done
    with pytest.raises(ImageRejected, match="60000x10"):
        check_size(scan.width, scan.height, scan.frames, LIMITS)


def test_bytes_after_the_gif_trailer_are_not_frames() -> None:
    scan = GifScan()
    scan.feed(_gif([(10, 10)]) + _gif([(10, 10)] * 5)[13:])
    assert scan.frames == 1 and scan.done


def test_a_decoded_copy_that_cannot_be_written_is_a_reason_not_to_store(tmp_path: Path) -> None:
    """Decode mode decodes a coded body into a file beside it; when that file cannot be
    written (a full disk; here its name leads into a directory that does not exist), the
    image is not stored, and the fill does not crash."""
    coded = tmp_path / "entry.tmp"
    coded.write_bytes(gzip.compress(sample("gradient.jpg")))
    assert _decode(str(coded), "gzip") == ""
    (tmp_path / "entry.tmp.plain").symlink_to(tmp_path / "gone" / "plain")
    assert _decode(str(coded), "gzip") == "image not decoded: No such file or directory"
