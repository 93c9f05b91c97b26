"""sidrec.seqmodel: the semantic-ID vocabulary, the generator families, encoder inputs and training examples.

Heavy imports (torch, transformers) happen on first attribute access, so ``import sidrec.seqmodel``
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SemanticIdVocab": "sidrec.seqmodel.vocab",
    "PAD_TOKEN_ID": "sidrec.seqmodel.vocab",
    "EOS_TOKEN_ID": "sidrec.seqmodel.vocab",
    "SemanticIdGenerator": "sidrec.seqmodel.model",
    "ItemLevelGenerator": "sidrec.seqmodel.item_model",
    "ParallelIdGenerator": "sidrec.seqmodel.parallel_model",
    "GENERATOR_FAMILIES": "sidrec.seqmodel.families",
    "load_generator": "sidrec.seqmodel.families",
    "build_t5_config": "sidrec.seqmodel.model",
    "MASK_VALUE": "sidrec.seqmodel.model",
    "encode_histories": "sidrec.seqmodel.inputs",
    "build_examples": "sidrec.seqmodel.examples",
    "load_or_build_examples": "sidrec.seqmodel.examples",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sidrec.seqmodel' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
