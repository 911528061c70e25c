"""run_round: one self-training round, its stages in order, each resumable.

teacher → val predictions → thresholds → guard.pre → pseudo-labels → drift → student
→ student val predictions → guard.post → decision → report. Every stage writes into
``runs/<name>/round_NN/`` and records a manifest; a stage whose manifest matches its
inputs is skipped, so the same command resumes an interrupted round.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from detst import guard as G
from detst.augment import build_policy, describe_policy
from detst.boxes import SIZE_BUCKETS
from detst.config import DEFAULT_MODEL_YAML, Config, dump_config
from detst.data import RoundData, load_data
from detst.errors import ConfigError
from detst.evaluate import SliceEvaluator
from detst.io.coco import detections_to_results
from detst.io.files import atomic_write_text, read_json, write_json
from detst.models import Predictor, predict_records
from detst.pseudo import build_export, merge_shard_rows, predict_pool, pseudo_labels, reorder_rows
from detst.runfolder import DECISION, EventLog, Stage, current_round, file_hash, round_dirs, run_lock
from detst.stats import ap50 as boot_ap50
from detst.stats import bootstrap_ci, image_records, recall
from detst.structures import Detections, ImageRecord
from detst.student import build_set, write_data_yaml
from detst.thresholds import Thresholds, calibrate

PredictorFactory = Callable[[Path], Predictor]


@dataclass
class RoundOutcome:
    index: int
    folder: Path
    status: str          # promoted | rejected | blocked
    sentence: str


# ------------------------------------------------------------------ helpers

def _yolo():
    from detst.models import yolo

    return yolo


def _train_kwargs(cfg: Config, t) -> dict[str, Any]:
    return dict(epochs=t.epochs, time=t.time, patience=t.patience, batch=t.batch, optimizer=t.optimizer,
                lr0=t.lr0, seed=cfg.run.seed, device=cfg.run.device, workers=cfg.run.workers,
                extra={"mosaic": t.mosaic, "close_mosaic": t.close_mosaic, "fliplr": t.fliplr, "scale": t.scale,
                       "translate": t.translate, "hsv_v": t.hsv_v, "warmup_epochs": t.warmup_epochs,
                       "cache": "ram" if t.cache else False})


def _predict_images(predictor: Predictor, images, conf: float, batch: int, workers: int,
                    progress: bool = False, desc: str = "predicting") -> dict[int, Detections]:
    out = {}
    with tqdm(total=len(images), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for recs, dets, _errs in predict_records(predictor, images, conf, batch, workers):
            out.update((r.id, d) for r, d in zip(recs, dets) if d is not None)
            bar.update(len(recs))
    return out


def _preds_to_json(preds: dict[int, Detections]) -> list[dict[str, Any]]:
    return [{"image_id": int(i), "xyxy": np.round(d.xyxy.astype(np.float64), 2).tolist(),
             "score": np.round(d.score.astype(np.float64), 5).tolist(), "cls": d.class_id.tolist()}
            for i, d in sorted(preds.items())]


def _preds_from_json(rows: list[dict[str, Any]]) -> dict[int, Detections]:
    return {r["image_id"]: Detections(np.array(r["xyxy"], np.float32).reshape(-1, 4), r["score"], r["cls"])
            for r in rows}


def slice_stats(data: RoundData, preds: dict[int, Detections], th: Thresholds, cfg: Config,
                rng: np.random.Generator) -> dict[str, G.SliceStats]:
    """Per val slice: pycocotools numbers (one pass) and bootstrap intervals."""
    slices = data.val_slices()
    ev = SliceEvaluator(data.val.images, data.val.boxes, preds, data.classes)
    per_slice = cfg.pseudo.per_slice

    def thr(iid: int, d: Detections) -> np.ndarray:
        from detst.pseudo import threshold_for

        return threshold_for(th, d, data.val_tags.get(iid, []), per_slice)

    recs = image_records(data.val.boxes, preds, thr, cfg.pseudo.match_iou)
    nc = len(data.classes)
    out = {}
    for name, ids in slices.items():
        se = ev.slice(name, ids)
        sub = [recs[i] for i in ids if i in recs]
        metric = se.stats.get(cfg.guard.metric)
        n = cfg.guard.bootstrap
        out[name] = G.SliceStats(
            name, se.n_images, se.n_gt, se.n_gt_by_size["small"], metric,
            bootstrap_ci(recs, ids, lambda r: boot_ap50(r, nc), n, rng, cfg.guard.confidence)
            if cfg.guard.metric == "map50" else None,
            se.ap50_by_size["small"] if cfg.guard.metric == "map50" else se.stats.get("map_small"), recall(sub),
            bootstrap_ci(recs, ids, recall, n, rng, cfg.guard.confidence),
            recall(sub, 0), bootstrap_ci(recs, ids, lambda r: recall(r, 0), n, rng, cfg.guard.confidence))
        out[name].eval = se.to_dict()
    return out


def _stats_json(stats: dict[str, G.SliceStats]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) for k, v in stats.items()}


# ------------------------------------------------------------------ stages

def ensure_yolo_sets(cfg: Config, data: RoundData, run_dir: Path, log: EventLog) -> tuple[Path, Path]:
    """YOLO folders of the labeled and val sets, built once per content (hash-named)."""
    out = []
    for name, cs in (("labeled", data.labeled), ("val", data.val)):
        key = {"annotations": file_hash(cs.source), "ids": [im.id for im in cs.images],
               "fill": cfg.student.ignore_fill}
        folder = run_dir / "yolo" / f"{name}-{Stage(run_dir, 'x', key).key[:8]}"
        st = Stage(folder, "build", key)
        if not st.done():
            if folder.exists():
                shutil.rmtree(folder)
            counts = build_set(folder, "L" if name == "labeled" else "V",
                               [(im, cs.boxes[im.id]) for im in cs.images], cfg.student.ignore_fill)
            st.finish([folder / "images"], dict(counts))
            log("data", f"YOLO {name} set: {len(cs.images)} images in {folder}", counts=dict(counts))
        out.append(folder)
    return out[0], out[1]


def resolve_teacher(cfg: Config, data: RoundData, run_dir: Path, idx: int, yolo_sets: tuple[Path, Path],
                    log: EventLog, progress: bool = True) -> Path:
    if idx > 1:
        prev = run_dir / f"round_{idx - 1:02d}" / DECISION
        return Path(read_json(prev)["next_teacher"])
    src = cfg.model.teacher
    if src is not None and src.endswith(".pt"):
        p = cfg.path(src)
        if p.exists():
            return p
        try:                                    # a bare name (yolov8n.pt): ultralytics' release, when online
            return _yolo().fetch_weights(src)
        except FileNotFoundError as e:
            raise ConfigError(f"{cfg.source}: model.teacher {src!r}: {e}") from e
    model_yaml = cfg.path(src) if src else DEFAULT_MODEL_YAML
    if not model_yaml.is_file():
        raise ConfigError(f"{cfg.source}: model.teacher {src!r}: file not found ({model_yaml})")
    w = cfg.model.warmup
    key = {"model": file_hash(model_yaml), "warmup": dataclasses.asdict(w), "labeled": file_hash(data.labeled.source),
           "val": file_hash(data.val.source), "imgsz": cfg.model.imgsz, "seed": cfg.run.seed}
    folder = run_dir / "warmup"
    st = Stage(folder, "train", key)
    if st.done():
        return Path(st.outputs()["best"])
    lab, val = yolo_sets
    data_yaml = write_data_yaml(folder / "data.yaml", [lab], val, list(data.classes.names))
    log("warmup", f"training the teacher from {model_yaml.name} on {len(data.labeled.images)} labeled images")
    resume = st.resumable(folder / "train" / "weights" / "last.pt")
    res = _yolo().train(model_yaml, data_yaml, folder / "train", imgsz=cfg.model.imgsz, augmentations=[],
                        resume=resume, quiet=not progress, **_train_kwargs(cfg, w))
    st.finish([res.best], {"best": str(res.best), "epochs": res.epochs_run, "metrics": res.metrics})
    log("warmup", f"teacher trained: {res.epochs_run} epochs, weights {res.best}")
    return res.best


def _run_dir(cfg: Config) -> Path:
    """``cfg``'s run folder, created: one that cannot be made or written is the config's fault."""
    run_dir = cfg.run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise ConfigError(f"{cfg.source}: run.dir {cfg.run.dir!r}: cannot create or write the run folder {run_dir} "
                          f"({e.strerror or e})") from e
    return run_dir


def warmup(cfg: Config) -> Path:
    """The first teacher of ``cfg``'s run (trained once from the model yaml, or the given weights)."""
    run_dir = _run_dir(cfg)
    with run_lock(run_dir):
        _yolo().configure_offline(run_dir / ".ultralytics")
        log = EventLog(run_dir / "events.jsonl")
        data = load_data(cfg, run_dir)
        return resolve_teacher(cfg, data, run_dir, 1, ensure_yolo_sets(cfg, data, run_dir, log), log)


