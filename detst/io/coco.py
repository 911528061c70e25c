"""COCO ⇄ detst: the only place that knows ``xywh``.

Loading converts each annotation once (xywh -> xyxy, clip a hair outside the image,
drop degenerate boxes and count them) and keeps category ids as the user wrote them
behind one ClassMap. Missing ``iscrowd``/``area``/``segmentation``/``info`` are filled.
Every problem is either fixed-and-counted or a DatasetError naming file and key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detst.boxes import areas_xyxy, clip_xyxy, xywh_to_xyxy, xyxy_to_xywh
from detst.errors import DatasetError
from detst.io.files import read_json
from detst.io.images import image_size, is_intact
from detst.structures import ClassMap, Detections, ImageRecord

# a box may stick out of the image by this many pixels and be clipped; more is an error
CLIP_TOLERANCE_PX = 1.0


@dataclass
class CocoSet:
    """A loaded COCO file: images, their boxes (score 1, extras ``iscrowd``), the class map,
    and counts of everything fixed or dropped on the way in."""

    source: Path
    images: list[ImageRecord]
    boxes: dict[int, Detections]
    classes: ClassMap
    dropped: Counter = field(default_factory=Counter)
    dropped_files: list[str] = field(default_factory=list)     # "reason: path" of each image dropped


def _check_keys(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for k in keys:
        if k not in obj:
            raise DatasetError(f"{where} is missing key {k!r}")


def load_classes(data: dict[str, Any], source: Path) -> ClassMap:
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise DatasetError(f"{source}: key 'categories' must be a non-empty list")
    for i, c in enumerate(cats):
        _check_keys(c, ("id", "name"), f"{source}: categories[{i}]")
    cats = sorted(cats, key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in cats]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{source}: categories has duplicate ids {sorted(i for i, n in Counter(ids).items() if n > 1)}")
    return ClassMap(tuple(ids), tuple(str(c["name"]) for c in cats))


def raise_problems(source: Path, problems: list[str]) -> None:
    """One DatasetError listing every problem found in a file (the first ten), so a user fixes
    them in one go instead of one per run; nothing when ``problems`` is empty."""
    if len(problems) == 1:
        raise DatasetError(problems[0])
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DatasetError(f"{source}: {len(problems)} problems:\n  {shown}{more}")


def load_images(data: dict[str, Any], source: Path, images_dir: Path, check_files: bool = True,
                dropped: Counter | None = None, dropped_files: list[str] | None = None,
                problems: list[str] | None = None) -> list[ImageRecord]:
    """COCO ``images`` -> ImageRecords. A file that is missing or unreadable is skipped and
    counted in ``dropped``; a malformed entry or a size that disagrees with the pixels is a
    DatasetError — all of them at once, or appended to ``problems`` when the caller collects."""
    collect = [] if problems is None else problems
    dropped = Counter() if dropped is None else dropped
    files = [] if dropped_files is None else dropped_files
    imgs = data.get("images")
    if not isinstance(imgs, list):
        raise DatasetError(f"{source}: key 'images' must be a list")
    out: list[ImageRecord] = []
    seen: set[int] = set()
    for i, im in enumerate(imgs):
        try:
            rec = _image_record(im, i, source, images_dir, check_files, seen, dropped, files)
        except DatasetError as e:
            collect.append(str(e))
            continue
        if rec is not None:
            out.append(rec)
    if problems is None:
        raise_problems(source, collect)
    return out


def _image_record(im: Any, i: int, source: Path, images_dir: Path, check_files: bool, seen: set[int],
                  dropped: Counter, files: list[str]) -> ImageRecord | None:
    """One ``images`` entry -> ImageRecord, or None when its file is missing or unreadable (counted)."""
    where = f"{source}: images[{i}]"
    _check_keys(im, ("id", "file_name"), where)
    iid = im["id"]
    if not isinstance(iid, int) or isinstance(iid, bool):
        raise DatasetError(f"{where}.id must be an integer, got {iid!r}")
    if iid in seen:
        raise DatasetError(f"{where}.id {iid} is used twice")
    seen.add(iid)
    path = (images_dir / im["file_name"]).resolve()
    w, h = im.get("width"), im.get("height")
    if check_files:
        reason = None
        if not path.is_file():
            reason = "image_missing"
        else:
            try:
                w_disk, h_disk = image_size(path)
                if not is_intact(path):
                    reason = "image_truncated"
            except DatasetError:
                reason = "image_unreadable"
        if reason is not None:
            dropped[reason] += 1
            files.append(f"{reason}: {path}")
            return None
        if w is not None and h is not None and (int(w), int(h)) != (w_disk, h_disk):
            raise DatasetError(f"{where} ({path}): width/height in the JSON are {w}x{h} but the image is "
                               f"{w_disk}x{h_disk} after EXIF orientation")
        w, h = w_disk, h_disk
    elif w is None or h is None:
        raise DatasetError(f"{where} is missing 'width'/'height'")
    attrs = im.get("attributes") or {}
    tags = {str(k): str(v) for k, v in attrs.items()}
    return ImageRecord(int(iid), path, int(w), int(h), tags)


def read_coco_json(path: Path, key: str = "") -> dict[str, Any]:
    """The parsed JSON object of a COCO file; DatasetError naming the file (and config key) if not."""
    where = f"{path}" + (f" ({key})" if key else "")
    if not Path(path).is_file():
        raise DatasetError(f"{where}: annotation file not found")
    try:
        data = read_json(path)
    except ValueError as e:
        raise DatasetError(f"{where}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: top level must be a JSON object with 'images' and 'annotations'")
    return data


def load_coco(annotations: Path, images_dir: Path, check_files: bool = True,
              classes: ClassMap | None = None) -> CocoSet:
    """Read a COCO detection file. Boxes become xyxy in image pixels (clipped when at most
    ``CLIP_TOLERANCE_PX`` outside); degenerate boxes are dropped and counted."""
    annotations = Path(annotations)
    data = read_coco_json(annotations)
    file_classes = load_classes(data, annotations)
    if classes is not None and file_classes.category_ids != classes.category_ids:
        raise DatasetError(f"{annotations}: categories {list(file_classes.category_ids)} differ from the "
                           f"labeled set's {list(classes.category_ids)}")
    classes = classes or file_classes
    dropped: Counter = Counter()
    dropped_files: list[str] = []
    problems: list[str] = []
    images = load_images(data, annotations, Path(images_dir), check_files, dropped, dropped_files, problems)
    by_id = {im.id: im for im in images}
    rows: dict[int, list[tuple[list[float], int, int]]] = {im.id: [] for im in images}
    known_ids = {im["id"] for im in data["images"]}
    for i, a in enumerate(data.get("annotations") or []):
        try:
            row = _annotation_row(a, f"{annotations}: annotations[{i}]", known_ids, by_id, classes)
        except DatasetError as e:
            problems.append(str(e))
            continue
        if row is None:
            dropped["box_of_dropped_image"] += 1
        else:
            rows[a["image_id"]].append(row)
    boxes = {}
    for iid, rs in rows.items():
        try:
            boxes[iid] = _image_boxes(annotations, by_id[iid], rs, dropped)
        except DatasetError as e:
            problems.append(str(e))
    raise_problems(annotations, problems)
    return CocoSet(annotations, images, boxes, classes, +dropped, dropped_files)


def _annotation_row(a: Any, where: str, known_ids: set, by_id: dict[int, ImageRecord],
                    classes: ClassMap) -> tuple[list[float], int, int] | None:
    """One annotation -> (bbox xywh, class index, iscrowd), or None when its image was dropped."""
    _check_keys(a, ("image_id", "category_id", "bbox"), where)
    if a["image_id"] not in known_ids:
        raise DatasetError(f"{where}.image_id {a['image_id']} names no entry of 'images'")
    if a["image_id"] not in by_id:
        return None
    if a["category_id"] not in classes.category_ids:
        raise DatasetError(f"{where}.category_id {a['category_id']} is not in 'categories' "
                           f"{list(classes.category_ids)}")
    bbox = a["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise DatasetError(f"{where}.bbox must be [x, y, width, height] numbers, got {bbox!r}")
    return bbox, classes.to_index(a["category_id"]), int(a.get("iscrowd", 0))


def _image_boxes(annotations: Path, im: ImageRecord, rs: list[tuple[list[float], int, int]],
                 dropped: Counter) -> Detections:
    """One image's annotation rows -> Detections (xyxy, clipped within tolerance; degenerate dropped)."""
    iid = im.id
    if not rs:
        return Detections.empty(("iscrowd",))
    xywh = np.array([r[0] for r in rs], dtype=np.float64)
    if (xywh[:, 2:] < 0).any():
        k = int(np.argmax((xywh[:, 2:] < 0).any(1)))
        raise DatasetError(f"{annotations}: image {iid} ({im.path.name}) has a bbox with negative width/height "
                           f"{xywh[k].tolist()}: bbox must be COCO [x, y, width, height], not xyxy")
    xyxy = xywh_to_xyxy(xywh)
    out_by = np.maximum.reduce([-xyxy[:, 0], -xyxy[:, 1], xyxy[:, 2] - im.width, xyxy[:, 3] - im.height])
    if (out_by > CLIP_TOLERANCE_PX).any():
        k = int(np.argmax(out_by))
        raise DatasetError(f"{annotations}: image {iid} ({im.path.name}, {im.width}x{im.height}) has bbox "
                           f"{xywh[k].tolist()} reaching {out_by[k]:.1f} px outside the image "
                           f"(is it xyxy where COCO xywh belongs?)")
    dropped["box_clipped"] += int((out_by > 0).sum())
    xyxy = clip_xyxy(xyxy, im.width, im.height)
    keep = (xyxy[:, 2] - xyxy[:, 0] > 0) & (xyxy[:, 3] - xyxy[:, 1] > 0)
    dropped["box_degenerate"] += int((~keep).sum())
    return Detections(xyxy[keep], np.ones(int(keep.sum())), np.array([r[1] for r in rs])[keep],
                      {"iscrowd": np.array([r[2] for r in rs])[keep]})


