"""Generator families by name, and the loader that picks the class from a checkpoint's config.

``config.json`` of a generator folder says which family wrote it (``sidrec_family``; folders from before
the key existed are ``tiger``). Inference code loads any of them with ``load_generator(folder)`` and then
uses the common contract: ``history_inputs``, the HF encoder/decoder layout the beam search runs, and,
for a family with a dense head, ``dense_scores`` and ``config.hybrid_weight``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from sidrec.seqmodel.item_model import ItemLevelGenerator
from sidrec.seqmodel.model import CONFIG_FILE, SemanticIdGenerator
from sidrec.utils import read_json

__all__ = ["GENERATOR_FAMILIES", "check_generator_provenance", "check_item_table", "load_generator"]

logger = logging.getLogger(__name__)

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


def check_generator_provenance(
    model, tokenizer, *, generator_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike, rerun: str,
    dataset_fingerprint: str | None = None, dataset_dir: str | os.PathLike | None = None,
) -> None:
    """The generator's recorded inputs (``config.json`` ``sidrec_provenance``) against the tokenizer's table
    (its recorded rows must be unchanged; rows appended later, cold-start items, are fine) and, in a run
    folder, the dataset fingerprint. ``ProvenanceError`` naming both fingerprints and ``rerun``.
    """
    from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR, check_dataset, check_table

    record = getattr(model.config, GENERATOR_PROVENANCE_ATTR, None)
    if not isinstance(record, dict):
        logger.warning("%s records no provenance (trained by an older sidrec): its semantic IDs are not checked "
                       "against %s", generator_dir, tokenizer_dir)
        return
    check_dataset(record.get("dataset_fingerprint"), dataset_fingerprint, stage=str(generator_dir),
                  dataset=str(dataset_dir), fix=rerun)
    check_table(record.get("semantic_ids"), tokenizer.item_ids, tokenizer.codes,
                recorded_by=f"{generator_dir}/config.json", table=f"{tokenizer_dir}/semantic_ids.tsv",
                fix=f"retrain the generator on this tokenizer (`{rerun}`) or restore the tokenizer it was trained with",
                exact=False)