def _default_factory(cfg: Config) -> PredictorFactory:
    def make(weights: Path) -> Predictor:
        return _yolo().YoloDetector(weights, cfg.run.device, cfg.model.imgsz, cfg.model.half)
    return make


@dataclass
class _Prepared:
    """What the stages before pseudo-labeling established (shared by the full run and shards)."""

    data: RoundData
    idx: int
    rdir: Path
    log: EventLog
    teacher_w: Path
    tkey: str
    model: Callable[[Path], Predictor]
    th: Thresholds
    target: float
    t_stats: dict[str, G.SliceStats]
    pre: G.PreVerdict
    excluded_ids: set[int]
    admitted: list
    yolo_sets: tuple[Path, Path]
    blocked: str | None = None

    def pool_key(self, cfg: Config) -> dict[str, Any]:
        p = cfg.pseudo
        return {"teacher": self.tkey, "pool": [im.id for im in self.admitted], "floor": p.score_floor,
                "flip": dataclasses.asdict(p.flip_consistency), **_inference_key(cfg)}


def _inference_key(cfg: Config) -> dict[str, Any]:
    """What besides the weights changes a prediction's bits: input size, batch size (other kernels),
    precision and the kind of device. Part of every cached prediction's key, so a shard or a resumed
    stage run with other settings is predicted again instead of merged."""
    dev = _yolo().resolve_device(cfg.run.device)
    kind = dev if dev in ("cpu", "mps") else "cuda"
    return {"imgsz": cfg.model.imgsz, "batch": cfg.model.batch, "half": bool(cfg.model.half and kind != "cpu"),
            "device": kind}


