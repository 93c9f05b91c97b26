"""Semantic-ID tokenizer: item-text embeddings, quantizers (RQ-VAE, RQ-KMeans, FSQ), collisions, the ID table.

Public API:
- ``embed_texts(texts, *, model_name, template, cache_dir, batch_size)`` -> ``float32 (N, D)`` (disk-cached)
- ``SemanticIdTokenizer`` (``item_ids``, ``codes (N, L)`` with the collision level last, ``level_sizes``,
  ``fit``, ``assign``, ``save_pretrained`` / ``from_pretrained``)
- ``TokenizerConfig``; quantizers behind ``Quantizer`` and the ``QUANTIZERS`` registry.
"""

from sidrec.tokenizer.base import (
    QUANTIZERS,
    Quantizer,
    build_quantizer,
    get_quantizer_class,
    register_quantizer,
)
from sidrec.tokenizer.config import TokenizerConfig
from sidrec.tokenizer.embeddings import DEFAULT_EMBEDDING_MODEL, check_embeddings, embed_texts
from sidrec.tokenizer.fsq import FSQ
from sidrec.tokenizer.opq import OPQ
from sidrec.tokenizer.rqkmeans import RQKMeans
from sidrec.tokenizer.rqvae import RQVAE
from sidrec.tokenizer.semantic_ids import SemanticIdTokenizer

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "FSQ",
    "OPQ",
    "QUANTIZERS",
    "RQKMeans",
    "RQVAE",
    "Quantizer",
    "SemanticIdTokenizer",
    "TokenizerConfig",
    "build_quantizer",
    "check_embeddings",
    "embed_texts",
    "get_quantizer_class",
    "register_quantizer",
]