def image_entry(im: ImageRecord, slices: list[str] | None = None, base: Path | None = None) -> dict[str, Any]:
    """A COCO ``images`` entry; file_name relative to ``base`` when given."""
    name = str(im.path.relative_to(base)) if base is not None and im.path.is_relative_to(base) else str(im.path)
    e: dict[str, Any] = {"id": int(im.id), "file_name": name, "width": int(im.width), "height": int(im.height)}
    if im.tags:
        e["attributes"] = dict(im.tags)
    if slices is not None:
        e["slices"] = list(slices)
    return e


def annotation_entries(image_id: int, dets: Detections, classes: ClassMap, first_id: int,
                       extras: tuple[str, ...] = (), digits: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Detections of one image -> COCO annotations with ids from ``first_id`` (>= 1); ``extras``
    (``score`` or names in ``dets.extras``) become keys of their own, rounded to ``digits[name]``
    decimals where given."""
    if first_id < 1:
        raise ValueError("COCO annotation ids start at 1 (id 0 is falsy in pycocotools)")
    n = len(dets)
    xywh = np.round(xyxy_to_xywh(dets.xyxy), 2).tolist()
    area = np.round(areas_xyxy(dets.xyxy), 2).tolist()
    iscrowd = np.asarray(dets.extras.get("iscrowd", np.zeros(n, np.int64))).astype(np.int64).tolist()
    cats = [classes.category_ids[c] for c in dets.class_id.tolist()]
    columns = []
    for name in extras:
        col = dets.score.tolist() if name == "score" else dets.extras[name].tolist() if name in dets.extras else [None] * n
        if digits and name in digits:
            col = [round(float(v), digits[name]) for v in col]
        columns.append((name, col))
    image_id = int(image_id)
    out = []
    for k in range(n):
        a: dict[str, Any] = {"id": first_id + k, "image_id": image_id, "category_id": cats[k], "bbox": xywh[k],
                             "area": area[k], "iscrowd": iscrowd[k], "segmentation": []}
        for name, col in columns:
            a[name] = col[k]
        out.append(a)
    return out


def detections_to_results(preds: dict[int, Detections], classes: ClassMap) -> list[dict[str, Any]]:
    """Predictions -> COCO results list (image_id, category_id, bbox xywh, score)."""
    out = []
    for iid, d in preds.items():
        xywh = xyxy_to_xywh(d.xyxy)
        for k in range(len(d)):
            out.append({"image_id": int(iid), "category_id": classes.to_category(d.class_id[k]),
                        "bbox": [float(v) for v in xywh[k]], "score": float(d.score[k])})
    return out


def gt_dataset(images: list[ImageRecord], boxes: dict[int, Detections], classes: ClassMap) -> dict[str, Any]:
    """A complete in-memory COCO ground-truth dict (for pycocotools) from detst structures."""
    anns: list[dict[str, Any]] = []
    for im in images:
        anns += annotation_entries(im.id, boxes.get(im.id, Detections.empty()), classes, len(anns) + 1)
    return {"info": {"description": "detst"}, "licenses": [],
            "images": [image_entry(im) for im in images], "annotations": anns,
            "categories": classes.coco_categories()}


class CocoWriter:
    """Writes a COCO file entry by entry, so that memory holds one chunk of entries, not the file.

    The bytes equal ``write_json(path, {"info", "licenses": [], "images", "annotations",
    "categories"}, indent=None)``; ``close`` returns the 16-hex-digit key of the content,
    ``key_hash({"images": ..., "annotations": ...})`` of that dict, computed while writing.
    Entries are spooled to two temporary files beside ``path`` (images come before annotations
    in the file, but are made interleaved); ``path`` is replaced atomically at ``close``."""

    def __init__(self, path: Path, chunk: int = 4096) -> None:
        import tempfile

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.chunk = chunk
        self.n_images = self.n_annotations = 0
        self._spools = {k: tempfile.TemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}.{k}.")
                        for k in ("images", "annotations")}
        self._pending: dict[str, list[dict[str, Any]]] = {"images": [], "annotations": []}
        self._started = {"images": False, "annotations": False}

    def image(self, entry: dict[str, Any]) -> None:
        self._add("images", [entry])
        self.n_images += 1

    def annotations(self, entries: list[dict[str, Any]]) -> None:
        self._add("annotations", entries)
        self.n_annotations += len(entries)

    def _add(self, kind: str, entries: list[dict[str, Any]]) -> None:
        self._pending[kind] += entries
        if len(self._pending[kind]) >= self.chunk:
            self._flush(kind)

    def _flush(self, kind: str) -> None:
        from detst.io.files import dumps_json

        if self._pending[kind]:
            text = dumps_json(self._pending[kind], None)[1:-1]      # the entries, without the brackets
            self._spools[kind].write(((", " if self._started[kind] else "") + text).encode("utf-8"))
            self._started[kind] = True
            self._pending[kind] = []

    def close(self, info: dict[str, Any], categories: list[dict[str, Any]]) -> str:
        import hashlib

        from detst.io.files import atomic_writer, dumps_json

        key = hashlib.sha256()
        try:
            with atomic_writer(self.path) as out:
                out.write(f'{{"info": {dumps_json(info, None)}, "licenses": [], '.encode())
                key.update(b"{")
                for k, kind in enumerate(("images", "annotations")):
                    self._flush(kind)
                    head = f'{", " if k else ""}"{kind}": ['.encode()
                    out.write(head)
                    key.update(head)
                    spool = self._spools[kind]
                    spool.seek(0)
                    while block := spool.read(1 << 20):
                        out.write(block)
                        key.update(block)
                    out.write(b"]")
                    key.update(b"]")
                key.update(b"}")
                out.write(f', "categories": {dumps_json(categories, None)}}}\n'.encode())
        finally:
            for spool in self._spools.values():
                spool.close()
        return key.hexdigest()[:16]
