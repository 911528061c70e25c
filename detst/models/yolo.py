"""The only module that imports ultralytics: predict -> Detections, and train.

Before the first import it makes ultralytics and albumentations offline
(``YOLO_CONFIG_DIR`` inside the run, ``YOLO_OFFLINE``, no auto-install, no update
check, a bundled font as ``Arial.ttf``), and it lets torch use every core on the CPU
(ultralytics would use ``cpu_count - 1`` threads: one on a 2-core machine).
Training always gets explicit arguments, an absolute ``project``/``name``, and the
augmentation policy through ultralytics' ``augmentations=`` hook; a callback checks
that the policy really reached the training dataset (ultralytics swallows errors there).
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detst.errors import DetstError, StageError
from detst.structures import Detections

_CONFIGURED: Path | None = None
MAX_CPU_LANES = 4      # batches side by side on the CPU (each one a model replica in memory)


def configure_offline(config_dir: Path) -> None:
    """Set the offline switches and font; must run before ultralytics is first imported."""
    global _CONFIGURED
    config_dir = Path(config_dir).resolve()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
    fonts = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    import matplotlib

    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (fonts / name).exists():
            shutil.copyfile(dejavu, fonts / name)
    _CONFIGURED = config_dir


def _ultralytics() -> Any:
    if _CONFIGURED is None and "YOLO_CONFIG_DIR" not in os.environ:
        raise DetstError("detst.models.yolo.configure_offline() must run before ultralytics is used")
    import ultralytics
    from ultralytics.utils import SETTINGS, torch_utils

    torch_utils.NUM_THREADS = max(1, os.cpu_count() or 1)
    SETTINGS["sync"] = False
    return ultralytics


def fetch_weights(name: str) -> Path:
    """A bare ultralytics weights name (``yolov8n.pt``) as a local file: one already in
    ultralytics' weights folder or this run's, else downloaded from ultralytics' releases into
    ``$YOLO_CONFIG_DIR/weights`` (needs internet). FileNotFoundError says why not; a name
    ultralytics does not publish is refused without asking GitHub about it."""
    _ultralytics()
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    mine = Path(os.environ["YOLO_CONFIG_DIR"]) / "weights" / name
    for p in (Path(SETTINGS["weights_dir"]) / name, mine):
        if p.is_file():
            return p.resolve()
    if name not in GITHUB_ASSETS_NAMES:
        raise FileNotFoundError("no such file, and not a weights file ultralytics publishes (yolov8n.pt, yolo11n.pt, "
                                "...); give the path of a weights file or a model yaml")
    mine.parent.mkdir(parents=True, exist_ok=True)
    try:
        attempt_download_asset(mine)
    except Exception as e:  # noqa: BLE001 - requests' and ultralytics' errors alike: say why, exit 2
        mine.unlink(missing_ok=True)
        raise FileNotFoundError(f"not here, and downloading it from ultralytics' releases failed ({e}); offline, "
                                f"give the path of a weights file or a model yaml") from e
    if not mine.is_file():
        raise FileNotFoundError(f"ultralytics' download left no file at {mine}")
    return mine


def resolve_device(device: str) -> str:
    """``auto`` -> ``0`` when CUDA is available, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def device_problem(device: str) -> str | None:
    """Why ``device`` (as ``run.device`` normalises it) cannot be used on this machine, or None."""
    import torch

    if device in ("auto", "cpu"):
        return None
    if device == "mps":
        return None if torch.backends.mps.is_available() else "asks for Apple's MPS, which torch does not find here"
    visible = torch.cuda.device_count()
    missing = [i for i in (int(x) for x in device.split(",")) if i >= visible]
    if missing:
        seen = f"{visible} CUDA GPU{'s' if visible != 1 else ''}" if visible else "no CUDA GPU"
        return (f"asks for GPU {','.join(map(str, missing))} but torch sees {seen} "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use auto or cpu")
    return None


class YoloDetector:
    """A YOLO detector from a weights file (.pt) or a model yaml (fresh weights).

    predict(): list of (H, W, 3) uint8 BGR images -> list of Detections in each image's pixels."""

    def __init__(self, source: str | Path, device: str = "auto", imgsz: int = 640, half: bool = False) -> None:
        yolo = _ultralytics()
        self.source = str(source)
        self.device = resolve_device(device)
        self.imgsz = imgsz
        self.half = bool(half and self.device != "cpu")
        self.model = yolo.YOLO(self.source, task="detect")
        self._predictor: Any = None
        self._stride = 32
        self._letterbox: Any = None
        self._lock = threading.Lock()
        self._free: list[Any] = []            # model replicas not running a batch right now

    @property
    def names(self) -> list[str]:
        return [self.model.names[i] for i in sorted(self.model.names)]

    def _backend(self) -> Any:
        """ultralytics' own inference backend (fused, on the device, fp16 when asked), built once
        by one tiny predict call so that it is set up exactly as ``model.predict`` sets it up."""
        with self._lock:                      # decode threads may be first to ask
            if self._predictor is None:
                from ultralytics.data.augment import LetterBox

                kw = {"quantize": 16} if self.half else {}
                self.model.predict(np.zeros((32, 32, 3), np.uint8), imgsz=self.imgsz,
                                   device=self.device.split(",")[0], verbose=False, **kw)
                stride = self.model.predictor.model.stride
                self._stride = int(max(stride)) if hasattr(stride, "__len__") else int(stride)
                self._letterbox = LetterBox((self.imgsz, self.imgsz), auto=True, stride=self._stride)
                self._predictor = self.model.predictor
                self._free.append(self._predictor.model)
        return self._predictor

    @contextmanager
    def _net(self) -> Iterator[Any]:
        """The backend model for one batch; a batch that runs while another does gets its own
        replica (the Detect head caches its anchors per input shape: sharing it would race)."""
        p = self._backend()
        with self._lock:
            net = self._free.pop() if self._free else None
        if net is None:
            net = copy.deepcopy(p.model)
        try:
            yield net
        finally:
            with self._lock:
                self._free.append(net)

    @contextmanager
    def concurrent(self) -> Iterator[int]:
        """How many batches ``predict_prepared`` may run at once during the block (from as many threads).

        On a CPU with several cores: one batch per core up to ``MAX_CPU_LANES``, each with
        ``cores // lanes`` torch threads. One batch over all cores makes every core wait for the
        others after each layer; batches side by side do not (about 10 % more images per second
        on 2 cores). The outputs are those of one batch at a time with the same thread count, bit
        for bit (oneDNN may pick other kernels for another thread count: the last bits of a score
        can differ, as between machines). torch's thread count is restored after the block.
        Elsewhere (a GPU): 1."""
        import torch

        cores = os.cpu_count() or 1
        if self.device != "cpu" or cores < 2:
            yield 1
            return
        lanes = min(cores, MAX_CPU_LANES)
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, cores // lanes))     # new threads start with this count
        try:
            yield lanes
        finally:
            torch.set_num_threads(before)

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Letterbox one BGR image as ultralytics' predictor does for a batch of same-shape images,
        as an RGB (H, W, 3) uint8 array (thread-safe: the decode threads call it, so resizing and
        the channel reorder overlap inference instead of running between forward passes)."""
        import cv2

        self._backend()
        rgb = cv2.cvtColor(self._letterbox(image=image), cv2.COLOR_BGR2RGB)   # here, not between passes
        return rgb, image.shape[:2]

    def predict_prepared(self, items: list[tuple[np.ndarray, tuple[int, int]]], conf: float = 0.01, iou: float = 0.6,
                         max_det: int = 300) -> list[Detections]:
        """Detections of prepared images: one forward pass per input shape, ultralytics' NMS
        (torchvision's kernel), boxes scaled back to each original image."""
        import torch
        from ultralytics.utils import nms, ops

        p = self._backend()
        out: list[Detections | None] = [None] * len(items)
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, (x, _) in enumerate(items):
            groups.setdefault(x.shape, []).append(k)
        with torch.inference_mode(), self._net() as net:
            for shape, ks in groups.items():
                # (N, H, W, 3) viewed as NCHW is already channels-last: the memory format ultralytics
                # gives the model on x86 CPUs (its own predict feeds NCHW and pays a conversion)
                x = torch.from_numpy(np.stack([items[k][0] for k in ks])).to(p.device).permute(0, 3, 1, 2)
                x = (x.half() if net.fp16 else x.float()).div_(255)
                if p.device.type != "cpu":
                    x = x.contiguous()
                dets = nms.non_max_suppression(net(x), conf, iou, None, False, max_det=max_det, nc=0,
                                               end2end=getattr(net, "end2end", False))
                for k, d in zip(ks, dets):
                    xyxy = ops.scale_boxes(shape[:2], d[:, :4].clone(), items[k][1])
                    out[k] = Detections(xyxy.float().cpu().numpy(), d[:, 4].float().cpu().numpy(),
                                        d[:, 5].cpu().numpy().astype(np.int64))
        return out  # type: ignore[return-value]

    def predict(self, images: list[np.ndarray], conf: float = 0.01, iou: float = 0.6,
                max_det: int = 300) -> list[Detections]:
        return self.predict_prepared([self.prepare(im) for im in images], conf=conf, iou=iou, max_det=max_det)


@dataclass
class TrainResult:
    best: Path
    last: Path
    folder: Path
    epochs_run: int
    metrics: dict[str, float]


def _albumentations_check(expect: bool):
    def check(trainer: Any) -> None:
        from ultralytics.data.augment import Albumentations

        found = []
        stack = [trainer.train_loader.dataset.transforms]
        while stack:
            t = stack.pop()
            if isinstance(t, Albumentations):
                found.append(t)
            stack.extend(getattr(t, "transforms", []) or [])
        if expect and not any(a.transform is not None for a in found):
            raise StageError("the augmentation policy did not reach ultralytics' training dataset "
                             "(Albumentations.transform is None: its construction failed, see the log above)")
        trainer.detst_albumentations = [a.transform for a in found]
    return check


def _resumable(yolo: Any, last: Path) -> tuple[str, Any]:
    """("resumable", the loaded model) when epoch and optimizer state are kept; ("finished", None)
    when ultralytics stripped it at the end of training; ("absent", None) when missing or
    unreadable (train afresh).

    Trap: ultralytics 8.4 given ``resume=True`` on a stripped checkpoint does not fail; it warns
    and starts a *new* training with its defaults (``data=coco8.yaml``, which it then tries to
    download). A round killed between the end of training and its stage marker hits exactly that."""
    if not last.exists():
        return "absent", None
    try:
        model = yolo.YOLO(str(last), task="detect")
    except Exception:  # noqa: BLE001 - a half-written checkpoint of a killed run: start over
        return "absent", None
    ckpt = model.ckpt or {}
    if ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None:
        return "resumable", model
    return "finished", None


@contextmanager
def _quiet(quiet: bool) -> Iterator[None]:
    """ultralytics' logger at WARNING for the block when ``quiet``: its progress bars are off
    whenever that logger is above INFO."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if quiet:
        LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def train(source: str | Path, data_yaml: Path, out_dir: Path, *, imgsz: int, epochs: int, time: float | None,
          patience: int, batch: int, optimizer: str, lr0: float, seed: int, device: str, workers: int,
          augmentations: list[Any] | None, extra: dict[str, Any] | None = None, resume: bool = False,
          callbacks: dict[str, Any] | None = None, quiet: bool = False) -> TrainResult:
    """Train into ``out_dir`` (absolute; ultralytics' project=parent, name=folder name).

    ``source``: weights (.pt: fine-tune) or a model yaml (from scratch). ``augmentations``: a list of
    albumentations transforms that replaces ultralytics' built-in ones ([] = none, None = built-in).
    ``resume``: continue ``out_dir/weights/last.pt`` of an interrupted run of this same training.
    ``callbacks``: extra ultralytics callbacks by event name (tests use them to look at batches).
    ``quiet``: ultralytics logs warnings only, and so draws no progress bars (``--no-progress``;
    each epoch's numbers are still in ``out_dir/results.csv``)."""
    yolo = _ultralytics()
    out_dir = Path(out_dir).resolve()
    dev = resolve_device(device)
    state, model = _resumable(yolo, out_dir / "weights" / "last.pt") if resume else ("absent", None)
    if state == "resumable":
        model.add_callback("on_train_start", _albumentations_check(bool(augmentations)))
        for event, fn in (callbacks or {}).items():
            model.add_callback(event, fn)
        try:
            with _quiet(quiet):
                model.train(resume=True)
        except AssertionError as e:      # killed after the last epoch: the weights are complete
            if "nothing to resume" not in str(e):
                raise
    elif state != "finished":
        if out_dir.exists():
            shutil.rmtree(out_dir)   # a partial earlier attempt of this same training, not resumable
        model = yolo.YOLO(str(source), task="detect")
        model.add_callback("on_train_start", _albumentations_check(bool(augmentations)))
        for event, fn in (callbacks or {}).items():
            model.add_callback(event, fn)
        args = dict(data=str(data_yaml), imgsz=imgsz, epochs=epochs, patience=patience, batch=batch,
                    optimizer=optimizer, lr0=lr0, seed=seed, deterministic=True, device=dev, workers=workers,
                    project=str(out_dir.parent), name=out_dir.name, exist_ok=True, amp=False,  # the AMP check downloads weights
                    plots=True, verbose=False, val=True, pretrained=str(source).endswith(".pt"))
        if time is not None:
            args["time"] = time
        if augmentations is not None:
            args["augmentations"] = augmentations
        args.update(extra or {})
        with _quiet(quiet):
            model.train(**args)
    weights = out_dir / "weights"
    best = weights / "best.pt" if (weights / "best.pt").exists() else weights / "last.pt"
    if not best.exists():
        raise StageError(f"{out_dir}: training finished without writing weights")
    metrics, epochs_run = {}, 0
    results_csv = out_dir / "results.csv"
    if results_csv.exists():
        with open(results_csv) as f:
            rows = list(csv.DictReader(f))
        epochs_run = len(rows)
        if rows:
            metrics = {k.strip(): float(v) for k, v in rows[-1].items() if v.strip()}
    return TrainResult(best, weights / "last.pt", out_dir, epochs_run, metrics)
