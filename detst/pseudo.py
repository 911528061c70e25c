"""The teacher over the unlabeled pool: keep / ignore / drop, and the COCO export.

Pass 1 (``predict_pool``) streams the pool through the teacher in batches and appends
raw detections (score >= floor) to ``pool_predictions.jsonl`` as it goes, so memory is
bounded by the batch and an interrupted pass resumes where it stopped. Pass 2
(``select``) is pure: per box its calibrated threshold; score >= threshold is kept,
within ``ignore_band`` below it becomes an ignore region (``iscrowd: 1``), lower is
dropped; boxes of different classes on one object are reduced to the best one.
``pseudo_labels`` streams pass 2 over the row file, an image at a time (a class cap adds
a first pass for each class's cut); the export and the student's training set both read
it, so neither holds the pool's boxes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import nms
from tqdm import tqdm

from detst.boxes import SIZE_BUCKETS, iou_matrix, size_bucket_index
from detst.io import rows
from detst.io.coco import CocoWriter, annotation_entries, image_entry
from detst.models import Predictor, predict_records, run_batches
from detst.perf import paused_gc
from detst.structures import ClassMap, Detections, ImageRecord
from detst.thresholds import ANY, Thresholds

KEEP, IGNORE = 1, 2


# ------------------------------------------------------------------ pass 1: the teacher

def flip_consistent(dets: Detections, flipped: Detections, width: int, iou: float) -> np.ndarray:
    """(N,) bool: a box is kept when the mirrored view has a same-class box at IoU >= ``iou``.
    ``flipped`` holds the detections on the horizontally mirrored image (its own coordinates)."""
    if not len(dets) or not len(flipped):
        return np.zeros(len(dets), bool)
    back = flipped.xyxy.copy()
    back[:, [0, 2]] = width - flipped.xyxy[:, [2, 0]]
    ious = iou_matrix(dets.xyxy, back)
    same = dets.class_id[:, None] == flipped.class_id[None, :]
    return (np.where(same, ious, 0) >= iou).any(1)


def _predict_with_flips(predictor: Predictor, records: list[ImageRecord], conf: float, batch: int, workers: int,
                        flip_iou: float, counts: Counter):
    """Like ``predict_records``, keeping only boxes the mirrored view agrees with."""
    def both(imgs: list[np.ndarray]) -> list[tuple[Detections, int]]:
        preds = predictor.predict(imgs, conf=conf)
        flips = predictor.predict([np.ascontiguousarray(im[:, ::-1]) for im in imgs], conf=conf)
        out = []
        for im, d, f in zip(imgs, preds, flips):
            agree = flip_consistent(d, f, im.shape[1], flip_iou)
            out.append((d[agree], int((~agree).sum())))
        return out

    for recs, _, errors, res in run_batches(predictor, records, both, batch, workers):
        dets: list[Detections | None] = [None] * len(recs)
        for k, r in enumerate(res):
            if r is not None:
                dets[k] = r[0]
                counts["flip_disagree"] += r[1]
        yield recs, dets, errors


def predict_pool(predictor: Predictor, images: list[ImageRecord], jsonl: Path, *, conf: float, batch: int = 16,
                 workers: int = 2, flip_iou: float | None = None, progress: bool = True,
                 desc: str = "pseudo-labeling") -> Counter:
    """Append one JSON line per image (raw detections or a decode error) to ``jsonl``.
    Images already in the file are skipped (resume). Returns counts of what happened."""
    done = rows.repair(jsonl)        # a line cut by a crash is removed before appending
    todo = [im for im in images if im.id not in done]
    counts: Counter = Counter(resumed=len(images) - len(todo))
    with open(jsonl, "a") as f, tqdm(total=len(images), initial=len(images) - len(todo), desc=desc,
                                     unit="img", disable=not progress, dynamic_ncols=True) as bar:
        if flip_iou is None:
            batches = predict_records(predictor, todo, conf, batch, workers)
        else:
            batches = _predict_with_flips(predictor, todo, conf, batch, workers, flip_iou, counts)
        for recs, by_k, errors in batches:
            for k, rec in enumerate(recs):
                if errors[k] is not None:
                    row: dict[str, Any] = {"id": rec.id, "error": errors[k]}
                    counts["image_unreadable"] += 1
                else:
                    d = by_k[k]
                    row = {"id": rec.id, "xyxy": np.round(d.xyxy.astype(np.float64), 2).tolist(),
                           "score": np.round(d.score.astype(np.float64), 5).tolist(), "cls": d.class_id.tolist()}
                    counts["images_predicted"] += 1
                f.write(json.dumps(row) + "\n")
            f.flush()
            bar.update(len(recs))
    return counts


def merge_shard_rows(rdir: Path, key: str, jsonl: Path) -> int:
    """Append to ``jsonl`` the rows of every shard file of ``rdir/shards`` made for the same
    inputs (its .key equals ``key``) that ``jsonl`` lacks; returns how many were added."""
    shards = [k.with_suffix(".jsonl") for k in sorted((rdir / "shards").glob("pool_predictions-*.key"))
              if k.read_text() == key]
    return rows.merge(jsonl, shards)


def reorder_rows(jsonl: Path, order: list[int]) -> None:
    """Put ``jsonl``'s rows in ``order`` (pool order), whatever order they were made in."""
    rows.reorder(jsonl, order)


