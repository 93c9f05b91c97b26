"""Vocab round trips, encoder inputs, the per-level logit restriction, checkpoints, training examples."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from sidrec.seqmodel import (
    MASK_VALUE,
    SemanticIdGenerator,
    SemanticIdVocab,
    build_examples,
    build_t5_config,
    encode_histories,
    load_or_build_examples,
)

SIZES = [8, 8, 4]


@pytest.fixture(scope="module")
def vocab() -> SemanticIdVocab:
    return SemanticIdVocab(level_sizes=SIZES, num_user_buckets=5)


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, s, 30) for s in SIZES], axis=1)  # (30, 3)


def tiny_model(vocab: SemanticIdVocab, seed: int = 0) -> SemanticIdGenerator:
    torch.manual_seed(seed)
    config = build_t5_config(vocab=vocab, d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=16,
                             d_ff=64, dropout_rate=0.0, max_items=4)
    return SemanticIdGenerator(config).eval()


# ------------------------------------------------------------------------------------------ vocab
def test_vocab_layout_and_round_trip(vocab, codes, tmp_path):
    assert vocab.level_offsets == (2, 10, 18) and vocab.user_offset == 22 and vocab.vocab_size == 27
    tokens = vocab.codes_to_tokens(codes)
    assert np.array_equal(vocab.tokens_to_codes(tokens), codes)
    assert np.array_equal(vocab.tokens_to_codes(torch.from_numpy(tokens)), codes)
    levels = vocab.token_levels()
    assert (levels[:2] == -1).all() and (levels[22:] == -1).all()
    assert [int((levels == t).sum()) for t in range(3)] == SIZES
    vocab.save(tmp_path)
    assert SemanticIdVocab.load(tmp_path) == vocab


def test_vocab_rejects_bad_codes_and_tokens(vocab):
    with pytest.raises(ValueError, match="out of range"):
        vocab.codes_to_tokens(np.array([[0, 8, 0]]))
    with pytest.raises(ValueError, match="3 levels"):
        vocab.codes_to_tokens(np.array([[0, 0]]))
    with pytest.raises(ValueError, match="not a code token of its level"):
        vocab.tokens_to_codes(np.array([[10, 10, 18]]))  # a level-1 token at position 0


def test_user_token_is_stable_and_in_range(vocab):
    # the same across processes and runs: a fixed hash, not Python's salted hash()
    assert vocab.user_token("A1B2") == vocab.user_token("A1B2")
    tokens = vocab.user_tokens([f"u{i}" for i in range(200)])
    assert tokens.min() >= vocab.user_offset and tokens.max() < vocab.vocab_size
    assert len(set(tokens.tolist())) == 5  # 200 users fill all 5 buckets
    spec = int.from_bytes(hashlib.blake2b(b"A1B2", digest_size=8).digest(), "little") % 5  # the documented hash
    assert vocab.user_token("A1B2") == 22 + spec == 24
    with pytest.raises(ValueError, match="no user tokens"):
        SemanticIdVocab(level_sizes=SIZES).user_token("x")


def test_vocab_file_from_another_version_is_refused(vocab, tmp_path):
    vocab.save(tmp_path)
    data = json.loads((tmp_path / "vocab.json").read_text())
    (tmp_path / "vocab.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match="vocab format 99"):
        SemanticIdVocab.load(tmp_path)


# ------------------------------------------------------------------------------------------ inputs
def test_encode_histories_truncates_left_pads_right(vocab, codes):
    input_ids, mask = encode_histories(vocab, codes, [[1, 2, 3, 4, 5], [7]], max_items=3)
    tok = vocab.codes_to_tokens(codes)
    assert input_ids.shape == (2, 9) and mask.shape == (2, 9)
    assert input_ids[0].tolist() == tok[[3, 4, 5]].reshape(-1).tolist()  # the 3 most recent items
    assert input_ids[1, :3].tolist() == tok[7].tolist() and input_ids[1, 3:].eq(0).all()
    assert mask.tolist() == [[1] * 9, [1] * 3 + [0] * 6]


def test_encode_histories_user_token_first(vocab, codes):
    input_ids, mask = encode_histories(vocab, codes, [[1, 2], []], user_ids=["a", "b"], max_items=3)
    assert input_ids[:, 0].tolist() == [vocab.user_token("a"), vocab.user_token("b")]
    assert mask.sum(1).tolist() == [7, 1]
    with pytest.raises(ValueError, match="empty history"):
        encode_histories(vocab, codes, [[1], []])
    with pytest.raises(ValueError, match="codes table"):
        encode_histories(vocab, codes, [[30]])


# ------------------------------------------------------------------------------------------ model
def test_logits_restricted_to_each_level(vocab, codes):
    model = tiny_model(vocab)
    input_ids, mask = encode_histories(vocab, codes, [[1, 2], [3]], max_items=4)
    labels = torch.from_numpy(vocab.codes_to_tokens(codes[[5, 6]]))  # (2, 3)
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
    assert torch.isfinite(out.logits).all()
    for t in range(3):
        start, stop = vocab.level_range(t)
        inside = out.logits[:, t, start:stop]
        outside = torch.cat([out.logits[:, t, :start], out.logits[:, t, stop:]], dim=1)
        assert (outside == MASK_VALUE).all() and (inside > MASK_VALUE / 2).all()
        # log-softmax over the whole vocab == log-softmax over the level's slice of lm_head
        full = torch.log_softmax(out.logits[:, t], -1)[:, start:stop]
        torch.testing.assert_close(full, torch.log_softmax(inside, -1), rtol=0, atol=1e-6)
    # the loss is the mean per-level cross-entropy of the slices
    per_level = [
        torch.nn.functional.cross_entropy(out.logits[:, t, slice(*vocab.level_range(t))],
                                          labels[:, t] - vocab.level_offsets[t])
        for t in range(3)
    ]
    torch.testing.assert_close(out.loss, torch.stack(per_level).mean())


def test_restriction_holds_with_kv_cache_and_generate_scores(vocab, codes):
    """HF beam search (cache: one decoder token per call) only emits level-t tokens, scores = summed log-probs."""
    model = tiny_model(vocab)
    input_ids, mask = encode_histories(vocab, codes, [[1, 2, 3]], max_items=4)
    out = model.generate(input_ids=input_ids, attention_mask=mask, num_beams=6, num_return_sequences=6,
                         do_sample=False, length_penalty=0.0, max_new_tokens=3, output_scores=True,
                         return_dict_in_generate=True)
    seqs = out.sequences[:, 1:]  # (6, 3)
    got_codes = vocab.tokens_to_codes(seqs)  # raises if any position holds another level's token
    assert got_codes.shape == (6, 3)
    rescored = model(input_ids=input_ids.repeat(6, 1), attention_mask=mask.repeat(6, 1), labels=seqs)
    logp = torch.log_softmax(rescored.logits, -1).gather(-1, seqs[..., None]).squeeze(-1).sum(-1)
    torch.testing.assert_close(out.sequences_scores, logp, rtol=0, atol=1e-5)


def test_generation_config_never_samples_and_takes_the_beam_from_the_decoding_settings(vocab):
    from sidrec.decoding import DecodingSettings

    model = tiny_model(vocab)
    gen = model.generation_config
    assert gen.do_sample is False and gen.max_new_tokens == 3
    DecodingSettings(beam_size=7).apply_to(model)
    assert model.generation_config.num_beams == 7


def test_save_load_identical_logits(vocab, codes, tmp_path):
    model = tiny_model(vocab, seed=3)
    model.save_pretrained(tmp_path / "gen")
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = SemanticIdGenerator.from_pretrained(tmp_path / "gen")
    assert loaded.vocab == vocab and loaded.max_items == 4 and not loaded.training
    input_ids, mask = encode_histories(vocab, codes, [[1, 2], [3, 4, 5]], max_items=4)
    labels = torch.from_numpy(vocab.codes_to_tokens(codes[[0, 1]]))
    a = model(input_ids=input_ids, attention_mask=mask, labels=labels).logits
    b = loaded(input_ids=input_ids, attention_mask=mask, labels=labels).logits
    assert torch.equal(a, b)
    assert loaded.lm_head.weight.data_ptr() == loaded.shared.weight.data_ptr()  # tying survives loading


def test_load_rejects_incomplete_or_foreign_folders(vocab, tmp_path):
    model = tiny_model(vocab)
    model.save_pretrained(tmp_path / "gen")
    (tmp_path / "gen" / "vocab.json").unlink()
    with pytest.raises(ValueError, match="missing vocab.json"):
        SemanticIdGenerator.from_pretrained(tmp_path / "gen")
    model.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps({**cfg, "sidrec_format_version": 0}))
    with pytest.raises(ValueError, match="generator format 0"):
        SemanticIdGenerator.from_pretrained(tmp_path / "old")
    other = SemanticIdVocab(level_sizes=[8, 8, 5], num_user_buckets=5)
    tiny_model(other).save_pretrained(tmp_path / "mixed")
    vocab.save(tmp_path / "mixed")  # vocab.json from another model
    with pytest.raises(ValueError, match="disagrees"):
        SemanticIdGenerator.from_pretrained(tmp_path / "mixed")


# ------------------------------------------------------------------------------------------ examples
def test_examples_every_prefix_sliding_window():
    ex = build_examples([[0, 1, 2, 3], [5, 6], [9]], max_items=2)
    assert ex["user"] == [0, 0, 0, 1]
    assert ex["history"] == [[0], [0, 1], [1, 2], [5]]
    assert ex["target"] == [1, 2, 3, 6]


def test_examples_on_real_slice_are_cached(tiny_run, tmp_path):
    from sidrec.data import PreparedDataset

    dataset = PreparedDataset.load(tiny_run)
    seqs = dataset.train_sequences()
    first = load_or_build_examples(tmp_path, seqs, fingerprint=dataset.fingerprint(), max_items=20)
    assert len(first) == sum(len(s) - 1 for s in seqs)
    assert all(1 <= len(h) <= 20 for h in first["history"])
    again = load_or_build_examples(tmp_path, seqs, fingerprint=dataset.fingerprint(), max_items=20)
    assert len(list((tmp_path / "generator_cache").iterdir())) == 1 and again["target"] == first["target"]
