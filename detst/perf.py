"""Process-level performance helpers: pausing Python's cyclic garbage collector around bulk
builds of many small objects (COCO dicts, per-image evaluation rows).

With torch and ultralytics loaded the heap holds millions of tracked objects, and building
tens of thousands of dicts triggers full collections that scan all of them: a fifth of the
slice evaluation's time. The builds create no reference cycles, so nothing is left uncollected;
collection resumes (and catches up) when the block ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector for the block (re-entrant; restores the previous state)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
