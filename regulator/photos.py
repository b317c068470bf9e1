"""A work order's photos: checked at the boundary, kept on disk by their SHA-256, the hash in the
ledger and its audit (issue 25).

On disk, not in the database: a phone's photo is megabytes, a city's ledger would grow by
gigabytes a month, and every PostgreSQL backup would carry them again. The file is named by its
hash (<dir>/ab/abcdef...), so the ledger's row proves which bytes were shown, a copy of the
directory is checked with `sha256sum`, and the same photo uploaded twice is one file. Back the
directory up with the database (docs/regulator.md).

The bytes are kept as uploaded: nothing is stripped or re-encoded (the hash is of what the phone
sent). What is refused: more than MAX_BYTES, nothing, anything whose first bytes are not JPEG,
PNG or WebP, or that Pillow does not decode to its end (a truncated JPEG), or that carries
markup a browser would run if it were ever sniffed as a page (an SVG, HTML or script appended
to an image: a polyglot). A photo's EXIF is not read at all: times come from the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import audit
from .refusal import Refusal

TABLES = """
CREATE TABLE IF NOT EXISTS work_order_photos (
    work_order INTEGER NOT NULL, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL,
    mime TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL, uploaded_at TEXT NOT NULL, PRIMARY KEY (work_order, sha256));
"""
MAX_BYTES = 8 * 1024 * 1024  # a phone's JPEG is 2 to 6 MB
MAX_PIXELS = 50_000_000  # 8K by 6K: more is a decompression bomb, not a photo
PER_POST = 4  # photos in one upload
PER_ORDER = 12  # photos a work order keeps
# what the first bytes say, and the format Pillow must then find (never the client's word)
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# markup a browser would act on, anywhere in the bytes: a polyglot's other half
MARKUP = re.compile(rb"<\s*(?:script|svg|html|body|iframe|object|embed|\?php|\?xml|!doctype)"
                    rb"|javascript:", re.IGNORECASE)  # fmt: skip
HEX64 = re.compile(r"[0-9a-f]{64}")


class PhotoError(Refusal):
    """An upload refused at the boundary; its message says why, translated in the console."""


@dataclass(frozen=True)
class Photo:
    sha256: str
    mime: str
    width: int
    height: int
    size: int


def _format(data: bytes) -> str | None:
    for magic, fmt in MAGIC:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _beside_pixels(data: bytes, fmt: str) -> bytes:
    """Every byte but the compressed pixels: those are as good as random, and "<svg" turns up in
    them by chance in about one 6 MB photo in a hundred (refused as markup). Metadata and
    anything after the image's end are kept for the markup scan."""
    if fmt == "JPEG":  # the segments up to the first scan, then what follows the last EOI
        i = 2
        while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] != 0xDA:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if i + 4 > len(data) or data[i] != 0xFF:  # no scan found where one must be: all
            return data
        end = data.rfind(b"\xff\xd9")
        return data[: i + 4] + (data[end + 2 :] if end > i else data[i:])
    head, i, size = (8, 8, 4) if fmt == "PNG" else (12, 12, 4)
    out = [data[:head]]
    while i + 8 <= len(data):  # PNG: length, type, data, CRC; RIFF: type, length (LE), data
        if fmt == "PNG":
            n, kind, start = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8], i + 8
            end = start + n + size
        else:
            kind, n, start = data[i : i + 4], int.from_bytes(data[i + 4 : i + 8], "little"), i + 8
            end = start + n + (n & 1)
        pixels = kind in (b"IDAT", b"fdAT", b"VP8 ", b"VP8L", b"ALPH", b"ANMF")
        out.append(data[i:start] if pixels and end <= len(data) else data[i:end])
        i = end
        if kind == b"IEND":
            break
    out.append(data[i:])  # what follows the image
    return b"".join(out)


def check(data: bytes) -> Photo:
    """The photo, if these bytes are one; PhotoError says why not."""
    if not data:
        raise PhotoError("photo: the file is empty")
    if len(data) > MAX_BYTES:
        raise PhotoError("photo: more than %(mb)d MB", mb=MAX_BYTES // (1024 * 1024))
    fmt = _format(data)
    if fmt is None:
        raise PhotoError("photo: not a JPEG, PNG or WebP image")
    if MARKUP.search(_beside_pixels(data, fmt)):
        raise PhotoError("photo: holds markup or script besides the image: refused")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise PhotoError("photo: more than %(mp)d megapixels",
                                 mp=MAX_PIXELS // 1_000_000)  # fmt: skip
            im.verify()  # the structure and checksums (PNG's CRCs)
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            im.load()  # every pixel decoded: a truncated JPEG fails here
    except PhotoError:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many kinds for one meaning: not an image
        raise PhotoError("photo: the image is damaged or cut short") from None
    return Photo(hashlib.sha256(data).hexdigest(), MIME[fmt], width, height, len(data))


def path_of(root: str | Path, sha256: str) -> Path:
    """Where a photo lives: from its hash alone (as the ledger holds it), never a name a user
    gave."""
    if not HEX64.fullmatch(sha256):
        raise ValueError("not a SHA-256: %r" % sha256[:80])
    return Path(root) / sha256[:2] / sha256


def keep(root: str | Path, data: bytes, photo: Photo) -> Path:
    """Write the bytes under their hash (atomically; already there: left as it is). A disk full
    or a directory gone bad is a PhotoError: the inspector reads that it was not kept (a bare
    500 left them guessing) and the work order's transaction takes no row for it."""
    try:
        return _keep(root, data, photo)
    except OSError as e:
        raise PhotoError(
            "photo: not saved: the photo directory cannot be written (%(error)s)",
            error=e.strerror or type(e).__name__,
        ) from None


def _keep(root: str | Path, data: bytes, photo: Photo) -> Path:
    path = path_of(root, photo.sha256)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def attach(store: Any, order: int, photo: Photo, by: str, at: str) -> bool:
    """The photo's row for the work order (inside the caller's transaction), audited with its
    hash. False: this work order has these bytes already."""
    cur = store.x(
        "INSERT INTO work_order_photos VALUES (?,?,?,?,?,?,?,?) "
        "ON CONFLICT (work_order, sha256) DO NOTHING",
        (order, photo.sha256, photo.size, photo.mime, photo.width, photo.height, by, at),
    )
    if cur.rowcount != 1:
        return False
    audit.record(store, at, by, "workorder.photo", "workorder:%d" % order, None,
                 {"sha256": photo.sha256, "bytes": photo.size, "mime": photo.mime,
                  "width": photo.width, "height": photo.height})  # fmt: skip
    return True


def of_order(store: Any, order: int) -> list[dict[str, Any]]:
    return store.rows("SELECT * FROM work_order_photos WHERE work_order = ? "
                      "ORDER BY uploaded_at, sha256", (order,))  # fmt: skip
