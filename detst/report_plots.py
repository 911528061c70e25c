"""The report's pictures (matplotlib PNGs and example grids), drawn from run-folder files only.

Colours in example grids: green = kept pseudo-label / true box, orange = ignore region,
blue = teacher, magenta = student (detections above their calibrated thresholds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detst.boxes import SIZE_BUCKETS

GREEN, ORANGE, BLUE, MAGENTA = (60, 200, 60), (0, 160, 255), (255, 120, 0), (200, 0, 200)
TILE = 256


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig: Any, path: Path) -> Path:
    plt = _plt()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def save_image(img: np.ndarray, path: Path) -> Path:
    params = [cv2.IMWRITE_JPEG_QUALITY, 88] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, img, params)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return path


def draw(img: np.ndarray, boxes: list[tuple[list[float], tuple[int, int, int], str]], scale: float) -> np.ndarray:
    out = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    for xyxy, colour, label in boxes:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        if label:
            cv2.putText(out, label, (x1, max(8, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    return out


def tile(img: np.ndarray, title: str) -> np.ndarray:
    h, w = img.shape[:2]
    s = TILE / max(h, w)
    t = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))))
    canvas = np.full((TILE + 16, TILE, 3), 255, np.uint8)
    canvas[16:16 + t.shape[0], :t.shape[1]] = t
    cv2.putText(canvas, title[:40], (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    blank = np.full_like(tiles[0], 255)
    return np.concatenate([np.concatenate(r + [blank] * (cols - len(r)), 1) for r in rows], 0)


def _read(path: str) -> np.ndarray | None:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return img


def pool_examples(coco: dict[str, Any], out_dir: Path, per_slice: int = 6) -> list[Path]:
    """For each slice, a few pool images with kept (green) and ignore (orange) pseudo-labels."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_img: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    slices: dict[str, list[dict]] = {}
    for im in coco["images"]:
        for s in im.get("slices", ["all"]):
            if s != "all":
                slices.setdefault(s, []).append(im)
    made = []
    for s, ims in sorted(slices.items()):
        ims = sorted(ims, key=lambda im: -len(by_img.get(im["id"], [])))[:per_slice]
        tiles = []
        for im in ims:
            img = _read(im["file_name"])
            if img is None:
                continue
            boxes = [([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
                      ORANGE if a["iscrowd"] else GREEN, f"{names[a['category_id']]} {a['score']:.2f}")
                     for a in by_img.get(im["id"], [])]
            scale = TILE / max(img.shape[:2])
            tiles.append(tile(draw(img, boxes, max(scale, 1.0)), f"{s} #{im['id']}: {len(boxes)} boxes"))
        if tiles:
            made.append(save_image(grid(tiles, 3), out_dir / f"pool_examples_{s}.png"))
    return made


def val_compare(val_images: dict[int, tuple[str, list]], teacher: dict[int, list], student: dict[int, list],
                out_path: Path, n: int = 4) -> Path | None:
    """Rows of GT | teacher | student for the val images where the two models differ most.
    Each value: list of (xyxy, label); ``val_images``: id -> (path, GT boxes)."""
    diff = sorted(val_images, key=lambda i: -abs(len(teacher.get(i, [])) - len(student.get(i, []))))[:n]
    tiles = []
    for iid in diff:
        path, gt = val_images[iid]
        img = _read(path)
        if img is None:
            continue
        scale = max(TILE / max(img.shape[:2]), 1.0)
        tiles.append(tile(draw(img, [(b, GREEN, lab) for b, lab in gt], scale), f"#{iid} ground truth"))
        tiles.append(tile(draw(img, [(b, BLUE, lab) for b, lab in teacher.get(iid, [])], scale), "teacher"))
        tiles.append(tile(draw(img, [(b, MAGENTA, lab) for b, lab in student.get(iid, [])], scale), "student"))
    return save_image(grid(tiles, 3), out_path) if tiles else None


def score_histograms(scores: dict[str, np.ndarray], thresholds: list[float], out_path: Path) -> Path | None:
    """Raw teacher scores on the pool per slice, with the calibrated thresholds marked."""
    if not scores:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    for s, v in sorted(scores.items()):
        ax.hist(v, bins=40, range=(0, 1), histtype="step", label=f"{s} ({len(v)})")
    for t in sorted(set(round(x, 3) for x in thresholds)):
        ax.axvline(t, color="red", lw=0.6, ls="--")
    if any(len(v) for v in scores.values()):
        ax.set_yscale("log")                  # an empty pool (nothing detected) stays linear
    ax.set_xlabel("teacher score (red: calibrated thresholds)")
    ax.set_title("pool detections per slice")
    ax.legend(fontsize=7)
    return save_fig(fig, out_path)


def class_balance(cells: dict[str, dict[str, int]], prior: dict[str, int], out_path: Path) -> Path | None:
    """Kept pseudo-labels per class and slice, as shares, against the labeled prior."""
    if not prior:
        return None
    plt = _plt()
    classes = list(prior)
    per_slice: dict[str, dict[str, int]] = {}
    for key, v in cells.items():
        s, c, _ = key.split("|")
        per_slice.setdefault(s, {}).setdefault(c, 0)
        per_slice[s][c] += v.get("kept", 0)
    series = {"labeled prior": [prior[c] for c in classes]}
    series.update({f"pseudo {s}": [d.get(c, 0) for c in classes] for s, d in sorted(per_slice.items())})
    fig, ax = plt.subplots(figsize=(6, 3))
    w = 0.8 / len(series)
    for k, (name, vals) in enumerate(series.items()):
        tot = max(sum(vals), 1)
        ax.bar(np.arange(len(classes)) + k * w, [v / tot for v in vals], w, label=f"{name} (n={sum(vals)})")
    ax.set_xticks(np.arange(len(classes)) + 0.4 - w / 2, classes)
    ax.set_ylabel("share of boxes")
    ax.set_title("class balance: pseudo-labels vs labeled prior")
    ax.legend(fontsize=7)
    return save_fig(fig, out_path)


def size_outcomes(cells: dict[str, dict[str, int]], dropped_by_size: dict[str, int], out_path: Path) -> Path | None:
    plt = _plt()
    kept = {b: 0 for b in SIZE_BUCKETS}
    ign = {b: 0 for b in SIZE_BUCKETS}
    for key, v in cells.items():
        s, _, b = key.split("|")
        if s == "all":
            kept[b] += v.get("kept", 0)
            ign[b] += v.get("ignored", 0)
    fig, ax = plt.subplots(figsize=(5, 3))
    x = np.arange(len(SIZE_BUCKETS))
    ax.bar(x - 0.27, [kept[b] for b in SIZE_BUCKETS], 0.27, label="kept")
    ax.bar(x, [ign[b] for b in SIZE_BUCKETS], 0.27, label="ignore regions")
    ax.bar(x + 0.27, [dropped_by_size.get(b, 0) for b in SIZE_BUCKETS], 0.27, label="dropped (below band)")
    ax.set_xticks(x, SIZE_BUCKETS)
    ax.set_title("pseudo-labels per size bucket")
    ax.legend(fontsize=7)
    return save_fig(fig, out_path)


def rounds_plot(rows: list[dict[str, Any]], floors: dict[str, float], tolerance: float | None, out_path: Path) -> Path | None:
    """The model in service per slice across rounds, with the guard's floors."""
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    slices = sorted({r["slice"] for r in rows})
    for s in slices:
        pts = sorted((r["round"], r["value"]) for r in rows if r["slice"] == s and r["value"] is not None)
        if pts:
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
            if s in floors:
                ax.axhline(floors[s], color=line.get_color(), ls="--", lw=0.8)
    ax.set_xticks(sorted({r["round"] for r in rows}))
    ax.set_xlabel("round (0 = first teacher)")
    ax.set_ylabel("guard metric on val")
    ax.set_ylim(0, 1)
    t = f"; promotion tolerance {tolerance}" if tolerance is not None else ""
    ax.set_title(f"model in service per slice (dashed: floors{t})", fontsize=9)
    ax.legend(fontsize=7)
    return save_fig(fig, out_path)


def augmented_grid(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], transforms: list, seed: int,
                   out_path: Path, per_sample: int = 2) -> Path | None:
    """A few student training images after the policy, boxes following it: kept pseudo-labels
    green, ignore regions (already filled grey in the training copy) orange.
    ``samples``: (BGR image, kept xyxy (N, 4), ignore xyxy (M, 4))."""
    import albumentations as A

    if not samples:
        return None
    comp = A.Compose(transforms, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["kind"], clip=True),
                     seed=seed)
    tiles = []
    for img, kept, ign in samples:
        boxes = np.concatenate([np.asarray(kept).reshape(-1, 4), np.asarray(ign).reshape(-1, 4)])
        kind = ["kept"] * len(kept) + ["ignore"] * len(ign)
        for k in range(per_sample):
            out = comp(image=img[:, :, ::-1], bboxes=boxes, kind=kind)
            aug = np.ascontiguousarray(out["image"][:, :, ::-1])
            drawn = [(b, GREEN if t == "kept" else ORANGE, "" if t == "kept" else "ignore")
                     for b, t in zip(out["bboxes"], out["kind"])]
            tiles.append(tile(draw(aug, drawn, max(TILE / max(aug.shape[:2]), 1.0)),
                              f"augmented #{k + 1}: {len(kept)} kept, {len(ign)} ignore"))
    return save_image(grid(tiles, 4), out_path)
