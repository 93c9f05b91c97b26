"""Catalog trie over semantic IDs, stored as per-level arrays (dense, or sorted edges when sparse).

Why arrays and not nested dicts: constrained beam search asks "which codes may follow these R
prefixes at level t?" for R = batch x beam prefixes at once. With one row per trie node, that question
is a single gather ``counts[t][nodes] > 0`` -> ``(R, C_t)``, and following the chosen codes is another
gather ``child[t][nodes, codes]``.

Layout, for level t = 0..L-1 (L = number of levels, C_t = ``level_sizes[t]``):

- node ids at level t number the distinct length-t prefixes of catalog codes; level 0 has the single
  root node 0.
- an edge (node, code) at level t leads to the node of prefix + code at level t+1; at the last level it
  holds the item index of the full code. ``count`` is how many *active* items lie below the edge. A
  prefix is allowed iff its count is positive, so removing an item (out of stock) is a decrement along
  its path and a prefix whose every item is removed is pruned automatically.
- a level is stored **dense** (``child``, ``count``: int32 ``(n_t, C_t)``, -1 / 0 where no edge) when
  that is small (at most ``DENSE_MAX_CELLS`` cells) or at least a quarter full, and **sparse** otherwise:
  its edges as sorted int64 keys ``node * C_t + code`` with parallel int32 ``child`` and ``count``
  (16 bytes per edge; lookups by binary search). Deep levels of a large catalog are sparse: 1M items
  at 3 x 512 leave ~1M edges among ~10^8 cells of level 2, which dense would spend 1 GB on; at 10M items
  (3 x 1024) level 2 would need 8 GB. The hot path (``counts``, ``step``) returns the same tensors either way.

Adding items (cold start) appends node ids for new prefixes and never renumbers old nodes or items
(dense levels grow by amortised doubling, sparse levels insert edges in key order); removing items only
decrements counts. Item indices are stable: new items get indices ``num_items, num_items + 1, ...`` in
the order given. ``nbytes()`` reports the memory of all arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["CatalogTrie"]

#: A level with at most this many (node, code) cells is dense whatever its fill (128 MiB of int32 pairs).
DENSE_MAX_CELLS = 1 << 24
#: Above that, a level is dense only if at least this fraction of its cells hold an edge.
DENSE_MIN_FILL = 0.25
#: ``_unique_keys`` counts keys with ``np.bincount`` (no sort) when the key range is at most this.
BINCOUNT_MAX_RANGE = 1 << 26


def _grow_rows(array: np.ndarray, rows: int, fill: int) -> np.ndarray:
    """Return ``array`` with capacity for at least ``rows`` rows (doubling), new rows set to ``fill``."""
    if rows <= array.shape[0]:
        return array
    capacity = max(rows, 2 * array.shape[0], 1)
    grown = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


def _unique_keys(keys: np.ndarray, key_range: int, by_node: np.ndarray | None = None,
                 need_inverse: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``np.unique(keys, return_inverse=True, return_counts=True)`` for int64 keys in ``[0, key_range)``,
    plus the permutation that sorts ``keys`` (None when counted).

    Counts with ``np.bincount`` when the range is small (the upper levels of a 10M-item build), sorts
    otherwise. ``by_node``: a permutation that sorts the rows by node (the previous level's sort of
    ``node * C + code``); the keys are then nearly sorted along it and a stable sort finishes them in
    about linear time. ``need_inverse=False`` skips the inverse (None) on the sort path (the last level).
    """
    if key_range <= min(BINCOUNT_MAX_RANGE, 4 * len(keys) + 1024):
        counts = np.bincount(keys, minlength=key_range)
        uniq = np.flatnonzero(counts)
        rank = np.cumsum(counts > 0) - 1  # (key_range,) position of each key in uniq
        return uniq, rank[keys], counts[uniq], None
    if by_node is None:
        perm = np.argsort(keys)
    else:
        perm = by_node[np.argsort(keys[by_node], kind="stable")]
    ordered = keys[perm]
    first = np.empty(len(keys), dtype=bool)  # (n,) first of a run of equal keys, in sorted order
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    uniq = ordered[first]
    del ordered
    inverse = None
    if need_inverse:
        inverse = np.empty(len(keys), dtype=np.int64)
        inverse[perm] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.empty(len(starts), dtype=np.int64)
    counts[:-1] = starts[1:] - starts[:-1]
    counts[-1:] = len(keys) - starts[-1:]
    return uniq, inverse, counts, perm


