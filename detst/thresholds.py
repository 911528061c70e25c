"""Pseudo-label thresholds per class × size bucket (× slice), calibrated on labeled val.

From the teacher's raw detections on val (low score floor), each cell gets the lowest
score threshold whose precision at IoU ``match_iou`` reaches the round's target. A cell
with too few detections falls back to its class (all sizes), then to one global
threshold; the fallback level is recorded. A target no cutoff reaches gives the
ceiling threshold, marked ``unreachable``. All of it is pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detst.boxes import SIZE_BUCKETS, size_bucket_index
from detst.matching import match
from detst.structures import ClassMap, Detections

ANY = "*"


@dataclass(frozen=True)
class Cell:
    """One calibrated threshold and the evidence behind it."""

    threshold: float
    precision: float | None      # achieved on val at this threshold (None: no detection above it)
    recall: float | None         # of the cell's GT boxes (None: no GT in the cell)
    support: int                 # detections of the cell on val (>= score floor)
    n_gt: int
    level: str                   # "cell", "class", "global", "default"
    note: str = ""


def scored_matches(gt: dict[int, Detections], preds: dict[int, Detections], iou: float) -> dict[str, np.ndarray]:
    """Flatten val into per-detection rows: score, class, size bucket, TP flag, image id; and GT rows."""
    rows: dict[str, list] = {"score": [], "cls": [], "size": [], "tp": [], "img": []}
    grows: dict[str, list] = {"cls": [], "size": [], "img": []}
    for iid, g in gt.items():
        p = preds.get(iid, Detections.empty())
        status, _ = match(g, p, iou)
        keep = status >= 0
        rows["score"].append(p.score[keep])
        rows["cls"].append(p.class_id[keep])
        rows["size"].append(size_bucket_index(p.area[keep]))
        rows["tp"].append(status[keep] == 1)
        rows["img"].append(np.full(int(keep.sum()), iid))
        real = ~g.extras.get("iscrowd", np.zeros(len(g))).astype(bool)
        grows["cls"].append(g.class_id[real])
        grows["size"].append(size_bucket_index(g.area[real]))
        grows["img"].append(np.full(int(real.sum()), iid))
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in rows.items()}
    out.update({f"gt_{k}": np.concatenate(v) if v else np.zeros(0) for k, v in grows.items()})
    return out


def lowest_threshold(scores: np.ndarray, tp: np.ndarray, target: float) -> tuple[float | None, float | None, int]:
    """Lowest score t such that precision of {score >= t} >= target.

    -> (t, precision at t, number of TPs kept); t None when no cutoff reaches the target.
    Ties are kept together: a cutoff is only placed between distinct scores."""
    if len(scores) == 0:
        return None, None, 0
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], tp[order].astype(np.float64)
    ctp = np.cumsum(t)
    prec = ctp / np.arange(1, len(s) + 1)
    last_of_tie = np.r_[s[1:] != s[:-1], True]       # a cutoff at s[i] keeps every score >= s[i]
    ok = np.where((prec >= target) & last_of_tie)[0]
    if not len(ok):
        return None, None, 0
    i = ok[-1]
    return float(s[i]), float(prec[i]), int(ctp[i])


def _cell(scores, tp, n_gt, target, lo, hi, level) -> Cell:
    t, p, ntp = lowest_threshold(scores, tp, target)
    if t is None:
        above = scores >= hi
        prec = float(tp[above].mean()) if above.any() else None
        rec = float(tp[above].sum() / n_gt) if n_gt else None
        return Cell(hi, prec, rec, len(scores), n_gt, level, "unreachable: no cutoff reaches the target")
    t_clamped = float(np.clip(t, lo, hi))
    above = scores >= t_clamped
    prec = float(tp[above].mean()) if above.any() else None
    rec = float(tp[above].sum() / n_gt) if n_gt else None
    note = "" if t_clamped == t else f"clamped from {t:.4f}"
    return Cell(t_clamped, prec, rec, len(scores), n_gt, level, note)


@dataclass
class Thresholds:
    """Calibrated thresholds; ``lookup`` gives one per box."""

    target: float
    cells: dict[tuple[str, str, str], Cell]   # (slice or "*", class name, size bucket or "*")
    classes: ClassMap
    _tables: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    _sliced: frozenset[str] | None = field(default=None, repr=False, compare=False)

    @property
    def sliced(self) -> frozenset[str]:
        """The slices that have cells of their own."""
        if self._sliced is None:
            self._sliced = frozenset(k[0] for k in self.cells if k[0] != ANY)
        return self._sliced

    def lookup(self, class_id: np.ndarray, size_idx: np.ndarray, slice_name: str = ANY) -> np.ndarray:
        """(N,) class indices, (N,) size bucket indices -> (N,) thresholds."""
        return self.table(slice_name)[np.asarray(class_id, np.int64), np.asarray(size_idx, np.int64)]

    def table(self, slice_name: str = ANY) -> np.ndarray:
        """(K, 3) thresholds of one slice by class index and size bucket (the ``*`` cell where the slice has none)."""
        if slice_name not in self._tables:
            t = np.empty((len(self.classes), len(SIZE_BUCKETS)), np.float32)
            for c, cname in enumerate(self.classes.names):
                for b, bucket in enumerate(SIZE_BUCKETS):
                    cell = self.cells.get((slice_name, cname, bucket)) or self.cells[(ANY, cname, bucket)]
                    t[c, b] = cell.threshold
            self._tables[slice_name] = t
        return self._tables[slice_name]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target,
                "cells": [{"slice": s, "class": c, "size": b, **cell.__dict__}
                          for (s, c, b), cell in sorted(self.cells.items())]}

    @classmethod
    def from_json(cls, d: dict[str, Any], classes: ClassMap) -> Thresholds:
        cells = {}
        for row in d["cells"]:
            row = dict(row)
            key = (row.pop("slice"), row.pop("class"), row.pop("size"))
            cells[key] = Cell(**row)
        return cls(float(d["target"]), cells, classes)


def calibrate(gt: dict[int, Detections], preds: dict[int, Detections], classes: ClassMap, target: float,
              min_support: int = 8, lo: float = 0.1, hi: float = 0.95, iou: float = 0.5,
              slices: dict[str, list[int]] | None = None) -> Thresholds:
    """Thresholds for every (slice, class, size) cell; slice ``*`` always present.

    ``slices`` (name -> image ids) adds per-slice cells that fall back to the slice's class level,
    then to the ``*`` cell of the same class and size."""
    m = scored_matches(gt, preds, iou)
    cells: dict[tuple[str, str, str], Cell] = {}

    def fill(sname: str, sel: np.ndarray, gsel: np.ndarray, parent: dict[tuple[str, str], Cell] | None) -> None:
        s_all, tp_all = m["score"][sel], m["tp"][sel]
        glob = _cell(s_all, tp_all, int(gsel.sum()), target, lo, hi, "global")
        if len(s_all) < min_support:
            glob = Cell(hi, glob.precision, glob.recall, glob.support, glob.n_gt, "default",
                        f"only {len(s_all)} detections on val (< {min_support}): ceiling threshold")
        for c, cname in enumerate(classes.names):
            cs = sel & (m["cls"] == c)
            cg = gsel & (m["gt_cls"] == c)
            cls_cell = _cell(m["score"][cs], m["tp"][cs], int(cg.sum()), target, lo, hi, "class")
            if len(m["score"][cs]) < min_support:
                base = parent[(cname, ANY)] if parent else glob
                cls_cell = Cell(base.threshold, cls_cell.precision, cls_cell.recall, cls_cell.support,
                                cls_cell.n_gt, base.level,
                                f"{cls_cell.support} detections < {min_support}: fell back")
            cells[(sname, cname, ANY)] = cls_cell
            for b, bucket in enumerate(SIZE_BUCKETS):
                bs = cs & (m["size"] == b)
                bg = cg & (m["gt_size"] == b)
                cell = _cell(m["score"][bs], m["tp"][bs], int(bg.sum()), target, lo, hi, "cell")
                if cell.support < min_support:
                    base = cls_cell if cls_cell.support >= min_support or not parent else parent[(cname, bucket)]
                    cell = Cell(base.threshold, cell.precision, cell.recall, cell.support, cell.n_gt,
                                base.level if base.level != "cell" else "slice-parent",
                                f"{cell.support} detections < {min_support}: fell back to {base.level}")
                cells[(sname, cname, bucket)] = cell
        cells[(sname, ANY, ANY)] = glob

    everything = np.ones(len(m["score"]), bool)
    fill(ANY, everything, np.ones(len(m["gt_cls"]), bool), None)
    if slices:
        parent = {(c, b): cells[(ANY, c, b)] for c in classes.names for b in (*SIZE_BUCKETS, ANY)}
        for sname, ids in slices.items():
            ids_set = np.array(sorted(ids))
            fill(sname, np.isin(m["img"], ids_set), np.isin(m["gt_img"], ids_set), parent)
    return Thresholds(target, cells, classes)
