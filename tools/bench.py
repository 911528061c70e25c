#!/usr/bin/env python
"""detst's overhead and memory, measured side by side in one run (printed ratios, no pass/fail).

python tools/bench.py [--model W.pt] [--pool 800] [--rss-small 1000] [--rss-large 10000] [--eval-images 2000]

1. pseudo-labeling (inference + filtering + export) ÷ plain ultralytics predict, same images,
   model, imgsz and batch (throughput ratio; ≥ 1.0 = detst at least as fast);
2. all-slice evaluation ÷ one pycocotools pass over all images, and the largest difference
   from running pycocotools on each slice separately;
3. peak RSS pseudo-labeling a large pool ÷ a small one (separate processes, tiny images);
4. sharded (N = 2) merged output vs a single run: identical files.
The model is --model, else the night demo's teacher when runs/night holds one, else detst-tiny
from its yaml (untrained: the bench says so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


TRAINED = REPO / "runs" / "night" / "warmup" / "train" / "weights" / "best.pt"


def _default_model() -> str:
    return str(TRAINED) if TRAINED.exists() else str(REPO / "detst" / "models" / "detst-tiny.yaml")


def _pool(out: Path, n: int, imgsz: int):
    from datasets.daynight import generate

    d = generate(out, seed=1, n_labeled=1, n_val=1, n_pool=n, imgsz=imgsz, progress=False)
    return (d, *_load_pool(d))


def _load_pool(d: dict[str, Path]):
    """The pool as a round loads it (``detst.data.load_pool``: images and tags, no boxes)."""
    from types import SimpleNamespace

    from detst.config import SliceConfig
    from detst.data import load_pool
    from detst.io.coco import load_classes, read_coco_json
    from detst.slices import tag_images

    images, _ = load_pool(d["pool_annotations"], d["pool_images"])
    classes = load_classes(read_coco_json(d["pool_annotations"]), d["pool_annotations"])
    tags = tag_images(images, {"night": SliceConfig(attribute="timeofday", equals="night"),
                               "day": SliceConfig(attribute="timeofday", equals="day")})
    return SimpleNamespace(images=images, classes=classes), tags


def _export(jsonl, images, tags, classes, out_json):
    from detst.boxes import SIZE_BUCKETS
    from detst.pseudo import build_export
    from detst.thresholds import ANY, Cell, Thresholds

    cells = {(ANY, c, b): Cell(0.3, None, None, 0, 0, "fixed") for c in classes.names for b in SIZE_BUCKETS}
    th = Thresholds(0.9, cells, classes)
    _, res = build_export(jsonl, images, tags, classes, th, band=0.15, cross_class_iou=0.7, per_slice=False,
                          class_cap=None, info={}, out=out_json)
    return res


def bench_pseudo(tmp: Path, model: str, n: int, imgsz: int, batch: int) -> None:
    from detst.models.yolo import YoloDetector
    from detst.pseudo import predict_pool

    d, cs, tags = _pool(tmp / "pool", n, imgsz)
    det = YoloDetector(model, "cpu", imgsz=imgsz)
    paths = sorted(str(im.path) for im in cs.images)

    def plain() -> float:
        t = time.perf_counter()
        for _ in det.model.predict(source=str(d["pool_images"]), imgsz=imgsz, batch=batch, conf=0.01, stream=True,
                                   verbose=False, device="cpu"):
            pass
        return time.perf_counter() - t

    def ours(k: int) -> float:
        jsonl = tmp / f"p{k}.jsonl"
        t = time.perf_counter()
        predict_pool(det, cs.images, jsonl, conf=0.01, batch=batch, workers=2, progress=False)
        _export(jsonl, cs.images, tags, cs.classes, tmp / f"p{k}.json")
        return time.perf_counter() - t

    plain()                                  # warm-up of both paths
    ours(-1)
    tp, to = [], []
    for k in range(3):                       # alternated; the faster run of each counts
        tp.append(plain())
        to.append(ours(k))
    p, o = min(tp), min(to)
    print(f"1. pseudo-labeling {len(paths)} images at {imgsz} px, batch {batch}: plain ultralytics predict "
          f"{len(paths) / p:.1f} img/s, detst (inference + filtering + export) {len(paths) / o:.1f} img/s "
          f"→ ratio {p / o:.2f} (target ≥ 1.0)")


def bench_eval(n_images: int) -> None:
    import contextlib
    import io

    import numpy as np
    from pycocotools.cocoeval import COCOeval

    from detst.evaluate import _coco_dt, _coco_gt, evaluate_slices, evaluate_slices_reference
    from detst.structures import ClassMap, Detections, ImageRecord

    rng = np.random.default_rng(0)
    classes = ClassMap((1, 2, 3), ("a", "b", "c"))
    images, gt, preds = [], {}, {}
    for i in range(1, n_images + 1):
        images.append(ImageRecord(i, Path(f"/x/{i}.jpg"), 640, 480, {}))
        g = rng.uniform(0, 400, (10, 2))
        gxy = np.concatenate([g, g + rng.uniform(8, 200, (10, 2))], 1)
        gt[i] = Detections(gxy, np.ones(10), rng.integers(0, 3, 10), {"iscrowd": np.zeros(10, np.int64)})
        jitter = gxy + rng.normal(0, 4, gxy.shape)
        fp = rng.uniform(0, 400, (10, 2))
        pxy = np.concatenate([jitter, np.concatenate([fp, fp + rng.uniform(8, 100, (10, 2))], 1)])
        preds[i] = Detections(pxy, rng.uniform(0, 1, 20), np.concatenate([gt[i].class_id, rng.integers(0, 3, 10)]))
    ids = [im.id for im in images]
    slices = {"all": ids, "day": ids[::2], "night": ids[1::2], "first_half": ids[: n_images // 2], "every_3rd": ids[::3]}
    def run_ours():
        return evaluate_slices(images, gt, preds, classes, slices)

    def run_one():                           # both sides include building the COCO objects
        coco_gt = _coco_gt(images, gt, classes)
        coco_dt = _coco_dt(coco_gt, preds, classes)
        with contextlib.redirect_stdout(io.StringIO()):
            E = COCOeval(coco_gt, coco_dt, "bbox")
            E.evaluate()
            E.accumulate()
            E.summarize()

    times: dict[str, list[float]] = {"ours": [], "one": []}
    for _ in range(2):                       # alternated; the faster run of each counts
        for name, fn in (("ours", run_ours), ("one", run_one)):
            t = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            if name == "ours":
                ours = out
    t_ours, t_one = min(times["ours"]), min(times["one"])
    ref = evaluate_slices_reference(images, gt, preds, classes, slices)
    diff = 0.0
    from detst.evaluate import STAT_NAMES

    for name, stats in ref.items():
        for k, v in zip(STAT_NAMES, stats):
            mine = ours[name].stats[k]
            diff = max(diff, abs((mine if mine is not None else -1.0) - v))
    print(f"2. evaluation of {len(slices)} slices over {n_images} images ({n_images * 20} detections): detst "
          f"{t_ours:.2f} s, one pycocotools pass over all images {t_one:.2f} s → ratio {t_ours / t_one:.2f} "
          f"(target ≤ 0.5); largest difference from per-slice pycocotools {diff:.1e} (target ≤ 1e-9)")


RSS_CHILD = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import tools.bench as B
from detst.models.yolo import YoloDetector, configure_offline
from detst.pseudo import predict_pool
folder = Path(sys.argv[2])
configure_offline(folder / "yolo")
cs, tags = B._load_pool({"pool_annotations": Path(sys.argv[4]), "pool_images": Path(sys.argv[5])})
det = YoloDetector(sys.argv[3], "cpu", imgsz=64)
jsonl = folder / "p.jsonl"
jsonl.unlink(missing_ok=True)
predict_pool(det, cs.images, jsonl, conf=0.05, batch=32, workers=2, progress=False)
res = B._export(jsonl, cs.images, tags, cs.classes, folder / "p.json")
# VmHWM is this program's own peak; ru_maxrss would keep the parent's from before exec (Linux)
status = Path("/proc/self/status")
hwm = [int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith("VmHWM:")] if status.exists() else []
peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_kb": peak, "boxes": res.n_kept + res.n_ignored}))
"""


