#!/usr/bin/env python
"""Regenerate every round's report and the run summary from a run folder alone (no model).

python tools/report.py runs/night
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    from detst.report import write_report, write_run_summary
    from detst.runfolder import round_dirs

    rounds = round_dirs(args.run_dir)
    if not rounds:
        print(f"detst: error: {args.run_dir}: no round_NN folder", file=sys.stderr)
        return 2
    for r in rounds:
        write_report(r)
        print(f"detst: wrote {r / 'report.md'}")
    print(f"detst: wrote {write_run_summary(args.run_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