def _prepare(cfg: Config, make: PredictorFactory, echo: bool, progress: bool = True) -> _Prepared:
    """Data, round folder, teacher, its val predictions, thresholds and the pre-round guard."""
    run_dir = cfg.run_dir
    _yolo().configure_offline(run_dir / ".ultralytics")
    if (why := _yolo().device_problem(cfg.run.device)) is not None:
        raise ConfigError(f"{cfg.source}: run.device {cfg.run.device!r} {why}")
    log = EventLog(run_dir / "events.jsonl", echo)
    data = load_data(cfg, run_dir)
    log("data", f"labeled {len(data.labeled.images)}, val {len(data.val.images)}, pool {len(data.pool)} images; "
        f"dropped on load: labeled {dict(data.labeled.dropped)}, val {dict(data.val.dropped)}, "
        f"pool {dict(data.pool_dropped)}")
    idx, rdir = current_round(run_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rdir / "config.yaml", dump_config(cfg))
    write_json(rdir / "inputs.json", _inputs(data))
    log("round", f"round {idx} in {rdir}")
    yolo_sets = ensure_yolo_sets(cfg, data, run_dir, log)
    teacher_w = resolve_teacher(cfg, data, run_dir, idx, yolo_sets, log, progress)
    tkey = file_hash(teacher_w) if teacher_w.exists() else str(teacher_w)
    write_json(rdir / "teacher.json", {"weights": str(teacher_w), "sha256_16": tkey, "round": idx})
    cache: dict[str, Predictor] = {}

    def model(w: Path) -> Predictor:
        if str(w) not in cache:
            cache[str(w)] = make(w)
        return cache[str(w)]

    # -- teacher on val (raw, low floor) ----------------------------------------------------
    t_preds = val_predictions(cfg, data, rdir, "teacher", teacher_w, tkey, model, log, progress)
    # -- thresholds --------------------------------------------------------------------------
    target = cfg.pseudo.target_for_round(idx)
    p = cfg.pseudo
    th = calibrate(data.val.boxes, t_preds, data.classes, target, p.min_support, p.min_threshold,
                   p.max_threshold, p.match_iou, data.val_slices() if p.per_slice else None)
    write_json(rdir / "thresholds.json", {**th.to_json(), "round": idx, "schedule": p.schedule})
    own = sum(c.support >= p.min_support for c in th.cells.values())
    ceiling = sum(c.threshold >= p.max_threshold for c in th.cells.values())
    log("thresholds", f"precision target {target} (round {idx}); {len(th.cells)} cells: {own} calibrated on their "
        f"own val detections, {len(th.cells) - own} fell back to a coarser level; {ceiling} at the ceiling "
        f"{p.max_threshold}")
    # -- guard.pre ---------------------------------------------------------------------------
    rng = np.random.default_rng([cfg.run.seed, idx])
    t_stats = slice_stats(data, t_preds, th, cfg, rng)
    pool_slices = data.pool_slices()
    pre = G.pre_round(t_stats, cfg.guard, len(data.labeled.images), len(data.pool),
                      {k: len(v) for k, v in pool_slices.items()})
    write_json(rdir / "guard_pre.json", {"verdict": pre.to_json(), "teacher": _stats_json(t_stats)})
    log("guard.pre", pre.sentence)
    excluded_ids = {i for s in pre.excluded for i in pool_slices.get(s, [])}
    admitted = [im for im in data.pool if im.id not in excluded_ids]
    blocked = None if pre.proceed else pre.sentence
    if blocked is None and not admitted:
        blocked = "Round blocked: every pool image is in an excluded slice."
    return _Prepared(data, idx, rdir, log, teacher_w, tkey, model, th, target, t_stats, pre, excluded_ids,
                     admitted, yolo_sets, blocked)


