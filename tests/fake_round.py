"""Run one round of a tiny config with the fake labeler (real training): used by the kill test
as a subprocess. python tests/fake_round.py CONFIG DATA_DIR

With DETST_TEST_KILL_BEFORE=<stage name> the process SIGKILLs itself just before that stage
writes its marker: the window after a training has ended (and ultralytics has stripped its
checkpoint) but before detst has recorded it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import TINY, FakePredictor  # noqa: E402  (sets the offline environment first)


def main() -> int:
    from datasets.daynight import generate
    from detst.config import load_config
    from detst.round import run_round

    kill_before = os.environ.get("DETST_TEST_KILL_BEFORE")
    if kill_before:
        from detst.runfolder import Stage

        finish = Stage.finish

        def finish_or_die(self, outputs, result=None):
            if self.name == kill_before:
                os.kill(os.getpid(), signal.SIGKILL)
            return finish(self, outputs, result)

        Stage.finish = finish_or_die

    cfg_path, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    d = generate(data_dir, progress=False, **TINY)
    fake = FakePredictor.from_coco((d["oracle"], d["pool_images"]), (d["val_annotations"], d["val_images"]),
                                   (d["labeled_annotations"], d["labeled_images"]))
    out = run_round(load_config(cfg_path), predictor_factory=lambda w: fake, progress=False)
    return {"promoted": 0, "blocked": 3, "rejected": 4}[out.status]


if __name__ == "__main__":
    sys.exit(main())
