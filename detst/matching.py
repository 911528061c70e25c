"""Greedy per-class matching of predictions to ground truth at one IoU level (COCO's rule:
highest score first, each GT used once, a prediction on a crowd/ignore GT is neither TP nor FP).
Pure numpy + torchvision IoU; used by calibration, recall-at-threshold and bootstrap AP."""

from __future__ import annotations

import numpy as np

from detst.boxes import ioa_matrix, iou_matrix
from detst.structures import Detections


def match(gt: Detections, pred: Detections, iou_thr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """-> (pred_status (P,) int8: 1 TP, 0 FP, -1 ignored; gt_matched (G,) bool).

    GT rows with ``extras['iscrowd'] == 1`` are ignore regions: never counted as missed, and, as in
    COCO, a prediction overlaps one by intersection over the prediction's own area (not IoU)."""
    status = np.zeros(len(pred), np.int8)
    matched = np.zeros(len(gt), bool)
    if len(pred) == 0:
        return status, matched
    crowd = gt.extras.get("iscrowd", np.zeros(len(gt))).astype(bool)
    ious = iou_matrix(pred.xyxy, gt.xyxy)
    if crowd.any():
        ious[:, crowd] = ioa_matrix(pred.xyxy, gt.xyxy[crowd])
    order = np.argsort(-pred.score, kind="stable")
    for p in order:
        cand = (gt.class_id == pred.class_id[p]) & ~matched & ~crowd
        if len(gt) and cand.any():
            row = np.where(cand, ious[p], -1.0)
            g = int(np.argmax(row))
            if row[g] >= iou_thr:
                matched[g] = True
                status[p] = 1
                continue
        same_crowd = (gt.class_id == pred.class_id[p]) & crowd
        if len(gt) and same_crowd.any() and (ious[p][same_crowd] >= iou_thr).any():
            status[p] = -1
    return status, matched


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """COCO-style 101-point interpolated AP of one class; NaN when n_gt == 0."""
    if n_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0).mean())