def _shard_files(rdir: Path, k: int, n: int) -> tuple[Path, Path]:
    folder = rdir / "shards"
    return folder / f"pool_predictions-{k}of{n}.jsonl", folder / f"pool_predictions-{k}of{n}.key"


def run_shard(cfg: Config, shard: tuple[int, int], predictor_factory: PredictorFactory | None = None,
              progress: bool = True, echo: bool = True) -> RoundOutcome:
    """Pseudo-label shard ``k`` of ``n`` of the current round's admitted pool (images k-1, k-1+n, ...).

    The stages before it run under the run lock (waiting for other shards); the prediction itself
    holds only this shard's lock, so shards run side by side. The next plain run_round merges them."""
    k, n = shard
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {k}/{n}: expected K/N with 1 <= K <= N")
    run_dir = _run_dir(cfg)
    with run_lock(run_dir, wait=True):
        prep = _prepare(cfg, predictor_factory or _default_factory(cfg), echo, progress)
    if prep.blocked:
        return RoundOutcome(prep.idx, prep.rdir, "blocked", prep.blocked)
    jsonl, keyfile = _shard_files(prep.rdir, k, n)
    key = Stage(prep.rdir, "pool_predictions", prep.pool_key(cfg)).key
    with run_lock(prep.rdir / "shards", name=f".lock.{k}of{n}"):
        if not keyfile.exists() or keyfile.read_text() != key:
            jsonl.unlink(missing_ok=True)
            atomic_write_text(keyfile, key)
        mine = prep.admitted[k - 1::n]
        p = cfg.pseudo
        counts = predict_pool(prep.model(prep.teacher_w), mine, jsonl, conf=p.score_floor, batch=cfg.model.batch,
                              workers=cfg.run.workers, progress=progress, desc=f"shard {k}/{n}",
                              flip_iou=p.flip_consistency.iou if p.flip_consistency.enabled else None)
    prep.log("pseudo", f"shard {k}/{n}: {len(mine)} pool images predicted", counts=dict(counts))
    return RoundOutcome(prep.idx, prep.rdir, "shard", f"shard {k}/{n} done: {len(mine)} images in {jsonl}")


