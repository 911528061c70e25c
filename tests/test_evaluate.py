"""detst.evaluate: the one-pass per-slice evaluation equals plain pycocotools per slice,
undefined metrics are None (never 0), and empty inputs do not crash."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detst.boxes import SIZE_BUCKETS, areas_xyxy, size_bucket_index
from detst.evaluate import STAT_NAMES, SliceEvaluator, evaluate_slices, evaluate_slices_reference
from detst.io.coco import detections_to_results, gt_dataset
from detst.structures import ClassMap, Detections, ImageRecord

CLASSES = ClassMap((1, 3, 8), ("car", "person", "light"))
IW, IH = 320, 240


def _random_set(seed: int, n_images: int = 40, crowd: bool = True):
    """Images, GT and noisy predictions; images 1..5 have no GT, 6..10 have only small/medium GT."""
    rng = np.random.default_rng(seed)
    images = [ImageRecord(i, Path(f"/data/{i}.png"), IW, IH) for i in range(1, n_images + 1)]
    gt, preds = {}, {}
    for im in images:
        n = 0 if im.id <= 5 else int(rng.integers(1, 7))
        side_max = 90 if im.id <= 10 else 200             # 90² < 96²: no large box
        wh = rng.uniform(6, side_max, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([IW, IH]) - wh)
        xyxy = np.concatenate([xy, xy + wh], 1)
        cls = rng.integers(0, len(CLASSES), n)
        iscrowd = (rng.random(n) < 0.08).astype(np.int64) if crowd else np.zeros(n, np.int64)
        gt[im.id] = Detections(xyxy, np.ones(n), cls, {"iscrowd": iscrowd})
        found = rng.random(n) < 0.8
        jit = xyxy[found] + rng.normal(0, 0.08, (int(found.sum()), 4)) * np.repeat(wh[found], 2, axis=1)
        pcls = np.where(rng.random(int(found.sum())) < 0.1, rng.integers(0, len(CLASSES), int(found.sum())), cls[found])
        m = int(rng.integers(0, 4))
        fwh = rng.uniform(5, 120, (m, 2))
        fxy = rng.uniform(0, 1, (m, 2)) * (np.array([IW, IH]) - fwh)
        pxyxy = np.clip(np.concatenate([jit, np.concatenate([fxy, fxy + fwh], 1)]), 0, [IW, IH, IW, IH])
        ok = (pxyxy[:, 2] > pxyxy[:, 0] + 1) & (pxyxy[:, 3] > pxyxy[:, 1] + 1)
        preds[im.id] = Detections(pxyxy[ok], rng.random(len(pxyxy))[ok],
                                  np.concatenate([pcls, rng.integers(0, len(CLASSES), m)])[ok])
    return images, gt, preds


def _slices(images):
    ids = [im.id for im in images]
    return {"all": ids, "first": ids[:20], "second": ids[15:], "overlap": ids[15:20],
            "no_large": ids[5:10], "no_gt": ids[:5], "empty": [], "one": [ids[12]]}


def _close(one_pass: float | None, reference: float) -> bool:
    if reference < 0:
        return one_pass is None
    return one_pass is not None and abs(one_pass - reference) <= 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pass_equals_pycocotools_per_slice(seed):
    images, gt, preds = _random_set(seed)
    slices = _slices(images)
    got = evaluate_slices(images, gt, preds, CLASSES, slices)
    ref = evaluate_slices_reference(images, gt, preds, CLASSES, slices)
    assert set(got) == set(ref) == set(slices)
    for name in slices:
        assert len(ref[name]) == len(STAT_NAMES) == 12
        for stat, r in zip(STAT_NAMES, ref[name]):
            assert _close(got[name].stats[stat], r), (name, stat, got[name].stats[stat], r)
    # the data exercise what the test claims: defined and undefined values both occur
    assert got["all"].stats["map"] is not None and 0 < got["all"].stats["map50"] < 1
    assert got["first"].stats["map"] != got["second"].stats["map"] != got["overlap"].stats["map"]
    assert got["no_large"].stats["map_large"] is None and got["no_large"].stats["ar_large"] is None
    assert got["no_large"].stats["map_small"] is not None
    assert all(v is None for v in got["no_gt"].stats.values())
    assert all(v is None for v in got["empty"].stats.values()) and got["empty"].n_images == 0


def test_reference_path_is_plain_pycocotools_loadres():
    """The reference itself agrees with pycocotools fed through loadRes, the documented route."""
    images, gt, preds = _random_set(5, n_images=12)
    ids = [im.id for im in images][4:]
    ref = evaluate_slices_reference(images, gt, preds, CLASSES, {"s": ids})["s"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_dataset(images, gt, CLASSES)
        coco.createIndex()
        dt = coco.loadRes(detections_to_results(preds, CLASSES))
        E = COCOeval(coco, dt, "bbox")
        E.params.imgIds = ids
        E.evaluate()
        E.accumulate()
        E.summarize()
    np.testing.assert_allclose(ref, E.stats, atol=1e-12)


def test_per_class_ap50_and_gt_counts_match_pycocotools():
    images, gt, preds = _random_set(3)
    ids = [im.id for im in images][:25]
    se = evaluate_slices(images, gt, preds, CLASSES, {"s": ids})["s"]
    coco = COCO()
    coco.dataset = gt_dataset(images, gt, CLASSES)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dt = coco.loadRes(detections_to_results(preds, CLASSES))
        for cat, name in zip(CLASSES.category_ids, CLASSES.names):
            E = COCOeval(coco, dt, "bbox")
            E.params.imgIds, E.params.catIds = ids, [cat]
            E.evaluate()
            E.accumulate()
            E.summarize()
            assert se.ap50_per_class[name] == pytest.approx(E.stats[1], abs=1e-12), name
    real = [(g.class_id[~g.extras["iscrowd"].astype(bool)], g.xyxy[~g.extras["iscrowd"].astype(bool)])
            for i, g in gt.items() if i in ids]
    n_by_size = np.bincount(np.concatenate([size_bucket_index(areas_xyxy(x)) for _, x in real]), minlength=3)
    assert se.n_gt == sum(len(c) for c, _ in real)
    assert se.n_gt_by_size == dict(zip(SIZE_BUCKETS, n_by_size.tolist()))
    assert se.n_images == 25
    assert all(v is None or 0 <= v <= 1 for v in se.recall50_by_size.values())


def test_model_with_no_detections_at_all_does_not_crash():
    images, gt, _ = _random_set(0, n_images=20)
    slices = _slices(images)
    for preds in ({}, {im.id: Detections.empty() for im in images}):
        got = evaluate_slices(images, gt, preds, CLASSES, slices)
        ref = evaluate_slices_reference(images, gt, preds, CLASSES, slices)
        for stat in STAT_NAMES:
            assert got["all"].stats[stat] == 0.0, stat          # GT exists: zeros, not None
        assert all(v == 0.0 for v in got["all"].ap50_per_class.values())
        assert all(v is None for v in got["no_gt"].stats.values())
        for name in slices:
            for stat, r in zip(STAT_NAMES, ref[name]):
                assert _close(got[name].stats[stat], r), (name, stat)


def test_loadres_empty_predictions_do_not_crash():
    """pycocotools' loadRes([]) raises IndexError; detst builds the results COCO itself."""
    images, gt, _ = _random_set(4, n_images=16)
    ev = SliceEvaluator(images, gt, {}, CLASSES)
    assert ev.coco_dt.dataset["annotations"] == [] and len(ev.coco_dt.getImgIds()) == len(images)
    se = ev.slice("all", [im.id for im in images])
    assert se.stats["map50"] == 0.0 and se.recall50_by_size["large"] == 0.0


