"""The containers that cross every module boundary: Detections, ImageRecord, ClassMap.

Inside detst a box is ``xyxy``, absolute pixels, float32, in the coordinates of the
image as stored on disk after EXIF orientation. ``class_id`` is the detector's
contiguous index (0..K-1); COCO category ids appear only through :class:`ClassMap`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Detections:
    """N boxes of one image.

    xyxy: (N, 4) float32 absolute pixels; score: (N,) float32; class_id: (N,) int64
    contiguous class indices; extras: name -> (N,) array carried along on selection.
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        for name, arr in (("score", self.score), ("class_id", self.class_id)):
            if len(arr) != n:
                raise ValueError(f"Detections.{name} has {len(arr)} rows, xyxy has {n}")
        self.extras = {k: np.asarray(v).reshape(-1) for k, v in self.extras.items()}
        for name, arr in self.extras.items():
            if len(arr) != n:
                raise ValueError(f"Detections.extras[{name!r}] has {len(arr)} rows, xyxy has {n}")

    @classmethod
    def empty(cls, extras: tuple[str, ...] = ()) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64), {k: np.zeros(0) for k in extras})

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        keys = set(parts[0].extras)
        return cls(np.concatenate([p.xyxy for p in parts]),
                   np.concatenate([p.score for p in parts]),
                   np.concatenate([p.class_id for p in parts]),
                   {k: np.concatenate([p.extras[k] for p in parts]) for k in keys})

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Select rows of every field at once (boolean mask, indices or slice)."""
        return Detections(self.xyxy[index], self.score[index], self.class_id[index],
                          {k: v[index] for k, v in self.extras.items()})

    def with_extra(self, name: str, values: np.ndarray) -> Detections:
        return Detections(self.xyxy, self.score, self.class_id, {**self.extras, name: values})

    @property
    def area(self) -> np.ndarray:
        """(N,) box areas in square pixels."""
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]


@dataclass(frozen=True)
class ImageRecord:
    """One image: a stable integer id (never derived from the file name), its file,
    its size in pixels after EXIF orientation, and its tags (string attributes)."""

    id: int
    path: Path
    width: int
    height: int
    tags: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class ClassMap:
    """The one explicit link between COCO category ids (as the user wrote them, possibly
    starting at 1 with gaps) and the detector's contiguous indices 0..K-1."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.names):
            raise ValueError("ClassMap: category_ids and names differ in length")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise ValueError(f"ClassMap: duplicate category ids {self.category_ids}")

    def __len__(self) -> int:
        return len(self.category_ids)

    def to_index(self, category_id: int) -> int:
        return self.category_ids.index(int(category_id))

    def to_category(self, index: int) -> int:
        return self.category_ids[int(index)]

    def coco_categories(self) -> list[dict[str, Any]]:
        return [{"id": int(c), "name": n, "supercategory": ""}
                for c, n in zip(self.category_ids, self.names)]
