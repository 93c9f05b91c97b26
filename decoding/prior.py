"""The catalog's popularity prior per code, for a popularity-corrected beam search.

A generator trained by maximum likelihood learns the popularity of items along with what the user wants:
at every level the codes of popular items win, so the beam rarely proposes a rare item even when the
user's history points to it (on Beauty, targets with 1-9 training interactions were almost never in the
beam). Subtracting ``weight * log p_pop(code | prefix)`` from the generator's log-probability at each
level (``constrained_beam_search(prior=, prior_weight=)``) ranks prefixes by how much more likely the
user makes them than popularity alone does: a pointwise-mutual-information search that lets rare items
through. ``weight`` 0 is the plain search; 1 removes the prior entirely. It is chosen on VALID.

``p_pop(code | prefix)`` is the share of the prefix's popularity mass that lies below ``prefix + code``,
where an item's mass is its training interactions plus ``smoothing`` (so a new item still has some).
"""

from __future__ import annotations

import numpy as np
import torch

from sidrec.decoding.trie import CatalogTrie

__all__ = ["CodePrior"]


class CodePrior:
    """``log p_pop(code | prefix)`` for every level of ``trie``, from per-item popularity.

    Args:
        trie: the catalog trie (active items only carry mass; build a new prior after add/remove).
        item_counts: ``(N,)`` training interactions of each item (row = item index; items beyond it, e.g.
            added later, count 0).
        smoothing: mass added to every item (> 0, so that log-priors are finite).
    """

    def __init__(self, *, trie: CatalogTrie, item_counts: np.ndarray, smoothing: float = 1.0) -> None:
        if smoothing <= 0:
            raise ValueError(f"smoothing must be > 0, got {smoothing}")
        counts = np.zeros(trie.num_items, dtype=np.float64)
        given = np.asarray(item_counts, dtype=np.float64)[: trie.num_items]
        counts[: len(given)] = given
        mass = (counts + smoothing) * trie.active  # (N,) removed items carry nothing
        paths = trie.paths(trie.codes)  # (N, L) node of each prefix
        self.trie = trie
        self.built_for = (trie.num_items, trie.num_active)  # a trie changed since (add/remove) needs a new prior
        self.item_mass = torch.from_numpy(mass)  # (N,)
        self.node_mass = []  # per level t: (n_t,) mass below each length-t prefix
        for t in range(trie.num_levels):
            total = np.zeros(trie.num_nodes(t), dtype=np.float64)
            ok = paths[:, t] >= 0
            np.add.at(total, paths[ok, t], mass[ok])
            self.node_mass.append(torch.from_numpy(total))

    def item_log_prior(self, items: torch.Tensor) -> torch.Tensor:
        """``log p_pop(item)`` for item indices of any shape (the sum of its codes' ``log_prior``: the item's
        share of the catalog's popularity mass); ``-inf`` for -1 and removed items."""
        total = float(self.item_mass.sum())
        mass = self.item_mass[items.clamp(min=0)].masked_fill(items < 0, 0.0)
        return torch.log(mass / max(total, 1e-12)).float()

    def log_prior(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """``log p_pop(code | prefix)`` for prefixes ``nodes (R,)`` at ``level``: ``(R, C_level)`` float32;
        ``-inf`` for codes below which nothing is active (the beam masks those anyway)."""
        size = self.trie.level_sizes[level]
        codes = torch.arange(size).expand(nodes.numel(), size)  # (R, C)
        child = self.trie.step(level, nodes.reshape(-1, 1).expand(-1, size), codes)  # (R, C) node or item
        below = self.node_mass[level + 1] if level + 1 < self.trie.num_levels else self.item_mass
        mass = torch.where(child >= 0, below[child.clamp(min=0)], torch.zeros((), dtype=below.dtype))
        parent = self.node_mass[level][nodes.reshape(-1)].clamp(min=1e-12)[:, None]  # (R, 1)
        return torch.log(mass / parent).float()