class _DenseLevel:
    """One level as dense ``(rows, C)`` int32 arrays: ``child`` (-1 = no edge) and ``count``."""

    sparse = False

    def __init__(self, size: int, rows: int) -> None:
        self.size = size
        self.child = np.full((rows, size), -1, dtype=np.int32)
        self.count = np.zeros((rows, size), dtype=np.int32)

    def reserve(self, rows: int) -> None:
        self.child = _grow_rows(self.child, rows, -1)
        self.count = _grow_rows(self.count, rows, 0)

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Child of each edge key ``node * C + code`` -> int64, -1 where absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        ok = (keys >= 0) & (keys < self.child.size)
        out[ok] = self.child.reshape(-1)[keys[ok]]
        return out

    def set(self, keys: np.ndarray, values: np.ndarray) -> None:
        self.child.reshape(-1)[keys] = values  # view: the arrays are C-contiguous

    def add_counts(self, keys: np.ndarray, delta: np.ndarray) -> None:
        self.count.reshape(-1)[keys] += delta.astype(np.int32)

    def counts_rows(self, nodes: torch.Tensor, num_nodes: int) -> torch.Tensor:
        return torch.from_numpy(self.count[:num_nodes])[nodes]

    def step(self, nodes: torch.Tensor, codes: torch.Tensor, num_nodes: int) -> torch.Tensor:
        return torch.from_numpy(self.child[:num_nodes])[nodes, codes].long()

    def node_counts(self, node: int) -> np.ndarray:
        return self.count[node]

    def nbytes(self) -> int:
        return self.child.nbytes + self.count.nbytes


class _SparseLevel:
    """One level as its edges: sorted int64 ``keys = node * C + code``, int32 ``child`` and ``count``."""

    sparse = True

    def __init__(self, size: int) -> None:
        self.size = size
        self.keys = np.zeros(0, dtype=np.int64)
        self.child = np.zeros(0, dtype=np.int32)
        self.count = np.zeros(0, dtype=np.int32)
        self._views: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def reserve(self, rows: int) -> None:
        pass

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edge position of each key and whether the edge exists."""
        if len(self.keys) == 0:
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        pos = np.searchsorted(self.keys, keys)
        found = self.keys[np.minimum(pos, len(self.keys) - 1)] == keys
        found &= pos < len(self.keys)
        return pos, found

    def get(self, keys: np.ndarray) -> np.ndarray:
        pos, found = self._find(keys)
        out = np.full(len(keys), -1, dtype=np.int64)
        out[found] = self.child[pos[found]]
        return out

    def set(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Point edges ``keys`` (sorted, unique) at ``values``: existing ones are overwritten, new ones inserted."""
        pos, found = self._find(keys)
        self.child[pos[found]] = values[found]
        new = ~found
        if new.any():
            if len(self.keys) == 0:  # the first edges: take the arrays over (no copy when all are new)
                self.keys = keys if new.all() else keys[new]
                self.child = (values if new.all() else values[new]).astype(np.int32, copy=False)
                self.count = np.zeros(int(new.sum()), dtype=np.int32)
            else:
                self.keys = np.insert(self.keys, pos[new], keys[new])
                self.child = np.insert(self.child, pos[new], values[new].astype(np.int32))
                self.count = np.insert(self.count, pos[new], 0)
        self._views = None

    def add_counts(self, keys: np.ndarray, delta: np.ndarray) -> None:
        if keys is self.keys:  # the first build: the level's edges are exactly these keys
            self.count += delta.astype(np.int32, copy=False)
            return
        pos, _ = self._find(keys)  # every key is an edge: add_items sets it first
        self.count[pos] += delta.astype(np.int32, copy=False)

    def _torch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._views is None:
            self._views = (torch.from_numpy(self.keys), torch.from_numpy(self.child),
                           torch.from_numpy(self.count))
        return self._views

    def counts_rows(self, nodes: torch.Tensor, num_nodes: int) -> torch.Tensor:
        keys, _, count = self._torch()
        rows = nodes.numel()
        out = torch.zeros(rows, self.size, dtype=torch.int32)
        if len(keys) == 0 or rows == 0:
            return out
        base = nodes.reshape(-1).long() * self.size  # (R,) first key of each node
        lo = torch.searchsorted(keys, base)
        n = torch.searchsorted(keys, base + self.size) - lo  # (R,) edges below each node
        total = int(n.sum())
        if total:
            row = torch.repeat_interleave(torch.arange(rows), n)  # (E_R,)
            first = torch.repeat_interleave(lo - (torch.cumsum(n, 0) - n), n)
            edge = first + torch.arange(total)  # (E_R,) positions of those edges
            out[row, keys[edge] - base[row]] = count[edge]
        return out

    def step(self, nodes: torch.Tensor, codes: torch.Tensor, num_nodes: int) -> torch.Tensor:
        keys, child, _ = self._torch()
        if len(keys) == 0:
            return torch.full(nodes.shape, -1, dtype=torch.long)
        q = nodes.long() * self.size + codes.long()
        pos = torch.searchsorted(keys, q.reshape(-1)).clamp_(max=len(keys) - 1).reshape(q.shape)
        return torch.where(keys[pos] == q, child[pos].long(), torch.full_like(q, -1))

    def node_counts(self, node: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.keys, [node * self.size, (node + 1) * self.size])
        out = np.zeros(self.size, dtype=np.int32)
        out[self.keys[lo:hi] - node * self.size] = self.count[lo:hi]
        return out

    def nbytes(self) -> int:
        return self.keys.nbytes + self.child.nbytes + self.count.nbytes


