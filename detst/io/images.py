"""Image files: size after EXIF orientation, and decoding to 3-channel 8-bit BGR.

Grayscale, RGBA and 16-bit images are converted explicitly (16-bit by range scaling);
unreadable or truncated files raise DatasetError naming the file. A user's image file
is only ever read.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detst.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 274
# Trap: importing ultralytics replaces PIL.Image.open with a wrapper that, on a file PIL cannot
# identify, tries to import (or install) pi-heif and raises ModuleNotFoundError when it is absent
# (we forbid auto-install). An unreadable image must stay a DatasetError, so ImportError is caught.
_PIL_ERRORS = (OSError, UnidentifiedImageError, ImportError)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels as stored on disk after EXIF orientation."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception:  # noqa: BLE001 - broken EXIF blocks are common; treat as upright
                orient = 1
    except _PIL_ERRORS as e:
        raise DatasetError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    return (h, w) if orient in (5, 6, 7, 8) else (w, h)


_TAILS = {".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9", ".png": b"IEND\xaeB`\x82"}


def is_intact(path: Path) -> bool:
    """False when a JPEG or PNG file is cut short (its end marker missing and the decoder fails).

    Reading the header (:func:`image_size`) does not notice truncation; ultralytics would then
    "restore" such a JPEG by re-saving it grey-filled and train on it. This reads the file's last
    bytes and, only when the marker is missing (trailing bytes after it are legal), decodes it."""
    tail = _TAILS.get(path.suffix.lower())
    if tail is None:
        return True
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(f.tell() - len(tail), 0))
        if f.read() == tail:
            return True
    try:
        read_image(path)
    except DatasetError:
        return False
    return True


def to_bgr8(img: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Any decoded array -> (H, W, 3) uint8 BGR, and a note of the conversion made (or None)."""
    note = []
    if img.dtype == np.uint16:
        lo, hi = float(img.min()), float(img.max())
        img = ((img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))).round().astype(np.uint8)
        note.append(f"16-bit scaled from [{lo:.0f}, {hi:.0f}]")
    elif img.dtype != np.uint8:
        note.append(f"{img.dtype} cast to uint8")
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        note.append("grayscale to BGR")
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        note.append("alpha dropped")
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        note.append("grayscale to BGR")
    return np.ascontiguousarray(img), ("; ".join(note) or None)


def _has_alpha(data: np.ndarray) -> bool:
    """True when the encoded image carries an alpha channel or a transparent colour (header only)."""
    if data[:3].tobytes() == b"\xff\xd8\xff":       # JPEG has neither: no need to parse the header
        return False
    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    except _PIL_ERRORS:
        return False


def read_image(path: Path) -> tuple[np.ndarray, str | None]:
    """Decode ``path`` (EXIF orientation applied) -> ((H, W, 3) uint8 BGR, conversion note)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    # keeps 16-bit and still applies EXIF; OpenCV drops alpha here (only IMREAD_UNCHANGED keeps it,
    # and that one ignores EXIF), so the alpha note comes from the file's header
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise DatasetError(f"{path}: cannot decode image (corrupt, truncated or not an image)")
    img, note = to_bgr8(img)
    if _has_alpha(data) and not (note and "alpha dropped" in note):
        note = "; ".join(filter(None, [note, "alpha dropped"]))
    return img, note


def is_plain_bgr8(path: Path) -> bool:
    """True when ultralytics can read ``path`` as-is (8-bit, 3 channels, intact)."""
    try:
        with Image.open(path) as im:
            # PIL reports a 16-bit RGB PNG as mode "RGB"; its raw mode ("RGB;16B") tells
            sixteen = im.format == "PNG" and any(";16" in str(t[3]) for t in im.tile)
            return im.mode == "RGB" and im.format in ("JPEG", "PNG", "BMP", "WEBP") and not sixteen
    except _PIL_ERRORS:
        return False


def iter_image_batches(records: list, batch: int, workers: int = 2, prefetch: int = 2,
                       prepare: Callable[[np.ndarray], Any] | None = None):
    """Decode ``records`` (anything with ``.path``) ahead in background threads.

    Yields (records, images, errors) per batch; a record that cannot be decoded has image
    None and an error message. ``prepare`` (e.g. a detector's letterbox) runs on each decoded
    image in the same threads and its result replaces the image. At most ``prefetch``
    batches are held in memory."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def load(rec):
        try:
            img, _ = read_image(rec.path)
            return (img if prepare is None else prepare(img)), None
        except DatasetError as e:
            return None, str(e)

    chunks = [records[i:i + batch] for i in range(0, len(records), batch)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending: deque = deque()
        for chunk in chunks[:prefetch]:
            pending.append((chunk, [pool.submit(load, r) for r in chunk]))
        nxt = prefetch
        while pending:
            chunk, futs = pending.popleft()
            if nxt < len(chunks):
                pending.append((chunks[nxt], [pool.submit(load, r) for r in chunks[nxt]]))
                nxt += 1
            res = [f.result() for f in futs]
            yield chunk, [r[0] for r in res], [r[1] for r in res]
