"""Detector adapters. Only ``detst.models.yolo`` imports ultralytics; everything else
talks to a detector through the ``Predictor`` protocol (tests use a fake one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from detst.io.images import iter_image_batches
from detst.structures import Detections


class Predictor(Protocol):
    def predict(self, images: list[np.ndarray], conf: float = 0.01, iou: float = 0.6) -> list[Detections]:
        """(H, W, 3) uint8 BGR images -> one Detections per image, xyxy in that image's pixels."""
        ...


def predict_records(predictor: Predictor, records: list[Any], conf: float, batch: int = 16,
                    workers: int = 2) -> Iterator[tuple[list[Any], list[Detections | None], list[str | None]]]:
    """Decode ``records`` ahead in threads and predict them batch by batch.

    Yields (records, detections, errors); an undecodable record has detections None and its
    error. A predictor with ``prepare``/``predict_prepared`` (the YOLO adapter) gets its
    letterboxing done in the decode threads; val and pool go through this same path, so
    thresholds calibrated on val predictions apply to pool predictions unchanged."""
    prepare, run = getattr(predictor, "prepare", None), getattr(predictor, "predict_prepared", None)
    if prepare is None or run is None:
        prepare, run = None, predictor.predict
    for recs, items, errors in iter_image_batches(records, batch, workers, prepare=prepare):
        ok = [k for k, it in enumerate(items) if it is not None]
        preds = run([items[k] for k in ok], conf=conf) if ok else []
        dets: list[Detections | None] = [None] * len(recs)
        for k, d in zip(ok, preds):
            dets[k] = d
        yield recs, dets, errors
