"""Semantic IDs sized to the catalog: the default codebook size and the too-small-code-space warning.

Rule (``codebook_size: null``, the default): the smallest power of two, at least ``MIN_CODEBOOK_SIZE``
(256, TIGER's), whose code space ``codebook_size ** num_levels`` holds ``IDS_PER_ITEM`` (100) IDs per
item, i.e. at most 1% of the semantic IDs are used. A catalog under 256 items gets the largest power of two
not above its size (k-means needs a point per code; before, such catalogs failed at the fit). With 3 levels: 256 up to 167,772 items (Beauty's
12,101 keep TIGER's 3 x 256), 512 up to 1,342,177, 1024 up to 10,737,418.

The number of levels stays as configured (3 by default): a level costs one more decoder step per
recommended item and ``max_items`` more encoder tokens per history, a larger codebook only a wider
softmax over one level, so beam-search throughput stays flat as the catalog grows.

An explicit size whose code space is smaller than the rule's, or any fit whose largest collision group
exceeds ``max_collision_group``, gets a warning naming the unique share, the largest group and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)

MIN_CODEBOOK_SIZE = 256
IDS_PER_ITEM = 100


def auto_codebook_size(num_items: int, num_levels: int) -> int:
    """The rule's codebook size for ``num_items`` items and ``num_levels`` semantic levels."""
    if num_items < 0 or num_levels < 1:
        raise ValueError(f"need num_items >= 0 and num_levels >= 1, got {num_items} and {num_levels}")
    if num_items < MIN_CODEBOOK_SIZE:  # k-means needs a point per code: the largest power of two <= the items
        size = 2
        while size * 2 <= num_items:
            size *= 2
        return size
    size = MIN_CODEBOOK_SIZE
    while size**num_levels < IDS_PER_ITEM * num_items:
        size *= 2
    return size


def codes_per_level(config: TokenizerConfig) -> int:
    """Codes per semantic level that ``config`` asks for (``codebook_size`` or fsq's grid size)."""
    if config.method == "fsq":
        return config.fsq_levels**config.fsq_dims_per_token
    if config.codebook_size is None:
        raise ValueError("codebook_size is null (sized to the catalog); resolve it with resolve_sizes first")
    return config.codebook_size


def resolve_sizes(config: TokenizerConfig, num_items: int) -> TokenizerConfig:
    """A copy of ``config`` with ``codebook_size`` filled in: the rule's size when it is null.

    fsq's size is ``fsq_levels ** fsq_dims_per_token`` (recorded in ``codebook_size`` for the stats).
    """
    if config.method == "fsq":
        return dataclasses.replace(config, codebook_size=config.fsq_levels**config.fsq_dims_per_token)
    if config.method == "opq" and config.codebook_size is None:
        from sidrec.tokenizer.opq import opq_codebook_size

        return dataclasses.replace(config, codebook_size=opq_codebook_size(num_items))
    if config.codebook_size is None:
        size = auto_codebook_size(num_items, config.num_levels)
        logger.info("codebook_size sized to the catalog: %d items, %d levels -> %d codes per level "
                    "(code space %.3g, >= %d IDs per item)", num_items, config.num_levels, size,
                    float(size) ** config.num_levels, IDS_PER_ITEM)
        return dataclasses.replace(config, codebook_size=size)
    return config


def code_space_warning(*, config: TokenizerConfig, num_items: int, explicit: bool,
                       stats: dict[str, Any]) -> str | None:
    """The warning for a fit whose code space is too small for the catalog, or None.

    Warns when an explicit size gives fewer than ``IDS_PER_ITEM`` IDs per item, or when the largest
    collision group (after the collision strategy) exceeds ``config.max_collision_group``.
    ``stats``: the fit's stats (``unique_before_collision``, ``max_collision_group``).
    """
    size = codes_per_level(config)
    space = float(size) ** config.num_levels
    small = explicit and space < IDS_PER_ITEM * num_items
    crowded = stats["max_collision_group"] > config.max_collision_group
    if not (small or crowded):
        return None
    rule = auto_codebook_size(num_items, config.num_levels)
    if config.method == "fsq":
        fix = (f"raise fsq_dims_per_token (or num_levels) so that fsq_levels ** fsq_dims_per_token is at least "
               f"{rule}")
    elif explicit and rule > size:
        fix = f"drop codebook_size (null sizes it to the catalog: {rule} here) or set --codebook-size {rule}"
    else:
        fix = "raise --codebook-size or --num-levels"
    if config.collision_strategy != "reassign":
        fix += "; collision_strategy reassign spreads large groups over nearby codes"
    return (f"semantic-ID code space too small for {num_items:,} items: {config.num_levels} levels x {size} codes "
            f"= {space:.3g} IDs ({space / max(num_items, 1):.3g} per item, the rule wants >= {IDS_PER_ITEM}); "
            f"only {stats['unique_before_collision']:.1%} of items have a unique semantic ID and the largest "
            f"collision group holds {stats['max_collision_group']} items (limit max_collision_group="
            f"{config.max_collision_group}), so the collision level is a {stats['max_collision_group']}-way "
            f"arbitrary suffix. Fix: {fix}.")
