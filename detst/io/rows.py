"""JSON-lines files of per-image rows (``{"id": ..., ...}`` per line), streamed, never loaded whole.

``pool_predictions.jsonl`` is one: appended batch by batch, resumed after a crash, merged from
shards and put in pool order. A crash can cut the last line: a line that does not parse or has no
newline ends the file's readable part, and everything from it on counts as not written. Memory
is one row at a time plus the set of ids, whatever the pool's size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from detst.io.files import atomic_writer


def scan(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """(byte offset, raw line, parsed row) of each readable line, in file order."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        offset = 0
        for line in f:
            if not line.endswith(b"\n"):
                return                    # cut by a crash before its newline
            try:
                row = json.loads(line)
            except ValueError:
                return                    # cut mid-line: this and everything after is redone
            yield offset, line, row
            offset += len(line)


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The readable rows, in file order; a repeated id keeps its first row."""
    seen: set[int] = set()
    for _, _, row in scan(path):
        if row["id"] not in seen:
            seen.add(row["id"])
            yield row


def repair(path: Path) -> set[int]:
    """Cut an unreadable tail off ``path`` (so that appending continues a clean file) and return
    the ids it holds."""
    ids, end = set(), 0
    for offset, line, row in scan(path):
        ids.add(row["id"])
        end = offset + len(line)
    path = Path(path)
    if path.exists() and path.stat().st_size > end:
        os.truncate(path, end)
    return ids


def merge(path: Path, sources: Iterable[Path]) -> int:
    """Add to ``path`` the rows of ``sources`` whose ids it lacks (the first source holding an
    id wins); returns how many were added. ``path`` is replaced atomically, only when rows are added."""
    sources = list(sources)
    have = repair(path) if Path(path).exists() else set()
    new: set[int] = set()
    for src in sources:
        new.update(i for i in (row["id"] for _, _, row in scan(src)) if i not in have)
    if not new:
        return 0
    taken: set[int] = set()
    with atomic_writer(path) as out:
        for _, line, _ in scan(path):
            out.write(line)
        for src in sources:
            for _, line, row in scan(src):
                if row["id"] in new and row["id"] not in taken:
                    taken.add(row["id"])
                    out.write(line)
    return len(taken)


def reorder(path: Path, order: list[int]) -> bool:
    """Rewrite ``path`` with its rows in ``order`` (ids not in ``order`` are left out); a file
    already in that order is left untouched. Returns whether it was rewritten."""
    where: dict[int, tuple[int, int]] = {}
    end = 0
    for offset, line, row in scan(path):
        where.setdefault(row["id"], (offset, len(line)))
        end = offset + len(line)
    path = Path(path)
    wanted = [i for i in order if i in where]
    size = path.stat().st_size if path.exists() else 0
    if list(where) == wanted and sum(n for _, n in where.values()) == end == size:
        return False
    with open(path, "rb") as src, atomic_writer(path) as out:
        for i in wanted:
            offset, n = where[i]
            src.seek(offset)
            out.write(src.read(n))
    return True