def iter_predictions(jsonl: Path) -> Iterator[tuple[int, Detections | None, str | None]]:
    """(image id, raw detections or None, decode error or None) per row, streamed from the file."""
    for row in rows.read(jsonl):
        if "error" in row:
            yield row["id"], None, row["error"]
        else:
            xyxy = np.array(row["xyxy"], np.float32).reshape(-1, 4)
            yield row["id"], Detections(xyxy, row["score"], row["cls"]), None


# ------------------------------------------------------------------ pass 2: pure selection

def dedup_across_classes(dets: Detections, iou: float) -> np.ndarray:
    """(N,) bool keep-mask: among overlapping boxes (IoU >= ``iou``) of any class, the best score wins."""
    return _dedup(dets.xyxy, dets.score, iou)


def _dedup(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    if len(xyxy) < 2 or not _may_overlap(xyxy, iou):
        return np.ones(len(xyxy), bool)
    keep_idx = nms(torch.from_numpy(np.ascontiguousarray(xyxy, np.float32)), torch.from_numpy(score), iou).numpy()
    mask = np.zeros(len(xyxy), bool)
    mask[keep_idx] = True
    return mask


def _may_overlap(xyxy: np.ndarray, iou: float) -> bool:
    """False when no two boxes reach IoU ``iou`` by a margin that float32 rounding cannot cross,
    so that NMS would keep them all (most images once the low scores are gone: NMS has a fixed
    cost per call that this check does not)."""
    b = xyxy.astype(np.float64)
    wh = np.clip(np.minimum(b[:, None, 2:], b[None, :, 2:]) - np.maximum(b[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    np.fill_diagonal(inter, 0.0)
    # IoU >= iou - 1e-4  <=>  inter >= (iou - 1e-4) * union, without dividing (a zero union stays harmless)
    return bool((inter >= (iou - 1e-4) * (area[:, None] + area[None, :] - inter)).any()) if inter.any() else False


def threshold_for(thresholds: Thresholds, dets: Detections, image_slices: list[str], per_slice: bool,
                  size: np.ndarray | None = None) -> np.ndarray:
    """(N,) thresholds: the cell of each box; with per-slice cells, the strictest of the image's slices.
    ``size``: the boxes' size bucket indices when the caller has them already."""
    if not len(dets):
        return np.zeros(0, np.float32)
    size = size_bucket_index(dets.area) if size is None else size
    cands = [s for s in image_slices if s in thresholds.sliced] if per_slice else []
    if len(cands) < 2:
        return thresholds.lookup(dets.class_id, size, cands[0] if cands else ANY)
    return np.max([thresholds.lookup(dets.class_id, size, s) for s in cands], axis=0)


def select(dets: Detections, thr: np.ndarray, band: float, cross_class_iou: float) -> tuple[Detections, Counter]:
    """-> (kept + ignore boxes with extras threshold/status/iscrowd, counts of drops by reason)."""
    counts: Counter = Counter()
    cand = np.flatnonzero(dets.score >= thr - band)
    counts["below_band"] += len(dets) - len(cand)
    rows = cand[_dedup(dets.xyxy[cand], dets.score[cand], cross_class_iou)]
    counts["cross_class_duplicate"] += len(cand) - len(rows)
    t = thr[rows]
    status = np.where(dets.score[rows] >= t, KEEP, IGNORE)
    extras = {**{k: v[rows] for k, v in dets.extras.items()}, "threshold": t, "status": status,
              "iscrowd": (status == IGNORE).astype(np.int64)}
    return Detections(dets.xyxy[rows], dets.score[rows], dets.class_id[rows], extras), counts


def class_cap_scores(kept_scores: dict[int, list[float]] | dict[int, np.ndarray], cap: int | None) -> dict[int, float]:
    """Per class, the lowest kept score that survives a cap of ``cap`` boxes (ties all survive)."""
    if cap is None:
        return {}
    out = {}
    for c, scores in kept_scores.items():
        if len(scores) > cap:
            out[c] = float(np.sort(np.asarray(scores))[::-1][cap - 1])
    return out


@dataclass
class Tally:
    """What the selection dropped, counted while it streams: boxes by reason, boxes below the band
    by size bucket, and the ids of pool images that could not be decoded."""

    dropped: Counter = field(default_factory=Counter)
    below_band_by_size: Counter = field(default_factory=Counter)
    unreadable: list[int] = field(default_factory=list)


def _selections(jsonl: Path, images: list[ImageRecord], image_slices: dict[int, list[str]], thresholds: Thresholds,
                band: float, cross_class_iou: float, per_slice: bool,
                tally: Tally) -> Iterator[tuple[ImageRecord, Detections]]:
    """Each image of ``images`` that has a row in ``jsonl``, in that order, with its selected boxes
    (before the class cap). The rows must come in the order of ``images`` (``reorder_rows``);
    rows of other images are skipped, an image without a row is counted as not predicted."""
    where = {im.id: k for k, im in enumerate(images)}
    last = -1
    for iid, d, _err in iter_predictions(jsonl):
        k = where.get(iid)
        if k is None:
            continue
        if k <= last:
            raise ValueError(f"{jsonl}: its rows are not in the order of the images (reorder_rows first)")
        tally.dropped["image_not_predicted"] += k - last - 1
        last = k
        if d is None:
            tally.unreadable.append(iid)
            tally.dropped["image_unreadable"] += 1
            continue
        size = size_bucket_index(d.area)
        thr = threshold_for(thresholds, d, image_slices.get(iid, []), per_slice, size)
        below = np.bincount(size[d.score < thr - band], minlength=len(SIZE_BUCKETS))
        for b, n in zip(SIZE_BUCKETS, below.tolist()):
            tally.below_band_by_size[b] += n
        sel, c = select(d, thr, band, cross_class_iou)
        tally.dropped.update(c)
        yield images[k], sel
    tally.dropped["image_not_predicted"] += len(images) - last - 1


def pseudo_labels(jsonl: Path, images: list[ImageRecord], image_slices: dict[int, list[str]], thresholds: Thresholds,
                  *, band: float, cross_class_iou: float, per_slice: bool, class_cap: int | None,
                  tally: Tally | None = None) -> Iterator[tuple[ImageRecord, Detections]]:
    """Each predicted image of ``images``, in that order, with its pseudo-labels: the kept and ignore
    boxes, with extras ``threshold``, ``status``, ``iscrowd`` (1 = ignore) and ``size_bucket``.

    Streamed from the row file: memory holds one image's boxes (and, with a class cap, the kept
    scores of a first pass that finds each class's cut). A pure function of its inputs, so the
    export and the student's training set, each reading it, see the same boxes. Drops are added
    to ``tally``."""
    tally = Tally() if tally is None else tally
    caps: dict[int, float] = {}
    if class_cap is not None:
        kept: dict[int, list[np.ndarray]] = {}
        for _, d in _selections(jsonl, images, image_slices, thresholds, band, cross_class_iou, per_slice, Tally()):
            k = d.extras["status"] == KEEP
            for c in np.unique(d.class_id[k]).tolist():
                kept.setdefault(c, []).append(d.score[k & (d.class_id == c)].astype(np.float32))
        caps = class_cap_scores({c: np.concatenate(v) for c, v in kept.items()}, class_cap)
    for im, d in _selections(jsonl, images, image_slices, thresholds, band, cross_class_iou, per_slice, tally):
        if caps and len(d):
            cap_thr = np.array([caps.get(c, -1.0) for c in d.class_id.tolist()], np.float32)
            over = (d.extras["status"] == KEEP) & (d.score < cap_thr)
            tally.dropped["class_cap"] += int(over.sum())
            d = d[~over]
        buckets = np.array([SIZE_BUCKETS[b] for b in size_bucket_index(d.area).tolist()], dtype=object)
        yield im, d.with_extra("size_bucket", buckets)


# ------------------------------------------------------------------ export

@dataclass
class PseudoResult:
    n_images: int
    n_kept: int
    n_ignored: int
    cells: dict[str, dict[str, int]]             # "slice|class|size" -> {kept, ignored, dropped}
    class_hist: dict[str, int]
    dropped: dict[str, int]
    per_image_kept: dict[int, int] = field(default_factory=dict)
    mean_kept_score: float | None = None
    dropped_by_size: dict[str, int] = field(default_factory=dict)
    content_key: str | None = None               # of the images and annotations, when written to a file

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("per_image_kept")
        return d


class _Collected:
    """``build_export``'s sink when no file is given: the COCO lists in memory."""

    def __init__(self) -> None:
        self.images: list[dict[str, Any]] = []
        self.anns: list[dict[str, Any]] = []
        self.n_annotations = 0

    def image(self, entry: dict[str, Any]) -> None:
        self.images.append(entry)

    def annotations(self, entries: list[dict[str, Any]]) -> None:
        self.anns += entries
        self.n_annotations += len(entries)


@paused_gc()
def build_export(jsonl: Path, images: list[ImageRecord], image_slices: dict[int, list[str]], classes: ClassMap,
                 thresholds: Thresholds, *, band: float, cross_class_iou: float, per_slice: bool,
                 class_cap: int | None, info: dict[str, Any], images_base: Path | None = None,
                 out: Path | None = None) -> tuple[dict[str, Any] | None, PseudoResult]:
    """Pseudo-label COCO (DESIGN.md's format) of :func:`pseudo_labels` and the counts behind it.

    With ``out``, the COCO file is streamed there (memory: one image's boxes and a chunk of
    entries, not the file) and the dict returned is None; ``PseudoResult.content_key`` then keys
    its images and annotations. Without, the COCO dict is returned."""
    tally = Tally()
    sink: CocoWriter | _Collected = CocoWriter(out) if out is not None else _Collected()
    cells: dict[str, Counter] = {}
    hist: Counter = Counter()
    per_image: dict[int, int] = {}
    kept_sum = 0.0
    n_images = n_ign = 0
    for im, d in pseudo_labels(jsonl, images, image_slices, thresholds, band=band, cross_class_iou=cross_class_iou,
                               per_slice=per_slice, class_cap=class_cap, tally=tally):
        kept = (d.extras["status"] == KEEP).tolist()
        img_slices = image_slices.get(im.id, ["all"])
        for c, bucket, is_kept, score in zip(d.class_id.tolist(), d.extras["size_bucket"].tolist(), kept,
                                             d.score.tolist()):
            cname = classes.names[c]
            st = "kept" if is_kept else "ignored"
            for s in img_slices:
                cells.setdefault(f"{s}|{cname}|{bucket}", Counter())[st] += 1
            if is_kept:
                hist[cname] += 1
                kept_sum += score
        per_image[im.id] = int(sum(kept))
        n_ign += len(kept) - per_image[im.id]
        n_images += 1
        sink.image(image_entry(im, image_slices.get(im.id, []), images_base))
        sink.annotations(annotation_entries(im.id, d, classes, sink.n_annotations + 1,
                                            extras=("score", "threshold", "size_bucket"),
                                            digits={"score": 5, "threshold": 5}))
    n_kept = sum(hist.values())
    info = {**info, "description": "detst pseudo-labels", "unreadable_images": tally.unreadable}
    coco, key = None, None
    if isinstance(sink, CocoWriter):
        key = sink.close(info, classes.coco_categories())
    else:
        coco = {"info": info, "licenses": [], "images": sink.images, "annotations": sink.anns,
                "categories": classes.coco_categories()}
    by_size = tally.below_band_by_size
    result = PseudoResult(n_images, n_kept, n_ign, {k: dict(v) for k, v in sorted(cells.items())},
                          {n: hist.get(n, 0) for n in classes.names}, dict(+tally.dropped), per_image,
                          kept_sum / n_kept if n_kept else None, {b: by_size.get(b, 0) for b in SIZE_BUCKETS},
                          key)
    return coco, result
