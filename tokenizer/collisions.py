"""Collisions: make every item's full semantic ID unique.

Two items may get the same codes at every semantic level (identical texts always do). TIGER appends
one more level numbering the items of such a group 0..n-1 (``append_collision_level``). LC-Rec style
re-assignment (``reassign_last_level``) first moves colliding items to their next-best code at the last
semantic level when that gives a prefix nobody uses, which keeps more items at collision index 0.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def group_sizes(prefix: np.ndarray) -> np.ndarray:
    """``(N,)`` size of the group of items sharing each row's codes in ``prefix (N, L)``."""
    if len(prefix) == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(prefix, axis=0, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)].astype(np.int64)


def append_collision_level(prefix: np.ndarray) -> np.ndarray:
    """``int64 (N,)``: index of each item inside its group of identical prefixes, by item order (0..n-1)."""
    out = np.zeros(len(prefix), dtype=np.int64)
    seen: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(map(tuple, prefix.tolist())):
        out[i] = seen.get(row, 0)
        seen[row] = out[i] + 1
    return out


def reassign_last_level(prefix: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, int]:
    """Move colliding items to a free last-level code; returns (new prefix (N, L), items moved).

    ``candidates (N, k)`` ranks each item's last-level codes best first (column 0 = its own code).
    In every group of identical prefixes the first item (by index) keeps its code; each other member,
    in index order, takes its best-ranked alternative whose full prefix is not used by any item. Items
    with no free alternative stay (the collision level separates them). Deterministic.
    """
    prefix = np.array(prefix, dtype=np.int64, copy=True)
    if len(prefix) == 0:
        return prefix, 0
    occupied: dict[tuple[int, ...], int] = {}
    for row in map(tuple, prefix.tolist()):
        occupied[row] = occupied.get(row, 0) + 1
    kept: set[tuple[int, ...]] = set()
    moved = 0
    for i in range(len(prefix)):
        row = tuple(prefix[i].tolist())
        if occupied[row] == 1 or row not in kept:
            kept.add(row)  # a unique prefix, or the first member of its group
            continue
        head = row[:-1]
        for c in candidates[i, 1:].tolist():
            new = (*head, int(c))
            if new not in occupied:
                occupied[row] -= 1
                occupied[new] = 1
                kept.add(new)
                prefix[i, -1] = c
                moved += 1
                break
    logger.info("collision re-assignment moved %d of %d items to a free last-level code", moved, len(prefix))
    return prefix, moved


def collision_level_size(collision_index: np.ndarray, minimum: int) -> int:
    """Size of the collision level: ``max(largest group, minimum)`` (headroom for cold-start items)."""
    largest = int(collision_index.max()) + 1 if len(collision_index) else 1
    return max(largest, int(minimum))
