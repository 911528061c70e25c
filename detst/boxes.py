"""Pure box math on (N, 4) xyxy absolute-pixel arrays, and the one size-bucket rule.

Size buckets (everywhere: filtering, evaluation, reports) follow COCO: small if
area < 32², medium if area < 96², large otherwise — area in original-image pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as _tv_box_iou

SIZE_BUCKETS = ("small", "medium", "large")
SMALL_MAX_AREA = 32.0**2
MEDIUM_MAX_AREA = 96.0**2


def size_bucket_index(area: np.ndarray) -> np.ndarray:
    """(N,) areas in px² -> (N,) int64: 0 small, 1 medium, 2 large."""
    area = np.asarray(area, dtype=np.float64)
    return np.where(area < SMALL_MAX_AREA, 0, np.where(area < MEDIUM_MAX_AREA, 1, 2)).astype(np.int64)


def size_bucket(area: float) -> str:
    return SIZE_BUCKETS[int(size_bucket_index(np.array([area]))[0])]


def areas_xyxy(xyxy: np.ndarray) -> np.ndarray:
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)


def clip_xyxy(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip boxes to the image rectangle [0, width] x [0, height]."""
    out = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def valid_mask(xyxy: np.ndarray, min_size: float = 1.0) -> np.ndarray:
    """(N,) bool: boxes at least ``min_size`` px wide and high."""
    xyxy = np.asarray(xyxy).reshape(-1, 4)
    return ((xyxy[:, 2] - xyxy[:, 0]) >= min_size) & ((xyxy[:, 3] - xyxy[:, 1]) >= min_size)


def iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) -> (N, M) IoU, float64, via torchvision; empty in, empty out."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return _tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def ioa_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) -> (N, M) intersection area / area of the ``a`` box, float64 (0 where a has no area).

    COCO's rule for a crowd (ignore) region ``b``: a detection ``a`` matches any part of it."""
    a = np.asarray(a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xyxy, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = areas_xyxy(a)[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def xyxy_to_cxcywh_norm(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    c = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    wh = xyxy[:, 2:] - xyxy[:, :2]
    scale = np.array([width, height], dtype=np.float64)
    return np.concatenate([c / scale, wh / scale], axis=1)


def cxcywh_norm_to_xyxy(cxcywh_norm: np.ndarray, width: int, height: int) -> np.ndarray:
    b = np.asarray(cxcywh_norm, dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height], dtype=np.float64)
    c, wh = b[:, :2] * scale, b[:, 2:] * scale
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)
