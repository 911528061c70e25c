"""Crashes: a round SIGKILLed at points spread over its stages resumes with the same command;
every JSON in the run folder parses; a finished round's files never change; a second process
on the same run folder gets a clear error."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detst.errors import RunLockedError
from detst.runfolder import run_lock

REPO = Path(__file__).resolve().parents[1]


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".cache"}


def _run(cfg: Path, data: Path, kill_after: int | None = None, timeout: float = 300,
         kill_before: str | None = None) -> int | None:
    """Run the fake round; with ``kill_after``, SIGKILL it once it has logged that many new events
    (each stage logs as it finishes, so later counts reach later stages of a resumed round); with
    ``kill_before``, it kills itself just before that stage records that it finished."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if kill_before:
        env["DETST_TEST_KILL_BEFORE"] = kill_before
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fake_round.py"), str(cfg), str(data)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = cfg.parent / "runs" / "kill" / "events.jsonl"
    start = time.time()
    seen_before = events.read_text().count("\n") if events.exists() else 0
    while proc.poll() is None:
        if kill_after and events.exists():
            new = events.read_text().splitlines()[seen_before:]
            if len(new) >= kill_after:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return None
        if time.time() - start > timeout:
            proc.kill()
            raise TimeoutError("fake round did not finish")
        time.sleep(0.05)
    return proc.returncode


def test_sigkill_at_every_stage_then_resume(tmp_path, tiny_config):
    cfg = tiny_config("kill")
    data = tmp_path / "data"
    assert _run(cfg, data) in (0, 4)                          # round 1 completes
    run = tmp_path / "runs" / "kill"
    r1 = _hashes(run / "round_01")
    killed = 0
    for k in (2, 3, 4, 6, 8, 10, 12):
        rc = _run(cfg, data, kill_after=k)
        killed += rc is None
        for p in run.rglob("*.json"):
            json.loads(p.read_text())                          # every JSON parses, always
        if (run / "round_02" / "decision.json").exists():
            break                                              # finished before the kill landed
    assert killed >= 3
    if not (run / "round_02" / "decision.json").exists():
        assert _run(cfg, data) in (0, 4)                      # the same command finishes round 2
    assert (run / "round_02" / "decision.json").exists()
    assert not (run / "round_03").exists()
    assert _hashes(run / "round_01") == r1                     # finished round untouched
    stages = [json.loads(line)["stage"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert stages.count("decision") == 2


@pytest.mark.parametrize("stage", ["train", "student"])
def test_sigkill_after_a_training_ended_but_before_it_was_recorded_resumes_offline(tmp_path, tiny_config, stage):
    """The window in which ultralytics has stripped last.pt (a resume would start a new coco8
    training online) but the stage has no marker yet: the rerun must use the finished weights."""
    cfg = tiny_config("kill")
    data = tmp_path / "data"
    assert _run(cfg, data, kill_before=stage) == -signal.SIGKILL
    assert _run(cfg, data) in (0, 3, 4)
    run = tmp_path / "runs" / "kill"
    assert (run / "round_01" / "decision.json").exists()
    assert not list(run.rglob("coco8*"))
    for p in run.rglob("*.json"):
        json.loads(p.read_text())


LOCK_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from detst.errors import RunLockedError
from detst.runfolder import run_lock
try:
    with run_lock(Path(sys.argv[2])):
        print("GOT THE LOCK")
except RunLockedError as e:
    print("LOCKED", e)
"""


def test_second_process_on_the_same_run_folder_is_refused(tmp_path):
    with run_lock(tmp_path):
        out = subprocess.run([sys.executable, "-c", LOCK_CHILD, str(REPO), str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
        assert "LOCKED" in out.stdout and str(tmp_path) in out.stdout
    out = subprocess.run([sys.executable, "-c", LOCK_CHILD, str(REPO), str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert "GOT THE LOCK" in out.stdout                        # released: usable again


def test_lock_is_reentrant_only_across_time_not_at_once(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunLockedError):
            with run_lock(tmp_path):
                pass