def test_slice_without_gt_gives_none_metrics_never_zero():
    images = [ImageRecord(i, Path(f"/x/{i}.png"), IW, IH) for i in (1, 2, 3)]
    gt = {1: Detections([[10, 10, 60, 60]], [1], [0]), 2: Detections.empty(), 3: Detections.empty()}
    preds = {1: Detections([[10, 10, 60, 60]], [0.9], [0]),
             2: Detections([[5, 5, 50, 50], [100, 100, 200, 200]], [0.8, 0.7], [0, 1])}   # FPs only
    got = evaluate_slices(images, gt, preds, CLASSES, {"gt": [1], "bg": [2, 3], "mixed": [1, 2]})
    assert got["gt"].stats["map50"] == pytest.approx(1.0)
    assert got["bg"].n_gt == 0 and got["bg"].n_images == 2
    assert all(v is None for v in got["bg"].stats.values())
    assert all(v is None for v in got["bg"].ap50_per_class.values())
    assert all(v is None for v in got["bg"].recall50_by_size.values())
    assert got["gt"].ap50_per_class == {"car": pytest.approx(1.0), "person": None, "light": None}
    assert got["mixed"].stats["map50"] < 1.0       # a FP on an image without GT lowers mAP
    assert got["mixed"].metric("map_large") is None and got["mixed"].metric("map_medium") is not None


