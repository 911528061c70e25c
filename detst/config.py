"""The experiment config: a typed, frozen tree loaded from one YAML and validated at load.

Unknown keys fail with a "did you mean", wrong types and ranges name the key path
(``guard.slices.night.floor must be in [0, 1], got 35``), conflicting options are refused.
Relative paths are resolved against the config file's folder. Nothing mutates a Config.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detst.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_YAML = PACKAGE_DIR / "models" / "detst-tiny.yaml"


def _rng(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"range": (lo, hi)}


@dataclass(frozen=True)
class RunConfig:
    name: str
    dir: str = "runs"                      # resolved against the config file's folder
    seed: int = 0
    device: str = "auto"                   # auto | cpu | mps | 0 | 0,1 or [0, 1] (several GPUs: ultralytics DDP)
    workers: int = field(default=2, metadata=_rng(0, 64))


@dataclass(frozen=True)
class CocoSetConfig:
    annotations: str                       # COCO json
    images: str                            # folder the file_name entries are relative to


@dataclass(frozen=True)
class PoolConfig:
    images: str                            # folder of images (recursive) ...
    annotations: str | None = None         # ... or a COCO json listing them (with attributes)


@dataclass(frozen=True)
class SliceConfig:
    """Exactly one predicate: an image attribute, a path glob, or a luminance level."""
    attribute: str | None = None
    equals: str | None = None
    path_glob: str | None = None
    max_luminance: float | None = field(default=None, metadata=_rng(0, 255))


@dataclass(frozen=True)
class BuiltinDataConfig:
    seed: int = 0
    n_labeled: int = field(default=300, metadata=_rng(1))
    n_val: int = field(default=160, metadata=_rng(1))
    n_pool: int = field(default=3000, metadata=_rng(1))
    imgsz: int = field(default=256, metadata=_rng(64, 4096))
    labeled_night_frac: float = field(default=0.1, metadata=_rng(0, 1))


@dataclass(frozen=True)
class SharedRealConfig:
    """Split shared/data (coco128 = day/general, sustech_night = night) into labeled/val/pool."""
    root: str
    n_labeled: int = field(default=80, metadata=_rng(1))
    n_val_day: int = field(default=24, metadata=_rng(1))
    n_val_night: int = field(default=45, metadata=_rng(1))
    gap: int = field(default=5, metadata=_rng(0))


@dataclass(frozen=True)
class DataConfig:
    labeled: CocoSetConfig | None = None
    val: CocoSetConfig | None = None
    unlabeled: PoolConfig | None = None
    builtin: BuiltinDataConfig | None = None     # generate the day/night set into the run folder
    shared_real: SharedRealConfig | None = None  # or split shared/data's real photographs into it
    slices: dict[str, SliceConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=100, metadata=_rng(1))
    time: float | None = field(default=None, metadata=_rng(0.001))   # hours; caps wall time
    patience: int = field(default=20, metadata=_rng(1))
    batch: int = field(default=16, metadata=_rng(1))
    optimizer: str = "AdamW"
    lr0: float = field(default=0.003, metadata=_rng(0, 1))
    cache: bool = True
    # ultralytics' own geometric augmentation, passed through as train arguments
    mosaic: float = field(default=1.0, metadata=_rng(0, 1))
    close_mosaic: int = field(default=2, metadata=_rng(0))
    fliplr: float = field(default=0.5, metadata=_rng(0, 1))
    scale: float = field(default=0.5, metadata=_rng(0, 1))
    translate: float = field(default=0.1, metadata=_rng(0, 1))
    hsv_v: float = field(default=0.4, metadata=_rng(0, 1))
    warmup_epochs: float = field(default=1.0, metadata=_rng(0))


@dataclass(frozen=True)
class ModelConfig:
    teacher: str | None = None              # weights .pt, or a model yaml trained in a warm-up
    imgsz: int = field(default=640, metadata=_rng(32, 4096))
    half: bool = False                      # half precision inference on GPU
    batch: int = field(default=16, metadata=_rng(1))   # inference batch
    warmup: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class FlipConsistencyConfig:
    enabled: bool = False
    iou: float = field(default=0.5, metadata=_rng(0, 1))


@dataclass(frozen=True)
class PseudoConfig:
    precision_target: float | None = field(default=None, metadata=_rng(0, 1))
    schedule: list[float] | None = None     # stepped precision target per round
    score_floor: float = field(default=0.01, metadata=_rng(0, 1))
    min_threshold: float = field(default=0.1, metadata=_rng(0, 1))
    max_threshold: float = field(default=0.95, metadata=_rng(0, 1))
    ignore_band: float = field(default=0.15, metadata=_rng(0, 1))
    min_support: int = field(default=8, metadata=_rng(1))
    per_slice: bool = False
    match_iou: float = field(default=0.5, metadata=_rng(0, 1))
    cross_class_iou: float = field(default=0.7, metadata=_rng(0, 1))
    class_cap: int | None = field(default=None, metadata=_rng(1))
    min_class_share: float = field(default=0.2, metadata=_rng(0, 1))
    on_class_collapse: Literal["warn", "block"] = "warn"
    flip_consistency: FlipConsistencyConfig = field(default_factory=FlipConsistencyConfig)

    def target_for_round(self, round_index: int) -> float:
        """Precision target for round ``round_index`` (1-based): the schedule's step, or the fixed target."""
        if self.schedule:
            return float(self.schedule[min(round_index, len(self.schedule)) - 1])
        return 0.9 if self.precision_target is None else float(self.precision_target)


