"""Collisions: make every item's full semantic ID unique.

Two items may get the same codes at every semantic level (identical texts always do). TIGER appends
one more level numbering the items of such a group 0..n-1 (``append_collision_level``). LC-Rec style
re-assignment (``reassign_last_level``) first moves colliding items to their next-best code at the last
semantic level when that gives a prefix nobody uses, which keeps more items at collision index 0.
On a large catalog whole clusters of items can share every code (1M clustered items: groups of ~570);
``spread_large_groups`` then balances each group larger than a cap over its items' nearest last-level
codes, so the collision level stays small (a random suffix of 570 values carries no meaning and makes
the generator guess).
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


#: Candidates per item that ``spread_large_groups`` considers (nearest last-level codes).
SPREAD_CANDIDATES = 256


def _candidate_positions(n: int, rows: np.ndarray | None, num_candidates: int) -> np.ndarray:
    """``(n,)`` row of each item in a candidates array covering ``rows`` (-1 = no candidates)."""
    if rows is None:
        if num_candidates != n:
            raise ValueError(f"candidates have {num_candidates} rows for {n} items; pass rows= for a subset")
        return np.arange(n, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) != num_candidates:
        raise ValueError(f"rows has {len(rows)} entries but candidates have {num_candidates} rows")
    pos = np.full(n, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    return pos


def reassign_last_level(prefix: np.ndarray, candidates: np.ndarray,
                        rows: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Move colliding items to a free last-level code; returns (new prefix (N, L), items moved).

    ``candidates (N, k)`` ranks each item's last-level codes best first (column 0 = its own code); with
    ``rows (M,)`` it is ``(M, k)`` for those items only (they must include every colliding item).
    In every group of identical prefixes the first item (by index) keeps its code; each other member,
    in index order, takes its best-ranked alternative whose full prefix is not used by any item. Items
    with no free alternative stay (the collision level separates them). Deterministic.
    """
    prefix = np.array(prefix, dtype=np.int64, copy=True)
    if len(prefix) == 0:
        return prefix, 0
    pos = _candidate_positions(len(prefix), rows, len(candidates))
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
        if pos[i] < 0:
            raise ValueError(f"item {i} collides but has no candidates; pass rows covering every colliding item")
        for c in candidates[pos[i], 1:].tolist():
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


def spread_large_groups(prefix: np.ndarray, candidates: np.ndarray, rows: np.ndarray | None = None, *,
                        max_group: int, last_level_size: int) -> tuple[np.ndarray, int]:
    """Cap groups at ``max_group`` items by moving the extra members to nearby codes; returns (prefix, moved).

    ``prefix (N, L)``: semantic codes (after ``reassign_last_level``). ``candidates (M, k)``: last-level
    codes ranked nearest first for the items ``rows (M,)`` (all N when None); they must cover the
    members of the large groups. In every group larger than ``max_group`` the first ``max_group``
    members (by index) stay; each further member, in index order, moves to its nearest candidate code
    (same head, i.e. first L-1 codes) whose group holds fewer than ``max_group`` items. Nearest-first
    keeps the reconstruction close (filling free codes first would push most members of a 500-item
    group to distant codes); a member without such a candidate stays. Groups of at most ``max_group``
    items never lose members, and no group is filled beyond ``max_group``. Deterministic.
    """
    prefix = np.array(prefix, dtype=np.int64, copy=True)
    sizes = group_sizes(prefix)
    large = sizes > max_group
    if not large.any():
        return prefix, 0
    pos = _candidate_positions(len(prefix), rows, len(candidates))
    _, head_id = np.unique(prefix[:, :-1], axis=0, return_inverse=True)
    head_id = head_id.reshape(-1)  # (N,) id of each item's head
    large_heads = np.unique(head_id[large])
    head_row = np.full(int(head_id.max()) + 1, -1, dtype=np.int64)
    head_row[large_heads] = np.arange(len(large_heads))
    item_row = head_row[head_id]  # (N,) row in `load` of each item's head, -1 if no large group under it
    load = np.zeros((len(large_heads), last_level_size), dtype=np.int64)  # items per (head, last code)
    under = item_row >= 0
    np.add.at(load, (item_row[under], prefix[under, -1]), 1)
    # members of each large group beyond its first max_group (by index) move, in index order
    members = np.flatnonzero(large)
    _, group = np.unique(prefix[members], axis=0, return_inverse=True)
    group = group.reshape(-1)
    order = np.lexsort((members, group))  # by group, then index
    rank = np.empty(len(members), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    rank[order] = np.arange(len(members)) - np.repeat(starts, np.diff(np.r_[starts, len(members)]))
    movers = members[rank >= max_group]  # sorted: index order
    if (pos[movers] < 0).any():
        raise ValueError("some members of large collision groups have no candidates; pass rows covering them")
    last = prefix[:, -1]  # view: moves write into prefix
    moved = 0
    for i in movers.tolist():
        row = load[item_row[i]]  # (K,) view: items under each last code of this head
        cands = candidates[pos[i]]  # (k,) nearest first
        room = np.flatnonzero(row[cands] < max_group)
        if len(room):
            new = int(cands[room[0]])
            row[last[i]] -= 1
            row[new] += 1
            last[i] = new
            moved += 1
    logger.info("collision spreading moved %d items out of %d groups larger than %d; largest group now %d",
                moved, len(starts), max_group, int(group_sizes(prefix).max()))
    return prefix, moved


def collision_level_size(collision_index: np.ndarray, minimum: int) -> int:
    """Size of the collision level: ``max(largest group, minimum)`` (headroom for cold-start items)."""
    largest = int(collision_index.max()) + 1 if len(collision_index) else 1
    return max(largest, int(minimum))
