"""Detector adapters. Only ``detst.models.yolo`` imports ultralytics; everything else
talks to a detector through the ``Predictor`` protocol (tests use a fake one)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from detst.structures import Detections


class Predictor(Protocol):
    def predict(self, images: list[np.ndarray], conf: float = 0.01, iou: float = 0.6) -> list[Detections]:
        """(H, W, 3) uint8 BGR images -> one Detections per image, xyxy in that image's pixels."""
        ...
