"""pycocotools-exact COCO evaluation, vectorised: per-image matching (``FastCOCOeval``) and
accumulation over any subset of images (``SubsetAccumulator``).

Both return what pycocotools returns — the same ``evalImgs`` dicts, the same precision /
recall arrays and the same 12 summary numbers, bit for bit (``tests/test_evaluate.py``
compares them on random data with crowd regions, ties and boxes on bucket edges) — but
evaluate once and read many slices without pycocotools' per-image Python loops.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from pycocotools.cocoeval import COCOeval


class FastCOCOeval(COCOeval):
    """pycocotools' COCOeval whose per-image matching is vectorised over area ranges and IoU
    thresholds. ``evalImgs`` are the same dicts, in the same order, with the same values as
    pycocotools' own (``tests/test_evaluate.py`` compares them); accumulate/summarize are
    pycocotools' untouched. Detection (bbox) evaluation with categories only."""

    def evaluate(self) -> None:
        p = self.params
        p.imgIds = list(np.unique(p.imgIds))
        p.catIds = list(np.unique(p.catIds))
        p.maxDets = sorted(p.maxDets)
        self.params = p
        self._prepare()
        self.ious = {}          # computed per (image, category) inside _evaluate_areas, as bbIou does
        maxDet = p.maxDets[-1]
        A, I0 = len(p.areaRng), len(p.imgIds)
        # per-call constants, computed once (numpy call overhead dominates small images)
        self._rng = np.array(p.areaRng, dtype=np.float64)                       # (A, 2)
        self._thr = np.minimum(np.asarray(p.iouThrs), 1 - 1e-10)
        self._rows = np.arange(A)[:, None]
        self._aa, self._tt = np.meshgrid(np.arange(A), np.arange(len(p.iouThrs)), indexing="ij")
        evalImgs: list = [None] * (len(p.catIds) * A * I0)
        for k, c in enumerate(p.catIds):
            for i, img in enumerate(p.imgIds):
                for a, e in enumerate(self._evaluate_areas(img, c, maxDet)):
                    evalImgs[k * A * I0 + a * I0 + i] = e
        self.evalImgs = evalImgs
        self._paramsEval = copy.deepcopy(self.params)

    @staticmethod
    def _best(ok: np.ndarray, iou: np.ndarray, ignored: np.ndarray, G: int) -> np.ndarray:
        """pycocotools' choice along the last (GT) axis: among allowed GTs with IoU >= threshold, the
        last one holding the highest IoU — regular GTs first, ignored ones only if no regular fits.
        -> index, or -1."""
        m = None
        for part in (~ignored, ignored):
            vals = np.where(ok & part, iou, -1.0)
            best = vals.max(-1)
            last = G - 1 - np.argmax((vals == best[..., None])[..., ::-1], -1)
            pick = np.where(best >= 0, last, -1)
            m = pick if m is None else np.where(m < 0, pick, m)
        return m

    @staticmethod
    def _bb_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
        """(D, G) IoU of xywh boxes with pycocotools' bbIou arithmetic, operation for operation
        (so the values are bit-identical); against a crowd GT the union is the detection's area."""
        if not len(d) or not len(g):
            return np.zeros((len(d), len(g)))
        D, G = d[:, None, :], g[None, :, :]
        w = np.minimum(D[..., 2] + D[..., 0], G[..., 2] + G[..., 0]) - np.maximum(D[..., 0], G[..., 0])
        h = np.minimum(D[..., 3] + D[..., 1], G[..., 3] + G[..., 1]) - np.maximum(D[..., 1], G[..., 1])
        i = w * h
        da, ga = D[..., 2] * D[..., 3], G[..., 2] * G[..., 3]
        u = np.where(crowd[None, :], da, da + ga - i)
        return np.divide(i, u, out=np.zeros_like(i), where=(w > 0) & (h > 0))

    def _evaluate_areas(self, imgId: int, catId: int, maxDet: int) -> list[dict[str, Any] | None]:
        p = self.params
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        A = len(p.areaRng)
        if not gt and not dt:
            return [None] * A
        rng = self._rng
        g_area = np.array([g["area"] for g in gt], dtype=np.float64)
        g_ign = np.array([bool(g["ignore"]) for g in gt], dtype=bool)
        g_crowd = np.array([int(g["iscrowd"]) for g in gt], dtype=bool)
        g_id = np.array([g["id"] for g in gt], dtype=np.float64)
        ig = g_ign[None, :] | (g_area[None, :] < rng[:, :1]) | (g_area[None, :] > rng[:, 1:])   # (A, G)
        order = np.argsort(ig.astype(np.int64), axis=1, kind="mergesort")           # ignored GT last, stable
        dind = np.array([-d["score"] for d in dt], dtype=np.float64).argsort(kind="mergesort")[:maxDet]
        dt = [dt[i] for i in dind]
        D, G, T = len(dt), len(gt), len(p.iouThrs)
        ious = self._bb_iou(np.array([d["bbox"] for d in dt], dtype=np.float64).reshape(-1, 4),
                            np.array([g["bbox"] for g in gt], dtype=np.float64).reshape(-1, 4), g_crowd)
        igs = ig[self._rows, order]                                             # (A, G) sorted per area
        crowd = g_crowd[order]
        gids = g_id[order]
        gtm = np.zeros((A, T, G))
        dtm = np.zeros((A, T, D))
        dtIg = np.zeros((A, T, D), dtype=bool)
        if D and G:
            raw = ious                                                             # (D, G) in GT file order
            ious_s = raw[:, order].transpose(1, 0, 2)                              # (A, D, G) per-area GT order
            thr = self._thr
            d_ids = np.array([d["id"] for d in dt], dtype=np.float64)
            cand = raw >= thr.min()                                                # who could match whom at all
            shared = cand.sum(0) > 1                                               # GTs two detections compete for
            contested = (cand & shared[None, :]).any(1)
            free = np.flatnonzero(cand.any(1) & ~contested)
            if len(free):
                # detections whose candidate GTs no other detection touches: greedy order is irrelevant
                iou = ious_s[:, free, :][:, None, :, :]                            # (A, 1, F, G)
                ok = iou >= thr[None, :, None, None]
                m = self._best(ok, iou, igs[:, None, None, :], G)                 # (A, T, F)
                a_, t_, f_ = np.nonzero(m >= 0)
                g_ = m[a_, t_, f_]
                dtIg[a_, t_, free[f_]] = igs[a_, g_]
                dtm[a_, t_, free[f_]] = gids[a_, g_]
                gtm[a_, t_, g_] = d_ids[free[f_]]
            aa, tt = self._aa, self._tt
            for d in np.flatnonzero(contested):                                    # in score order, as pycocotools
                iou = ious_s[:, d, :][:, None, :]                                   # (A, 1, G)
                ok = ((gtm == 0) | crowd[:, None, :]) & (iou >= thr[None, :, None])
                m = self._best(ok, iou, igs[:, None, :], G)                       # (A, T)
                hit = m >= 0
                if hit.any():
                    a_, t_, g_ = aa[hit], tt[hit], m[hit]
                    dtIg[a_, t_, d] = igs[a_, g_]
                    dtm[a_, t_, d] = gids[a_, g_]
                    gtm[a_, t_, g_] = d_ids[d]
        d_area = np.array([d["area"] for d in dt], dtype=np.float64)
        out_of_range = (d_area[None, :] < rng[:, :1]) | (d_area[None, :] > rng[:, 1:])   # (A, D)
        dtIg = dtIg | ((dtm == 0) & out_of_range[:, None, :])
        dt_ids, dt_scores = [d["id"] for d in dt], [d["score"] for d in dt]
        gt_ids = gids.astype(np.int64).tolist()
        ig_int = igs.astype(np.int64)
        return [{"image_id": imgId, "category_id": catId, "aRng": p.areaRng[a], "maxDet": maxDet,
                 "dtIds": dt_ids, "gtIds": gt_ids[a], "dtMatches": dtm[a], "gtMatches": gtm[a],
                 "dtScores": dt_scores, "gtIgnore": ig_int[a], "dtIgnore": dtIg[a]} for a in range(A)]