class CatalogTrie:
    """Prefix tree of the catalog's semantic IDs with add/remove/lookup and batched allowed-code masks.

    Args:
        codes: ``int (N, L)`` semantic IDs; row i is item index i (the tokenizer's ``codes``).
        level_sizes: codebook size of each of the L levels (the tokenizer's ``level_sizes``).
        storage: ``"auto"`` (each level dense or sparse by its size and fill, decided when the level first
            gets edges), ``"dense"`` or ``"sparse"`` (every level below the root; for tests and benchmarks).

    Raises:
        ValueError: on a shape mismatch, a code outside ``[0, level_sizes[t])``, or two items with the
            same full code (resolve collisions in the tokenizer; the last level must identify the item).
    """

    def __init__(self, *, codes: np.ndarray, level_sizes: Sequence[int], storage: str = "auto") -> None:
        sizes = [int(s) for s in level_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(
                f"level_sizes must be a non-empty list of positive ints, got {list(level_sizes)}"
            )
        if storage not in ("auto", "dense", "sparse"):
            raise ValueError(f"storage must be 'auto', 'dense' or 'sparse', got {storage!r}")
        self.level_sizes: tuple[int, ...] = tuple(sizes)
        self.num_levels = len(sizes)
        self.storage = storage
        # level 0 is the root's single dense row; deeper levels are created when they first get edges
        self._levels: list[_DenseLevel | _SparseLevel | None] = [_DenseLevel(sizes[0], 1)]
        self._levels += [None] * (self.num_levels - 1)
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
        return int(self._levels[0].count[0].sum())

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
        levels = sum(level.nbytes() for level in self._levels if level is not None)
        return int(levels + self._codes.nbytes + self._active.nbytes)

    def level_storage(self) -> list[str]:
        """``"dense"`` / ``"sparse"`` per level (``"empty"`` for a level without edges yet)."""
        return ["empty" if lv is None else "sparse" if lv.sparse else "dense" for lv in self._levels]

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
    def _level(self, t: int, new_edges: int) -> _DenseLevel | _SparseLevel:
        """Level ``t``'s storage, created on its first edges: dense when small or a quarter full."""
        level = self._levels[t]
        if level is None:
            cells = self._num_nodes[t] * self.level_sizes[t]
            dense = self.storage == "dense" or (
                self.storage == "auto" and (cells <= DENSE_MAX_CELLS or new_edges >= DENSE_MIN_FILL * cells))
            level = _DenseLevel(self.level_sizes[t], 0) if dense else _SparseLevel(self.level_sizes[t])
            self._levels[t] = level
        level.reserve(self._num_nodes[t])
        return level

    def _edge_keys(self, t: int, nodes: np.ndarray, codes: np.ndarray, by_node: np.ndarray | None = None,
                   need_inverse: bool = True) -> tuple[np.ndarray, ...]:
        """Unique edge keys ``node * C_t + code`` of level ``t``, the inverse map, counts per key and
        the sorting permutation (see ``_unique_keys``)."""
        keys = nodes * self.level_sizes[t]
        keys += codes
        key_range = max(self._num_nodes[t], int(nodes.max()) + 1) * self.level_sizes[t]
        return _unique_keys(keys, key_range, by_node, need_inverse)

    def _get(self, t: int, keys: np.ndarray) -> np.ndarray:
        level = self._levels[t]
        return np.full(len(keys), -1, dtype=np.int64) if level is None else level.get(keys)

    def add_items(self, codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Insert items (cold start) and return their new item indices ``int64 (n,)``.

        Raises ``ValueError`` if a code equals another new code or an active item's code; the trie is
        then unchanged (everything is checked before anything is written). A code that belonged to a
        removed item is reused: lookups of that code now return the new index.
        """
        new_codes = self._check_codes(codes)
        n = new_codes.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        plans, num_nodes = self._plan_insert(new_codes)  # 1) checks and numbering, no writes
        self._write_plans(plans, num_nodes)  # 2) write: edges, counts ...
        start = self._num_items  # ... and the item table
        self._codes = _grow_rows(self._codes, start + n, 0)
        self._active = _grow_rows(self._active, start + n, False)
        self._codes[start:start + n] = new_codes
        self._active[start:start + n] = True
        self._num_items += n
        return start + np.arange(n, dtype=np.int64)

    def _plan_insert(self, new_codes: np.ndarray) -> tuple[list, list[int]]:
        """Walk level by level over the unique edges of ``new_codes``, numbering the prefixes that are new.

        Writes nothing. Returns per level ``(unique edge keys, child of each, which are new, items below
        each)`` and the node count of every level after the insert; raises as ``add_items`` documents.
        """
        n = new_codes.shape[0]
        last = self.num_levels - 1
        plans = []  # per level: (unique edge keys, child of each, which are new, items below each)
        nodes = np.zeros(n, dtype=np.int64)  # (n,) node id at the current level
        num_nodes = list(self._num_nodes)
        perm = None  # rows sorted by the current prefix, when the previous level was sorted
        for t in range(self.num_levels):
            uniq, inverse, counts, perm = self._edge_keys(t, nodes, new_codes[:, t], perm, need_inverse=t < last)
            counts = counts.astype(np.int32)
            child = self._get(t, uniq)  # (U,) existing child node / item, -1 if none
            if t < last:
                new = child < 0
                child[new] = num_nodes[t + 1] + np.arange(int(new.sum()))
                num_nodes[t + 1] += int(new.sum())
                nodes = child[inverse]
            else:
                child = self._plan_last_level(new_codes, nodes, counts, child, inverse, perm)
                new = np.ones(len(uniq), dtype=bool)  # (re)point every edge at its new item
            plans.append((uniq, child, new, counts))
        return plans, num_nodes

    def _plan_last_level(self, new_codes: np.ndarray, nodes: np.ndarray, counts: np.ndarray, child: np.ndarray,
                         inverse: np.ndarray | None, perm: np.ndarray | None) -> np.ndarray:
        """The new item index of each last-level edge, after checking that no full code is taken.

        ``nodes``: each row's node at the last level; ``counts``/``child``: per unique edge, the new rows
        on it and the item it holds now (-1 if none); ``inverse``/``perm`` as ``_edge_keys`` returned them.
        """
        n, t = new_codes.shape[0], self.num_levels - 1
        if inverse is None and ((counts > 1).any() or (child >= 0).any()):  # error paths only
            inverse = self._edge_keys(t, nodes, new_codes[:, t])[1]
        if (counts > 1).any():
            dup = new_codes[int(np.flatnonzero(counts[inverse] > 1)[0])].tolist()
            raise ValueError(
                f"{int((counts > 1).sum())} full codes occur more than once among the new items "
                f"(e.g. {dup}); every item needs a distinct code - deduplicate with the collision level"
            )
        taken = child >= 0
        taken[taken] = self._active[child[taken]]
        if taken.any():
            i = int(np.flatnonzero(taken[inverse])[0])
            raise ValueError(
                f"{int(taken.sum())} new items share their full code with an active item "
                f"(e.g. code {new_codes[i].tolist()} is item {int(child[inverse[i]])}); remove that item "
                "first or give the new item a distinct collision code"
            )
        if perm is not None:  # sorted edges: edge j belongs to row perm[j] (every edge has one row)
            row_of_edge = perm
        else:
            row_of_edge = np.empty(n, dtype=np.int64)
            row_of_edge[inverse] = np.arange(n)
        return self._num_items + row_of_edge

    def _write_plans(self, plans: list, num_nodes: list[int]) -> None:
        """Write ``_plan_insert``'s edges and counts level by level (each level's plan is dropped once written)."""
        for t in range(self.num_levels):
            uniq, child, new, counts = plans[t]
            plans[t] = None
            self._num_nodes[t] = num_nodes[t]
            level = self._level(t, int(new.sum()))
            if new.all():
                level.set(uniq, child)
            else:
                level.set(uniq[new], child[new])
            level.add_counts(uniq, counts)
            del uniq, child, new, counts

    def remove_items(self, items: np.ndarray | Sequence[int]) -> int:
        """Take items out of the catalog (out of stock); returns how many were active and got removed.

        Indices stay reserved (never reused). Already-removed items are skipped and counted in the log.
        """
        array = np.unique(self._check_items(items))
        keep = self._active[array]
        if (~keep).any():
            logger.info("remove_items: %d items were already removed; skipped", int((~keep).sum()))
        array = array[keep]
        if array.size == 0:
            return 0
        self._active[array] = False
        codes = self._codes[array]
        nodes = np.zeros(len(array), dtype=np.int64)
        for t in range(self.num_levels):
            uniq, inverse, counts, _ = self._edge_keys(t, nodes, codes[:, t])
            self._levels[t].add_counts(uniq, -counts)
            nodes = self._levels[t].get(uniq)[inverse]
        return int(array.size)

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
                nxt[ok] = self._get(t, nodes[ok] * self.level_sizes[t] + array[ok, t])
                nodes = nxt
        return out

    def lookup(self, codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Item index of each full code ``(n, L)`` -> ``int64 (n,)``; -1 if absent or removed."""
        array = self._check_codes(codes)
        last = self.num_levels - 1
        nodes = self.paths(array)[:, last]
        found = nodes >= 0
        items = np.full(array.shape[0], -1, dtype=np.int64)
        items[found] = self._get(last, nodes[found] * self.level_sizes[last] + array[found, last])
        hit = items >= 0
        hit[hit] = self._active[items[hit]]
        items[~hit] = -1
        return items

    def child(self, level: int, node: int, code: int) -> int:
        """Scalar ``step``: the node (or item, at the last level) below ``node`` + ``code``; -1 if none."""
        return int(self._get(level, np.array([node * self.level_sizes[level] + code], dtype=np.int64))[0])

    def allowed_codes(self, level: int, node: int) -> np.ndarray:
        """Codes that may follow prefix ``node`` at ``level`` (sorted int64), for per-prefix callers."""
        lv = self._levels[level]
        if lv is None or node >= self._num_nodes[level]:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(lv.node_counts(node) > 0)

    # ------------------------------------------------------------------ queries (torch, beam-search hot path)
    def counts(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Active-item counts below each prefix + code: ``nodes (R,)`` -> ``int32 (R, C_level)`` (a copy)."""
        lv = self._levels[level]
        if lv is None:
            return torch.zeros(nodes.numel(), self.level_sizes[level], dtype=torch.int32)
        return lv.counts_rows(nodes, self._num_nodes[level])

    def allowed(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Which codes may follow each prefix: ``nodes (R,)`` -> ``bool (R, C_level)``."""
        return self.counts(level, nodes) > 0

    def step(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Follow ``codes`` from ``nodes`` (same shape): node ids at ``level + 1``, or item indices when
        ``level`` is the last one; -1 where absent. Returns int64."""
        lv = self._levels[level]
        if lv is None:
            return torch.full(nodes.shape, -1, dtype=torch.long)
        return lv.step(nodes, codes, self._num_nodes[level])

    def __repr__(self) -> str:
        return (
            f"CatalogTrie(level_sizes={list(self.level_sizes)}, items={self._num_items}, "
            f"active={self.num_active}, nodes={self._num_nodes}, storage={self.level_storage()})"
        )
