"""Generator families by name, and the loader that picks the class from a checkpoint's config.

``config.json`` of a generator folder says which family wrote it (``sidrec_family``; folders from before
the key existed are ``tiger``). Inference code loads any of them with ``load_generator(folder)`` and then
uses the common contract: ``history_inputs``, the HF encoder/decoder layout the beam search runs (beam
families) or ``digit_log_probs`` (exact families), and, for a family with a dense head, ``dense_scores``.
The checks against the tokenizer and the dataset are ``sidrec.utils.run_folder.RunFolder``'s.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sidrec.seqmodel.item_model import ItemLevelGenerator
from sidrec.seqmodel.model import CONFIG_FILE, SemanticIdGenerator
from sidrec.seqmodel.parallel_model import ParallelIdGenerator
from sidrec.utils import read_json

__all__ = ["GENERATOR_FAMILIES", "load_generator"]

logger = logging.getLogger(__name__)

GENERATOR_FAMILIES: dict[str, type] = {
    SemanticIdGenerator.family: SemanticIdGenerator,
    ItemLevelGenerator.family: ItemLevelGenerator,
    ParallelIdGenerator.family: ParallelIdGenerator,
}


def load_generator(directory: str | os.PathLike):
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