def bench_rss(tmp: Path, model: str, small: int, large: int) -> None:
    """Each pool is generated here, then labeled by a fresh process that only loads it: that
    process's peak RSS is the pseudo-labeling's (the generator's memory is not counted)."""
    out = {}
    for n in (small, large):
        folder = tmp / f"rss{n}"
        d = _pool(folder / "pool", n, 64)[0]
        r = subprocess.run([sys.executable, "-c", RSS_CHILD, str(REPO), str(folder), model,
                            str(d["pool_annotations"]), str(d["pool_images"])], capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("{")]
        if not line:
            print(r.stdout[-2000:], r.stderr[-2000:])
            raise SystemExit("rss child failed")
        out[n] = json.loads(line[-1])
    a, b = out[small], out[large]
    print(f"3. peak RSS pseudo-labeling {large} vs {small} tiny images: {b['peak_kb'] / 1024:.0f} MiB vs "
          f"{a['peak_kb'] / 1024:.0f} MiB ({b['boxes']} vs {a['boxes']} boxes) → ratio "
          f"{b['peak_kb'] / a['peak_kb']:.3f} (target ≤ 1.1)")


def bench_shards(tmp: Path, model: str, n: int) -> None:
    from detst.models.yolo import YoloDetector
    from detst.pseudo import merge_shard_rows, predict_pool, reorder_rows

    d, cs, tags = _pool(tmp / "shardpool", n, 128)
    det = YoloDetector(model, "cpu", imgsz=128)
    single = tmp / "single" / "pool_predictions.jsonl"
    single.parent.mkdir()
    predict_pool(det, cs.images, single, conf=0.01, batch=16, workers=2, progress=False)
    reorder_rows(single, [im.id for im in cs.images])
    rdir = tmp / "sharded"
    (rdir / "shards").mkdir(parents=True)
    for k in (1, 2):
        part = rdir / "shards" / f"pool_predictions-{k}of2.jsonl"
        predict_pool(det, cs.images[k - 1::2], part, conf=0.01, batch=16, workers=2, progress=False)
        (rdir / "shards" / f"pool_predictions-{k}of2.key").write_text("k")
    merged = rdir / "pool_predictions.jsonl"
    merge_shard_rows(rdir, "k", merged)
    reorder_rows(merged, [im.id for im in cs.images])
    _export(single, cs.images, tags, cs.classes, tmp / "single.json")
    _export(merged, cs.images, tags, cs.classes, tmp / "merged.json")
    same_jsonl = single.read_bytes() == merged.read_bytes()
    same_coco = (tmp / "single.json").read_bytes() == (tmp / "merged.json").read_bytes()
    print(f"4. sharded (N = 2) vs single run over {n} images: predictions identical: {same_jsonl}; "
          f"pseudo_labels COCO identical: {same_coco}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=800)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--rss-small", type=int, default=1000)
    ap.add_argument("--rss-large", type=int, default=10000)
    ap.add_argument("--shard-images", type=int, default=200)
    ap.add_argument("--model", default=None, help="weights .pt or model yaml (default: the night demo's teacher "
                    "when `make demo` has trained one, else untrained detst-tiny)")
    a = ap.parse_args(argv)
    if a.model is not None and not Path(a.model).is_file():
        ap.error(f"--model {a.model}: no such file")
    model = str(Path(a.model).resolve()) if a.model is not None else _default_model()
    with tempfile.TemporaryDirectory(prefix="detst-bench-") as t:
        tmp = Path(t)
        from detst.models.yolo import configure_offline

        configure_offline(tmp / "yolo")
        print(f"model: {model}; {os.cpu_count()} CPU cores")
        if model.endswith(".yaml"):
            print(f"note: untrained model (no {TRAINED.relative_to(REPO)}; `make demo` trains one, or pass --model): "
                  "it keeps almost no box, so figures 1 and 3 measure little of the filtering and export")
        t0 = time.perf_counter()
        bench_pseudo(tmp, model, a.pool, a.imgsz, a.batch)
        bench_eval(a.eval_images)
        bench_rss(tmp, model, a.rss_small, a.rss_large)
        bench_shards(tmp, model, a.shard_images)
        print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
