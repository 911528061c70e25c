"""Per-image match records and bootstrap confidence intervals over images.

Point estimates of mAP come from pycocotools (``detst.evaluate``); the intervals here
resample val images with replacement and recompute AP50 (COCO 101-point, per class,
averaged) and recall at the pseudo thresholds from per-image match records. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detst.boxes import size_bucket_index
from detst.matching import average_precision, match
from detst.structures import Detections


@dataclass
class ImageRecordStats:
    """One image's evidence: raw predictions' (class, score, tp) for AP, and per real GT box
    its class, size bucket and whether a prediction above its threshold found it."""

    pred_cls: np.ndarray
    pred_score: np.ndarray
    pred_tp: np.ndarray
    gt_cls: np.ndarray
    gt_size: np.ndarray
    gt_hit: np.ndarray


def image_records(gt: dict[int, Detections], preds: dict[int, Detections],
                  thr_fn: Callable[[int, Detections], np.ndarray] | None, iou: float = 0.5) -> dict[int, ImageRecordStats]:
    """``thr_fn(image_id, dets) -> (N,) thresholds`` decides which predictions count for recall."""
    out = {}
    for iid, g in gt.items():
        p = preds.get(iid, Detections.empty())
        status, _ = match(g, p, iou)
        real = ~g.extras.get("iscrowd", np.zeros(len(g))).astype(bool)
        if thr_fn is not None and len(p):
            above = p.score >= thr_fn(iid, p)
            _, hit = match(g, p[above], iou)
        else:
            hit = np.zeros(len(g), bool)
        keep = status >= 0
        out[iid] = ImageRecordStats(p.class_id[keep], p.score[keep], status[keep] == 1,
                                    g.class_id[real], size_bucket_index(g.area[real]), hit[real])
    return out


def ap50(recs: list[ImageRecordStats], n_classes: int) -> float | None:
    if not recs:
        return None
    cls = np.concatenate([r.pred_cls for r in recs])
    score = np.concatenate([r.pred_score for r in recs])
    tp = np.concatenate([r.pred_tp for r in recs])
    gcls = np.concatenate([r.gt_cls for r in recs])
    aps = [average_precision(score[cls == c], tp[cls == c], int((gcls == c).sum())) for c in range(n_classes)]
    aps = [a for a in aps if np.isfinite(a)]
    return float(np.mean(aps)) if aps else None


def recall(recs: list[ImageRecordStats], size: int | None = None) -> float | None:
    """Share of real GT boxes (of one size bucket, or all) found above the pseudo thresholds."""
    if not recs:
        return None
    hit = np.concatenate([r.gt_hit for r in recs])
    if size is not None:
        hit = hit[np.concatenate([r.gt_size for r in recs]) == size]
    return float(hit.mean()) if len(hit) else None


def bootstrap_ci(recs: dict[int, ImageRecordStats], ids: list[int], fn: Callable[[list[ImageRecordStats]], float | None],
                 n: int, rng: np.random.Generator, confidence: float = 0.9) -> tuple[float, float] | None:
    """Percentile interval of ``fn`` over ``n`` resamples of the images ``ids``; None if undefined."""
    ids = [i for i in ids if i in recs]
    if n <= 0 or not ids:
        return None
    vals = []
    for _ in range(n):
        pick = rng.integers(0, len(ids), len(ids))
        v = fn([recs[ids[k]] for k in pick])
        if v is not None:
            vals.append(v)
    if len(vals) < max(2, n // 2):
        return None
    a = (1 - confidence) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))