def run_round(cfg: Config, predictor_factory: PredictorFactory | None = None, progress: bool = True,
              echo: bool = True) -> RoundOutcome:
    """Run (or resume) the next round of ``cfg``'s run folder; see the module docstring."""
    run_dir = _run_dir(cfg)
    with run_lock(run_dir):
        prep = _prepare(cfg, predictor_factory or _default_factory(cfg), echo, progress)
        data, idx, rdir, log, teacher_w, tkey, model = (prep.data, prep.idx, prep.rdir, prep.log, prep.teacher_w,
                                                        prep.tkey, prep.model)
        th, target, t_stats, pre, excluded_ids, admitted = (prep.th, prep.target, prep.t_stats, prep.pre,
                                                            prep.excluded_ids, prep.admitted)
        yolo_sets = prep.yolo_sets
        p = cfg.pseudo
        if prep.blocked:
            return _finish(cfg, rdir, idx, "blocked", prep.blocked, teacher_w, None, log)
        # -- pseudo-labels (merging finished shards, predicting what is missing) ---------------
        st = Stage(rdir, "pool_predictions", prep.pool_key(cfg))
        jsonl = rdir / "pool_predictions.jsonl"
        if not st.done():
            keyfile = rdir / ".stages" / "pool_predictions.key"
            if not keyfile.exists() or keyfile.read_text() != st.key:
                jsonl.unlink(missing_ok=True)      # predictions of another teacher/pool: start over
            atomic_write_text(keyfile, st.key)
            merged = merge_shard_rows(rdir, st.key, jsonl)
            counts = predict_pool(model(teacher_w), admitted, jsonl, conf=p.score_floor, batch=cfg.model.batch,
                                  workers=cfg.run.workers, progress=progress,
                                  flip_iou=p.flip_consistency.iou if p.flip_consistency.enabled else None)
            reorder_rows(jsonl, [im.id for im in admitted])
            st.finish([jsonl], {**counts, "from_shards": merged})
            log("pseudo", f"teacher ran on {len(admitted)} pool images ({merged} from shards)", counts=dict(counts))
        pseudo_dir = rdir / "student_data" / "pseudo"
        rule = dict(band=p.ignore_band, cross_class_iou=p.cross_class_iou, per_slice=p.per_slice, class_cap=p.class_cap)
        _, pres = build_export(jsonl, admitted, data.pool_tags, data.classes, th, **rule,
                               info={"round": idx, "teacher": str(teacher_w), "teacher_sha256_16": tkey,
                                     "precision_target": target, "config_hash": cfg.hash(),
                                     "excluded_slices": pre.excluded, "excluded_images": len(excluded_ids),
                                     "thresholds": "thresholds.json"},
                               out=rdir / "pseudo_labels.json")    # streamed, compact: it can be large
        write_json(rdir / "pseudo_summary.json", {**pres.to_json(), "pool_dropped": dict(data.pool_dropped),
                                                  "excluded_images": len(excluded_ids)})
        log("pseudo", f"{pres.n_kept} boxes kept, {pres.n_ignored} ignore regions on {pres.n_images} images; "
            f"dropped {pres.dropped}")
        # -- drift / collapse ------------------------------------------------------------------
        dv = _drift(cfg, data, pres, admitted)
        write_json(rdir / "guard_drift.json", dataclasses.asdict(dv))
        log("guard.drift", dv.sentence)
        if pres.n_kept == 0:
            return _finish(cfg, rdir, idx, "blocked", "Round blocked: the pool yielded zero pseudo-labels above "
                           "the thresholds; nothing to train on.", teacher_w, None, log)
        if not dv.proceed and cfg.guard.enabled:
            return _finish(cfg, rdir, idx, "blocked", dv.sentence, teacher_w, None, log)
        # -- student ---------------------------------------------------------------------------
        policy = build_policy(cfg.policies()[cfg.student.augment], f"augment.{cfg.student.augment}", cfg.source)
        write_json(rdir / "augment_policy.json", {"name": cfg.student.augment, "transforms": describe_policy(policy)})
        skey = {"teacher": tkey, "pseudo": pres.content_key,     # by content: "info" names the round
                "train": dataclasses.asdict(cfg.student.train), "policy": cfg.student.augment,
                "imgsz": cfg.model.imgsz, "seed": cfg.run.seed, "labeled": str(yolo_sets[0])}
        sst = Stage(rdir, "student", skey)
        prev = next((r for r in reversed(round_dirs(rdir.parent)) if r != rdir and _rejected_with_key(r, sst.key)),
                    None) if not sst.done() else None
        if prev is not None:
            return _finish(cfg, rdir, idx, "blocked", f"Round blocked: it would train the same student as {prev.name} "
                           "(same teacher, pseudo-labels, training settings and seed), which was rejected; change the "
                           "config (thresholds, slices, seed) or the data first.", teacher_w, None, log)
        if sst.done():
            student_w = Path(sst.outputs()["best"])
        else:
            bst = Stage(rdir, "student_data", {"pseudo": skey["pseudo"], "fill": cfg.student.ignore_fill})
            if not bst.done():
                if pseudo_dir.exists():
                    shutil.rmtree(pseudo_dir)
                # the export's boxes, selected again from the row file (streamed, not held since the export)
                most_ignored = _MostIgnored(4)
                counts = build_set(pseudo_dir, "P", most_ignored.watch(pseudo_labels(jsonl, admitted, data.pool_tags,
                                                                                      th, **rule)),
                                   cfg.student.ignore_fill)
                _augmented_samples(rdir, pseudo_dir, most_ignored.items(), policy, cfg.run.seed)
                bst.finish([pseudo_dir / "images"], dict(counts))
                log("student", f"training set: {len(data.labeled.images)} labeled + {counts['images_P']} "
                    "pseudo-labeled", counts=dict(counts))
            data_yaml = write_data_yaml(rdir / "student_data" / "data.yaml", [yolo_sets[0], pseudo_dir],
                                        yolo_sets[1], list(data.classes.names))
            out = rdir / "student" / "train"
            resume = sst.resumable(out / "weights" / "last.pt")
            log("student", ("resuming" if resume else "training") + f" the student from {teacher_w.name} with "
                f"policy '{cfg.student.augment}'")
            res = _yolo().train(teacher_w, data_yaml, out, imgsz=cfg.model.imgsz, augmentations=policy, resume=resume,
                                quiet=not progress, **_train_kwargs(cfg, cfg.student.train))
            student_w = rdir / "student" / "best.pt"
            shutil.copyfile(res.best, student_w)
            for f in sorted(out.glob("train_batch*.jpg"))[:1]:
                shutil.copyfile(f, rdir / "augmented_samples.jpg")
            sst.finish([student_w], {"best": str(student_w), "epochs": res.epochs_run, "metrics": res.metrics})
            log("student", f"trained {res.epochs_run} epochs → {student_w}")
        skey16 = file_hash(student_w)
        s_preds = val_predictions(cfg, data, rdir, "student", student_w, skey16, model, log, progress)
        s_stats = slice_stats(data, s_preds, th, cfg, np.random.default_rng([cfg.run.seed, idx, 1]))
        guarded = list(cfg.guard.slices)
        post = G.promotion(t_stats, s_stats, guarded, cfg.guard.promotion, cfg.guard.enabled)
        write_json(rdir / "guard_post.json", {"verdict": dataclasses.asdict(post), "student": _stats_json(s_stats),
                                              "teacher": _stats_json(t_stats)})
        log("guard.post", post.sentence)
        return _finish(cfg, rdir, idx, "promoted" if post.promote else "rejected", post.sentence, teacher_w,
                       student_w, log)


