"""Accept fields that browsers and tools send when they fetch an image (an <img> load, or a
navigation for the navigation rows), with the format class each belongs to when the classes
are avif, webp and jxl (in that order of preference)."""

from __future__ import annotations

# (who sends it, the Accept field, its class)
BROWSER_ACCEPTS: list[tuple[str, str, str]] = [
    ("Chrome 100+", "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", "avif"),
    (
        "Chrome 100+ navigation",
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
        "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        "avif",
    ),
    ("Chrome 62-84, Edge 79-84", "image/webp,image/apng,image/*,*/*;q=0.8", "webp"),
    ("Chrome 49-61", "image/webp,image/*,*/*;q=0.8", "webp"),
    ("Firefox 65-91", "image/webp,*/*", "webp"),
    ("Firefox 92-127", "image/avif,image/webp,*/*", "avif"),
    (
        "Firefox 128+",
        "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        "avif",
    ),
    ("Firefox 47-64, curl, wget", "*/*", "other"),
    ("Firefox 3-46", "image/png,image/*;q=0.8,*/*;q=0.5", "other"),
    (
        "Safari 14-15",
        "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5",
        "webp",
    ),
    (
        "Safari 16",
        "image/webp,image/avif,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        "avif",
    ),
    (
        "Safari 17+",
        "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
        "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
        "avif",
    ),
    ("Safari 13", "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5", "other"),
    (
        "Edge 18 (EdgeHTML)",
        "image/png, image/svg+xml, image/jxr, image/*; q=0.8, */*; q=0.5",
        "other",
    ),
    ("IE 11", "image/png, image/svg+xml, image/jxr, image/*;q=0.8, */*;q=0.5", "other"),
    ("IE 9-10", "image/png, image/svg+xml, image/*;q=0.8, */*;q=0.5", "other"),
    (
        "IE 8 navigation",
        "image/gif, image/jpeg, image/pjpeg, application/x-ms-application, "
        "application/xaml+xml, application/x-ms-xbap, */*",
        "other",
    ),
    (
        "Opera 12 (Presto)",
        "text/html, application/xml;q=0.9, application/xhtml+xml, image/png, image/webp, "
        "image/jpeg, image/gif, image/x-xbitmap, */*;q=0.1",
        "webp",
    ),
    (
        "Thorium (JPEG XL on)",
        "image/jxl,image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
        "avif",
    ),
    ("Chrome 32-48", "image/webp,*/*;q=0.8", "webp"),
]
