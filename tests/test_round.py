"""A whole round on tiny built-in data: real ultralytics training (warm-up + student), a fake
detector for labels, the network made impossible."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

EXPECTED = ["config.yaml", "teacher.json", "thresholds.json", "guard_pre.json", "pseudo_labels.json",
            "pseudo_summary.json", "guard_drift.json", "augment_policy.json", "student/best.pt",
            "guard_post.json", "decision.json", "report.md", "report.json", "report.html"]


def test_whole_round_runs_offline(two_rounds, no_network):
    cfg, first, second, _ = two_rounds
    assert first.status in ("promoted", "rejected")
    assert first.folder == cfg.run_dir / "round_01"
    for name in EXPECTED:
        assert (first.folder / name).exists(), name
    assert no_network == []      # nothing even tried


def test_second_round_starts_from_the_promoted_or_kept_teacher(two_rounds):
    _, first, second, _ = two_rounds
    assert second.folder.name == "round_02"
    d1 = json.loads((first.folder / "decision.json").read_text())
    t2 = json.loads((second.folder / "teacher.json").read_text())
    assert t2["weights"] == d1["next_teacher"]
    expect = d1["student"] if d1["status"] == "promoted" else d1["teacher"]
    assert d1["next_teacher"] == expect
    th2 = json.loads((second.folder / "thresholds.json").read_text())
    assert th2["target"] == 0.8      # the schedule's second step


def test_pseudo_labels_load_in_pycocotools_and_self_evaluate_to_ap_1(two_rounds):
    _, first, _, _ = two_rounds
    path = first.folder / "pseudo_labels.json"
    data = json.loads(path.read_text())
    assert data["images"] and all(a["id"] >= 1 for a in data["annotations"])
    for a in data["annotations"]:
        assert {"bbox", "area", "iscrowd", "segmentation", "score", "threshold", "size_bucket"} <= set(a)
    n_pool = 24
    assert len(data["images"]) + data["info"]["excluded_images"] == n_pool    # every admitted image listed
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        dets = [{**a, "score": 1.0} for a in data["annotations"] if not a["iscrowd"]]
        dt = gt.loadRes(dets)
        E = COCOeval(gt, dt, "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    assert E.stats[0] == pytest.approx(1.0)


def test_report_names_the_verdict_first(two_rounds):
    _, first, _, _ = two_rounds
    md = (first.folder / "report.md").read_text().splitlines()
    assert md[0].startswith("# detst round 1")
    assert "Guard verdict" in "\n".join(md[:6])
    summary = json.loads((first.folder / "report.json").read_text())
    assert summary["status"] == first.status


def test_finished_rounds_are_not_modified_by_the_next(two_rounds):
    cfg, first, second, _ = two_rounds
    # round_01 files are older than round_02's decision
    newest_r1 = max(p.stat().st_mtime_ns for p in first.folder.rglob("*") if p.is_file())
    assert newest_r1 <= (second.folder / "teacher.json").stat().st_mtime_ns


def test_real_yolo_detector_predicts_offline(two_rounds, no_network):
    from detst.io.images import read_image
    from detst.models.yolo import YoloDetector

    cfg, first, _, _ = two_rounds
    w = json.loads((first.folder / "teacher.json").read_text())["weights"]
    det = YoloDetector(w, "cpu", imgsz=128)
    img, _ = read_image(next((cfg.run_dir / "data" / "daynight" / "val" / "images").glob("*.jpg")))
    out = det.predict([img, img], conf=0.0001)
    assert len(out) == 2 and out[0].xyxy.shape[1] == 4
    np.testing.assert_array_equal(out[0].xyxy, out[1].xyxy)
    assert no_network == []


def test_yolo_detector_matches_ultralytics_predict_on_same_and_mixed_shapes(two_rounds):
    """detst letterboxes in its decode threads and calls ultralytics' backend and NMS itself;
    the detections must be those of ``YOLO.predict`` (mixed shapes: as predicted one by one)."""
    import cv2

    from detst.io.images import read_image
    from detst.models.yolo import YoloDetector

    cfg, first, _, _ = two_rounds
    w = json.loads((first.folder / "teacher.json").read_text())["weights"]
    det = YoloDetector(w, "cpu", imgsz=128)
    files = sorted((cfg.run_dir / "data" / "daynight" / "val" / "images").glob("*.jpg"))[:3]
    imgs = [read_image(f)[0] for f in files]
    imgs.append(cv2.resize(imgs[0], (150, 70)))                       # another shape in the same batch
    ours = det.predict(imgs, conf=0.001)
    same = det.model.predict(imgs[:3], imgsz=128, conf=0.001, iou=0.6, device="cpu", verbose=False)
    alone = det.model.predict(imgs[3:], imgsz=128, conf=0.001, iou=0.6, device="cpu", verbose=False)
    assert sum(len(d) for d in ours) > 0
    for mine, ref in zip(ours, [*same, *alone]):
        np.testing.assert_allclose(mine.xyxy, ref.boxes.xyxy.numpy(), atol=1e-3)
        np.testing.assert_allclose(mine.score, ref.boxes.conf.numpy(), atol=1e-5)
        np.testing.assert_array_equal(mine.class_id, ref.boxes.cls.numpy().astype(np.int64))


def test_batches_side_by_side_on_the_cpu_give_the_detections_of_one_batch_at_a_time(two_rounds, tmp_path):
    """On the CPU ``predict_records`` runs one batch per core, each on its own model replica; with
    images of several shapes in flight at once (the Detect head caches anchors per shape) the
    detections are bit for bit those of the adapter run one batch at a time with the same torch
    thread count, in input order, and torch's thread count is what it was before."""
    import cv2
    import torch

    from detst.io.images import read_image
    from detst.models import predict_records
    from detst.models.yolo import YoloDetector
    from detst.structures import ImageRecord

    cfg, first, _, _ = two_rounds
    w = json.loads((first.folder / "teacher.json").read_text())["weights"]
    det = YoloDetector(w, "cpu", imgsz=128)
    files = sorted((cfg.run_dir / "data" / "daynight" / "val" / "images").glob("*.jpg"))
    recs = []
    for k, f in enumerate(files * 4):
        img = read_image(f)[0]
        if k % 3:
            img = cv2.resize(img, (128 + 32 * (k % 3), 96))       # three shapes: neighbours differ
        cv2.imwrite(str(tmp_path / f"{k}.png"), img)
        recs.append(ImageRecord(k + 1, tmp_path / f"{k}.png", img.shape[1], img.shape[0]))
    with det._net() as a, det._net() as b:           # two batches at once: two replicas ...
        assert a is not b
    with det._net() as c:                             # ... kept for the next pass, not copied again
        assert c is a or c is b
    threads = torch.get_num_threads()
    with det.concurrent() as lanes:
        assert lanes == (1 if (os.cpu_count() or 1) < 2 else min(os.cpu_count(), 4))
    got = [(r.id, d) for rs, ds, _ in predict_records(det, recs, conf=0.001, batch=1, workers=2)
           for r, d in zip(rs, ds)]
    assert torch.get_num_threads() == threads
    assert [i for i, _ in got] == [r.id for r in recs]
    assert sum(len(d) for _, d in got) > 0
    with det.concurrent():                            # the same torch thread count, one batch at a time
        ref = [det.predict([read_image(r.path)[0]], conf=0.001)[0] for r in recs]
    for (_, mine), theirs in zip(got, ref):
        np.testing.assert_array_equal(mine.xyxy, theirs.xyxy)
        np.testing.assert_array_equal(mine.score, theirs.score)
        np.testing.assert_array_equal(mine.class_id, theirs.class_id)


