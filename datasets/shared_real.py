"""Splits of the real photographs in ``shared/data`` (coco128 + sustech_night) into the
three COCO files a round reads: labeled (day/general only), val (both, tagged), pool.

coco128 images are split by id (labeled / val / pool); the night video is split by
frame ranges with a gap between val and pool (neighbouring frames are near-duplicates).
Image ids are renumbered per source (coco128 keeps its ids, night frames get
100000 + id) so two sources never collide; file names are absolute paths into the
shared folder, which is only read. ``python -m datasets.shared_real --root ../shared/data --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

NIGHT_ID_OFFSET = 100000


def _frame_no(name: str) -> int:
    m = re.search(r"(\d+)", Path(name).stem)
    return int(m.group(1)) if m else 0


def _write(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _subset(src: dict[str, Any], images_dir: Path, ids: list[int], offset: int, keep_anns: bool) -> tuple[list, list]:
    want = set(ids)
    imgs, anns = [], []
    for im in src["images"]:
        if im["id"] in want:
            imgs.append(
                {
                    "id": im["id"] + offset,
                    "file_name": str((images_dir / im["file_name"]).resolve()),
                    "width": im["width"],
                    "height": im["height"],
                    "attributes": im.get("attributes", {}),
                }
            )
    if keep_anns:
        for a in src["annotations"]:
            if a["image_id"] in want:
                anns.append({**a, "image_id": a["image_id"] + offset})
    return imgs, anns


def generate(
    root: Path, out_dir: Path, n_labeled: int = 80, n_val_day: int = 24, n_val_night: int = 45, gap: int = 5
) -> dict[str, Path]:
    """Write labeled.json, val.json, pool.json (+ pool_oracle.json) into ``out_dir``; returns their paths."""
    root, out_dir = Path(root).resolve(), Path(out_dir)
    coco = json.loads((root / "coco128" / "instances.json").read_text())
    night = json.loads((root / "sustech_night" / "instances.json").read_text())
    c_ids = sorted(im["id"] for im in coco["images"])
    n_ids = [im["id"] for im in sorted(night["images"], key=lambda im: _frame_no(im["file_name"]))]
    lab_c, val_c, pool_c = c_ids[:n_labeled], c_ids[n_labeled : n_labeled + n_val_day], c_ids[n_labeled + n_val_day :]
    val_n, pool_n = n_ids[:n_val_night], n_ids[n_val_night + gap :]
    cdir, ndir = root / "coco128" / "images", root / "sustech_night" / "images"
    cats = coco["categories"]
    info = {"description": "detst split of shared/data (coco128 + sustech_night)", "root": str(root)}
    parts = {}
    for name, pieces, with_anns in (
        ("labeled", [(coco, cdir, lab_c, 0)], True),
        ("val", [(coco, cdir, val_c, 0), (night, ndir, val_n, NIGHT_ID_OFFSET)], True),
        ("pool", [(coco, cdir, pool_c, 0), (night, ndir, pool_n, NIGHT_ID_OFFSET)], False),
        ("pool_oracle", [(coco, cdir, pool_c, 0), (night, ndir, pool_n, NIGHT_ID_OFFSET)], True),
    ):
        imgs, anns = [], []
        for src, d, ids, off in pieces:
            i, a = _subset(src, d, ids, off, with_anns)
            imgs += i
            anns += a
        for k, a in enumerate(anns, start=1):
            a["id"] = k
        parts[name] = out_dir / f"{name}.json"
        _write(parts[name], {"info": info, "licenses": [], "images": imgs, "annotations": anns, "categories": cats})
    return {
        "labeled_annotations": parts["labeled"],
        "labeled_images": Path("/"),
        "val_annotations": parts["val"],
        "val_images": Path("/"),
        "pool_annotations": parts["pool"],
        "pool_images": Path("/"),
        "oracle": parts["pool_oracle"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    for k, v in generate(a.root, a.out).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
