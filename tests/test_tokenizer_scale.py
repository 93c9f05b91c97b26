"""Tokenizer at catalog scale: sizing rule, too-small warning, group spreading, sampled/chunked RQ-KMeans."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import small_config

from sidrec.tokenizer import SemanticIdTokenizer, TokenizerConfig
from sidrec.tokenizer import rqkmeans as rqk
from sidrec.tokenizer.collisions import group_sizes, spread_large_groups
from sidrec.tokenizer.sizing import auto_codebook_size, resolve_sizes
from sidrec.utils import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here fits or trains


def test_sizing_rule_keeps_tiger_layout_for_beauty_and_grows_the_codebook():
    assert auto_codebook_size(12_101, 3) == 256  # Beauty: TIGER's 3 x 256
    assert auto_codebook_size(256, 3) == 256 and auto_codebook_size(255, 3) == 128  # small catalogs fit too
    assert auto_codebook_size(100, 3) == 64 and auto_codebook_size(3, 3) == 2 and auto_codebook_size(0, 3) == 2
    assert auto_codebook_size(167_772, 3) == 256 and auto_codebook_size(167_773, 3) == 512
    assert auto_codebook_size(1_000_000, 3) == 512
    assert auto_codebook_size(10_000_000, 3) == 1024
    assert auto_codebook_size(1_000_000, 4) == 256  # 256^4 = 4.3e9 >= 1e8
    cfg = load_config(TokenizerConfig, "tokenizer/rqkmeans")
    assert cfg.codebook_size is None  # the preset sizes to the catalog
    assert resolve_sizes(cfg, 12_101).codebook_size == 256
    assert resolve_sizes(load_config(TokenizerConfig, None, {"codebook_size": 64}), 10**6).codebook_size == 64


def test_default_config_gives_beauty_sized_catalog_tigers_layout():
    """12,101 items (Beauty's catalog size) with the default preset: 3 x 256 + the collision level."""
    emb = np.random.default_rng(0).standard_normal((12_101, 8)).astype(np.float32)
    cfg = load_config(TokenizerConfig, "tokenizer/rqkmeans", {"kmeans_niter": 2})
    tok = SemanticIdTokenizer.fit(item_ids=[str(i) for i in range(len(emb))], embeddings=emb, config=cfg)
    assert tok.level_sizes[:3] == [256, 256, 256] and len(tok.level_sizes) == 4
    assert tok.stats["codebook_size_source"] == "catalog" and tok.config.codebook_size == 256
    assert tok.stats["code_space_warning"] is None


def test_too_small_explicit_code_space_warns_with_unique_share_and_largest_group(beauty_emb, caplog):  # noqa: F811
    cfg = small_config("rqkmeans", codebook_size=4, num_levels=2, collision_strategy="append")
    with caplog.at_level(logging.WARNING):
        tok = SemanticIdTokenizer.fit(item_ids=[f"i{i}" for i in range(len(beauty_emb))], embeddings=beauty_emb,
                                      config=cfg)
    s = tok.stats
    assert s["max_collision_group"] > 16
    msg = s["code_space_warning"]
    assert msg and msg in caplog.text
    assert f"largest collision group holds {s['max_collision_group']} items" in msg
    assert f"{s['unique_before_collision']:.1%} of items have a unique semantic ID" in msg
    assert "--codebook-size 256" in msg  # the fix names the rule's size


def test_spread_caps_groups_nearest_first_and_keeps_small_groups():
    # head (0,) holds a group of 7 on code 0 and a group of 2 on code 5; cap 3
    prefix = np.array([[0, 0]] * 7 + [[0, 5]] * 2 + [[1, 0]] * 4, dtype=np.int64)
    ranked = np.tile(np.array([0, 1, 5, 2, 3, 4]), (len(prefix), 1))  # nearest first, same for all
    ranked[7:9] = [5, 4, 3, 2, 1, 0]
    new, moved = spread_large_groups(prefix, ranked, max_group=3, last_level_size=6)
    sizes = group_sizes(new)
    assert sizes.max() <= 3
    assert (new[:3] == [0, 0]).all()  # the first 3 members stay
    # then the nearest code with room: code 1 takes 3, code 5 (holding 2) takes 1
    assert new[3:7, 1].tolist() == [1, 1, 1, 5]
    assert (new[7:9] == [0, 5]).all()  # a group within the cap is untouched
    assert new[9:, 1].tolist() == [0, 0, 0, 1]  # the other head: code 0 is the first with room
    assert moved == 5
    again, _ = spread_large_groups(prefix, ranked, max_group=3, last_level_size=6)
    np.testing.assert_array_equal(again, new)  # deterministic


def test_reassign_spreads_a_large_group_of_identical_items(beauty_emb):  # noqa: F811
    emb = np.concatenate([beauty_emb, np.repeat(beauty_emb[:1], 40, axis=0)])  # item 0 + 40 copies
    cfg = small_config("rqkmeans", collision_strategy="reassign", max_collision_group=6)
    tok = SemanticIdTokenizer.fit(item_ids=[f"i{i}" for i in range(len(emb))], embeddings=emb, config=cfg)
    assert tok.stats["max_collision_group_plain"] >= 41 and tok.stats["max_collision_group"] <= 6
    assert tok.stats["spread_items"] > 0
    assert len({tuple(r) for r in tok.codes.tolist()}) == len(emb)


def test_residual_kmeans_trains_on_a_sample_and_encodes_in_chunks(monkeypatch, beauty_emb):  # noqa: F811
    seen: list[int] = []
    real = rqk.kmeans

    def spy(x, k, **kw):
        seen.append(len(x))
        return real(x, k, **kw)

    monkeypatch.setattr(rqk, "kmeans", spy)
    cbs = rqk.fit_residual_kmeans(beauty_emb, num_levels=2, k=8, niter=3, seed=0, points_per_centroid=10)
    assert seen == [80, 80]  # every level trains on the same 10 x 8 sampled rows, not all 600
    np.testing.assert_array_equal(rqk.training_rows(600, 8, 10, 0), rqk.training_rows(600, 8, 10, 0))
    assert rqk.training_rows(600, 8, 100, 0) is None  # a catalog smaller than the sample: every row
    whole = rqk.residual_encode_ranked(beauty_emb, cbs, 5, chunk_rows=10**6)
    parts = rqk.residual_encode_ranked(beauty_emb, cbs, 5, chunk_rows=7)
    np.testing.assert_array_equal(whole[0], parts[0])
    np.testing.assert_array_equal(whole[1], parts[1])
    np.testing.assert_array_equal(whole[0], rqk.residual_encode(beauty_emb, cbs))
    assert (whole[1][:, 0] == whole[0][:, -1]).all()  # candidate 0 is the encoded code


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae", "fsq"])
def test_encode_with_candidates_matches_separate_calls(beauty_emb, method):  # noqa: F811
    from sidrec.tokenizer import build_quantizer

    q = build_quantizer(resolve_sizes(small_config(method, rqvae_epochs=2, fsq_epochs=2), len(beauty_emb)))
    q.fit(beauty_emb)
    codes, cands = q.encode_with_candidates(beauty_emb, 8)
    np.testing.assert_array_equal(codes, q.encode(beauty_emb))
    np.testing.assert_array_equal(cands, q.last_level_candidates(beauty_emb, 8))
    assert cands.dtype == np.int16
