"""pool_predictions.jsonl: written by the teacher pass (resume after a torn line, flip consistency) and
read, merged and reordered a row at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detst.io import rows


def _write(path: Path, ids: list[int], tail: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps({"id": i, "v": i * 10}).encode() + b"\n" for i in ids) + tail)
    return path


def test_a_line_cut_by_a_crash_and_everything_after_it_count_as_not_written(tmp_path):
    no_newline = _write(tmp_path / "a.jsonl", [1, 2], tail=b'{"id": 3, "v": 30}')
    assert [r["id"] for r in rows.read(no_newline)] == [1, 2]
    mid_file = _write(tmp_path / "b.jsonl", [1], tail=b'{"id": 2, "v\n' + json.dumps({"id": 3}).encode() + b"\n")
    assert [r["id"] for r in rows.read(mid_file)] == [1]
    assert list(rows.read(tmp_path / "missing.jsonl")) == []


def test_repair_cuts_the_torn_tail_so_appended_rows_stay_readable(tmp_path):
    f = _write(tmp_path / "p.jsonl", [4, 5], tail=b'{"id": 6, "xy')
    intact = _write(tmp_path / "ref.jsonl", [4, 5]).read_bytes()
    assert rows.repair(f) == {4, 5}
    assert f.read_bytes() == intact                      # earlier rows byte for byte
    with open(f, "a") as out:
        out.write(json.dumps({"id": 6, "v": 60}) + "\n")
    assert [r["id"] for r in rows.read(f)] == [4, 5, 6]


def test_merge_adds_only_missing_ids_first_source_wins_and_leaves_a_complete_file_alone(tmp_path):
    main = _write(tmp_path / "main.jsonl", [1, 2], tail=b"{torn")
    s1 = tmp_path / "s1.jsonl"
    s1.write_text(json.dumps({"id": 2, "v": -1}) + "\n" + json.dumps({"id": 3, "v": 31}) + "\n")
    s2 = tmp_path / "s2.jsonl"
    s2.write_text(json.dumps({"id": 3, "v": 32}) + "\n" + json.dumps({"id": 4, "v": 40}) + "\n")
    assert rows.merge(main, [s1, s2]) == 2
    assert [(r["id"], r["v"]) for r in rows.read(main)] == [(1, 10), (2, 20), (3, 31), (4, 40)]
    before = main.read_bytes()
    inode = main.stat().st_ino
    assert rows.merge(main, [s1, s2]) == 0
    assert main.read_bytes() == before and main.stat().st_ino == inode


def test_reorder_puts_rows_in_pool_order_and_leaves_an_ordered_file_untouched(tmp_path):
    f = _write(tmp_path / "p.jsonl", [3, 1, 2, 9])
    assert rows.reorder(f, [1, 2, 3]) is True            # 9 is no longer in the pool: left out
    assert f.read_bytes() == _write(tmp_path / "ref.jsonl", [1, 2, 3]).read_bytes()
    inode = f.stat().st_ino
    assert rows.reorder(f, [1, 2, 3]) is False and f.stat().st_ino == inode
    dup = _write(tmp_path / "dup.jsonl", [1, 1, 2])      # a repeated id is written once
    assert rows.reorder(dup, [1, 2]) is True
    assert dup.read_bytes() == _write(tmp_path / "ref2.jsonl", [1, 2]).read_bytes()


def test_pool_prediction_resumes_after_a_torn_line_without_losing_or_repeating_an_image(tiny_data, fake_predictor,
                                                                                         tmp_path):
    from detst.io.coco import load_coco
    from detst.pseudo import predict_pool

    pool = load_coco(tiny_data["oracle"], tiny_data["pool_images"]).images
    whole = tmp_path / "whole.jsonl"
    predict_pool(fake_predictor, pool, whole, conf=0.01, batch=5, workers=1, progress=False)
    lines = whole.read_bytes().splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_bytes(b"".join(lines[:7]) + lines[7][: len(lines[7]) // 2])      # killed mid-write
    counts = predict_pool(fake_predictor, pool, part, conf=0.01, batch=5, workers=1, progress=False)
    assert counts["resumed"] == 7 and counts["images_predicted"] == len(pool) - 7
    assert part.read_bytes() == whole.read_bytes()


def test_flip_consistency_keeps_exactly_the_boxes_the_mirrored_view_confirms(tiny_data, fake_predictor, tmp_path):
    """With ``flip_iou`` a box stays only when the mirrored image has a same-class box on it; the
    others are counted as ``flip_disagree``, and nothing else changes."""
    from detst.io.coco import load_coco
    from detst.pseudo import flip_consistent, iter_predictions, predict_pool

    pool = load_coco(tiny_data["oracle"], tiny_data["pool_images"]).images
    plain, flipped = tmp_path / "plain.jsonl", tmp_path / "flip.jsonl"
    predict_pool(fake_predictor, pool, plain, conf=0.01, batch=5, workers=2, progress=False)
    counts = predict_pool(fake_predictor, pool, flipped, conf=0.01, batch=5, workers=2, flip_iou=0.5, progress=False)
    raw = {i: d for i, d, _ in iter_predictions(plain)}
    kept = {i: d for i, d, _ in iter_predictions(flipped)}
    assert list(kept) == [im.id for im in pool]
    assert counts["flip_disagree"] == sum(len(raw[i]) - len(kept[i]) for i in raw) > 0
    from detst.io.images import read_image

    for im in pool:
        img = read_image(im.path)[0]
        mirrored = fake_predictor.predict([img[:, ::-1].copy()], conf=0.01)[0]
        agree = flip_consistent(raw[im.id], mirrored, img.shape[1], 0.5)
        np.testing.assert_allclose(kept[im.id].xyxy, raw[im.id].xyxy[agree], atol=0.01)
