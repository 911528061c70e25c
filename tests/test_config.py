"""Table tests of detst.config.load_config: unknown keys, types, ranges, conflicts, paths, augment policies."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from detst.augment import build_policy
from detst.config import Config, dump_config, load_config
from detst.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "run": {"name": "t"},
    "data": {"builtin": {"n_labeled": 5, "n_val": 5, "n_pool": 50, "imgsz": 64},
             "slices": {"day": {"attribute": "timeofday", "equals": "day"},
                        "night": {"attribute": "timeofday", "equals": "night"}}},
    "guard": {"reference": "day", "slices": {"night": {"floor": 0.3, "max_gap": 0.5}}},
}


def _write(tmp_path: Path, cfg: dict[str, Any], name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _with(changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """BASE with dotted keys set (``None`` values are written as YAML null) and dotted keys removed."""
    cfg = copy.deepcopy(BASE)
    for dotted, v in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = v
    for dotted in drop:
        node = cfg
        *parents, last = dotted.split(".")
        for k in parents:
            node = node[k]
        del node[last]
    return cfg


def _error(tmp_path: Path, cfg: dict[str, Any]) -> str:
    path = _write(tmp_path, cfg)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg          # every message names the file
    return msg


def test_minimal_config_loads_with_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert isinstance(cfg, Config)
    assert cfg.run.name == "t" and cfg.run.seed == 0
    assert cfg.guard.slices["night"].floor == 0.3 and cfg.guard.slices["night"].min_support == 20
    assert cfg.pseudo.target_for_round(1) == 0.9
    assert cfg.source == str((tmp_path / "cfg.yaml").resolve())


def test_config_is_frozen(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 3  # type: ignore[misc]


def test_configs_night_yaml_loads():
    cfg = load_config(REPO / "configs" / "night.yaml")
    assert cfg.run.name == "night"
    assert cfg.data.builtin is not None and set(cfg.data.slices) == {"day", "night"}
    assert cfg.pseudo.schedule == [0.8, 0.85, 0.9]
    assert [cfg.pseudo.target_for_round(r) for r in (1, 2, 3, 4)] == [0.8, 0.85, 0.9, 0.9]
    assert cfg.guard.slices["night"].floor == 0.15 and cfg.guard.reference == "day"
    assert cfg.run_dir == (REPO / "runs" / "night").resolve()
    assert cfg.student.augment in cfg.policies()


def test_dump_config_loads_back_to_the_same_config(tmp_path):
    cfg = load_config(REPO / "configs" / "night.yaml")
    back = load_config(_write(tmp_path / "configs", yaml.safe_load(dump_config(cfg))))
    assert back.to_dict() == cfg.to_dict() and back.hash() == cfg.hash()


# ---------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("changes, path, suggestion", [
    ({"gaurd": {}}, "gaurd", "guard"),
    ({"run.nmae": "x"}, "run.nmae", "run.name"),
    ({"guard.slices.night.flor": 0.3}, "guard.slices.night.flor", "guard.slices.night.floor"),
    ({"pseudo.precision_targt": 0.9}, "pseudo.precision_targt", "pseudo.precision_target"),
    ({"guard.promotion.max_regresion": 0.1}, "guard.promotion.max_regresion", "guard.promotion.max_regression"),
    ({"data.slices.rain.atribute": "weather"}, "data.slices.rain.atribute", "data.slices.rain.attribute"),
])
def test_unknown_key_is_refused_with_did_you_mean_and_the_key_path(tmp_path, changes, path, suggestion):
    msg = _error(tmp_path, _with(changes))
    assert f"{path} is not a known key" in msg
    assert f"did you mean '{suggestion}'" in msg


def test_unknown_key_without_a_close_match_lists_the_valid_keys(tmp_path):
    msg = _error(tmp_path, _with({"run.zzzzzz": 1}))
    assert "run.zzzzzz is not a known key" in msg and "did you mean" not in msg and "'seed'" in msg


def test_source_is_not_a_yaml_key(tmp_path):
    assert "source is not a known key" in _error(tmp_path, _with({"source": "x.yaml"}))


# ---------------------------------------------------------------- types

@pytest.mark.parametrize("changes, expect", [
    ({"run.seed": "zero"}, "run.seed must be int, got str 'zero'"),
    ({"run.seed": 1.5}, "run.seed must be int"),
    ({"run.seed": True}, "run.seed must be int"),                          # a bool is not a number
    ({"guard.slices.night.floor": "high"}, "guard.slices.night.floor must be float"),
    ({"guard.slices.night.floor": True}, "guard.slices.night.floor must be float"),
    ({"guard.enabled": "yes"}, "guard.enabled must be true or false"),
    ({"guard.metric": "map90"}, "guard.metric must be one of ['map', 'map50', 'map_small']"),
    ({"guard.on_fail": "ignore"}, "guard.on_fail must be one of"),
    ({"pseudo.schedule": 0.8, "pseudo.precision_target": None}, "pseudo.schedule must be a list"),
    ({"pseudo.schedule": [0.8, "x"]}, "pseudo.schedule[1] must be float"),
    ({"data.slices": ["night"]}, "data.slices must be a mapping"),
    ({"run": 5}, "run must be a mapping"),
    ({"run.name": ["a"]}, "run.name must be a string"),
    ({"augment": {"mine": {"HorizontalFlip": {}}}}, "augment.mine must be a list"),
])
def test_wrong_type_names_the_key_path(tmp_path, changes, expect):
    assert expect in _error(tmp_path, _with(changes))


def test_int_where_float_belongs_and_number_where_string_belongs_are_accepted(tmp_path):
    cfg = load_config(_write(tmp_path, _with({"guard.slices.night.floor": 0, "run.name": 7, "pseudo.ignore_band": 1})))
    assert cfg.guard.slices["night"].floor == 0.0 and isinstance(cfg.guard.slices["night"].floor, float)
    assert cfg.run.name == "7"


@pytest.mark.parametrize("drop, expect", [
    (("run.name",), "run.name is required"),
    (("run",), "run is required"),
    (("data.builtin",), "data.labeled is required"),
])
def test_missing_required_key(tmp_path, drop, expect):
    assert expect in _error(tmp_path, _with({}, drop=drop))


# ---------------------------------------------------------------- ranges

@pytest.mark.parametrize("changes, expect", [
    ({"guard.slices.night.floor": 35}, "guard.slices.night.floor must be in [0, 1], got 35"),
    ({"guard.slices.night.floor": -0.1}, "guard.slices.night.floor must be in [0, 1], got -0.1"),
    ({"guard.slices.night.max_miss_rate": 1.5}, "guard.slices.night.max_miss_rate must be in [0, 1], got 1.5"),
    ({"pseudo.min_support": 0}, "pseudo.min_support must be in [1, inf], got 0"),
    ({"model.imgsz": 16}, "model.imgsz must be in [32, 4096], got 16"),
    ({"guard.confidence": 1}, "guard.confidence must be in [0.5, 0.999], got 1"),
    ({"data.builtin.n_pool": 0}, "data.builtin.n_pool must be in [1, inf], got 0"),
    ({"student.train.mosaic": 2}, "student.train.mosaic must be in [0, 1], got 2"),
    ({"pseudo.schedule": [0.8, 0], "pseudo.precision_target": None}, "pseudo.schedule[1] must be in (0, 1], got 0"),
    ({"pseudo.schedule": [1.5]}, "pseudo.schedule[0] must be in (0, 1], got 1.5"),
    ({"pseudo.schedule": []}, "pseudo.schedule must not be empty"),
])
def test_out_of_range_value_names_the_path(tmp_path, changes, expect):
    msg = _error(tmp_path, _with(changes))
    assert re.search(re.escape(expect) + r"(?![\d.])", msg), msg     # the value as written: 35, not 35.0


def test_range_edges_are_inclusive(tmp_path):
    cfg = load_config(_write(tmp_path, _with({"guard.slices.night.floor": 1, "guard.slices.night.max_gap": 0})))
    assert (cfg.guard.slices["night"].floor, cfg.guard.slices["night"].max_gap) == (1.0, 0.0)


# ---------------------------------------------------------------- conflicts

@pytest.mark.parametrize("changes, expect", [
    ({"pseudo.schedule": [0.8, 0.9], "pseudo.precision_target": 0.9}, "pseudo.schedule conflicts with pseudo.precision_target"),
    ({"data.labeled": {"annotations": "a.json", "images": "img"}}, "data.builtin conflicts with data.labeled"),
    ({"guard.slices.rain": {"floor": 0.2}}, "guard.slices.rain names no slice in data.slices ['day', 'night']"),
    ({"guard.reference": "dusk"}, "guard.reference names no slice"),
    ({"guard.reference": None}, "guard.reference is required when a guarded slice sets max_gap"),
    ({"pseudo.min_threshold": 0.9, "pseudo.max_threshold": 0.5}, "pseudo.min_threshold (0.9) exceeds pseudo.max_threshold"),
    ({"data.slices.dark": {"max_luminance": 40, "path_glob": "*night*"}}, "data.slices.dark needs exactly one of"),
    ({"data.slices.dark": {}}, "data.slices.dark needs exactly one of"),
    ({"data.slices.dark": {"attribute": "timeofday"}}, "data.slices.dark.equals is required with attribute"),
    ({"student.augment": "stronger"}, "student.augment 'stronger' is not a policy"),
    ({"data.builtin": None, "data.shared_real": {"root": "../nowhere"}},
     "data.shared_real.root is not a folder"),
    ({"run.name": "../out"}, "run.name must be a plain folder name"),
])
def test_conflicting_or_dangling_options_are_refused(tmp_path, changes, expect):
    assert expect in _error(tmp_path, _with(changes))


def test_no_data_source_at_all(tmp_path):
    assert "data.labeled is required" in _error(tmp_path, _with({"data": {}}))


# ---------------------------------------------------------------- paths

def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(tmp_path, monkeypatch):
    raw = _with({"data.labeled": {"annotations": "data/lab.json", "images": "data/img"},
                 "data.val": {"annotations": "../shared/val.json", "images": str(tmp_path / "absval")},
                 "data.unlabeled": {"images": "pool"}, "run.dir": "out"}, drop=("data.builtin",))
    _write(tmp_path / "exp", raw)
    for d in ("exp/data/img", "shared", "absval", "exp/pool"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    for f in ("exp/data/lab.json", "shared/val.json"):
        (tmp_path / f).write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("exp") / "cfg.yaml")                 # a relative config path, too
    monkeypatch.chdir(elsewhere)                                 # the cwd changes after loading
    base = (tmp_path / "exp").resolve()
    assert cfg.base_dir == base
    assert cfg.path(cfg.data.labeled.annotations) == base / "data" / "lab.json"
    assert cfg.path(cfg.data.val.annotations) == (tmp_path / "shared" / "val.json").resolve()
    assert cfg.path(cfg.data.val.images) == tmp_path / "absval"
    assert cfg.path(cfg.data.unlabeled.images) == base / "pool"
    assert cfg.run_dir == base / "out" / "t"


# ---------------------------------------------------------------- overrides

def test_overrides_are_validated_like_the_file(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, {"run.name": "other", "pseudo.precision_target": 0.7})
    assert cfg.run.name == "other" and cfg.pseudo.target_for_round(3) == 0.7
    with pytest.raises(ConfigError, match=r"guard\.slices\.night\.floor must be in \[0, 1\], got 35"):
        load_config(path, {"guard.slices.night.floor": 35})
    with pytest.raises(ConfigError, match="did you mean 'run.seed'"):
        load_config(path, {"run.sed": 1})


def test_override_into_an_empty_section_or_through_a_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run: {name: t}\nmodel:\ndata: {builtin: {}}\n")      # `model:` is an empty (null) section
    assert load_config(path, {"model.imgsz": 320}).model.imgsz == 320
    with pytest.raises(ConfigError, match="override run.name.x: run.name is not a mapping"):
        load_config(path, {"run.name.x": 1})
    path.write_text("- a\n")
    with pytest.raises(ConfigError, match="<top> is not a mapping"):
        load_config(path, {"run.name": "x"})


@pytest.mark.parametrize("content, expect", [(None, "config file not found"), ("run: [unclosed", "not valid YAML"),
                                             ("", "run is required"), ("- a\n- b\n", "must be a mapping")])
def test_unreadable_config_file(tmp_path, content, expect):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expect):
        load_config(path)


# ---------------------------------------------------------------- augment policies

@pytest.mark.parametrize("policy, expect", [
    ([{"GausNoise": {"std_range": [0.1, 0.2]}}], "augment.mine[0] is not an albumentations transform: 'GausNoise' "
                                                 "(did you mean 'GaussNoise'?)"),
    ([{"HorizontalFlip": {"p": 0.5}}, {"NotATransform": {}}], "augment.mine[1] is not an albumentations transform"),
    ([{"Compose": {}}], "augment.mine[0] is not an albumentations transform"),
    ([{"GaussNoise": {"std_rang": [0.1, 0.2]}}], "augment.mine[0].GaussNoise.std_rang is not an argument of GaussNoise "
                                                 "(did you mean 'std_range'?)"),
    ([{"HorizontalFlip": {"p": 2}}], "augment.mine[0].HorizontalFlip rejected its arguments"),
    ([{"HorizontalFlip": {}, "VerticalFlip": {}}], "augment.mine[0] must be a one-key mapping"),
])
def test_unknown_albumentations_transform_or_argument_names_the_key_path(tmp_path, policy, expect):
    assert expect in _error(tmp_path, _with({"augment": {"mine": policy}, "student.augment": "mine"}))


@pytest.mark.parametrize("policy, expect", [
    ([{"GaussNoise": {"var_limit": [10, 50]}}], "augment.mine[0].GaussNoise.var_limit"),                  # renamed: std_range
    ([{"ImageCompression": {"quality_lower": 50}}], "did you mean 'quality_range'"),                     # renamed
    ([{"MotionBlur": {"blur_limit": [4, 8]}}], "augment.mine[0].MotionBlur rejected its arguments"),      # only warned about
    ([{"TimeReverse": {}}], "augment.mine[0].TimeReverse rejected its arguments"),                        # deprecated alias
])
def test_deprecated_or_renamed_albumentations_argument_is_a_config_error(tmp_path, policy, expect):
    assert expect in _error(tmp_path, _with({"augment": {"mine": policy}, "student.augment": "mine"}))


def test_a_policy_not_used_by_the_student_is_still_validated(tmp_path):
    assert "augment.spare[0]" in _error(tmp_path, _with({"augment": {"spare": [{"Blurr": {}}]}}))


def test_transform_without_arguments_may_be_written_bare(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run: {name: t}\ndata: {builtin: {}}\nstudent: {augment: mine}\n"
                    "augment:\n  mine:\n    - ToGray:\n    - HorizontalFlip: {p: 0.5}\n")
    assert load_config(path).policies()["mine"] == [{"ToGray": None}, {"HorizontalFlip": {"p": 0.5}}]
    assert [type(t).__name__ for t in build_policy(load_config(path).policies()["mine"])] == ["ToGray", "HorizontalFlip"]


def test_user_policy_loads_and_can_replace_a_default(tmp_path):
    cfg = load_config(_write(tmp_path, _with({"augment": {"strong": [{"ToGray": {"p": 0.1}}], "empty": []},
                                               "student.augment": "empty"})))
    pol = cfg.policies()
    assert pol["strong"] == [{"ToGray": {"p": 0.1}}] and pol["empty"] == [] and "night" in pol


@pytest.mark.parametrize("written, device", [
    ("auto", "auto"), ("cpu", "cpu"), ("mps", "mps"), (0, "0"), ("0", "0"), ("0,1", "0,1"), ("0, 1", "0,1"),
    ([0, 1], "0,1"), ([3], "3"), ("cuda:0", "0"), ("CUDA", "0"),
])
def test_device_is_written_as_ultralytics_takes_it_list_of_gpus_included(tmp_path, written, device):
    assert load_config(_write(tmp_path, _with({"run.device": written}))).run.device == device


@pytest.mark.parametrize("written", ["gpu", "", [], [-1], ["0"], True, "0;1", 0.5])
def test_device_that_ultralytics_would_misread_is_refused_by_key(tmp_path, written):
    assert "run.device must be auto, cpu, mps, a GPU index" in _error(tmp_path, _with({"run.device": written}))
