"""sidrec.decoding: catalog trie over semantic IDs, trie-constrained beam search, exact ranking, and the
settings (``DecodingSettings``) a trained generator ranks with."""

from sidrec.decoding.beam import BeamSearchResult, UserExclusions, constrained_beam_search
from sidrec.decoding.exact import DigitCatalog, ExactRanker, exact_scores, exact_topk, rank_exact
from sidrec.decoding.hf_oracle import hf_constrained_generate, topk_mismatches, trie_prefix_allowed_tokens_fn
from sidrec.decoding.prior import CodePrior
from sidrec.decoding.rankers import BeamRanker, make_ranker, ranks_exactly, scores_whole_catalog
from sidrec.decoding.recommend import (
    Candidates,
    beam_candidates,
    has_dense_head,
    popularity_prior,
    recommend_topk,
)
from sidrec.decoding.rerank import hybrid_rank, reserve_cold
from sidrec.decoding.settings import DECODING_FILE, DEFAULT_BEAM_SIZE, DecodingSettings
from sidrec.decoding.t5_step import T5IncrementalDecoder
from sidrec.decoding.trie import CatalogTrie

__all__ = [
    "DECODING_FILE",
    "DEFAULT_BEAM_SIZE",
    "DecodingSettings",
    "BeamRanker",
    "BeamSearchResult",
    "Candidates",
    "DigitCatalog",
    "ExactRanker",
    "CodePrior",
    "CatalogTrie",
    "T5IncrementalDecoder",
    "UserExclusions",
    "beam_candidates",
    "constrained_beam_search",
    "exact_scores",
    "exact_topk",
    "has_dense_head",
    "hf_constrained_generate",
    "hybrid_rank",
    "make_ranker",
    "popularity_prior",
    "rank_exact",
    "ranks_exactly",
    "scores_whole_catalog",
    "recommend_topk",
    "reserve_cold",
    "topk_mismatches",
    "trie_prefix_allowed_tokens_fn",
]
