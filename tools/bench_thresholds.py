#!/usr/bin/env python
"""Calibrated per class × size thresholds vs one global threshold, measured on the pool oracle.

python tools/bench_thresholds.py --config configs/night.yaml [--global 0.9]

Uses the run's latest round (its teacher's pool predictions and val predictions); run the
round first. Prints precision and recall of the kept pseudo-labels per size bucket and per
slice for both policies, and the small-object recall ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def quality(kept, oracle, image_slices, slices=("all", "day", "night")):
    """-> {(slice, bucket): (precision, recall, n_pred, n_gt)} at IoU 0.5 against the oracle."""
    from detst.boxes import SIZE_BUCKETS, size_bucket_index
    from detst.matching import match
    from detst.structures import Detections

    acc = {}
    for iid, g in oracle.items():
        p = kept.get(iid, Detections.empty())
        status, hit = match(g, p, 0.5)
        psize, gsize = size_bucket_index(p.area), size_bucket_index(g.area)
        for s in slices:
            if s not in image_slices.get(iid, []):
                continue
            for b, name in [(None, "all"), *enumerate(SIZE_BUCKETS)]:
                pm = np.ones(len(p), bool) if b is None else psize == b
                gm = np.ones(len(g), bool) if b is None else gsize == b
                a = acc.setdefault((s, name), [0, 0, 0, 0])
                a[0] += int((status[pm] == 1).sum())
                a[1] += int(pm.sum())
                a[2] += int(hit[gm].sum())
                a[3] += int(gm.sum())
    return {k: (v[0] / v[1] if v[1] else float("nan"), v[2] / v[3] if v[3] else float("nan"), v[1], v[3])
            for k, v in acc.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/night.yaml")
    ap.add_argument("--global", dest="global_thr", type=float, default=0.9)
    ap.add_argument("--round", type=int, default=None, help="round number (default: the latest with predictions)")
    a = ap.parse_args(argv)

    from detst.config import load_config
    from detst.data import load_data
    from detst.io.coco import load_coco
    from detst.io.files import read_json
    from detst.pseudo import KEEP, iter_predictions, select, threshold_for
    from detst.runfolder import round_dirs
    from detst.thresholds import Thresholds

    cfg = load_config(a.config)
    run = cfg.run_dir
    rounds = [r for r in round_dirs(run) if (r / "pool_predictions.jsonl").exists()]
    if a.round is not None:
        rounds = [r for r in rounds if r.name == f"round_{a.round:02d}"]
    if not rounds:
        print(f"no round with pool predictions in {run}: run tools/run_round.py --config {a.config} first")
        return 2
    rdir = rounds[-1]
    data = load_data(cfg, run)
    oracle_path = data.sources.get("oracle")
    if oracle_path is None:
        print("this config's data has no pool oracle (only data.builtin / data.shared_real do)")
        return 2
    oracle = load_coco(oracle_path, data.sources["pool_images"]).boxes
    p = cfg.pseudo
    th = Thresholds.from_json(read_json(rdir / "thresholds.json"), data.classes)    # the round's own cells
    calibrated, global_ = {}, {}
    for iid, d, _err in iter_predictions(rdir / "pool_predictions.jsonl"):
        if d is None:
            continue
        thr = threshold_for(th, d, data.pool_tags.get(iid, []), p.per_slice)
        sel, _ = select(d, thr, p.ignore_band, p.cross_class_iou)
        calibrated[iid] = sel[sel.extras["status"] == KEEP]
        g, _ = select(d, np.full(len(d), a.global_thr, np.float32), 0.0, p.cross_class_iou)
        global_[iid] = g[g.extras["status"] == KEEP]
    oracle = {i: oracle[i] for i in calibrated}
    qc = quality(calibrated, oracle, data.pool_tags)
    qg = quality(global_, oracle, data.pool_tags)
    print(f"# {rdir}: {len(oracle)} pool images, precision target {th.target}, global threshold {a.global_thr}")
    print(f"{'slice':<6} {'size':<7} {'n_gt':>6} | {'calibrated P':>12} {'R':>6} {'n':>6} | "
          f"{'global P':>9} {'R':>6} {'n':>6}")
    for key in sorted(qc, key=lambda k: (k[0] != "all", k[0], ["all", "small", "medium", "large"].index(k[1]))):
        c, g = qc[key], qg.get(key, (float("nan"),) * 4)
        print(f"{key[0]:<6} {key[1]:<7} {c[3]:>6} | {c[0]:>12.3f} {c[1]:>6.3f} {c[2]:>6} | {g[0]:>9.3f} {g[1]:>6.3f} {g[2]:>6}")
    rs_c, rs_g = qc[("all", "small")][1], qg[("all", "small")][1]
    print(f"small-object recall: calibrated {rs_c:.3f} vs global {rs_g:.3f} → ratio "
          f"{rs_c / rs_g if rs_g else float('inf'):.2f} (target ≥ 1.5)")
    print(f"overall precision: calibrated {qc[('all', 'all')][0]:.3f} (target {th.target} − 0.05 = "
          f"{th.target - 0.05:.2f}); global {qg[('all', 'all')][0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