class SubsetAccumulator:
    """pycocotools' accumulate() + summarize() for any subset of the evaluated images.

    The per-image results of one evaluation are flattened once per (category, area range), in
    pycocotools' image order; a subset is then a boolean mask, and each (category, area, maxDet)
    cell is a few numpy operations instead of Python loops over images."""

    def __init__(self, E: COCOeval) -> None:
        pe = E._paramsEval
        self.p = pe
        self.index = {iid: n for n, iid in enumerate(pe.imgIds)}
        K, A, I0 = len(pe.catIds), len(pe.areaRng), len(pe.imgIds)
        T = len(pe.iouThrs)
        self.cells: list[list[dict[str, np.ndarray]]] = []
        for k in range(K):
            row = []
            for a in range(A):
                counts, score, dtm, dtig = np.zeros(I0, np.int64), [], [], []
                npig, present = np.zeros(I0, np.int64), np.zeros(I0, bool)
                for i in range(I0):
                    e = E.evalImgs[k * A * I0 + a * I0 + i]
                    if e is None:
                        continue
                    present[i] = True
                    counts[i] = len(e["dtScores"])
                    score += e["dtScores"]
                    dtm.append(e["dtMatches"])
                    dtig.append(e["dtIgnore"])
                    gi = e["gtIgnore"]
                    npig[i] = len(gi) - int(np.count_nonzero(gi))
                img = np.repeat(np.arange(I0), counts)
                starts = np.cumsum(counts) - counts
                row.append({"img": img, "rank": np.arange(len(img)) - starts[img],
                            "score": np.asarray(score, dtype=np.float64),
                            # matched (a GT id, never 0) and not ignored, as booleans once
                            "hit": np.concatenate(dtm, axis=1).reshape(T, -1) != 0 if dtm else np.zeros((T, 0), bool),
                            "counted": ~(np.concatenate(dtig, axis=1).reshape(T, -1).astype(bool)) if dtig
                            else np.zeros((T, 0), bool),
                            "npig": npig, "present": present})
            self.cells.append(row)

    def accumulate(self, image_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """-> (precision [T, R, K, A, M], recall [T, K, A, M]) exactly as pycocotools' accumulate."""
        p = self.p
        mask = np.zeros(len(p.imgIds), bool)
        mask[[self.index[i] for i in set(image_ids)]] = True
        T, R, K, A, M = len(p.iouThrs), len(p.recThrs), len(p.catIds), len(p.areaRng), len(p.maxDets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        rec_thrs = np.asarray(p.recThrs)
        for k in range(K):
            for a in range(A):
                c = self.cells[k][a]
                if not (c["present"] & mask).any():
                    continue
                npig = int(c["npig"][mask].sum())
                if npig == 0:
                    continue
                in_slice = mask[c["img"]]
                for m, max_det in enumerate(p.maxDets):
                    sel = in_slice & (c["rank"] < max_det)
                    idx = np.flatnonzero(sel)
                    idx = idx[np.argsort(-c["score"][idx], kind="mergesort")]
                    hit, keep = c["hit"][:, idx], c["counted"][:, idx]
                    tps = hit & keep
                    fps = ~hit & keep
                    tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                    fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                    nd = tp_sum.shape[1]
                    if not nd:
                        recall[:, k, a, m] = 0
                        precision[:, :, k, a, m] = 0
                        continue
                    # all IoU thresholds at once; pycocotools' backward envelope loop is a reversed running max
                    rc = tp_sum / npig
                    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
                    recall[:, k, a, m] = rc[:, -1]
                    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                    q = np.zeros((T, R))
                    for t in range(T):
                        inds = np.searchsorted(rc[t], rec_thrs, side="left")
                        ok = inds < nd
                        q[t, ok] = pr[t, inds[ok]]
                    precision[:, :, k, a, m] = q
        return precision, recall

    def summarize(self, precision: np.ndarray, recall: np.ndarray) -> list[float]:
        """The 12 numbers of pycocotools' summarize() (stats), -1 where undefined."""
        p = self.p

        def one(ap: bool, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
            aind = [i for i, lbl in enumerate(p.areaRngLbl) if lbl == area]
            mind = [i for i, md in enumerate(p.maxDets) if md == max_dets]
            s = precision if ap else recall
            if iou is not None:
                s = s[np.where(iou == p.iouThrs)[0]]
            s = s[:, :, :, aind, mind] if ap else s[:, :, aind, mind]
            return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

        md = p.maxDets
        return [one(True), one(True, .5, max_dets=md[2]), one(True, .75, max_dets=md[2]),
                one(True, area="small", max_dets=md[2]), one(True, area="medium", max_dets=md[2]),
                one(True, area="large", max_dets=md[2]), one(False, max_dets=md[0]), one(False, max_dets=md[1]),
                one(False, max_dets=md[2]), one(False, area="small", max_dets=md[2]),
                one(False, area="medium", max_dets=md[2]), one(False, area="large", max_dets=md[2])]
