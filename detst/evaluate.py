"""COCO evaluation per slice, per class and per size bucket, in one pass.

pycocotools' per-image evaluation runs once over all images; each slice is then
accumulated from the subset of per-image results that belong to it. That gives exactly
what running pycocotools on each slice separately gives (``tests/test_evaluate.py``
checks it), at the cost of one evaluation. Undefined metrics (no GT: pycocotools' -1)
are ``None`` — "not applicable", never averaged and never a drop.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detst.boxes import SIZE_BUCKETS, xyxy_to_xywh
from detst.cocoeval_fast import FastCOCOeval, SubsetAccumulator
from detst.io.coco import gt_dataset
from detst.perf import paused_gc
from detst.structures import ClassMap, Detections, ImageRecord

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def _defined(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) or v < 0 else float(v)


def _coco_gt(images: list[ImageRecord], gt: dict[int, Detections], classes: ClassMap) -> COCO:
    coco = COCO()
    coco.dataset = gt_dataset(images, gt, classes)
    with _quiet():
        coco.createIndex()
    return coco


def _coco_dt(coco_gt: COCO, preds: dict[int, Detections], classes: ClassMap) -> COCO:
    """Results COCO built directly (``loadRes`` crashes on an empty list and needs ``info``)."""
    ids = [iid for iid in coco_gt.getImgIds() if preds.get(iid) is not None and len(preds[iid])]
    anns: list[dict[str, Any]] = []
    if ids:
        ds = [preds[i] for i in ids]
        xywh = xyxy_to_xywh(np.concatenate([d.xyxy for d in ds])).astype(np.float64)   # as .tolist() gives it
        img = np.repeat(np.asarray(ids, dtype=np.int64), [len(d) for d in ds]).tolist()
        cat = np.asarray(classes.category_ids)[np.concatenate([d.class_id for d in ds])].tolist()
        score = np.concatenate([d.score for d in ds]).astype(np.float64).tolist()
        area = (xywh[:, 2] * xywh[:, 3]).tolist()
        anns = [{"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": a, "score": sc, "iscrowd": 0}
                for k, (i, c, b, a, sc) in enumerate(zip(img, cat, xywh.tolist(), area, score))]
    dt = COCO()
    dt.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                  "annotations": anns}
    with _quiet():
        dt.createIndex()
    return dt


@dataclass
class SliceEval:
    """One slice's numbers: COCO stats, per-class AP50, recall@IoU.5 per size bucket, counts."""

    name: str
    n_images: int
    n_gt: int
    n_gt_by_size: dict[str, int]
    stats: dict[str, float | None]
    ap50_per_class: dict[str, float | None]
    recall50_by_size: dict[str, float | None]
    ap50_by_size: dict[str, float | None] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        return self.stats.get(name)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SliceEvaluator:
    """Evaluate once, read any slice. ``preds`` must be raw detections (low score floor)."""

    def __init__(self, images: list[ImageRecord], gt: dict[int, Detections], preds: dict[int, Detections],
                 classes: ClassMap) -> None:
        self.classes = classes
        self.images = images
        with paused_gc():
            self.coco_gt = _coco_gt(images, gt, classes)
            self.coco_dt = _coco_dt(self.coco_gt, preds, classes)
            self.E = FastCOCOeval(self.coco_gt, self.coco_dt, "bbox")
            with _quiet():
                self.E.evaluate()
            self.acc = SubsetAccumulator(self.E)

    def slice(self, name: str, image_ids: list[int]) -> SliceEval:
        ids = sorted(set(image_ids))
        gt_anns = [a for i in ids for a in self.coco_gt.imgToAnns.get(i, []) if not a.get("iscrowd")]
        n_by_size = {b: 0 for b in SIZE_BUCKETS}
        for a in gt_anns:
            n_by_size["small" if a["area"] < 32**2 else "medium" if a["area"] < 96**2 else "large"] += 1
        if not ids:
            return SliceEval(name, 0, 0, n_by_size, {k: None for k in STAT_NAMES},
                             {n: None for n in self.classes.names}, {b: None for b in SIZE_BUCKETS},
                             {b: None for b in SIZE_BUCKETS})
        prec, rec = self.acc.accumulate(ids)  # [T, R, K, A, M], [T, K, A, M] as pycocotools' eval
        stats = {k: _defined(v) for k, v in zip(STAT_NAMES, self.acc.summarize(prec, rec))}
        ap50 = {}
        for k, cname in enumerate(self.classes.names):
            p = prec[0, :, k, 0, 2]
            ap50[cname] = _defined(float(p[p > -1].mean())) if (p > -1).any() else None
        ap50_size = {}
        for a, bucket in enumerate(SIZE_BUCKETS, start=1):
            p = prec[0, :, :, a, 2]
            ap50_size[bucket] = _defined(float(p[p > -1].mean())) if (p > -1).any() else None
        r50 = {}
        for a, bucket in enumerate(SIZE_BUCKETS, start=1):
            r = rec[0, :, a, 2]
            # mean over classes that have GT in this bucket, as COCO averages AR
            r50[bucket] = _defined(float(r[r > -1].mean())) if (r > -1).any() else None
        return SliceEval(name, len(ids), len(gt_anns), n_by_size, stats, ap50, r50, ap50_size)


def evaluate_slices(images: list[ImageRecord], gt: dict[int, Detections], preds: dict[int, Detections],
                    classes: ClassMap, slices: dict[str, list[int]]) -> dict[str, SliceEval]:
    """slice name -> SliceEval, from one pycocotools evaluation over all ``images``."""
    ev = SliceEvaluator(images, gt, preds, classes)
    return {name: ev.slice(name, ids) for name, ids in slices.items()}


def evaluate_slices_reference(images: list[ImageRecord], gt: dict[int, Detections], preds: dict[int, Detections],
                              classes: ClassMap, slices: dict[str, list[int]]) -> dict[str, list[float]]:
    """Plain pycocotools run once per slice (the reference the one-pass path must equal)."""
    coco_gt = _coco_gt(images, gt, classes)
    coco_dt = _coco_dt(coco_gt, preds, classes)
    out = {}
    for name, ids in slices.items():
        E = COCOeval(coco_gt, coco_dt, "bbox")
        E.params.imgIds = sorted(set(ids))
        with _quiet():
            E.evaluate()
            E.accumulate()
            E.summarize()
        out[name] = [float(v) for v in E.stats]
    return out
