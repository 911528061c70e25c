"""Table tests of detst.matching (COCO's greedy matching, 101-point AP) and detst.stats
(per-image records, recall at thresholds, bootstrap intervals)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detst.io.coco import detections_to_results, gt_dataset
from detst.matching import average_precision, match
from detst.stats import ap50, bootstrap_ci, image_records, recall
from detst.structures import ClassMap, Detections, ImageRecord


def _gt(boxes, cls, crowd=None) -> Detections:
    n = len(boxes)
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.ones(n), cls,
                      {"iscrowd": np.array(crowd if crowd is not None else [0] * n, np.int64)})


def _pred(boxes, scores, cls) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), scores, cls)


A = [0, 0, 10, 10]
B = [100, 100, 140, 140]
HALF = [0, 0, 10, 20]           # IoU with A = 100 / 200 = 0.5 exactly


@pytest.mark.parametrize("gt, pred, status, matched", [
    (_gt([], []), _pred([], [], []), [], []),                                    # empty both
    (_gt([A], [0]), _pred([], [], []), [], [False]),                             # nothing predicted: a miss
    (_gt([], []), _pred([A], [0.5], [0]), [0], []),                              # no GT: FP
    (_gt([A], [0]), _pred([A], [0.5], [0]), [1], [True]),
    (_gt([A], [0]), _pred([A], [0.5], [1]), [0], [False]),                       # wrong class
    (_gt([A], [0]), _pred([HALF], [0.5], [0]), [1], [True]),                     # IoU exactly 0.5 counts
    (_gt([A], [0]), _pred([B], [0.5], [0]), [0], [False]),
    (_gt([A], [0]), _pred([A, A], [0.5, 0.9], [0, 0]), [0, 1], [True]),          # highest score first, GT used once
    (_gt([A], [0]), _pred([A, HALF], [0.4, 0.9], [0, 0]), [0, 1], [True]),       # even when the later one fits better
    (_gt([A, B], [0, 0]), _pred([B, A], [0.3, 0.2], [0, 0]), [1, 1], [True, True]),
])
def test_match_table(gt, pred, status, matched):
    s, m = match(gt, pred, 0.5)
    assert s.dtype == np.int8 and s.tolist() == status
    assert m.tolist() == matched


@pytest.mark.parametrize("pred_box, cls, status", [
    ([10, 10, 30, 30], 0, -1),          # small box inside a big crowd region: IoU 0.04, but ignored (COCO)
    ([0, 0, 200, 200], 0, -1),          # the region itself
    ([190, 190, 260, 260], 0, 0),       # mostly outside the region: FP
    ([10, 10, 30, 30], 1, 0),           # crowd region of another class does not excuse it
])
def test_crowd_gt_ignores_a_prediction_instead_of_counting_it_fp(pred_box, cls, status):
    gt = _gt([[0, 0, 200, 200]], [0], [1])
    s, m = match(gt, _pred([pred_box], [0.9], [cls]))
    assert s.tolist() == [status]
    assert m.tolist() == [False]


def test_many_predictions_in_one_crowd_region_are_all_ignored_and_real_gt_comes_first():
    gt = _gt([[0, 0, 200, 200], [20, 20, 60, 60]], [0, 0], [1, 0])
    pred = _pred([[20, 20, 60, 60], [21, 21, 61, 61], [100, 100, 120, 120]], [0.5, 0.9, 0.7], [0, 0, 0])
    s, m = match(gt, pred)
    assert s.tolist() == [-1, 1, -1]     # the best-scored one takes the real GT; the rest fall in the crowd
    assert m.tolist() == [False, True]


@pytest.mark.parametrize("scores, tp, n_gt, ap", [
    ([], [], 0, np.nan),
    ([0.9], [1], 0, np.nan),             # no GT: undefined
    ([], [], 3, 0.0),                    # GT but no prediction
    ([0.9, 0.8, 0.7], [1, 1, 1], 3, 1.0),    # perfect ranking
    ([0.3, 0.9, 0.6], [1, 1, 1], 3, 1.0),    # perfect, given unsorted
    ([0.9, 0.8, 0.7, 0.2], [1, 1, 1, 0], 3, 1.0),   # a FP after full recall costs nothing
    ([0.9, 0.8], [0, 0], 2, 0.0),
    ([0.9], [1], 2, 51 / 101),           # recall 0.5: points 0, 0.01, …, 0.50 at precision 1
    ([0.9, 0.8], [0, 1], 1, 0.5),
])
def test_average_precision_table(scores, tp, n_gt, ap):
    got = average_precision(np.array(scores, float), np.array(tp, bool), n_gt)
    if np.isnan(ap):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ap, abs=1e-12)


def _random_scene(seed: int, n_images: int = 25, n_classes: int = 2):
    rng = np.random.default_rng(seed)
    gt, preds = {}, {}
    for i in range(1, n_images + 1):
        n = int(rng.integers(0, 6))
        wh = rng.uniform(8, 80, (n, 2))
        xy = rng.uniform(0, 200, (n, 2))
        g = np.concatenate([xy, xy + wh], 1)
        gcls = rng.integers(0, n_classes, n)
        gt[i] = _gt(g, gcls, (rng.random(n) < 0.15).astype(int))
        keep = rng.random(n) < 0.75
        p = g[keep] + rng.normal(0, 4, (int(keep.sum()), 4))
        m = int(rng.integers(0, 3))
        fxy = rng.uniform(0, 200, (m, 2))
        p = np.concatenate([p, np.concatenate([fxy, fxy + rng.uniform(8, 60, (m, 2))], 1)])
        p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 1)
        preds[i] = _pred(p, rng.random(len(p)), np.concatenate([gcls[keep], rng.integers(0, n_classes, m)]))
    return gt, preds


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap50_equals_pycocotools_on_random_data_with_crowds(seed):
    classes = ClassMap((1, 2), ("a", "b"))
    gt, preds = _random_scene(seed)
    recs = image_records(gt, preds, None)
    images = [ImageRecord(i, Path(f"/x/{i}.png"), 400, 400) for i in gt]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_dataset(images, gt, classes)
        coco.createIndex()
        E = COCOeval(coco, coco.loadRes(detections_to_results(preds, classes)), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    assert ap50(list(recs.values()), 2) == pytest.approx(E.stats[1], abs=1e-9)


# ---------------------------------------------------------------- stats

def test_image_records_drop_crowd_matches_and_crowd_gt():
    gt = {1: _gt([A, [0, 0, 200, 200]], [0, 0], [0, 1]), 2: _gt([], [])}
    preds = {1: _pred([A, [50, 50, 60, 60], [300, 300, 310, 310]], [0.9, 0.8, 0.2], [0, 0, 0])}
    recs = image_records(gt, preds, lambda iid, d: np.full(len(d), 0.5))
    r = recs[1]
    assert r.pred_score.tolist() == pytest.approx([0.9, 0.2])          # the one in the crowd region is gone
    assert r.pred_tp.tolist() == [True, False]
    assert r.gt_cls.tolist() == [0] and r.gt_hit.tolist() == [True] and r.gt_size.tolist() == [0]
    assert len(recs[2].pred_score) == 0 and len(recs[2].gt_cls) == 0


@pytest.mark.parametrize("thr, hit", [(0.5, [True, False]), (0.95, [False, False]), (0.0, [True, True])])
def test_recall_at_thresholds(thr, hit):
    gt = {1: _gt([A, B], [0, 1])}
    preds = {1: _pred([A, B], [0.9, 0.3], [0, 1])}
    recs = image_records(gt, preds, lambda iid, d: np.full(len(d), thr))
    assert recs[1].gt_hit.tolist() == hit
    assert recall(list(recs.values())) == pytest.approx(np.mean(hit))
    assert recall(list(recs.values()), size=0) == pytest.approx(float(hit[0]))     # A is small
    assert recall(list(recs.values()), size=1) == pytest.approx(float(hit[1]))     # B (40x40) is medium
    assert recall(list(recs.values()), size=2) is None                              # no large GT


def test_recall_and_ap50_of_nothing_are_none():
    assert recall([]) is None and ap50([], 3) is None
    recs = list(image_records({1: _gt([], [])}, {1: _pred([A], [0.5], [0])}, None).values())
    assert recall(recs) is None and ap50(recs, 1) is None
    recs = list(image_records({1: _gt([A], [0])}, {}, None).values())
    assert recall(recs) == 0.0 and ap50(recs, 1) == 0.0


def test_ap_of_a_perfect_ranking_is_one():
    gt = {i: _gt([A, B], [0, 1]) for i in range(1, 4)}
    preds = {i: _pred([A, B], [0.9, 0.8], [0, 1]) for i in range(1, 4)}
    assert ap50(list(image_records(gt, preds, None).values()), 2) == 1.0


def _boot_data(seed: int = 0):
    gt, preds = _random_scene(seed, n_images=30)
    return image_records(gt, preds, lambda iid, d: np.full(len(d), 0.5))


def test_bootstrap_ci_is_reproducible_for_the_same_generator_seed():
    recs = _boot_data()
    ids = sorted(recs)
    a = bootstrap_ci(recs, ids, recall, 50, np.random.default_rng(7))
    b = bootstrap_ci(recs, ids, recall, 50, np.random.default_rng(7))
    c = bootstrap_ci(recs, ids, recall, 50, np.random.default_rng(8))
    assert a is not None and a == b
    assert a != c
    lo, hi = a
    point = recall([recs[i] for i in ids])
    assert 0 <= lo <= point <= hi <= 1


@pytest.mark.parametrize("ids, n", [([], 50), ([999, 1000], 50), (None, 0)])
def test_bootstrap_ci_is_none_for_no_images(ids, n):
    recs = _boot_data()
    ids = sorted(recs) if ids is None else ids
    assert bootstrap_ci(recs, ids, recall, n, np.random.default_rng(0)) is None
    assert bootstrap_ci({}, [1, 2], recall, 50, np.random.default_rng(0)) is None


def test_bootstrap_ci_is_none_when_the_statistic_is_mostly_undefined():
    recs = image_records({i: _gt([], []) for i in range(1, 6)}, {}, None)
    assert bootstrap_ci(recs, sorted(recs), recall, 20, np.random.default_rng(0)) is None


def test_bootstrap_ci_does_not_touch_global_random_state():
    recs = _boot_data()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    bootstrap_ci(recs, sorted(recs), lambda r: ap50(r, 2), 20, np.random.default_rng(0))
    assert (np.random.get_state()[1] == before).all()
