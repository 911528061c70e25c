"""detst.pseudo's streamed selection: class cap, row order, missing and unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detst.boxes import SIZE_BUCKETS
from detst.pseudo import IGNORE, KEEP, build_export, pseudo_labels
from detst.structures import ClassMap, ImageRecord
from detst.thresholds import ANY, Cell, Thresholds

CLASSES = ClassMap((1, 5), ("car", "person"))
TH = Thresholds(0.9, {(ANY, c, b): Cell(0.5, None, None, 0, 0, "fixed") for c in CLASSES.names for b in SIZE_BUCKETS},
                CLASSES)
RULE = dict(band=0.2, cross_class_iou=0.7, per_slice=False)


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(iid: int, boxes: list[tuple[float, int]]) -> dict:
    """One image's raw detections: (score, class) each, on boxes that never overlap."""
    return {"id": iid, "xyxy": [[10 * k, 0, 10 * k + 8, 8] for k in range(len(boxes))],
            "score": [s for s, _ in boxes], "cls": [c for _, c in boxes]}


def _images(tmp_path: Path, n: int) -> list[ImageRecord]:
    return [ImageRecord(i, tmp_path / f"{i}.jpg", 200, 50) for i in range(1, n + 1)]


def test_class_cap_keeps_each_class_best_kept_boxes_over_the_whole_pool_and_leaves_ignore_boxes(tmp_path):
    ims = _images(tmp_path, 3)
    jsonl = _rows(tmp_path / "p.jsonl", [_row(1, [(0.95, 0), (0.6, 0), (0.4, 0)]),      # 0.4: ignore (band)
                                         _row(2, [(0.8, 0), (0.7, 1)]),
                                         _row(3, [(0.9, 0), (0.55, 1)])])
    got = {im.id: d for im, d in pseudo_labels(jsonl, ims, {}, TH, **RULE, class_cap=2)}
    kept = {i: sorted(round(float(s), 2) for s in d.score[d.extras["status"] == KEEP]) for i, d in got.items()}
    assert kept == {1: [0.95], 2: [0.7], 3: [0.55, 0.9]}         # car: the 2 best of 0.95, 0.9, 0.8, 0.6
    assert [round(float(s), 2) for s in got[1].score[got[1].extras["status"] == IGNORE]] == [0.4]
    coco, res = build_export(jsonl, ims, {}, CLASSES, TH, **RULE, class_cap=2, info={})
    assert res.dropped == {"class_cap": 2} and res.class_hist == {"car": 2, "person": 2}
    assert len(coco["annotations"]) == 5


def test_class_cap_ties_at_the_cut_all_survive(tmp_path):
    ims = _images(tmp_path, 2)
    jsonl = _rows(tmp_path / "p.jsonl", [_row(1, [(0.8, 0), (0.7, 0)]), _row(2, [(0.7, 0)])])
    _, res = build_export(jsonl, ims, {}, CLASSES, TH, **RULE, class_cap=2, info={})
    assert res.n_kept == 3 and "class_cap" not in res.dropped


def test_the_stream_is_the_export(tmp_path):
    ims = _images(tmp_path, 3)
    jsonl = _rows(tmp_path / "p.jsonl", [_row(1, [(0.95, 0), (0.35, 1)]), _row(2, []), _row(3, [(0.6, 1)])])
    coco, _ = build_export(jsonl, ims, {}, CLASSES, TH, **RULE, class_cap=None, info={})
    streamed = [(im.id, CLASSES.category_ids[c], round(float(s), 5), int(crowd))
                for im, d in pseudo_labels(jsonl, ims, {}, TH, **RULE, class_cap=None)
                for c, s, crowd in zip(d.class_id, d.score, d.extras["iscrowd"])]
    exported = [(a["image_id"], a["category_id"], a["score"], a["iscrowd"]) for a in coco["annotations"]]
    assert streamed == exported and [im["id"] for im in coco["images"]] == [1, 2, 3]


def test_rows_out_of_the_images_order_are_refused_not_exported_in_another_order(tmp_path):
    ims = _images(tmp_path, 2)
    jsonl = _rows(tmp_path / "p.jsonl", [_row(2, [(0.9, 0)]), _row(1, [(0.9, 0)])])
    with pytest.raises(ValueError, match="not in the order of the images"):
        build_export(jsonl, ims, {}, CLASSES, TH, **RULE, class_cap=None, info={})


def test_an_image_without_a_row_is_counted_not_predicted_and_an_undecodable_one_is_named(tmp_path):
    ims = _images(tmp_path, 4)
    jsonl = _rows(tmp_path / "p.jsonl", [_row(2, [(0.9, 0)]), {"id": 3, "error": "not a readable image"},
                                         _row(99, [(0.9, 0)])])             # 99: not one of these images
    coco, res = build_export(jsonl, ims, {}, CLASSES, TH, **RULE, class_cap=None, info={})
    assert [im["id"] for im in coco["images"]] == [2]
    assert res.dropped == {"image_not_predicted": 2, "image_unreadable": 1}    # 1 and 4; 3
    assert coco["info"]["unreadable_images"] == [3]


def test_empty_row_file_exports_no_image_and_counts_every_image(tmp_path):
    ims = _images(tmp_path, 2)
    jsonl = _rows(tmp_path / "p.jsonl", [])
    coco, res = build_export(jsonl, ims, {}, CLASSES, TH, **RULE, class_cap=3, info={})
    assert coco["images"] == [] and coco["annotations"] == []
    assert res.n_images == 0 and res.dropped == {"image_not_predicted": 2}
    assert list(pseudo_labels(jsonl, [], {}, TH, **RULE, class_cap=None)) == []