def test_no_images_at_all():
    got = evaluate_slices([], {}, {}, CLASSES, {"all": [], "night": []})
    assert all(v is None for s in got.values() for v in s.stats.values())
    assert evaluate_slices([], {}, {}, CLASSES, {}) == {}


def test_crowd_gt_is_not_counted_and_a_detection_on_it_is_not_a_false_positive():
    images = [ImageRecord(1, Path("/x/1.png"), IW, IH)]
    gt = {1: Detections([[10, 10, 60, 60], [100, 100, 300, 220]], [1, 1], [0, 0], {"iscrowd": np.array([0, 1])})}
    preds = {1: Detections([[10, 10, 60, 60], [110, 110, 150, 150]], [0.5, 0.9], [0, 0])}
    se = SliceEvaluator(images, gt, preds, CLASSES).slice("s", [1])
    assert se.n_gt == 1
    assert se.stats["map50"] == pytest.approx(1.0)


def test_slice_eval_to_dict_is_plain():
    images, gt, preds = _random_set(1, n_images=8)
    d = evaluate_slices(images, gt, preds, CLASSES, {"all": [im.id for im in images]})["all"].to_dict()
    assert set(d) == {"name", "n_images", "n_gt", "n_gt_by_size", "stats", "ap50_per_class", "recall50_by_size",
                      "ap50_by_size"}
    assert set(d["stats"]) == set(STAT_NAMES)


def _eval_imgs(cls, coco_gt, coco_dt):
    import contextlib
    import io

    E = cls(coco_gt, coco_dt, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        E.evaluate()
    return E.evalImgs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_cocoeval_per_image_results_equal_pycocotools(seed):
    """Same evalImgs as pycocotools: crowd GT, area-range edges, tied IoUs and scores, empty images."""
    from pycocotools.cocoeval import COCOeval

    from detst.cocoeval_fast import FastCOCOeval
    from detst.evaluate import _coco_dt, _coco_gt

    images, gt, preds = _random_set(seed, n_images=30)
    rng = np.random.default_rng(seed)
    for iid in list(gt)[::4]:                      # some crowd regions, some exact duplicates (ties)
        g = gt[iid]
        crowd = (rng.random(len(g)) < 0.3).astype(np.int64)
        gt[iid] = Detections(g.xyxy, g.score, g.class_id, {"iscrowd": crowd})
        if len(preds[iid]):
            d = preds[iid]
            preds[iid] = Detections.concat([d, d[:1]])
    for iid in list(gt)[1::7]:                      # boxes exactly on the small/medium edge
        g = gt[iid]
        if len(g):
            xy = g.xyxy.copy()
            xy[0, 2:] = xy[0, :2] + 32.0
            gt[iid] = Detections(xy, g.score, g.class_id, g.extras)
    coco_gt = _coco_gt(images, gt, CLASSES)
    coco_dt = _coco_dt(coco_gt, preds, CLASSES)
    ref = _eval_imgs(COCOeval, coco_gt, coco_dt)
    fast = _eval_imgs(FastCOCOeval, coco_gt, coco_dt)
    assert len(ref) == len(fast)
    for r, f in zip(ref, fast):
        assert (r is None) == (f is None)
        if r is None:
            continue
        for key in ("image_id", "category_id", "aRng", "maxDet", "dtIds", "gtIds", "dtScores"):
            assert list(np.atleast_1d(r[key])) == list(np.atleast_1d(f[key])), key
        for key in ("dtMatches", "gtMatches", "gtIgnore", "dtIgnore"):
            np.testing.assert_array_equal(np.asarray(r[key]), np.asarray(f[key]), err_msg=key)


def test_paused_gc_restores_the_collector_state_even_on_error():
    import gc

    from detst.perf import paused_gc

    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()                   # the inner block does not re-enable early
        raise RuntimeError
    assert gc.isenabled()
