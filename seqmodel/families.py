"""Generator families by name, and the loader that picks the class from a checkpoint's config.

``config.json`` of a generator folder says which family wrote it (``sidrec_family``; folders from before
the key existed are ``tiger``). Inference code loads any of them with ``load_generator(folder)`` and then
uses the common contract: ``history_inputs``, the HF encoder/decoder layout the beam search runs, and,
for a family with a dense head, ``dense_scores`` and ``config.hybrid_weight``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sidrec.seqmodel.item_model import ItemLevelGenerator
from sidrec.seqmodel.model import CONFIG_FILE, SemanticIdGenerator
from sidrec.utils import read_json

__all__ = ["GENERATOR_FAMILIES", "check_item_table", "load_generator"]

GENERATOR_FAMILIES: dict[str, type[SemanticIdGenerator]] = {
    SemanticIdGenerator.family: SemanticIdGenerator,
    ItemLevelGenerator.family: ItemLevelGenerator,
}


def load_generator(directory: str | os.PathLike) -> SemanticIdGenerator:
    """Load a generator folder of any family (CPU, eval mode)."""
    folder = Path(directory)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ValueError(f"{folder} is not a sidrec generator folder (no {CONFIG_FILE}); "
                         "train one with `sidrec train --run RUN`")
    raw = read_json(config_file, fix="the checkpoint is damaged: retrain it (`sidrec train --run RUN --overwrite`) "
                    "or restore it")
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file} is not a generator config (a JSON object); retrain or restore it")
    family = raw.get("sidrec_family", "tiger")
    cls = GENERATOR_FAMILIES.get(family)
    if cls is None:
        raise ValueError(f"{folder}: unknown generator family {family!r} (this sidrec knows "
                         f"{', '.join(sorted(GENERATOR_FAMILIES))}); upgrade sidrec or retrain")
    return cls.from_pretrained(folder)


def check_item_table(model, codes: np.ndarray, *, where: str) -> None:
    """A generator that carries its own item table (item family) must hold the tokenizer's codes.

    A refitted tokenizer gives other codes to the same items; the generator would then read and
    generate IDs that mean something else. ``ValueError`` naming the fix.
    """
    own = getattr(model, "item_codes", None)
    if own is None:
        return
    if own.shape != np.shape(codes) or not np.array_equal(own, codes):
        raise ValueError(
            f"{where}: the generator was trained on other semantic IDs than the tokenizer now holds "
            f"({own.shape[0]} vs {len(codes)} items, codes differ); retrain the generator "
            "(`sidrec train --run RUN`) after refitting the tokenizer"
        )
