"""Detector adapters. Only ``detst.models.yolo`` imports ultralytics; everything else
talks to a detector through the ``Predictor`` protocol (tests use a fake one)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
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
    for recs, _, errors, dets in run_batches(predictor, records, lambda items: run(items, conf=conf), batch, workers,
                                             prepare):
        yield recs, dets, errors


def run_batches(predictor: Any, records: list[Any], fn: Callable[[list[Any]], list[Any]], batch: int, workers: int,
                prepare: Callable[[np.ndarray], Any] | None = None) -> Iterator[tuple[list[Any], list[Any], list[str | None],
                                                                                     list[Any]]]:
    """``fn`` over the decoded (and ``prepare``-d) images of each batch of ``records``; a predictor
    with ``concurrent`` runs that many batches at once. Yields, in input order, (records, images,
    errors, results): an undecodable record has image and result None and an error message."""
    concurrent = getattr(predictor, "concurrent", None)
    with (concurrent() if concurrent is not None else nullcontext(1)) as lanes, \
            ThreadPoolExecutor(lanes, thread_name_prefix="detst-infer") as pool:
        in_flight: deque = deque()          # at most ``lanes`` batches run at once, yielded in order
        for recs, items, errors in iter_image_batches(records, batch, workers, prefetch=lanes + 1, prepare=prepare):
            ok = [k for k, it in enumerate(items) if it is not None]
            job = pool.submit(fn, [items[k] for k in ok]) if ok else None
            in_flight.append((recs, items, errors, ok, job))
            if len(in_flight) >= lanes:
                yield _collect(*in_flight.popleft())
        while in_flight:
            yield _collect(*in_flight.popleft())


def _collect(recs: list[Any], items: list[Any], errors: list[str | None], ok: list[int],
             job: Future | None) -> tuple[list[Any], list[Any], list[str | None], list[Any]]:
    out: list[Any] = [None] * len(recs)
    for k, r in zip(ok, job.result() if job is not None else []):
        out[k] = r
    return recs, items, errors, out
