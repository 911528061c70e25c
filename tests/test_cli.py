"""tools/run_round.py: exit codes and messages that name the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "run_round.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("yaml_text, key", [
    ("run: {name: x}\ndata: {builtin: {}}\npseudo: {precison_target: 0.9}\n", "pseudo.precison_target"),
    ("run: {name: x}\ndata: {builtin: {}}\nguard: {teacher_floor: 35}\n", "guard.teacher_floor"),
    ("run: {name: x}\ndata: {labeled: {annotations: missing.json, images: imgs}, val: {annotations: v.json, "
     "images: i}, unlabeled: {images: pool}}\n", "data.labeled.annotations"),
    ("run: {name: x}\ndata: {builtin: {}}\nstudent: {augment: strongest}\n", "student.augment"),
    ("run: {name: x}\ndata: {builtin: {}}\naugment: {strong: [{GaussNoise: {var_limit: [10, 50]}}]}\n",
     "augment.strong[0].GaussNoise"),
])
def test_bad_config_exits_2_naming_file_and_key(tmp_path, yaml_text, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    out = run_cli("--config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert str(cfg) in out.stderr and key in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()                   # nothing written for a bad config


def test_missing_config_file_exits_2(tmp_path):
    out = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "nope.yaml" in out.stderr


def test_set_override_with_unknown_key_exits_2(tmp_path):
    out = run_cli("--config", str(REPO / "configs" / "night.yaml"), "--set", "run.nmae=x")
    assert out.returncode == 2 and "run.nmae" in out.stderr and "did you mean 'run.name'" in out.stderr


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    from detst.config import load_config

    sub = tmp_path / "exp"
    sub.mkdir()
    (sub / "c.yaml").write_text("run: {name: r, dir: out}\ndata: {builtin: {}}\n")
    cfg = load_config(sub / "c.yaml")
    assert cfg.run_dir == sub / "out" / "r"


def test_gpu_that_this_machine_lacks_exits_2_naming_the_key_before_writing_a_round(tmp_path):
    import torch

    absent = str(torch.cuda.device_count())           # one past the last GPU (0 on a CPU-only machine)
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(f"run: {{name: g, device: {absent}}}\n"
                   "data: {builtin: {n_labeled: 4, n_val: 4, n_pool: 8, imgsz: 64}}\n")
    out = run_cli("--config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert str(cfg) in out.stderr and "run.device" in out.stderr and f"asks for GPU {absent}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").rglob("round_*"))


@pytest.mark.parametrize("name", ["../../elsewhere", "", ".", "a/b"])
def test_run_name_that_is_not_a_plain_folder_name_exits_2(tmp_path, name):
    cfg = tmp_path / "n.yaml"
    cfg.write_text(f"run: {{name: '{name}', dir: {tmp_path / 'runs'}}}\ndata: {{builtin: {{}}}}\n")
    out = run_cli("--config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert str(cfg) in out.stderr and "run.name" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "elsewhere").exists()


def test_run_folder_that_cannot_be_created_exits_2_naming_run_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"run: {{name: r, dir: {blocker / 'runs'}}}\n"
                   "data: {builtin: {n_labeled: 4, n_val: 4, n_pool: 8, imgsz: 64}}\n")
    out = run_cli("--config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert str(cfg) in out.stderr and "run.dir" in out.stderr and "Traceback" not in out.stderr
    assert blocker.read_text() == "not a folder"
