"""Catalog trie over semantic IDs, stored as dense per-level arrays.

Why dense arrays and not nested dicts: constrained beam search asks "which codes may follow these R
prefixes at level t?" for R = batch x beam prefixes at once. With one row per trie node, that question
is a single gather ``counts[t][nodes] > 0`` -> ``(R, C_t)``, and following the chosen codes is another
gather ``child[t][nodes, codes]``.

Layout, for level t = 0..L-1 (L = number of levels, C_t = ``level_sizes[t]``):

- node ids at level t number the distinct length-t prefixes of catalog codes; level 0 has the single
  root node 0.
- ``child[t]``: ``int32 (n_t, C_t)``, the node id of prefix + code at level t+1, or -1 if no item has
  that prefix. At the last level it holds the item index of the full code (-1 if none).
- ``count[t]``: ``int32 (n_t, C_t)``, how many *active* items lie below prefix + code. A prefix is
  allowed iff its count is positive, so removing an item (out of stock) is a decrement along its path
  and a prefix whose every item is removed is pruned automatically.

Adding items (cold start) appends rows for new prefixes (amortised doubling) and never renumbers old
nodes or items; removing items only decrements counts. Item indices are stable: new items get indices
``num_items, num_items + 1, ...`` in the order given. Memory is ``8 * sum_t n_t * C_t`` bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["CatalogTrie"]


def _grow_rows(array: np.ndarray, rows: int, fill: int) -> np.ndarray:
    """Return ``array`` with capacity for at least ``rows`` rows (doubling), new rows set to ``fill``."""
    if rows <= array.shape[0]:
        return array
    capacity = max(rows, 2 * array.shape[0], 1)
    grown = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


class CatalogTrie:
    """Prefix tree of the catalog's semantic IDs with add/remove/lookup and batched allowed-code masks.

    Args:
        codes: ``int (N, L)`` semantic IDs; row i is item index i (the tokenizer's ``codes``).
        level_sizes: codebook size of each of the L levels (the tokenizer's ``level_sizes``).

    Raises:
        ValueError: on a shape mismatch, a code outside ``[0, level_sizes[t])``, or two items with the
            same full code (resolve collisions in the tokenizer; the last level must identify the item).
    """

    def __init__(self, *, codes: np.ndarray, level_sizes: Sequence[int]) -> None:
        sizes = [int(s) for s in level_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(
                f"level_sizes must be a non-empty list of positive ints, got {list(level_sizes)}"
            )
        self.level_sizes: tuple[int, ...] = tuple(sizes)
        self.num_levels = len(sizes)
        self._child = [np.full((1 if t == 0 else 0, c), -1, dtype=np.int32) for t, c in enumerate(sizes)]
        self._count = [np.zeros((1 if t == 0 else 0, c), dtype=np.int32) for t, c in enumerate(sizes)]
        self._num_nodes = [1] + [0] * (self.num_levels - 1)
        self._codes = np.zeros((0, self.num_levels), dtype=np.int64)
        self._active = np.zeros(0, dtype=bool)
        self._num_items = 0
        self.add_items(codes)

    # ------------------------------------------------------------------ properties
    @property
    def num_items(self) -> int:
        """Number of item indices ever assigned (active or removed); valid indices are ``0..num_items-1``."""
        return self._num_items

    @property
    def num_active(self) -> int:
        """Number of items currently in the catalog (not removed)."""
        return int(self._count[0][0].sum())

    @property
    def codes(self) -> np.ndarray:
        """``int64 (num_items, L)`` code of every item index (read-only view, removed items included)."""
        view = self._codes[: self._num_items]
        view.flags.writeable = False
        return view

    @property
    def active(self) -> np.ndarray:
        """``bool (num_items,)``: whether each item index is currently in the catalog (read-only view)."""
        view = self._active[: self._num_items]
        view.flags.writeable = False
        return view

    def num_nodes(self, level: int) -> int:
        """Number of distinct length-``level`` prefixes ever inserted (rows of the level's arrays)."""
        return self._num_nodes[level]

    def nbytes(self) -> int:
        """Bytes used by the trie's arrays (allocated capacity, including the item code table)."""
        arrays = [*self._child, *self._count, self._codes, self._active]
        return int(sum(a.nbytes for a in arrays))

    # ------------------------------------------------------------------ validation
    def _check_codes(self, codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        array = np.asarray(codes)
        if array.ndim != 2 or array.shape[1] != self.num_levels:
            raise ValueError(
                f"codes must have shape (n, {self.num_levels}) (one column per level), got {array.shape}"
            )
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {array.dtype}")
        array = array.astype(np.int64, copy=False)
        for t, size in enumerate(self.level_sizes):
            column = array[:, t]
            if column.size and (column.min() < 0 or column.max() >= size):
                raise ValueError(
                    f"codes at level {t} must lie in [0, {size}), got range "
                    f"[{column.min()}, {column.max()}]; check level_sizes against the tokenizer"
                )
        return array

    def _check_items(self, items: np.ndarray | Sequence[int]) -> np.ndarray:
        array = np.asarray(items, dtype=np.int64).reshape(-1)
        if array.size and (array.min() < 0 or array.max() >= self._num_items):
            raise ValueError(
                f"item indices must lie in [0, {self._num_items}), got range [{array.min()}, {array.max()}]"
            )
        return array

    # ------------------------------------------------------------------ mutation
    def add_items(self, codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Insert items (cold start) and return their new item indices ``int64 (n,)``.

        Raises ``ValueError`` if a code equals another new code or an active item's code (the trie then
        holds no new item; it may have gained unused, empty prefix rows). A code that belonged to a
        removed item is reused: lookups of that code now return the new index.
        """
        new_codes = self._check_codes(codes)
        n = new_codes.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        last = self.num_levels - 1
        nodes = np.zeros(n, dtype=np.int64)  # (n,) node id at the current level
        for t in range(last):
            code = new_codes[:, t]
            nxt = self._child[t][nodes, code].astype(np.int64)
            missing = nxt < 0
            if missing.any():
                keys = nodes[missing] * self.level_sizes[t] + code[missing]
                uniq, inverse = np.unique(keys, return_inverse=True)
                start = self._num_nodes[t + 1]
                ids = start + np.arange(len(uniq), dtype=np.int64)
                self._num_nodes[t + 1] = start + len(uniq)
                self._child[t + 1] = _grow_rows(self._child[t + 1], self._num_nodes[t + 1], -1)
                self._count[t + 1] = _grow_rows(self._count[t + 1], self._num_nodes[t + 1], 0)
                self._child[t][uniq // self.level_sizes[t], uniq % self.level_sizes[t]] = ids
                nxt[missing] = ids[inverse.reshape(-1)]
            nodes = nxt
        code = new_codes[:, last]
        # duplicates inside the batch: same last-level node and code (int64 keys, fast to sort)
        _, first, counts = np.unique(
            nodes * self.level_sizes[last] + code, return_index=True, return_counts=True
        )
        if (counts > 1).any():
            dup = new_codes[first[counts > 1][0]].tolist()
            raise ValueError(
                f"{int((counts > 1).sum())} full codes occur more than once among the new items (e.g. {dup}); "
                "every item needs a distinct code - deduplicate with the collision level"
            )
        holder = self._child[last][nodes, code].astype(np.int64)
        taken = holder >= 0
        taken[taken] = self._active[holder[taken]]
        if taken.any():
            i = int(np.flatnonzero(taken)[0])
            raise ValueError(
                f"{int(taken.sum())} new items share their full code with an active item "
                f"(e.g. code {new_codes[i].tolist()} is item {int(holder[i])}); remove that item first "
                "or give the new item a distinct collision code"
            )
        indices = self._num_items + np.arange(n, dtype=np.int64)
        self._codes = _grow_rows(self._codes, self._num_items + n, 0)
        self._active = _grow_rows(self._active, self._num_items + n, False)
        self._codes[indices] = new_codes
        self._active[indices] = True
        self._num_items += n
        self._child[last][nodes, code] = indices
        self._update_counts(new_codes, +1)
        return indices

    def remove_items(self, items: np.ndarray | Sequence[int]) -> int:
        """Take items out of the catalog (out of stock); returns how many were active and got removed.

        Indices stay reserved (never reused). Already-removed items are skipped and counted in the log.
        """
        array = np.unique(self._check_items(items))
        keep = self._active[array]
        if (~keep).any():
            logger.info("remove_items: %d items were already removed; skipped", int((~keep).sum()))
        array = array[keep]
        self._active[array] = False
        self._update_counts(self._codes[array], -1)
        return int(array.size)

    def _update_counts(self, codes: np.ndarray, delta: int) -> None:
        """Add ``delta`` to the count of every (node, code) on the paths of ``codes`` (n, L)."""
        nodes = np.zeros(codes.shape[0], dtype=np.int64)
        for t in range(self.num_levels):
            keys, repeats = np.unique(nodes * self.level_sizes[t] + codes[:, t], return_counts=True)
            flat = self._count[t].reshape(-1)  # view: the arrays are C-contiguous
            flat[keys] += (delta * repeats).astype(np.int32)
            nodes = self._child[t][nodes, codes[:, t]].astype(np.int64)

    # ------------------------------------------------------------------ queries (numpy)
    def paths(self, codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Node id of every prefix of ``codes`` ``(n, L)`` -> ``int64 (n, L)``; column t = the node of the
        length-t prefix (column 0 is the root, 0). Entries after a missing prefix are -1."""
        array = self._check_codes(codes)
        out = np.full(array.shape, -1, dtype=np.int64)
        nodes = np.zeros(array.shape[0], dtype=np.int64)
        for t in range(self.num_levels):
            ok = nodes >= 0
            out[ok, t] = nodes[ok]
            if t < self.num_levels - 1:
                nxt = np.full_like(nodes, -1)
                nxt[ok] = self._child[t][nodes[ok], array[ok, t]]
                nodes = nxt
        return out

    def lookup(self, codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Item index of each full code ``(n, L)`` -> ``int64 (n,)``; -1 if absent or removed."""
        array = self._check_codes(codes)
        last = self.num_levels - 1
        nodes = self.paths(array)[:, last]
        found = nodes >= 0
        items = np.full(array.shape[0], -1, dtype=np.int64)
        items[found] = self._child[last][nodes[found], array[found, last]]
        hit = items >= 0
        hit[hit] = self._active[items[hit]]
        items[~hit] = -1
        return items

    def child(self, level: int, node: int, code: int) -> int:
        """Scalar ``step``: the node (or item, at the last level) below ``node`` + ``code``; -1 if none."""
        return int(self._child[level][node, code])

    def allowed_codes(self, level: int, node: int) -> np.ndarray:
        """Codes that may follow prefix ``node`` at ``level`` (sorted int64), for per-prefix callers."""
        return np.flatnonzero(self._count[level][node] > 0)

    # ------------------------------------------------------------------ queries (torch, beam-search hot path)
    def counts(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Active-item counts below each prefix + code: ``nodes (R,)`` -> ``int32 (R, C_level)`` (a copy)."""
        table = torch.from_numpy(self._count[level][: self._num_nodes[level]])
        return table[nodes]

    def allowed(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Which codes may follow each prefix: ``nodes (R,)`` -> ``bool (R, C_level)``."""
        return self.counts(level, nodes) > 0

    def step(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Follow ``codes`` from ``nodes`` (same shape): node ids at ``level + 1``, or item indices when
        ``level`` is the last one; -1 where absent. Returns int64."""
        table = torch.from_numpy(self._child[level][: self._num_nodes[level]])
        return table[nodes, codes].long()

    def __repr__(self) -> str:
        return (
            f"CatalogTrie(level_sizes={list(self.level_sizes)}, items={self._num_items}, "
            f"active={self.num_active}, nodes={self._num_nodes})"
        )