def test_same_teacher_same_pool_gives_byte_identical_pseudo_labels(two_rounds, tmp_path):
    """Real detector on the CPU, run twice from scratch: the exported COCO file is byte-identical
    (the first kept in memory, the second streamed to its file)."""
    from detst.data import load_data
    from detst.io.files import dumps_json
    from detst.models.yolo import YoloDetector
    from detst.pseudo import build_export, predict_pool
    from detst.round import _predict_images
    from detst.thresholds import calibrate

    cfg, first, _, _ = two_rounds
    data = load_data(cfg, cfg.run_dir)
    w = json.loads((first.folder / "teacher.json").read_text())["weights"]
    outputs = []
    for k in range(2):
        det = YoloDetector(w, "cpu", imgsz=128)
        val_preds = _predict_images(det, data.val.images, 0.0001, 4, 1)
        th = calibrate(data.val.boxes, val_preds, data.classes, 0.0, min_support=1, lo=0.0005, hi=0.95)
        jsonl = tmp_path / f"p{k}.jsonl"
        predict_pool(det, data.pool, jsonl, conf=0.0001, batch=5, workers=2, progress=False)
        out = tmp_path / f"pseudo{k}.json" if k else None        # the second run streams its file (as a round does)
        coco, res = build_export(jsonl, data.pool, data.pool_tags, data.classes, th, band=0.0005,
                                 cross_class_iou=0.7, per_slice=False, class_cap=None, info={"teacher": w}, out=out)
        outputs.append(out.read_bytes() if out else (dumps_json(coco, None) + "\n").encode())
    assert res.n_kept > 0
    assert outputs[0] == outputs[1]


