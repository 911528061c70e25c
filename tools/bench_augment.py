#!/usr/bin/env python
"""Cost of the student's strong policy and of the teacher's flip-consistency, measured in one run.

python tools/bench_augment.py [--config configs/night.yaml] [--epochs 2] [--pool 500]

Needs the night demo's first round (its teacher, thresholds and YOLO sets). Prints
1. epoch time with the strong policy ÷ plain ultralytics (its built-in transforms), same data;
2. flip-consistency: pool pseudo-labeling time with ÷ without, and precision/recall of the kept
   pseudo-labels against the pool oracle with and without it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def epoch_seconds(folder: Path) -> list[float]:
    rows = list(csv.DictReader(open(folder / "results.csv")))
    t = [float(r["time"]) for r in rows]
    return [b - a for a, b in zip([0.0] + t[:-1], t)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/night.yaml")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pool", type=int, default=500)
    a = ap.parse_args(argv)

    from detst.augment import build_policy
    from detst.config import DEFAULT_MODEL_YAML, load_config
    from detst.data import load_data
    from detst.io.coco import load_coco
    from detst.io.files import read_json
    from detst.models import yolo
    from detst.pseudo import KEEP, iter_predictions, predict_pool, select, threshold_for
    from detst.thresholds import Thresholds
    from tools.bench_thresholds import quality

    cfg = load_config(a.config)
    run = cfg.run_dir
    r1 = run / "round_01"
    if not (r1 / "thresholds.json").exists():
        print(f"run tools/run_round.py --config {a.config} first (needs {r1})")
        return 2
    yolo.configure_offline(run / ".ultralytics")
    lab = sorted((run / "yolo").glob("labeled-*"))[-1]
    val = sorted((run / "yolo").glob("val-*"))[-1]
    with tempfile.TemporaryDirectory(prefix="detst-bench-aug-") as t:
        tmp = Path(t)
        from detst.student import write_data_yaml

        data = load_data(cfg, run)
        data_yaml = write_data_yaml(tmp / "data.yaml", [lab], val, list(data.classes.names))
        times = {}
        for name, aug in (("plain", None), ("strong", build_policy(cfg.policies()["strong"]))):
            res = yolo.train(DEFAULT_MODEL_YAML, data_yaml, tmp / name, imgsz=cfg.model.imgsz, epochs=a.epochs,
                             time=None, patience=50, batch=16, optimizer="AdamW", lr0=0.003, seed=0, device="cpu",
                             workers=2, augmentations=aug, extra={"plots": False, "val": False, "mosaic": 1.0,
                                                                  "close_mosaic": 0})
            times[name] = epoch_seconds(res.folder)
        # the first epoch carries start-up costs: compare the later ones
        p = sum(times["plain"][1:]) / max(len(times["plain"]) - 1, 1)
        s = sum(times["strong"][1:]) / max(len(times["strong"]) - 1, 1)
        print(f"1. epoch time, {len(list((lab / 'images').iterdir()))} images at {cfg.model.imgsz} px: plain ultralytics "
              f"{p:.1f} s, strong policy {s:.1f} s → ratio {s / p:.2f} (target ≤ 1.1)")

        teacher = read_json(r1 / "teacher.json")["weights"]
        th = Thresholds.from_json(read_json(r1 / "thresholds.json"), data.classes)
        pool = data.pool[: a.pool]
        oracle_all = load_coco(data.sources["oracle"], data.sources["pool_images"]).boxes
        det = yolo.YoloDetector(teacher, "cpu", cfg.model.imgsz)
        out = {}
        for name, flip in (("without", None), ("with", cfg.pseudo.flip_consistency.iou)):
            jsonl = tmp / f"{name}.jsonl"
            t0 = time.perf_counter()
            predict_pool(det, pool, jsonl, conf=cfg.pseudo.score_floor, batch=cfg.model.batch, workers=2,
                         progress=False, flip_iou=flip)
            dt = time.perf_counter() - t0
            kept = {}
            for iid, d, _ in iter_predictions(jsonl):
                if d is None:
                    continue
                sel, _ = select(d, threshold_for(th, d, [], False), cfg.pseudo.ignore_band, cfg.pseudo.cross_class_iou)
                kept[iid] = sel[sel.extras["status"] == KEEP]
            q = quality(kept, {i: oracle_all[i] for i in kept}, data.pool_tags)
            out[name] = (dt, q)
        (tw, qw), (to, qo) = out["with"], out["without"]
        print(f"2. flip-consistency on {len(pool)} pool images: time {tw:.1f} s vs {to:.1f} s → cost ×{tw / to:.2f}")
        for s_ in ("all", "day", "night"):
            a_, b_ = qo.get((s_, "all")), qw.get((s_, "all"))
            if a_ and b_:
                print(f"   {s_:<5} precision {a_[0]:.3f} → {b_[0]:.3f} ({b_[0] - a_[0]:+.3f}), recall {a_[1]:.3f} → "
                      f"{b_[1]:.3f} ({b_[1] - a_[1]:+.3f}); kept {a_[2]} → {b_[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
