"""Shared fixtures: offline ultralytics set-up, tiny built-in data, a fake detector."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# before anything imports ultralytics or albumentations
_CFG_DIR = Path(tempfile.mkdtemp(prefix="detst-test-yolo-"))
atexit.register(shutil.rmtree, _CFG_DIR, True)
os.environ["YOLO_CONFIG_DIR"] = str(_CFG_DIR)
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"

from detst.models.yolo import configure_offline  # noqa: E402

configure_offline(_CFG_DIR)

from detst.io.coco import load_coco  # noqa: E402
from detst.structures import Detections  # noqa: E402

TINY = {"seed": 0, "n_labeled": 12, "n_val": 10, "n_pool": 24, "imgsz": 128}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    from datasets.daynight import generate

    return generate(tmp_path_factory.mktemp("daynight"), progress=False, **TINY)


def _key(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest()


class FakePredictor:
    """The adapter's predict() interface, answering from known true boxes: each true box with a
    score from a seeded generator (some low, so thresholds matter), some boxes missed, plus a
    few false positives. Images are recognised by their pixels."""

    def __init__(self, truth: dict[str, Detections], seed: int = 0, miss: float = 0.1) -> None:
        self.truth = truth
        self.seed = seed
        self.miss = miss
        self.calls = 0

    @classmethod
    def from_coco(cls, *pairs: tuple[Path, Path], **kw) -> FakePredictor:
        from detst.io.images import read_image

        truth = {}
        for ann, img_dir in pairs:
            cs = load_coco(ann, img_dir)
            for im in cs.images:
                img, _ = read_image(im.path)
                truth[_key(img)] = cs.boxes[im.id]
        return cls(truth, **kw)

    def predict(self, images: list[np.ndarray], conf: float = 0.01, iou: float = 0.6) -> list[Detections]:
        self.calls += 1
        out = []
        for img in images:
            k = _key(img)
            g = self.truth.get(k)
            if g is None:     # a mirrored view: flip the boxes of the original
                g0 = self.truth.get(_key(np.ascontiguousarray(img[:, ::-1])))
                g = Detections.empty() if g0 is None else Detections(
                    np.stack([img.shape[1] - g0.xyxy[:, 2], g0.xyxy[:, 1], img.shape[1] - g0.xyxy[:, 0],
                              g0.xyxy[:, 3]], 1), g0.score, g0.class_id)
            rng = np.random.default_rng([self.seed, int(k[:8], 16)])
            keep = rng.random(len(g)) >= self.miss
            score = rng.uniform(0.3, 0.99, len(g))
            fp_n = int(rng.integers(0, 2))
            h, w = img.shape[:2]
            fp_xy = rng.uniform(0, [w - 20, h - 20], (fp_n, 2))
            fp = np.concatenate([fp_xy, fp_xy + rng.uniform(8, 20, (fp_n, 2))], 1)
            d = Detections(np.concatenate([g.xyxy[keep], fp]), np.concatenate([score[keep], rng.uniform(0.02, 0.5, fp_n)]),
                           np.concatenate([g.class_id[keep], rng.integers(0, 3, fp_n)]))
            out.append(d[d.score >= conf])
        return out


@pytest.fixture(scope="session")
def fake_predictor(tiny_data) -> FakePredictor:
    return FakePredictor.from_coco((tiny_data["oracle"], tiny_data["pool_images"]),
                                   (tiny_data["val_annotations"], tiny_data["val_images"]),
                                   (tiny_data["labeled_annotations"], tiny_data["labeled_images"]))


TINY_YAML = """
run: {{name: {name}, dir: {dir}, seed: 0, workers: 1}}
data:
  builtin: {{seed: 0, n_labeled: 12, n_val: 10, n_pool: 24, imgsz: 128}}
  slices:
    day: {{attribute: timeofday, equals: day}}
    night: {{attribute: timeofday, equals: night}}
model:
  imgsz: 128
  batch: 8
  warmup: {{epochs: 1, batch: 8, cache: false}}
pseudo: {{schedule: [0.6, 0.8], min_threshold: 0.05, min_support: 2}}
guard:
  teacher_floor: 0.1
  reference: day
  bootstrap: 20
  slices:
    day: {{floor: 0.1, min_support: 1}}
    night: {{floor: 0.1, max_gap: 0.9, min_support: 1}}
  promotion: {{max_regression: 1.0}}
student:
  train: {{epochs: 1, batch: 8, cache: false}}
"""


@pytest.fixture
def tiny_config(tmp_path):
    """Write a tiny experiment YAML; returns a function (name=..., extra_yaml=...) -> path."""
    def make(name: str = "tiny", extra: str = "") -> Path:
        p = tmp_path / f"{name}.yaml"
        p.write_text(TINY_YAML.format(name=name, dir=str(tmp_path / "runs")) + extra)
        return p
    return make


@pytest.fixture(scope="session")
def no_network():
    """socket connects and name lookups raise: any attempt to reach the network fails the test."""
    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise OSError("network disabled in tests")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)
    mp.setattr(socket, "create_connection", refuse)
    yield calls
    mp.undo()


@pytest.fixture(scope="session")
def two_rounds(tmp_path_factory, fake_predictor, no_network):
    """Two tiny rounds (real training, fake labeler) with the network made impossible."""
    from detst.config import load_config
    from detst.round import run_round

    d = tmp_path_factory.mktemp("round")
    p = d / "tiny.yaml"
    p.write_text(TINY_YAML.format(name="tiny", dir="runs"))    # relative: resolved against the yaml's folder
    cfg = load_config(p)
    seen = []

    def factory(weights):
        seen.append(weights)
        return fake_predictor

    first = run_round(cfg, predictor_factory=factory, progress=False, echo=False)
    second = run_round(cfg, predictor_factory=factory, progress=False, echo=False)
    return cfg, first, second, seen