def test_two_shards_merge_into_the_same_files_as_a_single_run(two_rounds, fake_predictor, tiny_data, tmp_path):
    from detst.config import load_config
    from detst.round import run_round, run_shard
    from tests.conftest import TINY_YAML

    _, first, _, _ = two_rounds
    teacher = json.loads((first.folder / "teacher.json").read_text())["weights"]
    d = tiny_data
    data = (f"data:\n  labeled: {{annotations: {d['labeled_annotations']}, images: {d['labeled_images']}}}\n"
            f"  val: {{annotations: {d['val_annotations']}, images: {d['val_images']}}}\n"
            f"  unlabeled: {{annotations: {d['pool_annotations']}, images: {d['pool_images']}}}\n")
    base = TINY_YAML.format(name="r", dir="runs")
    base = base.replace(base[base.index("data:"):base.index("  slices:")], data)
    outs = {}
    for name in ("single", "sharded"):
        (tmp_path / name).mkdir()
        p = tmp_path / name / "exp.yaml"
        p.write_text(base)
        cfg = load_config(p, {"model.teacher": teacher})
        if name == "sharded":
            for k in (2, 1):
                s = run_shard(cfg, (k, 2), predictor_factory=lambda w: fake_predictor, progress=False, echo=False)
                assert s.status == "shard"
            assert len(list((cfg.run_dir / "round_01" / "shards").glob("*.jsonl"))) == 2
        out = run_round(cfg, predictor_factory=lambda w: fake_predictor, progress=False, echo=False)
        outs[name] = out.folder
    for f in ("pool_predictions.jsonl", "pseudo_labels.json", "thresholds.json"):
        assert (outs["single"] / f).read_bytes() == (outs["sharded"] / f).read_bytes(), f
    manifest = json.loads((outs["sharded"] / ".stages" / "pool_predictions.json").read_text())
    assert manifest["result"]["from_shards"] == 24                  # nothing predicted twice


def test_a_shard_predicted_with_another_batch_size_is_predicted_again_not_merged(two_rounds, fake_predictor, tmp_path):
    """Another batch size can change a score's last bits (other kernels), so its rows would make the
    merge differ from a single run: the inference settings are part of the shard's key."""
    from detst.config import load_config
    from detst.round import run_round, run_shard
    from tests.conftest import TINY_YAML

    _, first, _, _ = two_rounds
    teacher = json.loads((first.folder / "teacher.json").read_text())["weights"]
    p = tmp_path / "exp.yaml"
    p.write_text(TINY_YAML.format(name="mixed", dir=str(tmp_path / "runs")))
    for k, batch in ((1, 3), (2, 8)):
        cfg = load_config(p, {"model.teacher": teacher, "model.batch": batch})
        assert run_shard(cfg, (k, 2), predictor_factory=lambda w: fake_predictor, progress=False,
                         echo=False).status == "shard"
    out = run_round(load_config(p, {"model.teacher": teacher}), predictor_factory=lambda w: fake_predictor,
                    progress=False, echo=False)
    manifest = json.loads((out.folder / ".stages" / "pool_predictions.json").read_text())
    assert manifest["result"]["from_shards"] == 12                  # shard 2 (batch 8, as the round) only


