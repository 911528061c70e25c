"""The ultralytics adapter: the augmentation policy reaches the training batches (and not the
validation ones), the built-in p=0.01 transforms are not stacked on top, and training is offline."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from detst.io.coco import load_coco
from detst.models import yolo
from detst.student import build_set, write_data_yaml


@pytest.fixture(scope="module")
def tiny_yolo(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo")
    lab = load_coco(tiny_data["labeled_annotations"], tiny_data["labeled_images"])
    val = load_coco(tiny_data["val_annotations"], tiny_data["val_images"])
    build_set(root / "train", "L", [(im, lab.boxes[im.id]) for im in lab.images], 114)
    build_set(root / "val", "V", [(im, val.boxes[im.id]) for im in val.images], 114)
    return write_data_yaml(root / "data.yaml", [root / "train"], root / "val", list(lab.classes.names)), root


def _gray(chw) -> bool:
    a = np.asarray(chw).astype(np.int16)
    return bool((a[0] == a[1]).all() and (a[1] == a[2]).all())


def _train(data_yaml, out, augmentations, seen):
    def look(trainer):
        seen["train"] = [trainer.train_loader.dataset[i]["img"].numpy() for i in range(4)]
        seen["val"] = [trainer.test_loader.dataset[i]["img"].numpy() for i in range(4)]
        seen["albu"] = trainer.detst_albumentations

    return yolo.train("detst/models/detst-tiny.yaml", data_yaml, out, imgsz=64, epochs=1, time=None, patience=5,
                      batch=4, optimizer="AdamW", lr0=0.001, seed=0, device="cpu", workers=0,
                      augmentations=augmentations, extra={"plots": False}, callbacks={"on_train_start": look})


def test_policy_reaches_training_batches_not_validation(tiny_yolo):
    data_yaml, root = tiny_yolo
    seen: dict = {}
    res = _train(data_yaml, root / "run_gray", [A.ToGray(p=1.0)], seen)
    assert res.best.exists()
    assert all(_gray(x) for x in seen["train"])              # every training sample went through ToGray
    assert not any(_gray(x) for x in seen["val"])             # validation images are untouched
    assert seen["albu"] and seen["albu"][0] is not None


def test_empty_policy_replaces_the_builtin_p001_transforms(tiny_yolo):
    data_yaml, root = tiny_yolo
    seen: dict = {}
    _train(data_yaml, root / "run_none", [], seen)
    (compose,) = seen["albu"]
    assert len(compose.transforms) == 0                        # no Blur/MedianBlur/ToGray/CLAHE p=0.01


def test_failed_policy_construction_is_not_silent(tiny_yolo, monkeypatch):
    """ultralytics catches an exception while building the albumentations wrapper and trains without it."""
    data_yaml, root = tiny_yolo

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(A, "Compose", broken)     # what ultralytics' wrapper calls, inside its try/except
    from detst.errors import StageError

    with pytest.raises(StageError, match="did not reach"):
        _train(data_yaml, root / "run_broken", [A.ToGray(p=1.0)], {})


def test_ultralytics_resume_of_a_stripped_checkpoint_is_finished_not_a_new_coco8_training(tiny_yolo, tmp_path,
                                                                                        no_network):
    """Trap: ultralytics 8.4 given resume=True on a checkpoint it stripped at the end of training warns
    and starts a new training with its defaults (data=coco8.yaml, downloaded). A round killed after
    training but before its stage marker must find the training finished and reuse its weights."""
    data_yaml, _ = tiny_yolo
    out = tmp_path / "student"
    first = _train(data_yaml, out, [], {})
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = yolo.train("detst/models/detst-tiny.yaml", data_yaml, out, imgsz=64, epochs=1, time=None, patience=5,
                       batch=4, optimizer="AdamW", lr0=0.001, seed=0, device="cpu", workers=0, augmentations=[],
                       resume=True)
    assert again.best == first.best and again.epochs_run == first.epochs_run == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before   # nothing retrained
    assert not list(tmp_path.rglob("coco8*")) and no_network == []


def test_resume_of_a_half_written_checkpoint_trains_afresh(tiny_yolo, tmp_path):
    data_yaml, _ = tiny_yolo
    out = tmp_path / "student"
    (out / "weights").mkdir(parents=True)
    (out / "weights" / "last.pt").write_bytes(b"PK\x03\x04 torn")
    res = yolo.train("detst/models/detst-tiny.yaml", data_yaml, out, imgsz=64, epochs=1, time=None, patience=5,
                     batch=4, optimizer="AdamW", lr0=0.001, seed=0, device="cpu", workers=0, augmentations=[],
                     resume=True, extra={"plots": False})
    assert res.epochs_run == 1 and res.best.exists()


def test_multi_gpu_launch_state_pickles_offline_with_our_policy_and_callbacks(tiny_yolo, tmp_path, no_network):
    """Trap: ultralytics 8.4 starts DDP (``device: 0,1``) by cloudpickling the trainer (its args, our
    albumentations policy, our callbacks) for the worker processes, and installs cloudpickle "on
    first multi-GPU launch": offline, with auto-install off, that launch fails. cloudpickle is a
    pinned dependency; this builds the real launch state of a detst training with the night config's
    student policy and restores it as a worker does (no GPU needed: only spawning the workers is
    skipped)."""
    from pathlib import Path

    import torch
    from ultralytics.utils.dist import generate_ddp_file

    from detst.augment import build_policy
    from detst.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "night.yaml")
    policy = build_policy(cfg.policies()[cfg.student.augment])
    data_yaml, _ = tiny_yolo
    made: list[Path] = []

    def launch_state(trainer):
        made.append(Path(generate_ddp_file(trainer)))

    try:
        yolo.train("detst/models/detst-tiny.yaml", data_yaml, tmp_path / "ddp", imgsz=64, epochs=1, time=None,
                   patience=5, batch=4, optimizer="AdamW", lr0=0.001, seed=0, device="cpu", workers=0,
                   augmentations=policy, extra={"plots": False}, callbacks={"on_train_start": launch_state})
        state = torch.load(made[0].with_suffix(".pt"), map_location="cpu", weights_only=False)
    finally:
        for f in made:
            f.unlink(missing_ok=True)
            f.with_suffix(".pt").unlink(missing_ok=True)
    restored = [A.from_dict(t) for t in state["args"]["augmentations"]]   # what the workers' dataset does
    assert [type(t).__name__ for t in restored] == [type(t).__name__ for t in policy] and restored
    assert any(getattr(cb, "__qualname__", "").startswith("_albumentations_check")
               for cb in state["callbacks"]["on_train_start"])   # the policy check runs in the workers too
    assert no_network == []


def test_quiet_training_draws_no_ultralytics_bars_and_restores_its_logger(tiny_yolo, tmp_path, capfd):
    from ultralytics.utils import LOGGER

    data_yaml, _ = tiny_yolo
    level = LOGGER.level
    for quiet in (False, True):
        res = yolo.train("detst/models/detst-tiny.yaml", data_yaml, tmp_path / f"q{quiet}", imgsz=64, epochs=1,
                         time=None, patience=5, batch=4, optimizer="AdamW", lr0=0.001, seed=0, device="cpu", workers=0,
                         augmentations=[], extra={"plots": False}, quiet=quiet)
        out = "".join(capfd.readouterr())
        assert ("━" in out) is not quiet, out[-500:]          # the bar's glyph (LOGGER's own stream may be pytest's)
        assert res.epochs_run == 1 and LOGGER.level == level
