"""sidrec.decoding: catalog trie over semantic IDs and trie-constrained beam search."""

from sidrec.decoding.beam import BeamSearchResult, UserExclusions, constrained_beam_search
from sidrec.decoding.hf_oracle import hf_constrained_generate, topk_mismatches, trie_prefix_allowed_tokens_fn
from sidrec.decoding.t5_step import T5IncrementalDecoder
from sidrec.decoding.trie import CatalogTrie

__all__ = [
    "BeamSearchResult",
    "CatalogTrie",
    "T5IncrementalDecoder",
    "UserExclusions",
    "constrained_beam_search",
    "hf_constrained_generate",
    "topk_mismatches",
    "trie_prefix_allowed_tokens_fn",
]
