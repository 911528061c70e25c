#!/usr/bin/env python
"""The self-poisoning scenario: the same teacher (trained on 300 labeled images of which 30 are
night, so weak at night) runs two rounds unguarded and two rounds guarded on the built-in data
with the config's pseudo-label policy; a table shows, per round and slice, mAP50, AP50 and recall
of small objects of the model in service, and what the guard decided.

python tools/poisoning.py [--config configs/poison.yaml] [--rounds 2] [--student-epochs N]

Runs into runs/poison-unguarded and runs/poison-guarded (resumable: re-running continues).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "poison.yaml"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--student-epochs", type=int, default=None, help="student epochs per round (default: the config's)")
    ap.add_argument("--table-only", action="store_true", help="print the table from the existing runs")
    a = ap.parse_args(argv)

    from detst.config import load_config
    from detst.round import run_round, warmup
    from detst.runfolder import round_dirs

    base = load_config(a.config)
    teacher = Path("-") if a.table_only else warmup(base)    # trained once, shared by both runs
    print(f"teacher: {teacher}")
    runs = {}
    for name, enabled in (("unguarded", False), ("guarded", True)):
        if a.table_only:
            runs[name] = base.run_dir.parent / f"poison-{name}"
            continue
        over = {"run.name": f"poison-{name}", "guard.enabled": enabled, "model.teacher": str(teacher)}
        if a.student_epochs:
            over["student.train.epochs"] = a.student_epochs
        cfg = load_config(a.config, over)
        done = len([r for r in round_dirs(cfg.run_dir) if (r / "decision.json").exists()])
        for _ in range(done, a.rounds):
            out = run_round(cfg)
            print(f"[{name}] round {out.index}: {out.status} — {out.sentence}")
        runs[name] = cfg.run_dir

    print("\nmodel in service after each round (round 0 = the shared teacher) on val: mAP50, AP50 of small objects,"
          "\nrecall of small objects at the round's pseudo-label thresholds (IoU 0.5); a rejected student's numbers in ()")
    print(f"{'run':<10} {'round':>5} {'slice':<6} {'mAP50':>7} {'AP50 sm':>8} {'R sm':>6}  decision")

    def cell(m, who):
        v = [m[k][who] for k in ("metric", "map_small", "recall_small")]
        return " ".join(f"{x if x is not None else float('nan'):>{w}.3f}" for x, w in zip(v, (7, 8, 6)))

    for name, run in runs.items():
        for k, r in enumerate(round_dirs(run)[: a.rounds]):
            rep = json.loads((r / "report.json").read_text())
            if k == 0:
                for s in ("all", "day", "night"):
                    print(f"{name:<10} {0:>5} {s:<6} {cell(rep['slices'][s], 'teacher')}  (start)")
            promoted = rep["status"] == "promoted"
            for s in ("all", "day", "night"):
                m = rep["slices"][s]
                who = "student" if promoted else "teacher"
                cand = f"(student {cell(m, 'student').strip()})" if not promoted and m["metric"]["student"] is not None else ""
                print(f"{name:<10} {rep['round']:>5} {s:<6} {cell(m, who)}  {rep['status']} {cand}")
            print(f"{'':<10} {'':>5} guard: {rep['guard_pre']} | {rep['guard_post'] or rep['sentence']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
