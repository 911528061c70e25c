"""Tests of the built-in day/night data generator (datasets.daynight): fast, tiny sizes."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from datasets import daynight
from datasets.daynight import generate

TINY: dict[str, Any] = {
    "n_labeled": 10,
    "n_val": 8,
    "n_pool": 20,
    "imgsz": 128,
    "labeled_night_frac": 0.1,
    "val_night_frac": 0.5,
    "pool_night_frac": 0.5,
    "progress": False,
}
JSON_FILES = ("labeled.json", "val.json", "pool.json", "pool_oracle.json", "manifest.json")


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate(tmp_path_factory.mktemp("daynight") / "seed0", seed=0, **TINY)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small sample at the default image size, so box sizes are proportioned as in the defaults."""
    return generate(tmp_path_factory.mktemp("daynight_sample"), seed=3, n_labeled=40, n_val=0, n_pool=0, progress=False)


def test_returns_all_paths(tiny: dict[str, Path]) -> None:
    assert set(tiny) == {
        "labeled_annotations",
        "labeled_images",
        "val_annotations",
        "val_images",
        "pool_annotations",
        "pool_images",
        "oracle",
    }
    for key, path in tiny.items():
        assert path.is_dir() if key.endswith("_images") else path.is_file(), key


def test_deterministic_per_seed(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tiny["oracle"].parent
    again = generate(tmp_path / "again", seed=0, **TINY)["oracle"].parent
    for name in JSON_FILES:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    for image in sorted((out / "pool" / "images").glob("*.jpg")):
        assert image.read_bytes() == (again / "pool" / "images" / image.name).read_bytes(), image.name
    other = generate(tmp_path / "other", seed=1, **TINY)["oracle"].parent
    assert (other / "labeled.json").read_bytes() != (out / "labeled.json").read_bytes()
    assert (other / "pool_oracle.json").read_bytes() != (out / "pool_oracle.json").read_bytes()


def test_coco_files_load_and_are_well_formed(tiny: dict[str, Path]) -> None:
    for key in ("labeled_annotations", "val_annotations", "pool_annotations", "oracle"):
        coco = _quiet_coco(tiny[key])
        data = coco.dataset
        assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)
        assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "car"), (2, "person"), (3, "traffic_light")]
        folder = tiny[key.replace("_annotations", "_images")] if key != "oracle" else tiny["pool_images"]
        for im in data["images"]:
            assert im["id"] >= 1
            assert (im["width"], im["height"]) == (TINY["imgsz"], TINY["imgsz"])
            assert im["attributes"]["timeofday"] in ("day", "night")
            assert (folder / im["file_name"]).is_file()
        ids = [a["id"] for a in data["annotations"]]
        assert len(set(ids)) == len(ids) and all(i >= 1 for i in ids)
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            assert all(isinstance(v, float) for v in a["bbox"])
            assert w >= 2 and h >= 2, "degenerate box"
            assert x >= 0 and y >= 0 and x + w <= TINY["imgsz"] and y + h <= TINY["imgsz"], "box not clipped"
            assert a["area"] == pytest.approx(w * h)
            assert a["iscrowd"] == 0 and a["segmentation"] == []
            assert a["category_id"] in (1, 2, 3)


def test_counts_and_night_fractions(tiny: dict[str, Path]) -> None:
    for key, n, frac in (
        ("labeled_annotations", TINY["n_labeled"], TINY["labeled_night_frac"]),
        ("val_annotations", TINY["n_val"], TINY["val_night_frac"]),
        ("pool_annotations", TINY["n_pool"], TINY["pool_night_frac"]),
    ):
        images = _load(tiny[key])["images"]
        assert len(images) == n
        assert sum(im["attributes"]["timeofday"] == "night" for im in images) == round(n * frac)
    assert len(list(tiny["pool_images"].glob("*.jpg"))) == TINY["n_pool"]


def test_defaults_meet_the_self_training_checklist() -> None:
    p = inspect.signature(generate).parameters
    assert p["n_pool"].default >= 10 * p["n_labeled"].default
    assert p["labeled_night_frac"].default <= 0.1
    assert p["pool_night_frac"].default >= 0.4
    assert p["imgsz"].default == 256


def test_default_sized_sample_has_small_boxes_and_class_imbalance(sample: dict[str, Path]) -> None:
    anns = _load(sample["labeled_annotations"])["annotations"]
    assert 4 <= len(anns) / 40 <= 6, "several boxes per image"
    small = np.mean([a["area"] < 32 * 32 for a in anns])
    assert small >= 0.3
    counts = np.bincount([a["category_id"] for a in anns], minlength=4)[1:]
    share = counts / counts.sum()
    assert share[0] > 0.45 and share[0] > share[1] > share[2] > 0.05


def test_manifest_skips_a_second_identical_call(tiny: dict[str, Path]) -> None:
    out = tiny["oracle"].parent
    files = sorted(p for p in out.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert generate(out, seed=0, **TINY) == tiny
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    manifest = _load(out / "manifest.json")
    assert manifest["args"]["seed"] == 0 and len(manifest["content_hash"]) == 64
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def test_changed_arguments_or_damaged_files_regenerate(tmp_path: Path) -> None:
    kwargs = dict(TINY, n_pool=6, n_val=2)
    out = tmp_path / "d"
    generate(out, **kwargs)
    first = (out / "labeled.json").read_bytes()
    (out / "labeled.json").write_text("{}", encoding="utf-8")  # damaged: the manifest no longer matches
    generate(out, **kwargs)
    assert (out / "labeled.json").read_bytes() == first
    generate(out, **dict(kwargs, n_pool=3))  # fewer images: the surplus of the earlier call is removed
    assert len(list((out / "pool" / "images").glob("*.jpg"))) == 3
    assert len(_load(out / "pool.json")["images"]) == 3


def test_pool_is_unlabeled_and_oracle_has_its_boxes(tiny: dict[str, Path]) -> None:
    pool, oracle = _load(tiny["pool_annotations"]), _load(tiny["oracle"])
    assert pool["annotations"] == []
    assert oracle["annotations"]
    assert pool["images"] == oracle["images"]
    assert {a["image_id"] for a in oracle["annotations"]} <= {im["id"] for im in pool["images"]}


def test_night_images_are_darker(tiny: dict[str, Path]) -> None:
    means: dict[str, list[float]] = {"day": [], "night": []}
    for key in ("val", "pool"):
        for im in _load(tiny[f"{key}_annotations"])["images"]:
            gray = cv2.imread(str(tiny[f"{key}_images"] / im["file_name"]), cv2.IMREAD_GRAYSCALE)
            means[im["attributes"]["timeofday"]].append(float(gray.mean()))
    assert means["day"] and means["night"]
    assert max(means["night"]) < min(means["day"])
    assert np.mean(means["night"]) < 0.4 * np.mean(means["day"])


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="night_frac"):
        generate(tmp_path, **dict(TINY, pool_night_frac=1.5))
    with pytest.raises(ValueError, match="imgsz"):
        generate(tmp_path, **dict(TINY, imgsz=16))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = daynight.main(
        ["--out", str(tmp_path / "cli"), "--n-labeled", "2", "--n-val", "2", "--n-pool", "2", "--imgsz", "96", "--quiet"]
    )
    assert rc == 0
    assert "pool_annotations" in capsys.readouterr().out
    assert len(_load(tmp_path / "cli" / "val.json")["images"]) == 2
