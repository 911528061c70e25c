"""Table tests of detst.thresholds: lowest_threshold and calibrate per class × size (× slice)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detst.boxes import SIZE_BUCKETS
from detst.structures import ClassMap, Detections
from detst.thresholds import ANY, Cell, Thresholds, calibrate, lowest_threshold

CLASSES = ClassMap((1, 2, 5), ("car", "person", "light"))


# ---------------------------------------------------------------- lowest_threshold

@pytest.mark.parametrize("scores, tp, target, expect", [
    ([], [], 0.9, (None, None, 0)),                                        # empty
    ([0.7], [1], 0.9, (0.7, 1.0, 1)),                                      # one detection, right
    ([0.7], [0], 0.1, (None, None, 0)),                                    # one detection, wrong
    ([0.9, 0.8, 0.3], [0, 0, 0], 0.01, (None, None, 0)),                   # all wrong
    ([0.9, 0.7, 0.5, 0.3], [1, 1, 0, 1], 0.75, (0.3, 0.75, 3)),            # lowest cutoff that still reaches it
    ([0.9, 0.7, 0.5, 0.3], [1, 1, 0, 0], 0.75, (0.7, 1.0, 2)),
    ([0.3, 0.9, 0.5, 0.7], [0, 1, 0, 1], 0.75, (0.7, 1.0, 2)),             # input order does not matter
    ([0.9, 0.8, 0.8], [1, 1, 0], 0.9, (0.9, 1.0, 1)),                      # the tie at 0.8 is not split
    ([0.9, 0.8, 0.8], [1, 0, 1], 0.9, (0.9, 1.0, 1)),
    ([0.9, 0.8, 0.8], [1, 0, 1], 0.6, (0.8, 2 / 3, 2)),
    ([0.5, 0.5, 0.5], [1, 1, 0], 0.9, (None, None, 0)),                    # one big tie below target
    ([0.5, 0.5, 0.5], [1, 1, 0], 0.6, (0.5, 2 / 3, 2)),
    ([0.6, 0.6, 0.4], [0, 1, 1], 1.0, (None, None, 0)),
    ([0.8, 0.6], [1, 1], 1.0, (0.6, 1.0, 2)),                               # precision exactly at target
])
def test_lowest_threshold_table(scores, tp, target, expect):
    t, p, ntp = lowest_threshold(np.array(scores, float), np.array(tp, bool), target)
    assert ntp == expect[2]
    assert t == (None if expect[0] is None else pytest.approx(expect[0]))
    assert p == (None if expect[1] is None else pytest.approx(expect[1]))


def test_a_cutoff_never_splits_a_tie():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.choice([0.2, 0.4, 0.6, 0.8], size=12)
        tp = rng.random(12) < 0.6
        target = float(rng.uniform(0.3, 1.0))
        t, p, ntp = lowest_threshold(scores, tp, target)
        if t is None:
            continue
        kept = scores >= t                          # everything at the tie value is on the same side
        assert p == pytest.approx(tp[kept].mean()) and p >= target and ntp == tp[kept].sum()
        for u in np.unique(scores[scores < t]):     # no lower cutoff reaches the target
            assert tp[scores >= u].mean() < target


# ---------------------------------------------------------------- calibrate

def _box(size: float, x: float = 10.0) -> list[float]:
    return [x, 10.0, x + size, 10.0 + size]


def _scene(spec: dict[int, list[tuple[int, float, float, bool]]]):
    """image id -> [(class index, side px, score, is_tp)]: a TP is predicted on a GT box, a FP far from any."""
    gt, preds = {}, {}
    for iid, rows in spec.items():
        g, p = [], []
        for k, (c, side, score, ok) in enumerate(rows):
            x = 20.0 + 300 * k
            if ok:
                g.append((c, _box(side, x)))
                p.append((c, _box(side, x), score))
            else:
                p.append((c, _box(side, x + 150), score))
        gt[iid] = Detections(np.array([b for _, b in g], np.float32).reshape(-1, 4), np.ones(len(g)),
                             np.array([c for c, _ in g], np.int64), {"iscrowd": np.zeros(len(g), np.int64)})
        preds[iid] = Detections(np.array([b for _, b, _ in p], np.float32).reshape(-1, 4),
                                np.array([s for *_, s in p]), np.array([c for c, *_ in p], np.int64))
    return gt, preds


def _cells_complete(th: Thresholds, slices=(ANY,)) -> None:
    for s in slices:
        assert (s, ANY, ANY) in th.cells
        for c in CLASSES.names:
            for b in (*SIZE_BUCKETS, ANY):
                assert (s, c, b) in th.cells, (s, c, b)


def test_calibrate_empty_val_gives_the_ceiling_everywhere():
    th = calibrate({}, {}, CLASSES, 0.9, min_support=2, lo=0.1, hi=0.95)
    _cells_complete(th)
    assert {c.threshold for c in th.cells.values()} == {0.95}
    assert th.cells[(ANY, ANY, ANY)].level == "default"
    assert all(c.support == 0 and c.n_gt == 0 for c in th.cells.values())


def test_calibrate_images_without_predictions():
    gt, _ = _scene({1: [(0, 40, 0.9, True)]})
    th = calibrate(gt, {}, CLASSES, 0.9, min_support=1)
    assert th.cells[(ANY, "car", "medium")].n_gt == 1
    assert th.cells[(ANY, "car", "medium")].support == 0


def _many(c: int, side: float, n: int, n_fp: int = 0, top: float = 0.9, step: float = 0.05):
    """n TPs then n_fp FPs of one class and size, scores decreasing from ``top``."""
    rows = [(c, side, round(top - step * k, 4), k < n) for k in range(n + n_fp)]
    return {100 + k: [r] for k, r in enumerate(rows)}


def test_empty_class_falls_back_to_global_with_the_level_recorded():
    gt, preds = _scene(_many(0, 40, 6, 3, top=0.9, step=0.02))         # only cars, 9 detections
    th = calibrate(gt, preds, CLASSES, 0.6, min_support=5, lo=0.05, hi=0.95)
    _cells_complete(th)
    glob = th.cells[(ANY, ANY, ANY)]
    assert glob.level == "global" and glob.support == 9
    for b in (*SIZE_BUCKETS, ANY):
        cell = th.cells[(ANY, "light", b)]
        assert cell.support == 0 and cell.n_gt == 0
        assert cell.threshold == glob.threshold and cell.level == "global", b
    assert th.cells[(ANY, "car", "medium")].level == "cell"
    assert th.cells[(ANY, "car", "small")].level == "class"       # no small cars: falls back to the class


def test_class_fallback_records_default_when_global_support_is_also_too_low():
    gt, preds = _scene(_many(0, 40, 2, 0))                             # 2 detections, min_support 5
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=5, lo=0.1, hi=0.95)
    assert th.cells[(ANY, ANY, ANY)].level == "default"
    for c in CLASSES.names:
        for b in (*SIZE_BUCKETS, ANY):
            cell = th.cells[(ANY, c, b)]
            assert cell.threshold == 0.95
            assert cell.level == "default", (c, b, cell.level)


def test_class_absent_from_val_all_wrong_gives_the_ceiling_marked_unreachable():
    spec = _many(0, 40, 10, 0)
    spec.update({200 + k: [(1, 40, 0.9 - 0.05 * k, False)] for k in range(10)})    # persons: 10 FPs, no GT
    gt, preds = _scene(spec)
    th = calibrate(gt, preds, CLASSES, 0.8, min_support=5, lo=0.1, hi=0.95)
    cell = th.cells[(ANY, "person", ANY)]
    assert cell.threshold == 0.95 and "unreachable" in cell.note
    assert cell.n_gt == 0 and cell.recall is None and cell.support == 10
    assert cell.level == "class"
    med = th.cells[(ANY, "person", "medium")]
    assert med.threshold == 0.95 and "unreachable" in med.note and med.level == "cell"


def test_one_detection_is_enough_with_min_support_1():
    gt, preds = _scene({1: [(2, 10, 0.42, True)]})
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=1, lo=0.1, hi=0.95)
    cell = th.cells[(ANY, "light", "small")]
    assert (cell.threshold, cell.precision, cell.recall, cell.support, cell.n_gt, cell.level) == \
        (pytest.approx(0.42), 1.0, 1.0, 1, 1, "cell")


@pytest.mark.parametrize("side, bucket", [(31.99, "small"), (32.0, "medium"), (95.99, "medium"), (96.0, "large")])
def test_boxes_exactly_on_bucket_edges(side, bucket):
    gt, preds = _scene({1: [(0, side, 0.5, True)]})
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=1)
    for b in SIZE_BUCKETS:
        cell = th.cells[(ANY, "car", b)]
        assert (cell.support, cell.n_gt) == ((1, 1) if b == bucket else (0, 0)), b


@pytest.mark.parametrize("top, lo, hi, expect, clamped", [
    (0.05, 0.1, 0.95, 0.1, True),       # calibrated 0.05 - 9*0.001 → raised to lo
    (0.9, 0.1, 0.95, 0.891, False),
    (0.999, 0.1, 0.95, 0.95, True),     # calibrated 0.99 → lowered to hi
])
def test_thresholds_are_clamped_to_lo_hi(top, lo, hi, expect, clamped):
    gt, preds = _scene(_many(0, 40, 10, 0, top=top, step=0.001))
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=5, lo=lo, hi=hi)
    cell = th.cells[(ANY, "car", "medium")]
    assert cell.threshold == pytest.approx(expect)
    assert lo <= cell.threshold <= hi
    assert ("clamped" in cell.note) is clamped
    assert all(lo <= c.threshold <= hi for c in th.cells.values())


def test_precision_and_recall_reported_at_the_chosen_threshold():
    gt, preds = _scene(_many(0, 40, 8, 4, top=0.9, step=0.05))   # TPs 0.9..0.55, FPs 0.5..0.35
    gt[999] = Detections([[0, 0, 40, 40]], [1], [0], {"iscrowd": np.array([0])})   # one GT never found
    th = calibrate(gt, preds, CLASSES, 0.85, min_support=5)
    cell = th.cells[(ANY, "car", "medium")]
    # kept at 0.5: 8 TP / 9 = 0.889 >= 0.85; at 0.45: 8 / 10 = 0.8 < 0.85
    assert cell.threshold == pytest.approx(0.5)
    assert cell.precision == pytest.approx(8 / 9) and cell.recall == pytest.approx(8 / 9)
    assert (cell.support, cell.n_gt, cell.level, cell.note) == (12, 9, "cell", "")


def test_support_below_min_support_falls_back_cell_class_global():
    spec = _many(0, 40, 10, 0)                                  # 10 medium cars
    spec.update({300: [(0, 10, 0.3, True)]})                    # 1 small car
    spec.update({400 + k: [(1, 40, 0.8, True)] for k in range(3)})  # 3 persons
    gt, preds = _scene(spec)
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=5, lo=0.1, hi=0.95)
    car, person = th.cells[(ANY, "car", ANY)], th.cells[(ANY, "person", ANY)]
    glob = th.cells[(ANY, ANY, ANY)]
    assert th.cells[(ANY, "car", "medium")].level == "cell"
    small = th.cells[(ANY, "car", "small")]
    assert (small.level, small.threshold, small.support) == ("class", car.threshold, 1)
    assert "fell back" in small.note
    assert (person.level, person.threshold, person.support) == ("global", glob.threshold, 3)
    pm = th.cells[(ANY, "person", "medium")]
    assert (pm.level, pm.threshold) == ("global", glob.threshold)


def test_per_slice_cells_present_and_falling_back_to_the_star_cells():
    spec = _many(0, 40, 10, 0)
    spec.update({200 + k: [(0, 40, 0.5 - 0.02 * k, k % 2 == 0)] for k in range(10)})   # night: noisy cars
    gt, preds = _scene(spec)
    day, night = list(range(100, 110)), list(range(200, 210))
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=5, lo=0.1, hi=0.95,
                   slices={"day": day, "night": night, "nothing": []})
    _cells_complete(th, (ANY, "day", "night", "nothing"))
    assert th.cells[("night", "car", "medium")].support == 10
    assert th.cells[("day", "car", "medium")].support == 10
    assert th.cells[("night", "car", "medium")].threshold > th.cells[("day", "car", "medium")].threshold
    nothing = th.cells[("nothing", "car", "medium")]
    assert nothing.support == 0 and nothing.threshold == th.cells[(ANY, "car", "medium")].threshold
    sizes = np.array([1, 1]), np.array([1, 0])
    np.testing.assert_allclose(th.lookup(np.array([0, 0]), sizes[0], "night"),
                               [th.cells[("night", "car", "medium")].threshold] * 2, rtol=1e-6)
    # a slice never calibrated uses the * cells
    np.testing.assert_allclose(th.lookup(np.array([0, 2]), sizes[1], "rain"),
                               [th.cells[(ANY, "car", "medium")].threshold, th.cells[(ANY, "light", "small")].threshold],
                               rtol=1e-6)
    assert th.lookup(np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)


def test_no_slice_cells_without_slices():
    gt, preds = _scene(_many(0, 40, 10, 0))
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=5)
    assert {s for s, _, _ in th.cells} == {ANY}


def test_crowd_gt_detections_are_neither_support_nor_fp():
    gt, preds = _scene(_many(0, 40, 6, 0))
    gt[1] = Detections([[0, 0, 200, 200]], [1], [0], {"iscrowd": np.array([1])})
    preds[1] = Detections([[10, 10, 50, 50]] * 4, [0.99] * 4, [0] * 4)
    th = calibrate(gt, preds, CLASSES, 0.9, min_support=5)
    cell = th.cells[(ANY, "car", "medium")]
    assert cell.support == 6 and cell.n_gt == 6 and cell.precision == 1.0


def test_thresholds_json_round_trip():
    spec = _many(0, 40, 10, 3)
    spec.update({500: [(2, 10, 0.4, True)]})
    gt, preds = _scene(spec)
    th = calibrate(gt, preds, CLASSES, 0.85, min_support=3, slices={"a": list(range(100, 106)), "b": []})
    d = json.loads(json.dumps(th.to_json()))
    back = Thresholds.from_json(d, CLASSES)
    assert back.target == th.target and back.cells == th.cells and back.classes == CLASSES
    assert back.to_json() == th.to_json()


def test_thresholds_json_round_trip_empty():
    th = Thresholds(0.9, {}, CLASSES)
    assert Thresholds.from_json(json.loads(json.dumps(th.to_json())), CLASSES).cells == {}


def test_cell_is_frozen():
    c = Cell(0.5, None, None, 0, 0, "cell")
    with pytest.raises(AttributeError):
        c.threshold = 0.1  # type: ignore[misc]