@dataclass(frozen=True)
class GuardSliceConfig:
    floor: float | None = field(default=None, metadata=_rng(0, 1))
    max_gap: float | None = field(default=None, metadata=_rng(0, 1))
    max_miss_rate: float | None = field(default=None, metadata=_rng(0, 1))
    min_support: int = field(default=20, metadata=_rng(0))


@dataclass(frozen=True)
class PromotionConfig:
    max_regression: float = field(default=0.01, metadata=_rng(0, 1))
    use_interval: bool = False              # reject only when the bootstrap interval says so


@dataclass(frozen=True)
class DriftConfig:
    max_density_ratio: float = field(default=3.0, metadata=_rng(1))
    min_density_ratio: float = field(default=0.25, metadata=_rng(0, 1))
    max_empty_share: float = field(default=0.8, metadata=_rng(0, 1))
    action: Literal["warn", "block"] = "warn"


@dataclass(frozen=True)
class GuardConfig:
    enabled: bool = True
    metric: Literal["map", "map50", "map_small"] = "map50"
    reference: str | None = None
    slices: dict[str, GuardSliceConfig] = field(default_factory=dict)
    on_fail: Literal["exclude_slice", "block_round"] = "exclude_slice"
    teacher_floor: float = field(default=0.35, metadata=_rng(0, 1))
    min_unlabeled_ratio: float = field(default=10.0, metadata=_rng(0))
    bootstrap: int = field(default=200, metadata=_rng(0))
    confidence: float = field(default=0.9, metadata=_rng(0.5, 0.999))
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)


@dataclass(frozen=True)
class StudentConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: str = "strong"                 # a policy name from `augment:`
    ignore_fill: int = field(default=114, metadata=_rng(0, 255))


DEFAULT_POLICIES: dict[str, list[dict[str, dict[str, Any]]]] = {
    "none": [],
    "weak": [{"HorizontalFlip": {"p": 0.5}}],
    "strong": [
        {"RandomBrightnessContrast": {"brightness_limit": 0.3, "contrast_limit": 0.3, "p": 0.5}},
        {"RandomGamma": {"gamma_limit": [60, 160], "p": 0.3}},
        {"GaussNoise": {"std_range": [0.02, 0.1], "p": 0.3}},
        {"MotionBlur": {"blur_limit": [3, 7], "p": 0.2}},
        {"ToGray": {"p": 0.05}},
        {"CoarseDropout": {"num_holes_range": [1, 4], "hole_height_range": [0.04, 0.1],
                           "hole_width_range": [0.04, 0.1], "p": 0.2}},
    ],
    "night": [
        {"RandomGamma": {"gamma_limit": [150, 300], "p": 0.5}},
        {"RandomBrightnessContrast": {"brightness_limit": [-0.5, -0.2], "contrast_limit": [-0.4, 0.0], "p": 0.5}},
        {"ISONoise": {"color_shift": [0.01, 0.05], "intensity": [0.2, 0.6], "p": 0.4}},
        {"MotionBlur": {"blur_limit": [3, 7], "p": 0.3}},
        {"PlanckianJitter": {"mode": "blackbody", "p": 0.3}},
        {"RandomSunFlare": {"src_radius": 40, "num_flare_circles_range": [1, 3], "p": 0.1}},
    ],
}


