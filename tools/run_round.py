#!/usr/bin/env python
"""Run (or resume) one self-training round: python tools/run_round.py --config configs/night.yaml

Exit codes: 0 student promoted; 3 round blocked by the guard before training;
4 student rejected by the promotion gate; 2 bad config or input; 1 anything else.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXIT = {"promoted": 0, "blocked": 3, "rejected": 4}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="experiment YAML")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set run.name=try2 (value parsed as YAML)")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress bars (ultralytics then logs warnings only; each epoch is in results.csv)")
    ap.add_argument("--shard", metavar="K/N", default=None,
                    help="only pseudo-label shard K of N of the current round's pool, then exit 0; a later run "
                         "without --shard merges the finished shards and goes on")
    args = ap.parse_args(argv)

    import yaml

    from detst.config import load_config
    from detst.errors import ConfigError, DatasetError, RunLockedError

    try:
        overrides = {}
        for item in args.set:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
            k, v = item.split("=", 1)
            overrides[k] = yaml.safe_load(v)
        cfg = load_config(args.config, overrides)
        from detst.round import run_round, run_shard

        if args.shard:
            try:
                k, n = (int(v) for v in args.shard.split("/"))
            except ValueError as e:
                raise ConfigError(f"--shard {args.shard!r}: expected K/N, e.g. 1/4") from e
            outcome = run_shard(cfg, (k, n), progress=not args.no_progress)
            print(f"detst: {outcome.sentence}")
            return 3 if outcome.status == "blocked" else 0
        outcome = run_round(cfg, progress=not args.no_progress)
    except (ConfigError, DatasetError) as e:
        print(f"detst: error: {e}", file=sys.stderr)
        return 2
    except RunLockedError as e:
        print(f"detst: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("detst: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - the CLI maps anything else to exit 1 with the traceback
        traceback.print_exc()
        return 1
    print(f"detst: round {outcome.index} {outcome.status}: {outcome.sentence}")
    print(f"detst: report: {outcome.folder / 'report.md'}")
    return EXIT[outcome.status]


if __name__ == "__main__":
    sys.exit(main())
