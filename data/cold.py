"""A cold-start split: hold out the newest items so that no stage ever sees their interactions.

TIGER's protocol (Rajput et al., 2023, cold-start section): a share of the items is treated as new. Here
the cold set is the given fraction of the catalog that is newest by first interaction (the dataset's
timestamps; without them a seeded random choice, and the stats say which). Every interaction with a cold
item is removed except where it is a user's last one (the test target), so training sequences,
validation targets, the tokenizer fit and every embedding or count statistic see only warm items, and
the test split has users whose target is an item no model was trained on.

Cold items are numbered last (``N - num_cold .. N - 1``), so a tokenizer fitted on the first rows and
extended with ``assign`` for the rest keeps row i = item i.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ColdSplit", "split_cold_items"]

MIN_SEQUENCE_LENGTH = 3


@dataclass
class ColdSplit:
    """The re-cut sequences (``flat`` item indices in the NEW numbering, ``offsets``), which of the old
    users remain (``users``), the old item indices in the new order (``items``: warm ones, then the
    ``num_cold`` cold ones) and the numbers for the stats."""

    flat: np.ndarray
    offsets: np.ndarray
    users: np.ndarray
    items: np.ndarray
    num_cold: int
    info: dict[str, Any]


def _choose_cold(flat: np.ndarray, num_items: int, count: int, times: np.ndarray | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``count`` cold item indices: the newest by first interaction, or random without timestamps."""
    if times is None:
        return np.sort(rng.choice(num_items, size=count, replace=False)), "random (no timestamps; seeded)"
    first = np.full(num_items, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, flat, times)
    tiebreak = rng.random(num_items)  # items first seen on the same day: a seeded order among them
    newest = np.lexsort((tiebreak, -first))[:count]  # latest first interaction first
    return np.sort(newest), "newest by first interaction (timestamps)"


def split_cold_items(
    flat: np.ndarray, offsets: np.ndarray, num_items: int, *, fraction: float, seed: int,
    times: np.ndarray | None,
) -> ColdSplit:
    """Hold out ``round(fraction * num_items)`` items as cold (see the module docstring).

    Args:
        flat: ``(m,)`` item indices of all sequences, users one after another.
        offsets: ``(U + 1,)`` user u = ``flat[offsets[u]:offsets[u + 1]]``.
        num_items: catalog size N (item indices ``0..N-1``).
        fraction: share of the catalog to hold out, in (0, 1).
        seed: seeds the random choice (no timestamps) and tie-breaks between equal first times.
        times: ``(m,)`` timestamps parallel to ``flat``, or None.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold_items must be a fraction in (0, 1), got {fraction}")
    count = int(round(fraction * num_items))
    if count < 1:
        raise ValueError(f"cold_items={fraction} of {num_items} items is no item; use a larger fraction")
    rng = np.random.default_rng(seed)
    cold_items, method = _choose_cold(flat, num_items, count, times, rng)
    is_cold = np.zeros(num_items, dtype=bool)
    is_cold[cold_items] = True
    lengths = np.diff(offsets)
    last = np.zeros(len(flat), dtype=bool)
    last[offsets[1:][lengths > 0] - 1] = True  # each user's last interaction: the test target
    keep = ~is_cold[flat] | last
    new_lengths = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) if len(flat) else lengths
    new_lengths[lengths == 0] = 0
    users = np.flatnonzero(new_lengths >= MIN_SEQUENCE_LENGTH)
    keep &= np.repeat(new_lengths >= MIN_SEQUENCE_LENGTH, lengths)
    kept = flat[keep]  # old item indices, sequences of the kept users one after another
    # new numbering: warm items by first appearance in the re-cut sequences, then every cold item
    warm_seen = kept[~is_cold[kept]]
    _, first_pos = np.unique(warm_seen, return_index=True)
    warm_order = warm_seen[np.sort(first_pos)]
    items = np.concatenate([warm_order, cold_items])
    new_index = np.full(num_items, -1, dtype=np.int64)
    new_index[items] = np.arange(len(items))
    new_offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(new_lengths[users], out=new_offsets[1:])
    new_flat = new_index[kept]
    cold_targets = int(is_cold[flat[offsets[1:][users] - 1]].sum())
    info = {
        "cold_items": count, "cold_fraction": fraction, "cold_method": method, "cold_seed": seed,
        "cold_test_users": cold_targets,
        "cold_interactions_removed": int((~keep & is_cold[flat]).sum()),
        "cold_users_too_short": int(len(lengths) - len(users)),
        "warm_items_without_interactions": int(num_items - count - len(warm_order)),
    }
    logger.info(
        "cold-start split: %d of %d items are cold (%s); %d test users have a cold target; %d interactions "
        "with cold items removed from histories; %d users left with fewer than %d items dropped; %d warm "
        "items lost their last interaction and left the catalog", count, num_items, method, cold_targets,
        info["cold_interactions_removed"], info["cold_users_too_short"], MIN_SEQUENCE_LENGTH,
        info["warm_items_without_interactions"],
    )
    return ColdSplit(new_flat, new_offsets, users, items, count, info)
