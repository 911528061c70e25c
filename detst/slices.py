"""Slice predicates and tagging: which images belong to which named slice.

A slice is one of: an image attribute equal to a value (``attributes.timeofday == night``),
a glob over the image path, or a measured property (mean luminance below a level, 0-255).
The same definitions tag val and the unlabeled pool; an image may be in several slices.
The pseudo-slice ``all`` always holds every image.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import cv2
import numpy as np

from detst.config import SliceConfig
from detst.structures import ImageRecord

ALL = "all"


def mean_luminance(path: Path) -> float:
    """Mean luma (0-255) of the image, read at 1/4 scale for speed; NaN if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    return float("nan") if img is None else float(img.mean())


def in_slice(im: ImageRecord, s: SliceConfig, luminance: float | None = None) -> bool:
    if s.attribute is not None:
        return im.tags.get(s.attribute) == s.equals
    if s.path_glob is not None:
        return fnmatch.fnmatch(str(im.path), s.path_glob) or fnmatch.fnmatch(im.path.name, s.path_glob)
    if s.max_luminance is not None:
        lum = mean_luminance(im.path) if luminance is None else luminance
        return bool(np.isfinite(lum) and lum < s.max_luminance)
    raise ValueError("slice has no predicate")  # prevented by config validation


def tag_images(images: list[ImageRecord], slices: dict[str, SliceConfig]) -> dict[int, list[str]]:
    """image id -> sorted slice names it belongs to (always including ``all``)."""
    need_lum = any(s.max_luminance is not None for s in slices.values())
    out = {}
    for im in images:
        lum = mean_luminance(im.path) if need_lum else None
        out[im.id] = [ALL] + sorted(n for n, s in slices.items() if in_slice(im, s, lum))
    return out


def members(tags: dict[int, list[str]], names: list[str] | None = None) -> dict[str, list[int]]:
    """slice name -> sorted image ids, for the given names (default: every slice seen, and ``all``)."""
    out: dict[str, list[int]] = {ALL: sorted(tags)} if names is None else {n: [] for n in names}
    for iid, ss in sorted(tags.items()):
        for s in ss:
            if s != ALL and (names is None or s in out):
                out.setdefault(s, []).append(iid)
    if names is not None and ALL in names:
        out[ALL] = sorted(tags)
    return out