def test_whole_round_warmup_included_is_reproducible_on_the_cpu(tiny_config, fake_predictor):
    """Same config and seed in two run folders, real warm-up and student training on the CPU
    (the labeler is the fake one: a 3-epoch tiny teacher finds nothing; a real labeler's output
    is byte-identical by the test above): the same teacher and student weights, the same
    pseudo-labels and the same verdict."""
    import torch

    from detst.config import load_config
    from detst.round import run_round

    over = {"model.warmup.epochs": 2}
    outs = [run_round(load_config(tiny_config(f"rep{k}"), over), predictor_factory=lambda w: fake_predictor,
                      progress=False, echo=False) for k in range(2)]
    assert outs[0].status in ("promoted", "rejected"), outs[0].sentence

    def weights(path):
        sd = torch.load(path, map_location="cpu", weights_only=False)["model"].float().state_dict()
        return dict(sd)

    def teacher_student(out):
        t = json.loads((out.folder / "teacher.json").read_text())["weights"]
        return weights(t), weights(out.folder / "student" / "best.pt")

    (t0, s0), (t1, s1) = teacher_student(outs[0]), teacher_student(outs[1])
    for a, b in ((t0, t1), (s0, s1)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(t0[k], s0[k]) for k in t0)          # the student did train
    p0, p1 = (json.loads((o.folder / "pseudo_labels.json").read_text()) for o in outs)
    assert p0["annotations"] == p1["annotations"] and len(p0["annotations"]) > 0
    g0, g1 = (json.loads((o.folder / "guard_post.json").read_text()) for o in outs)
    assert outs[0].status == outs[1].status and outs[0].sentence == outs[1].sentence
    assert json.dumps(g0, sort_keys=True) == json.dumps(g1, sort_keys=True)


def test_student_training_labels_are_the_exported_pseudo_labels(two_rounds):
    """The training set is selected again from the row file (the export does not hold its boxes for
    it); it must be exactly the exported file's: kept boxes as labels, ignore boxes filled grey."""
    from detst.io.yolo import read_labels

    _, first, second, _ = two_rounds
    for r in (first, second):
        coco = json.loads((r.folder / "pseudo_labels.json").read_text())
        folder = r.folder / "student_data" / "pseudo"
        by_image: dict[int, list] = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            if not a["iscrowd"]:
                by_image[a["image_id"]].append(a["bbox"])
        assert sorted(int(p.stem[1:]) for p in (folder / "images").iterdir()) == sorted(by_image)
        for im in coco["images"]:
            got, _ = read_labels(folder / "labels" / f"P{im['id']:08d}.txt", im["width"], im["height"])
            want = np.array(by_image[im["id"]], np.float64).reshape(-1, 4)
            want[:, 2:] += want[:, :2]
            assert np.allclose(np.sort(got.xyxy, 0), np.sort(want, 0), atol=0.02), im["id"]
        crowded = {a["image_id"] for a in coco["annotations"] if a["iscrowd"]}
        copies = {int(p.stem[1:]) for p in (folder / "images").iterdir() if not p.is_symlink()}
        assert copies == crowded                      # grey-filled copies exactly where ignore boxes are


def test_teacher_weights_that_are_neither_here_nor_published_are_a_config_error_without_network(
        tiny_config, no_network):
    from detst.config import load_config
    from detst.errors import ConfigError
    from detst.round import warmup

    before = len(no_network)
    cfg = load_config(tiny_config("noteacher"), {"model.teacher": "nope.pt"})
    with pytest.raises(ConfigError, match=r"model\.teacher 'nope\.pt'.*not a weights file ultralytics publishes"):
        warmup(cfg)
    assert len(no_network) == before            # ultralytics would have asked GitHub's API about the name


def test_published_weights_offline_are_a_config_error_saying_the_download_failed(tiny_config, monkeypatch):
    import requests

    from detst.config import load_config
    from detst.errors import ConfigError
    from detst.round import warmup

    def offline(*a, **k):
        raise requests.ConnectionError("no route to github.com")

    monkeypatch.setattr(requests, "get", offline)
    cfg = load_config(tiny_config("hub"), {"model.teacher": "yolov8n.pt"})
    with pytest.raises(ConfigError, match=r"model\.teacher 'yolov8n\.pt'.*downloading it .* failed"):
        warmup(cfg)
    assert not list(cfg.run_dir.rglob("yolov8n.pt"))      # no partial download left to pass for weights
