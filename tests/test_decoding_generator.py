"""constrained_beam_search on the real generator class (sidrec.seqmodel) against HF generate."""

from __future__ import annotations

import pytest
import torch
from test_decoding import SIZES, assert_matches_hf_oracle, random_catalog, random_exclude
from test_decoding_models import random_inputs

from sidrec.decoding import CatalogTrie
from sidrec.seqmodel.model import SemanticIdGenerator, build_t5_config
from sidrec.seqmodel.vocab import SemanticIdVocab


def tiny_generator(seed: int, ff: str = "relu") -> SemanticIdGenerator:
    torch.manual_seed(seed)
    vocab = SemanticIdVocab(level_sizes=SIZES, num_user_buckets=3)
    config = build_t5_config(
        vocab=vocab,
        d_model=32,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        d_kv=8,
        d_ff=64,
        dropout_rate=0.1,
        feed_forward_proj=ff,
    )
    model = SemanticIdGenerator(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
        model.lm_head.weight.normal_(0.0, 3.0)
    return model.train()  # dropout on: the search must switch it off


@pytest.mark.parametrize(("beam", "batch", "ff"), [(4, 3, "relu"), (9, 2, "gated-gelu")])
def test_generator_matches_hf_generate(beam: int, batch: int, ff: str) -> None:
    model = tiny_generator(beam, ff)
    trie = CatalogTrie(codes=random_catalog(40, seed=beam), level_sizes=SIZES)
    ids, mask = random_inputs(batch, model.config.vocab_size, seed=beam)
    exclude = random_exclude(batch, 40, seed=beam, max_len=20)
    assert_matches_hf_oracle(model, trie, ids, mask, beam=beam, exclude=exclude)
    assert model.training
