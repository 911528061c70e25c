"""detst ⇄ YOLO label files for the trainer: the only place with normalized ``cxcywh``.

Written values are clipped to [0, 1] exactly (ultralytics drops a whole image's labels
when one value exceeds 1), boxes under ``min_px`` are dropped and counted. An image
without boxes gets an empty label file, so it stays a background image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detst.boxes import clip_xyxy, cxcywh_norm_to_xyxy, xyxy_to_cxcywh_norm
from detst.errors import DatasetError
from detst.io.files import atomic_write_text
from detst.structures import Detections


def format_labels(dets: Detections, width: int, height: int, min_px: float = 1.0) -> tuple[str, int]:
    """-> (label file text, number of boxes dropped as under ``min_px``)."""
    xyxy = clip_xyxy(dets.xyxy, width, height)
    ok = ((xyxy[:, 2] - xyxy[:, 0]) >= min_px) & ((xyxy[:, 3] - xyxy[:, 1]) >= min_px)
    b = np.clip(xyxy_to_cxcywh_norm(xyxy[ok], width, height), 0.0, 1.0)
    lines = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, (x, y, w, h) in zip(dets.class_id[ok], b)]
    return "".join(line + "\n" for line in lines), int((~ok).sum())


def write_labels(path: Path, dets: Detections, width: int, height: int, min_px: float = 1.0) -> int:
    """Write one YOLO label file; returns the number of boxes dropped."""
    text, dropped = format_labels(dets, width, height, min_px)
    atomic_write_text(path, text)
    return dropped


def read_labels(path: Path, width: int, height: int, tolerance: float = 0.01) -> tuple[Detections, int]:
    """YOLO txt -> (Detections in pixels, number of values clipped). A missing file is a
    background image (no boxes). Values beyond [0 - tol, 1 + tol] are a DatasetError."""
    if not Path(path).exists():
        return Detections.empty(), 0
    rows, line_no = [], []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise DatasetError(f"{path}:{n}: expected 'class cx cy w h', got {line!r}")
        try:
            rows.append([float(v) for v in parts])
        except ValueError as e:
            raise DatasetError(f"{path}:{n}: not numbers: {line!r}") from e
        line_no.append(n)
    if not rows:
        return Detections.empty(), 0
    a = np.array(rows)
    b = a[:, 1:]
    if (b[:, 2:] < 0).any():
        k = int(np.argmax((b[:, 2:] < 0).any(1)))
        raise DatasetError(f"{path}:{line_no[k]}: box {b[k].tolist()} has a negative width/height")
    xyxy_n = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    if (xyxy_n < -tolerance).any() or (xyxy_n > 1 + tolerance).any():
        k = int(np.argmax(((xyxy_n < -tolerance) | (xyxy_n > 1 + tolerance)).any(1)))
        raise DatasetError(f"{path}:{line_no[k]}: box {b[k].tolist()} lies outside the image by more than {tolerance}")
    clipped = int(((xyxy_n < 0) | (xyxy_n > 1)).any(1).sum())
    xyxy = clip_xyxy(cxcywh_norm_to_xyxy(b, width, height), width, height)
    return Detections(xyxy, np.ones(len(a)), a[:, 0].astype(np.int64)), clipped
