"""Detector adapters. Only ``detst.models.yolo`` imports ultralytics; everything else
talks to a detector through the ``Predictor`` protocol (tests use a fake one)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
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
    letterboxing done in the decode threads; one with ``concurrent`` may run several batches at
    once (on the CPU: one per core). Val and pool go through this same path, so thresholds
    calibrated on val predictions apply to pool predictions unchanged."""
    prepare, run = getattr(predictor, "prepare", None), getattr(predictor, "predict_prepared", None)
    if prepare is None or run is None:
        prepare, run = None, predictor.predict
    concurrent = getattr(predictor, "concurrent", None)
    with (concurrent() if concurrent is not None and prepare is not None else nullcontext(1)) as lanes, \
            ThreadPoolExecutor(lanes, thread_name_prefix="detst-infer") as pool:
        in_flight: deque = deque()          # at most ``lanes`` batches run at once, yielded in order
        for recs, items, errors in iter_image_batches(records, batch, workers, prefetch=lanes + 1, prepare=prepare):
            ok = [k for k, it in enumerate(items) if it is not None]
            job = pool.submit(run, [items[k] for k in ok], conf=conf) if ok else None
            in_flight.append((recs, ok, errors, job))
            if len(in_flight) >= lanes:
                yield _collect(*in_flight.popleft())
        while in_flight:
            yield _collect(*in_flight.popleft())


def _collect(recs: list[Any], ok: list[int], errors: list[str | None],
             job: Future | None) -> tuple[list[Any], list[Detections | None], list[str | None]]:
    dets: list[Detections | None] = [None] * len(recs)
    for k, d in zip(ok, job.result() if job is not None else []):
        dets[k] = d
    return recs, dets, errors