def val_predictions(cfg: Config, data: RoundData, rdir: Path, who: str, weights: Path, wkey: str,
                    model: Callable[[Path], Predictor], log: EventLog, progress: bool = True) -> dict[int, Detections]:
    path = rdir / f"{who}_val_predictions.json"
    st = Stage(rdir, f"{who}_val", {"weights": wkey, "val": [im.id for im in data.val.images],
                                    "floor": cfg.pseudo.score_floor, **_inference_key(cfg)})
    if st.done():
        return _preds_from_json(read_json(path)["raw"])
    preds = _predict_images(model(weights), data.val.images, min(cfg.pseudo.score_floor, 0.001) or 0.001,
                            cfg.model.batch, cfg.run.workers, progress, f"{who} on val")
    rows = _preds_to_json(preds)
    write_json(path, {"raw": rows, "coco_results": detections_to_results(preds, data.classes)}, indent=None)
    st.finish([path])
    log(who, f"{who} predicted {len(preds)} val images")
    return _preds_from_json(rows)       # as stored: a resumed round computes exactly what a fresh one does


class _MostIgnored:
    """The ``n`` (image, boxes) pairs of a stream with the most ignore regions, then the most boxes,
    then the lowest id; holds ``n`` pairs, not the stream."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._heap: list[tuple[tuple[int, int, int], ImageRecord, Detections]] = []

    def watch(self, pairs: Iterable[tuple[ImageRecord, Detections]]) -> Iterator[tuple[ImageRecord, Detections]]:
        for im, d in pairs:
            rank = (int(d.extras["iscrowd"].sum()), len(d), -im.id)       # unique: ids are
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, (rank, im, d))
            elif rank > self._heap[0][0]:
                heapq.heapreplace(self._heap, (rank, im, d))
            yield im, d

    def items(self) -> list[tuple[ImageRecord, Detections]]:
        return [(im, d) for _, im, d in sorted(self._heap, key=lambda e: e[0], reverse=True)]


def _augmented_samples(rdir: Path, pseudo_dir: Path, ranked: list, policy: list, seed: int) -> None:
    """plots/augmented_samples.png: the policy applied to training copies (ignore regions filled)."""
    import cv2

    from detst import report_plots as P

    samples = []
    for im, d in ranked:
        files = list((pseudo_dir / "images").glob(f"P{im.id:08d}.*"))
        img = cv2.imread(str(files[0])) if files else None
        if img is not None:
            crowd = d.extras["iscrowd"].astype(bool)
            samples.append((img, d.xyxy[~crowd], d.xyxy[crowd]))
    (rdir / "plots").mkdir(exist_ok=True)
    P.augmented_grid(samples, policy, seed, rdir / "plots" / "augmented_samples.png")


def _inputs(data: RoundData) -> dict[str, Any]:
    hist = np.zeros(len(data.classes), np.int64)
    for d in data.labeled.boxes.values():
        hist += np.bincount(d.class_id, minlength=len(data.classes))
    return {"sources": {k: str(v) for k, v in data.sources.items()},
            "counts": {"labeled": len(data.labeled.images), "val": len(data.val.images), "pool": len(data.pool)},
            "labeled_class_hist": dict(zip(data.classes.names, hist.tolist())),
            "val_slices": {k: len(v) for k, v in data.val_slices().items()},
            "pool_slices": {k: len(v) for k, v in data.pool_slices().items()},
            "dropped_on_load": {"labeled": dict(data.labeled.dropped), "val": dict(data.val.dropped),
                                "pool": dict(data.pool_dropped)},
            "dropped_files": {"labeled": data.labeled.dropped_files, "val": data.val.dropped_files,
                              "pool": data.pool_dropped_files}}


def _drift(cfg: Config, data: RoundData, pres, admitted) -> G.DriftVerdict:
    per_slice: dict[str, list[int]] = {}
    for im in admitted:
        for s in data.pool_tags.get(im.id, ["all"]):
            per_slice.setdefault(s, []).append(pres.per_image_kept.get(im.id, 0))
    density = {s: float(np.mean(v)) if v else None for s, v in per_slice.items()}
    empty = {s: float(np.mean(np.array(v) == 0)) if v else None for s, v in per_slice.items()}
    n_lab = sum(int((d.extras.get("iscrowd", np.zeros(len(d))) == 0).sum()) for d in data.labeled.boxes.values())
    lab_density = n_lab / max(len(data.labeled.images), 1)
    prior = np.zeros(len(data.classes))
    for d in data.labeled.boxes.values():
        prior += np.bincount(d.class_id, minlength=len(data.classes))
    prior_share = {n: float(prior[k] / max(prior.sum(), 1)) for k, n in enumerate(data.classes.names)}
    total = max(sum(pres.class_hist.values()), 1)
    share = {n: v / total for n, v in pres.class_hist.items()}
    return G.drift(density, lab_density, empty, share, prior_share, cfg.pseudo.min_class_share, cfg.guard.drift,
                   cfg.pseudo.on_class_collapse)


def _rejected_with_key(prev: Path, key: str) -> bool:
    """True when round folder ``prev`` rejected a student trained from exactly this stage key
    (training is deterministic: the same key gives the same student)."""
    try:
        return (read_json(prev / DECISION).get("status") == "rejected"
                and read_json(prev / ".stages" / "student.json").get("key") == key)
    except (OSError, ValueError):
        return False


def _finish(cfg: Config, rdir: Path, idx: int, status: str, sentence: str, teacher: Path, student: Path | None,
            log: EventLog) -> RoundOutcome:
    next_teacher = student if status == "promoted" and student is not None else teacher
    decision = {"round": idx, "status": status, "sentence": sentence, "teacher": str(teacher),
                "student": str(student) if student else None, "next_teacher": str(next_teacher),
                "size_buckets": list(SIZE_BUCKETS)}
    from detst.report import write_report, write_run_summary

    write_report(rdir, decision)
    write_json(rdir / DECISION, decision)       # last: its presence marks the round finished
    write_run_summary(rdir.parent)
    log("decision", f"round {idx}: {status} — {sentence}")
    return RoundOutcome(idx, rdir, status, sentence)
