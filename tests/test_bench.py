"""tools/bench.py end to end at toy sizes: it prints the four figures, and the two equalities
behind them hold (slice evaluation equals per-slice pycocotools; sharded equals single). The
timings it prints are not looked at."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_prints_four_figures_and_its_equalities_hold_at_toy_sizes():
    out = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), "--model", "detst/models/detst-tiny.yaml",
                          "--pool", "24", "--imgsz", "64", "--eval-images", "30", "--rss-small", "8",
                          "--rss-large", "16", "--shard-images", "12"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^([1-4])\. .*$", out.stdout, re.M)}
    assert sorted(lines) == ["1", "2", "3", "4"], out.stdout
    assert "largest difference from per-slice pycocotools 0.0e+00" in lines["2"]
    assert "predictions identical: True; pseudo_labels COCO identical: True" in lines["4"]
    assert re.search(r"ratio \d+\.\d+", lines["1"]) and re.search(r"ratio \d+\.\d+", lines["3"])
    assert "note: untrained model" in out.stdout          # a yaml model is said to measure little
