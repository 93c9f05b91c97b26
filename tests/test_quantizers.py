"""Quantizers (RQ-KMeans, RQ-VAE, FSQ) and collision helpers on a real 600-item Beauty slice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import small_config

from sidrec.tokenizer import QUANTIZERS, Quantizer, TokenizerConfig, build_quantizer
from sidrec.tokenizer.collisions import append_collision_level, group_sizes, reassign_last_level
from sidrec.tokenizer.fsq import FSQModule
from sidrec.tokenizer.stats import mean_cosine
from sidrec.utils import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # every test here fits or trains

METHODS = ["rqkmeans", "rqvae", "fsq", "opq"]
# reconstruction cosine on the 600-item slice with small_config: measured 0.77 / 0.65 / 0.59 / 0.72
# (tiny models, 20 epochs; opq: 3 digits of 16 codes on a whitened PCA-48); the bound sits below so that a
# broken decoder (cosine ~0.1 or less) fails.
MIN_RECON_COSINE = {"rqkmeans": 0.7, "rqvae": 0.55, "fsq": 0.5, "opq": 0.5}


@pytest.fixture(scope="module")
def fitted(beauty_emb) -> dict[str, Quantizer]:  # noqa: F811
    out = {}
    for m in METHODS:
        q = build_quantizer(small_config(m))
        q.fit(beauty_emb)
        out[m] = q
    return out


def test_registry_has_every_method():
    assert set(METHODS) <= set(QUANTIZERS)
    with pytest.raises(ValueError, match="field .method. .*rq-vea.* one of fsq, opq, rqkmeans, rqvae"):
        load_config(TokenizerConfig, None, {"method": "rq-vea"})


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_codes_and_reconstruction(fitted, beauty_emb, method):  # noqa: F811
    q = fitted[method]
    codes = q.encode(beauty_emb)
    assert codes.dtype == np.int64 and codes.shape == (len(beauty_emb), 3)
    assert (codes >= 0).all() and (codes < np.asarray(q.level_sizes)).all()
    recon = q.decode(codes)
    assert recon.shape == beauty_emb.shape
    assert mean_cosine(beauty_emb, recon) > MIN_RECON_COSINE[method]
    # decoding is a function of the codes: re-encoding the same items gives the same codes
    np.testing.assert_array_equal(q.encode(beauty_emb), codes)


@pytest.mark.parametrize("method", METHODS)
def test_last_level_candidates_start_with_own_code(fitted, beauty_emb, method):  # noqa: F811
    q = fitted[method]
    cands = q.last_level_candidates(beauty_emb[:50], 4)
    assert cands.shape == (50, 4)
    np.testing.assert_array_equal(cands[:, 0], q.encode(beauty_emb[:50])[:, -1])
    assert all(len(set(r)) == 4 for r in cands.tolist())


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_codes(fitted, beauty_emb, method):  # noqa: F811
    again = build_quantizer(small_config(method))
    again.fit(beauty_emb)
    np.testing.assert_array_equal(again.encode(beauty_emb), fitted[method].encode(beauty_emb))


@pytest.mark.parametrize("method", METHODS)
def test_save_load_identical(fitted, beauty_emb, method, tmp_path):  # noqa: F811
    q = fitted[method]
    q.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = Quantizer.from_pretrained(tmp_path)
    assert type(loaded) is type(q)
    codes = q.encode(beauty_emb)
    np.testing.assert_array_equal(loaded.encode(beauty_emb), codes)
    np.testing.assert_allclose(loaded.decode(codes), q.decode(codes), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_dimension_mismatch(fitted, beauty_emb, method, tmp_path):  # noqa: F811
    q = fitted[method]
    with pytest.raises(ValueError, match="dimension 100 but the quantizer was fitted on dimension 384"):
        q.encode(beauty_emb[:, :100])
    q.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["input_dim"] = 768
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match its config.json"):
        Quantizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("method", METHODS)
def test_bad_embeddings_rejected(beauty_emb, method):  # noqa: F811
    q = build_quantizer(small_config(method))
    bad = beauty_emb.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf in 1 row\(s\) \(first: \[3\]\)"):
        q.fit(bad)
    bad = beauty_emb.copy()
    bad[[7, 9]] = 0.0
    with pytest.raises(ValueError, match=r"2 all-zero row\(s\) \(first: \[7, 9\]\)"):
        q.fit(bad)
    with pytest.raises(ValueError, match="not fitted"):
        q.encode(beauty_emb)


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_fewer_items_than_codes(beauty_emb, method):  # noqa: F811
    q = build_quantizer(small_config(method, codebook_size=64))
    with pytest.raises(ValueError, match="40 items < codebook_size 64; lower --codebook-size"):
        q.fit(beauty_emb[:40])


def test_fsq_handles_fewer_items_than_codes(beauty_emb):  # noqa: F811
    """FSQ has no codebook to fill: 10 items with 16 codes per level fit fine (documented behaviour)."""
    q = build_quantizer(small_config("fsq", fsq_epochs=3))
    q.fit(beauty_emb[:10])
    assert q.encode(beauty_emb[:10]).shape == (10, 3)


def test_decode_rejects_out_of_range(fitted):
    with pytest.raises(ValueError, match="out of range"):
        fitted["rqkmeans"].decode(np.array([[0, 0, 16]]))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        fitted["rqkmeans"].decode(np.array([[0, 0]]))


def test_rqvae_uses_every_code(fitted, beauty_emb):  # noqa: F811
    """Dead-code resets keep every level alive (600 items, 16 codes per level; resets stop 5 epochs
    before the end, so a code may empty again: at most one per level)."""
    codes = fitted["rqvae"].encode(beauty_emb)
    for level in range(3):
        assert len(np.unique(codes[:, level])) >= 15


def test_fsq_token_digit_round_trip():
    m = FSQModule(input_dim=8, hidden_dims=[4], num_levels=3, dims_per_token=4, q=4)
    tokens = np.random.default_rng(0).integers(0, 256, size=(20, 3))
    import torch

    t = torch.from_numpy(tokens)
    np.testing.assert_array_equal(m.tokens(m.digits(t)).numpy(), tokens)


def test_collision_level_numbers_groups_in_item_order():
    prefix = np.array([[1, 2], [3, 4], [1, 2], [1, 2], [3, 5]])
    np.testing.assert_array_equal(append_collision_level(prefix), [0, 0, 1, 2, 0])
    np.testing.assert_array_equal(group_sizes(prefix), [3, 1, 3, 3, 1])


def test_reassign_moves_to_next_free_code():
    prefix = np.array([[1, 2], [1, 2], [1, 2], [1, 3]])
    cands = np.array([[2, 3, 4], [2, 3, 4], [2, 3, 5], [3, 2, 4]])
    new, moved = reassign_last_level(prefix, cands)
    # item 0 keeps (1,2); item 1: 3 is taken by item 3 -> 4; item 2: 3 taken -> 5; item 3 unique, stays
    np.testing.assert_array_equal(new, [[1, 2], [1, 4], [1, 5], [1, 3]])
    assert moved == 2
    # no free candidate: the item stays (the collision level will separate it)
    new, moved = reassign_last_level(np.array([[0, 1], [0, 1]]), np.array([[1, 0], [1, 0]]))
    np.testing.assert_array_equal(new, [[0, 1], [0, 0]])
    new, moved = reassign_last_level(np.array([[0, 1], [0, 1], [0, 0]]), np.array([[1, 0], [1, 0], [0, 1]]))
    np.testing.assert_array_equal(new, [[0, 1], [0, 1], [0, 0]])
    assert moved == 0
