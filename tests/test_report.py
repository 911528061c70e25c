"""The report: numbers in report.json from a hand-built round folder, regeneration from a copied
run folder without any model, and report.html rendering in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detst.io.files import write_json
from detst.report import write_report, write_run_summary

REPO = Path(__file__).resolve().parents[1]


def _stats(metric, recall_small, n_gt=10):
    return {"name": "x", "n_images": 5, "n_gt": n_gt, "n_gt_small": 3, "metric": metric, "metric_ci": None,
            "map_small": None, "recall": 0.5, "recall_ci": None, "recall_small": recall_small,
            "recall_small_ci": None, "eval": None}


@pytest.fixture
def hand_built(tmp_path):
    r = tmp_path / "run" / "round_01"
    r.mkdir(parents=True)
    write_json(r / "guard_pre.json", {
        "verdict": {"proceed": True, "excluded": ["night"], "sentence": "Round proceeds without slice(s) night: x.",
                    "slices": [{"slice": "night", "admitted": False, "reason": "map50 0.100 < 0.300", "rules": [
                        {"name": "floor", "status": "fail", "value": 0.1, "limit": 0.3, "ci": [0.05, 0.2],
                         "straddles": False, "text": "map50 0.100 < 0.300"}]}],
                    "readiness": [{"name": "unlabeled_ratio", "status": "pass", "value": 10.0, "limit": 10.0,
                                   "ci": None, "straddles": False, "text": "unlabeled/labeled (100/10) 10.000 >= 10"}],
                    "enabled": True},
        "teacher": {"all": _stats(0.6, 0.4), "night": _stats(0.1, None, n_gt=0)}})
    write_json(r / "guard_post.json", {
        "verdict": {"promote": False, "sentence": "Student rejected: all metric 0.600 → 0.550.", "comparisons": []},
        "student": {"all": _stats(0.55, 0.45), "night": _stats(0.12, None, n_gt=0)}})
    write_json(r / "pseudo_summary.json", {"n_images": 90, "n_kept": 120, "n_ignored": 7,
                                           "cells": {"all|car|small": {"kept": 100, "ignored": 7},
                                                     "all|person|medium": {"kept": 20}},
                                           "class_hist": {"car": 100, "person": 20}, "dropped": {"below_band": 3},
                                           "mean_kept_score": 0.8, "excluded_images": 10, "pool_dropped": {}})
    write_json(r / "thresholds.json", {"target": 0.85, "cells": [
        {"slice": "*", "class": "car", "size": "small", "threshold": 0.4, "precision": 0.86, "recall": 0.5,
         "support": 30, "n_gt": 40, "level": "cell", "note": ""}]})
    decision = {"round": 1, "status": "rejected", "sentence": "Student rejected: all metric 0.600 → 0.550.",
                "teacher": "t.pt", "student": "s.pt", "next_teacher": "t.pt"}
    write_json(r / "decision.json", decision)
    return r


def test_summary_numbers_from_a_hand_built_round(hand_built):
    s = write_report(hand_built)
    assert s["status"] == "rejected" and s["round"] == 1
    assert s["excluded"] == ["night"]
    assert s["precision_target"] == 0.85
    assert s["pseudo"]["n_kept"] == 120 and s["pseudo"]["n_ignored"] == 7 and s["pseudo"]["excluded_images"] == 10
    assert s["slices"]["all"]["metric"] == {"teacher": 0.6, "student": 0.55}
    assert s["slices"]["night"]["recall_small"] == {"teacher": None, "student": None}     # undefined stays None
    assert json.loads((hand_built / "report.json").read_text()) == json.loads(json.dumps(s))
    md = (hand_built / "report.md").read_text()
    assert md.splitlines()[0] == "# detst round 1 — rejected"
    assert md.index("Guard verdict") < md.index("Per-slice metrics") < md.index("Thresholds")
    assert "| night | floor | fail | 0.100 | 0.300 | [0.050, 0.200]" in md
    assert "| * | car | small | 0.400 | 0.860 |" in md
    summary = write_run_summary(hand_built.parent).read_text()
    assert "| 1 | rejected | all | 0.600 | 0.550 | 0.600 |" in summary      # the teacher stays in service


def test_report_regenerates_from_a_copied_run_folder_without_a_model(two_rounds, tmp_path):
    cfg, first, _, _ = two_rounds
    copy = tmp_path / "copied"
    shutil.copytree(cfg.run_dir, copy, symlinks=True)
    for f in copy.rglob("report.*"):
        f.unlink()
    probe = ("import sys, runpy\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n"
             "print('ULTRALYTICS_LOADED' if 'ultralytics' in sys.modules else 'NO_MODEL')\n")
    out = subprocess.run([sys.executable, "-c", probe, str(REPO / "tools" / "report.py"), str(copy)],
                         capture_output=True, text=True, timeout=300)
    assert "NO_MODEL" in out.stdout, out.stdout + out.stderr
    for r in ("round_01", "round_02"):
        assert (copy / r / "report.md").read_text() == (first.folder.parent / r / "report.md").read_text()
        assert (copy / r / "report.html").stat().st_size > 10_000


def test_report_pngs_are_valid_images_of_sensible_size(two_rounds):
    import cv2

    _, first, _, _ = two_rounds
    pngs = sorted((first.folder / "plots").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"slice_metrics", "thresholds", "class_balance", "score_histograms", "pseudo_sizes"} <= names
    assert any(n.startswith("pool_examples_") for n in names)
    for p in pngs:
        img = cv2.imread(str(p))
        assert img is not None, p
        assert 200 <= img.shape[0] <= 4000 and 300 <= img.shape[1] <= 4000, (p, img.shape)
        assert img.std() > 5, p                                # not a blank canvas


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_report_html_renders_in_headless_chromium(two_rounds, tmp_path):
    _, first, _, _ = two_rounds
    page = (first.folder / "report.html").as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars"]
    dom = subprocess.run(flags + ["--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert "Guard verdict and evidence" in dom and "Per-slice metrics" in dom and "Pseudo-labels" in dom
    assert dom.count("<img") >= 6
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,6000", page], capture_output=True,
                   timeout=120)
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (6000, 1200)
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert colours > 2000                                       # plots and photographs rendered, not just text


def test_images_dropped_on_load_are_counted_and_named_in_the_report(hand_built):
    from detst.io.files import write_json

    write_json(hand_built / "inputs.json", {
        "counts": {"labeled": 9, "val": 10, "pool": 40},
        "dropped_on_load": {"labeled": {"image_truncated": 1, "box_of_dropped_image": 3}, "val": {}, "pool": {}},
        "dropped_files": {"labeled": ["image_truncated: /data/lab/cut.jpg"], "val": [], "pool": []}})
    s = write_report(hand_built)
    assert s["inputs"]["dropped_on_load"]["labeled"] == {"image_truncated": 1, "box_of_dropped_image": 3}
    md = (hand_built / "report.md").read_text()
    assert "| labeled | 3 box_of_dropped_image, 1 image_truncated |" in md and "| val | nothing |" in md
    assert "`image_truncated: /data/lab/cut.jpg`" in md


def test_an_unfinished_round_is_titled_by_its_folder(tmp_path):
    rdir = tmp_path / "run" / "round_03"
    rdir.mkdir(parents=True)
    s = write_report(rdir)
    assert s["round"] == 3 and (rdir / "report.md").read_text().startswith("# detst round 3 — in progress")
