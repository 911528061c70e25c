"""The round's inputs: labeled, val and unlabeled pools, loaded, checked and slice-tagged.

Built-in data (``data.builtin``) is generated into the run folder first. An unlabeled
pool is a COCO file listing images (with attributes) or a folder scanned recursively;
folder images get ids 1..N in sorted path order — never from their file names.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from detst.config import Config
from detst.errors import DatasetError
from detst.io.coco import CocoSet, load_coco, load_images, read_coco_json
from detst.io.images import IMAGE_SUFFIXES, image_size, is_intact
from detst.slices import members, tag_images
from detst.structures import ClassMap, ImageRecord

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RoundData:
    labeled: CocoSet
    val: CocoSet
    pool: list[ImageRecord]
    pool_dropped: Counter
    pool_dropped_files: list[str]
    val_tags: dict[int, list[str]]
    pool_tags: dict[int, list[str]]
    sources: dict[str, Path] = field(default_factory=dict)

    @property
    def classes(self) -> ClassMap:
        return self.labeled.classes

    def val_slices(self) -> dict[str, list[int]]:
        return members(self.val_tags)

    def pool_slices(self) -> dict[str, list[int]]:
        return members(self.pool_tags)


def _builtin(cfg: Config, run_dir: Path) -> dict[str, Path]:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if cfg.data.shared_real is not None:
        from datasets.shared_real import generate as split_real

        r = cfg.data.shared_real
        return split_real(cfg.path(r.root), run_dir / "data" / "shared_real", r.n_labeled, r.n_val_day,
                          r.n_val_night, r.gap)
    from datasets.daynight import generate

    b = cfg.data.builtin
    assert b is not None
    return generate(run_dir / "data" / "daynight", seed=b.seed, n_labeled=b.n_labeled, n_val=b.n_val,
                    n_pool=b.n_pool, imgsz=b.imgsz, labeled_night_frac=b.labeled_night_frac, progress=True)


def load_pool(annotations: Path | None, images_dir: Path,
              dropped_files: list[str] | None = None) -> tuple[list[ImageRecord], Counter]:
    """The unlabeled pool: the images a COCO file lists, or every image file under ``images_dir``
    (ids 1..N in sorted path order). Unreadable and truncated files are left out, counted in
    the Counter returned and named in ``dropped_files`` ("reason: path")."""
    dropped: Counter = Counter()
    files = [] if dropped_files is None else dropped_files
    if annotations is not None:
        data = read_coco_json(annotations, "data.unlabeled.annotations")
        return load_images(data, annotations, images_dir, True, dropped, files), dropped
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: unlabeled image folder not found (data.unlabeled.images)")
    paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    out = []
    for i, p in enumerate(paths, start=1):
        try:
            w, h = image_size(p)
        except DatasetError:
            dropped["image_unreadable"] += 1
            files.append(f"image_unreadable: {p}")
            continue
        if not is_intact(p):
            dropped["image_truncated"] += 1
            files.append(f"image_truncated: {p}")
            continue
        out.append(ImageRecord(i, p.resolve(), w, h, {}))
    return out, dropped


def load_data(cfg: Config, run_dir: Path) -> RoundData:
    d = cfg.data
    if d.builtin is not None or d.shared_real is not None:
        p = _builtin(cfg, run_dir)
        lab = (p["labeled_annotations"], p["labeled_images"])
        val = (p["val_annotations"], p["val_images"])
        pool = (p["pool_annotations"], p["pool_images"])
        sources = dict(p)
    else:
        assert d.labeled and d.val and d.unlabeled
        lab = (cfg.path(d.labeled.annotations), cfg.path(d.labeled.images))
        val = (cfg.path(d.val.annotations), cfg.path(d.val.images))
        pool = (cfg.path(d.unlabeled.annotations) if d.unlabeled.annotations else None, cfg.path(d.unlabeled.images))
        sources = {"labeled_annotations": lab[0], "labeled_images": lab[1], "val_annotations": val[0],
                   "val_images": val[1], "pool_images": pool[1]}
        if pool[0] is not None:
            sources["pool_annotations"] = pool[0]
    labeled = load_coco(*lab)
    valset = load_coco(*val, classes=labeled.classes)
    pool_files: list[str] = []
    pool_images, pool_dropped = load_pool(*pool, pool_files)
    if not labeled.images:
        raise DatasetError(f"{lab[0]}: no usable labeled image")
    if not valset.images:
        raise DatasetError(f"{val[0]}: no usable val image")
    if not pool_images:
        raise DatasetError(f"{pool[1]}: the unlabeled pool holds no readable image")
    return RoundData(labeled, valset, pool_images, pool_dropped, pool_files, tag_images(valset.images, d.slices),
                     tag_images(pool_images, d.slices), sources)
