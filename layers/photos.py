"""Event photos: checked, stored outside the database, published without location.

A photo is accepted when Pillow reads it as JPEG, PNG or WebP (the bytes decide, not the
file name or the declared type), within :data:`MAX_BYTES` and :data:`MAX_PIXELS`. Two
files are written under ``<data_dir>/photos``: the original (``private/``, for the
record) and a public copy re-encoded from the pixels alone, turned upright first, so no
EXIF block (GPS position, camera serial, owner) survives. Files are written to a
temporary name and renamed into place; :func:`remove` undoes a store whose database
transaction failed, so nothing is half-written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from layers.errors import InvalidInput, LayersError

MAX_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
FORMATS = {"JPEG": ("image/jpeg", "jpg"), "PNG": ("image/png", "png"),
           "WEBP": ("image/webp", "webp")}
STAGES = ("report", "after", "verify")
log = logging.getLogger("gridgov.photos")


class PhotoTooLarge(InvalidInput):
    """Bigger than the limit (413)."""


class PhotoStoreUnavailable(LayersError):
    """The photo store cannot be written (disk full, read-only, missing): 503."""


@dataclass(frozen=True)
class Stored:
    media_type: str
    bytes: int
    sha256: bytes
    private_path: str  # relative to the photo root
    public_path: str


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check(data: bytes) -> tuple[str, str, bytes]:
    """(media type, extension, public copy) of an acceptable photo; else a 4xx error."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise PhotoTooLarge(f"photo of {len(data):,} bytes is over the {MAX_BYTES:,}-byte limit",
                            parameter="photo")
    if not data:
        raise InvalidInput("the photo is empty", parameter="photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in FORMATS:
                raise InvalidInput(f"photos are JPEG, PNG or WebP, not {img.format}",
                                   parameter="photo")
            if img.width * img.height > MAX_PIXELS:
                raise PhotoTooLarge(f"photo of {img.width}x{img.height} pixels is over the "
                                    f"{MAX_PIXELS:,}-pixel limit", parameter="photo")
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"not a readable JPEG, PNG or WebP image ({exc})",
                           parameter="photo") from None
    fmt = img.format
    media, ext = FORMATS[fmt]
    upright = ImageOps.exif_transpose(img)
    if fmt == "JPEG" and upright.mode not in ("RGB", "L"):
        upright = upright.convert("RGB")
    out = io.BytesIO()
    # no exif=, no icc_profile=, no pnginfo=: the copy carries pixels only
    upright.save(out, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return media, ext, out.getvalue()


def store(root: Path, event_id: int, data: bytes) -> Stored:
    """Check and write ``data`` (original and public copy) under ``root``."""
    media, ext, public = check(data)
    sha = hashlib.sha256(data).digest()
    name = f"{event_id}/{sha.hex()[:32]}.{ext}"
    try:
        _write(root / "private" / name, data)
        _write(root / "public" / name, public)
    except OSError as exc:
        remove(root, "private/" + name, "public/" + name)
        raise PhotoStoreUnavailable(f"the photo store cannot take the photo: {exc.strerror}"
                                    ) from exc
    return Stored(media, len(data), sha, "private/" + name, "public/" + name)


def remove(root: Path, *relative: str) -> None:
    """Undo :func:`store` (its database transaction failed, or a write failed): delete
    these files, and their event's directory when it is left empty.  Never raises: a
    store that cannot be entered (``ENOTDIR``) holds nothing to delete, and a cleanup
    that fails is logged rather than hiding the fault being answered."""
    for rel in relative:
        file = root / rel
        try:
            file.unlink(missing_ok=True)
        except NotADirectoryError:
            continue
        except OSError as exc:
            log.warning("photo store: cannot remove %s: %s", file, exc)
            continue
        try:
            file.parent.rmdir()  # only when empty (another photo of the event stays)
        except OSError:
            pass


def path(root: Path, relative: str) -> Path:
    """The file behind a stored relative path, refusing anything outside ``root``."""
    p = (root / relative).resolve()
    if not p.is_relative_to(root.resolve()):
        raise InvalidInput("bad photo path")
    return p
