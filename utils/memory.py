"""Memory helpers shared by the stages that build millions of small Python objects."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (restored after).

    Reading and preparing build millions of small, acyclic containers (metadata dicts, per-user lists);
    the collector keeps re-scanning them as they accumulate. Measured on 1M Amazon-2023 metadata rows:
    68 s with the collector running, 23 s paused. Reference counting still frees everything.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
