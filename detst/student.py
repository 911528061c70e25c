"""Assemble a YOLO training folder (labeled + pseudo-labeled images) and its data yaml.

Images are linked, not copied, unless they must change: an image with ignore regions
gets a training copy with those regions filled flat grey (so the student is not taught
that an uncertain object is background), and an image that is not 8-bit 3-channel gets
a converted copy. File names come from image ids (``L00000012.jpg``), never the reverse,
so two files with the same name in different folders stay two images. The user's
files are only ever read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import yaml

from detst.io.files import atomic_write_bytes, atomic_write_text
from detst.io.images import is_plain_bgr8, read_image
from detst.io.yolo import write_labels
from detst.structures import Detections, ImageRecord


def fill_regions(img: np.ndarray, xyxy: np.ndarray, value: int) -> np.ndarray:
    """Copy of ``img`` with each (x1, y1, x2, y2) pixel box filled with ``value``."""
    out = img.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in np.asarray(xyxy).reshape(-1, 4):
        xa, ya = int(np.floor(max(x1, 0))), int(np.floor(max(y1, 0)))
        xb, yb = int(np.ceil(min(x2, w))), int(np.ceil(min(y2, h)))
        out[ya:yb, xa:xb] = value
    return out


def add_image(folder: Path, prefix: str, im: ImageRecord, boxes: Detections, ignore_xyxy: np.ndarray,
              fill: int, counts: Counter) -> Path:
    """Place one image and its label file in ``folder/images`` and ``folder/labels``."""
    stem = f"{prefix}{im.id:08d}"
    needs_copy = len(ignore_xyxy) > 0 or not is_plain_bgr8(im.path)
    suffix = ".jpg" if needs_copy else im.path.suffix.lower()
    dst = folder / "images" / f"{stem}{suffix}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if needs_copy:
        img, note = read_image(im.path)
        if note:
            counts[f"converted: {note}"] += 1
        if len(ignore_xyxy):
            img = fill_regions(img, ignore_xyxy, fill)
            counts["images_with_ignore_regions"] += 1
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        atomic_write_bytes(dst, buf.tobytes())
    else:
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.symlink(im.path, dst)
    counts["boxes_dropped_under_1px"] += write_labels(folder / "labels" / f"{stem}.txt", boxes, im.width, im.height)
    counts[f"images_{prefix}"] += 1
    return dst


def write_data_yaml(path: Path, train: list[Path], val: Path, names: list[str]) -> Path:
    """An ultralytics data yaml with absolute paths only."""
    d = {"path": str(path.parent.resolve()), "train": [str(p.resolve()) for p in train],
         "val": str(val.resolve()), "names": dict(enumerate(names))}
    atomic_write_text(path, yaml.safe_dump(d, sort_keys=False))
    return path


def build_set(folder: Path, prefix: str, items: Iterable[tuple[ImageRecord, Detections]], fill: int) -> Counter:
    """Write every (image, boxes) pair (a stream is consumed as it comes); boxes with
    extras['iscrowd'] == 1 become grey ignore regions."""
    counts: Counter = Counter()
    for im, d in items:
        crowd = d.extras.get("iscrowd", np.zeros(len(d))).astype(bool)
        add_image(folder, prefix, im, d[~crowd], d.xyxy[crowd], fill, counts)
    return counts
