"""The run folder: its lock, round numbering, stage manifests, file hashes and events log.

``runs/<name>/round_NN/`` is one round; a round is finished when its ``decision.json``
exists, and a finished round's files are never touched again. A stage writes its
manifest (its input key and outputs) last, atomically: a stage whose manifest matches
its inputs is skipped, so an interrupted round resumes where it stopped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detst.errors import RunLockedError
from detst.io.files import atomic_write_text, dumps_json, read_json, write_json

DECISION = "decision.json"


@contextmanager
def run_lock(run_dir: Path, name: str = ".lock", wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the run folder; a second holder gets RunLockedError at once
    (or, with ``wait``, blocks until the first lets go)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError as e:
        f.close()
        raise RunLockedError(f"{run_dir}: another detst process is using this run folder "
                             f"(lock {path}); wait for it or choose another run.name") from e
    try:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def round_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("round_[0-9][0-9]*") if p.is_dir())


def current_round(run_dir: Path) -> tuple[int, Path]:
    """The unfinished last round (resume), or the next new one."""
    rounds = round_dirs(run_dir)
    if rounds and not (rounds[-1] / DECISION).exists():
        last = rounds[-1]
        return int(last.name.split("_")[1]), last
    idx = int(rounds[-1].name.split("_")[1]) + 1 if rounds else 1
    return idx, run_dir / f"round_{idx:02d}"


_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (memoised by path, size and mtime)."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()[:16]
    return _HASHES[key]


def key_hash(obj: Any) -> str:
    return hashlib.sha256(dumps_json(obj, None).encode()).hexdigest()[:16]


class Stage:
    """A stage's manifest at ``folder/.stages/<name>.json``: done when the key matches."""

    def __init__(self, folder: Path, name: str, key: dict[str, Any]) -> None:
        self.name = name
        self.path = folder / ".stages" / f"{name}.json"
        self.key = key_hash(key)
        self.key_obj = key

    def done(self) -> bool:
        if not self.path.exists():
            return False
        try:
            m = read_json(self.path)
        except (OSError, json.JSONDecodeError):
            return False
        return m.get("key") == self.key and all(Path(p).exists() for p in m.get("outputs", []))

    def outputs(self) -> dict[str, Any]:
        return read_json(self.path).get("result", {})

    def resumable(self, last_weights: Path) -> bool:
        """Mark this stage's training as started for its key; True when an interrupted training of
        the same key left ``last_weights`` to continue from (a different key always starts fresh)."""
        marker = self.path.with_suffix(".started")
        same = marker.exists() and marker.read_text() == self.key
        atomic_write_text(marker, self.key)
        return same and Path(last_weights).exists()

    def finish(self, outputs: list[Path], result: dict[str, Any] | None = None) -> None:
        write_json(self.path, {"stage": self.name, "key": self.key, "inputs": self.key_obj,
                               "outputs": [str(p) for p in outputs], "result": result or {},
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


class EventLog:
    """Machine-readable ``events.jsonl`` plus a one-line console summary per event."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path = path
        self.echo = echo

    def __call__(self, stage: str, message: str, **data: Any) -> None:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "stage": stage, "message": message, **data}
        with open(self.path, "a") as f:
            f.write(dumps_json(row, None) + "\n")
        if self.echo:
            print(f"[detst] {stage:<10} {message}", flush=True)