@dataclass(frozen=True)
class Config:
    run: RunConfig
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    augment: dict[str, list[dict[str, dict[str, Any] | None]]] = field(default_factory=dict)   # `- ToGray:` = no args
    source: str = ""                        # the YAML file this came from (not a YAML key)

    @property
    def base_dir(self) -> Path:
        return Path(self.source).resolve().parent if self.source else Path.cwd()

    def path(self, value: str) -> Path:
        """Resolve a path from the config against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def run_dir(self) -> Path:
        return self.path(self.run.dir) / self.run.name

    def policies(self) -> dict[str, list[dict[str, dict[str, Any]]]]:
        return {**DEFAULT_POLICIES, **self.augment}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def hash(self) -> str:
        """Of the experiment's settings; where the run folder is (run.name, run.dir) does not count."""
        d = self.to_dict()
        d["run"] = {k: v for k, v in d["run"].items() if k not in ("name", "dir")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- loading

def _fail(path: str, msg: str, source: str) -> ConfigError:
    return ConfigError(f"{source}: {path} {msg}")


_DEVICE = re.compile(r"auto|cpu|mps|\d+(,\d+)*")


def _device(value: Any, source: str) -> str:
    """``run.device`` as ultralytics takes it: ``auto``, ``cpu``, ``mps`` or GPU indices ``0,1``
    (also written ``[0, 1]``, ``0``, ``cuda:0`` or ``0, 1``)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = str(value).strip().lower().replace(" ", "") if isinstance(value, str) else ""
        text = "0" if text == "cuda" else text.removeprefix("cuda:")
    if not _DEVICE.fullmatch(text):
        raise _fail("run.device", f"must be auto, cpu, mps, a GPU index (0) or several (0,1 or [0, 1]); got {value!r}",
                    source)
    return text


def _build(tp: Any, value: Any, path: str, source: str, meta: dict[str, Any] | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _build(non_none[0], value, path, source, meta)
    if origin is Literal:
        if value not in args:
            raise _fail(path, f"must be one of {list(args)}, got {value!r}", source)
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path, source)
    if origin is list:
        if not isinstance(value, list):
            raise _fail(path, f"must be a list, got {type(value).__name__} {value!r}", source)
        return [_build(args[0], v, f"{path}[{i}]", source, meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, f"must be a mapping, got {type(value).__name__} {value!r}", source)
        return {str(k): _build(args[1], v, f"{path}.{k}", source) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(path, f"must be true or false, got {value!r}", source)
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and not isinstance(value, int)):
            raise _fail(path, f"must be {tp.__name__}, got {type(value).__name__} {value!r}", source)
        written, value = value, tp(value)
        lo, hi = (meta or {}).get("range", (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            shown = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise _fail(path, f"must be in {shown}, got {written}", source)   # as written: 35, not 35.0
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _fail(path, f"must be a string, got {type(value).__name__} {value!r}", source)
        return value
    raise _fail(path, f"has an unsupported type {tp}", source)  # pragma: no cover


def _build_dataclass(cls: Any, value: Any, path: str, source: str) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _fail(path or "<top>", f"must be a mapping, got {type(value).__name__} {value!r}", source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {'.'.join(filter(None, [path, close[0]]))!r}?)" if close else ""
            raise _fail(".".join(filter(None, [path, str(key)])), f"is not a known key{hint}; "
                        f"valid keys: {sorted(fields)}", source)
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in value:
            kwargs[name] = _build(hints[name], value[name], sub, source, dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _fail(sub, "is required", source)
    return cls(**kwargs)


def _check(cfg: Config, src: str) -> None:
    name = cfg.run.name
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise _fail("run.name", f"must be a plain folder name (the run is run.dir/run.name), got {name!r}", src)
    d = cfg.data
    generated = [k for k in ("builtin", "shared_real") if getattr(d, k) is not None]
    if len(generated) > 1:
        raise _fail("data.builtin", "conflicts with data.shared_real: give one or the other", src)
    if not generated:
        for key in ("labeled", "val", "unlabeled"):
            if getattr(d, key) is None:
                raise _fail(f"data.{key}", "is required (or set data.builtin to use generated data)", src)
    elif any(getattr(d, k) is not None for k in ("labeled", "val", "unlabeled")):
        raise _fail(f"data.{generated[0]}", "conflicts with data.labeled/val/unlabeled: give one or the other", src)
    if not generated:
        for key, sub in (("labeled", d.labeled), ("val", d.val), ("unlabeled", d.unlabeled)):
            for attr in ("annotations", "images"):
                value = getattr(sub, attr)
                if value is not None and not cfg.path(value).exists():
                    raise _fail(f"data.{key}.{attr}", f"does not exist: {cfg.path(value)}", src)
    teacher = cfg.model.teacher
    if teacher is not None and (Path(teacher).parent != Path(".") or not teacher.endswith(".pt")) \
            and not cfg.path(teacher).is_file():
        raise _fail("model.teacher", f"is not a file: {cfg.path(teacher)} (weights .pt or a model yaml; a bare "
                    f"name ultralytics publishes, like yolov8n.pt, is downloaded when online)", src)
    if d.shared_real is not None and not cfg.path(d.shared_real.root).is_dir():
        raise _fail("data.shared_real.root", f"is not a folder: {cfg.path(d.shared_real.root)} (a relative path "
                    f"is taken from the config's folder; e.g. --set data.shared_real.root=/path/to/shared/data)", src)
    for name, s in d.slices.items():
        given = [k for k in ("attribute", "path_glob", "max_luminance") if getattr(s, k) is not None]
        if len(given) != 1:
            raise _fail(f"data.slices.{name}", f"needs exactly one of attribute, path_glob, max_luminance; "
                        f"got {given or 'none'}", src)
        if s.attribute is not None and s.equals is None:
            raise _fail(f"data.slices.{name}.equals", "is required with attribute", src)
    p = cfg.pseudo
    if p.schedule is not None:
        if p.precision_target is not None:
            raise _fail("pseudo.schedule", "conflicts with pseudo.precision_target: give one or the other", src)
        if not p.schedule:
            raise _fail("pseudo.schedule", "must not be empty", src)
        for i, v in enumerate(p.schedule):
            if not 0 < v <= 1:
                raise _fail(f"pseudo.schedule[{i}]", f"must be in (0, 1], got {v:g}", src)
    if p.min_threshold > p.max_threshold:
        raise _fail("pseudo.min_threshold", f"({p.min_threshold}) exceeds pseudo.max_threshold "
                    f"({p.max_threshold})", src)
    g = cfg.guard
    for name in g.slices:
        if name not in d.slices:
            raise _fail(f"guard.slices.{name}", f"names no slice in data.slices {sorted(d.slices)}", src)
    if g.reference is not None and g.reference not in d.slices:
        raise _fail("guard.reference", f"names no slice in data.slices {sorted(d.slices)}; got {g.reference!r}", src)
    if any(s.max_gap is not None for s in g.slices.values()) and g.reference is None:
        raise _fail("guard.reference", "is required when a guarded slice sets max_gap", src)
    policies = cfg.policies()
    if cfg.student.augment not in policies:
        raise _fail("student.augment", f"{cfg.student.augment!r} is not a policy; valid: {sorted(policies)}", src)
    from detst.augment import validate_policies  # albumentations is heavy: import on use
    validate_policies(policies, src)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read, validate and freeze a YAML config. ``overrides`` are dotted keys (``run.name``)."""
    path = Path(path)
    src = str(path) + (f" (overridden: {', '.join(overrides)})" if overrides else "")
    if not path.is_file():
        raise ConfigError(f"{src}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: not valid YAML: {e}") from e
    for dotted, v in (overrides or {}).items():
        node = raw
        *parents, last = dotted.split(".")
        for i, k in enumerate(parents):
            if not isinstance(node, dict):
                raise ConfigError(f"{src}: override {dotted}: {'.'.join(parents[:i]) or '<top>'} is not a mapping")
            if node.get(k) is None:          # absent, or an empty section (`model:` in the YAML)
                node[k] = {}
            node = node[k]
        if not isinstance(node, dict):
            raise ConfigError(f"{src}: override {dotted}: {'.'.join(parents) or '<top>'} is not a mapping")
        node[last] = v
    if isinstance(raw, dict) and isinstance(raw.get("run"), dict) and "device" in raw["run"]:
        raw["run"]["device"] = _device(raw["run"]["device"], src)
    cfg = _build_dataclass(Config, raw, "", src)
    cfg = dataclasses.replace(cfg, source=str(path.resolve()))
    _check(cfg, src)
    return cfg


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
