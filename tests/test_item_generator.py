"""The ``item`` generator family on tiny random models: the all-position loss, causality, the oracle,
the hybrid ranking, save/load and cold-start items."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_decoding import SIZES, assert_matches_hf_oracle, assert_valid, random_catalog, random_exclude

from sidrec.decoding import (
    CatalogTrie,
    DecodingSettings,
    beam_candidates,
    constrained_beam_search,
    hybrid_rank,
    recommend_topk,
)
from sidrec.seqmodel import load_generator
from sidrec.seqmodel.item_model import ItemLevelGenerator, build_item_config, item_id_rows, pad_item_histories
from sidrec.seqmodel.vocab import SemanticIdVocab

N_ITEMS, TEXT_DIM = 40, 12


def tiny_item_generator(seed: int, *, ff: str = "relu", dense_head: bool = True, weight_std: float = 0.5,
                        id_rows: np.ndarray | None = None) -> ItemLevelGenerator:
    """2+2 layers, d_model 32, a real catalog of 40 items over SIZES, random text; 30 items with an ID."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    codes = random_catalog(N_ITEMS, seed=seed)
    text = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    if id_rows is None:
        id_rows = item_id_rows(np.r_[np.ones(30), np.zeros(N_ITEMS - 30)], 1)
    config = build_item_config(
        vocab=SemanticIdVocab(level_sizes=SIZES), num_items=N_ITEMS, text_dim=TEXT_DIM,
        num_id_rows=int(id_rows.max()), max_items=8, dense_head=dense_head, d_model=32, num_layers=2,
        num_decoder_layers=2, num_heads=4, d_kv=8, d_ff=64, dropout_rate=0.1, feed_forward_proj=ff,
    )
    model = ItemLevelGenerator.build(config, item_codes=codes, text=text, id_rows=id_rows)
    if weight_std:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, weight_std)
            model.lm_head.weight.normal_(0.0, 3.0)  # peaked level distributions: few near-ties
    return model


def windows_batch(sequences: list[list[int]]) -> dict[str, torch.Tensor]:
    from sidrec.train.generator_tasks import collate_windows

    return collate_windows(sequences)


def test_all_position_loss_equals_single_prefix_losses():
    """One pass over a user's sequence gives, for every t, the HF loss of the prefix 0..t -> item t+1."""
    model = tiny_item_generator(0).eval()
    sequences = [[3, 7, 1, 22, 9, 15, 30], [5, 2], [39, 0, 11, 11]]
    batch = windows_batch(sequences)
    per_target = model.sequence_losses(batch["input_ids"], batch["attention_mask"], batch["target_items"],
                                       dense_weight=0.0, reduce=False)["generation"]
    expected = []
    for seq in sequences:  # row-major order of the valid targets
        for t in range(len(seq) - 1):
            ids = torch.tensor([[i + 1 for i in seq[: t + 1]]])
            labels = model.embedder.item_tokens[torch.tensor([seq[t + 1] + 1])]  # (1, L) level tokens
            expected.append(model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss)
    torch.testing.assert_close(per_target, torch.stack(expected), rtol=1e-5, atol=1e-5)
    # the training forward (what DDP calls) is the mean of the two losses
    out = model(**batch)
    torch.testing.assert_close(out.generation_loss, per_target.mean())
    assert out.dense_loss > 0 and torch.isclose(out.loss, out.generation_loss + out.dense_loss)


def test_changing_a_later_item_never_changes_earlier_loss_terms():
    """Causality: items after position t reach neither the encoder state nor the decoder at t."""
    model = tiny_item_generator(1).eval()
    base = [4, 8, 15, 16, 23, 31, 2]
    for j in range(2, len(base)):  # change item j: targets 1..j-1 (positions 0..j-2) must not move
        changed = list(base)
        changed[j] = (base[j] + 5) % N_ITEMS
        a = model.sequence_losses(**_loss_args(base), reduce=False)
        b = model.sequence_losses(**_loss_args(changed), reduce=False)
        for key in ("generation", "dense"):
            torch.testing.assert_close(a[key][: j - 1], b[key][: j - 1], rtol=0, atol=1e-6)
            assert not torch.allclose(a[key][j - 1 :], b[key][j - 1 :])  # later terms do see the change


def _loss_args(seq: list[int]) -> dict[str, torch.Tensor]:
    batch = windows_batch([seq])
    return {"input_items": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "target_items": batch["target_items"]}


@pytest.mark.parametrize(("beam", "ff"), [(4, "relu"), (9, "gated-gelu")])
def test_item_family_beam_search_matches_hf_generate(beam: int, ff: str):
    model = tiny_item_generator(beam, ff=ff).train()  # dropout on: the search must switch it off
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    histories = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]  # the last one is cut to max_items
    ids, mask = model.history_inputs(histories)
    exclude = random_exclude(len(histories), N_ITEMS, seed=beam, max_len=20)
    assert_matches_hf_oracle(model, trie, ids, mask, beam=beam, exclude=exclude)
    assert model.training


def test_hybrid_rank_orders_by_combined_score_and_keeps_empty_slots_last():
    items = torch.tensor([[5, 7, 9, -1]])
    logp = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")]])
    dense = torch.tensor([[0.0, 0.8, 2.5, float("-inf")]])
    got, scores = hybrid_rank(items, logp, dense, weight=1.0, k=4)
    assert got.tolist() == [[9, 5, 7, -1]]  # -0.5, -1.0, -1.2, empty
    torch.testing.assert_close(scores[0, :3], torch.tensor([-0.5, -1.0, -1.2]))
    assert hybrid_rank(items, logp, dense, weight=0.0, k=2)[0].tolist() == [[5, 7]]  # the beam's order
    with pytest.raises(ValueError, match="dense scores"):
        hybrid_rank(items, logp, None, weight=1.0, k=2)


def test_hybrid_ranks_only_items_from_the_beam():
    model = tiny_item_generator(3, weight_std=0.0)  # the model's own init: dense scores are informative
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    histories = [[1, 2, 3], [4, 30], [35, 36, 5]]
    cands = beam_candidates(model, trie, histories, beam_size=6)
    assert cands.items.shape == cands.dense.shape == (3, 6)
    ids, mask = model.history_inputs(histories)
    full = model.dense_scores(ids, mask)  # (3, N): the candidates' dense scores are these entries
    torch.testing.assert_close(cands.dense, full.gather(1, cands.items), rtol=1e-5, atol=1e-5)
    for weight in (0.5, 4.0, 1000.0):
        top, _ = cands.rank(weight=weight, k=4)
        for u in range(3):
            assert set(top[u].tolist()) <= set(cands.items[u].tolist())
    # a huge weight = the dense order restricted to the beam, not the dense order over the catalog
    top, _ = cands.rank(weight=1e6, k=6)
    best_in_beam = cands.items.gather(1, cands.dense.argsort(dim=1, descending=True))
    assert top.tolist() == best_in_beam.tolist()


def test_save_load_and_cold_start_items(tmp_path):
    model = tiny_item_generator(4, weight_std=0.0)
    settings = DecodingSettings(beam_size=8, dense_weight=1.5)
    model.save_pretrained(tmp_path / "gen")
    settings.save(tmp_path / "gen")
    again = load_generator(tmp_path / "gen")
    assert type(again) is ItemLevelGenerator and DecodingSettings.load(tmp_path / "gen") == settings
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    histories = [[1, 2, 3], [7], [12, 0, 38, 5]]
    a = recommend_topk(model.eval(), trie, histories, k=5, settings=settings)
    b = recommend_topk(again, trie, histories, k=5, settings=settings)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1])

    # a new item: codes from the tokenizer, text from its description, no ID embedding
    used = {tuple(c) for c in model.item_codes.tolist()}
    new_code = next(c for c in random_catalog(60, seed=9).tolist() if tuple(c) not in used)
    text = np.random.default_rng(0).normal(size=(1, TEXT_DIM)).astype(np.float32)
    again.add_items(np.array([new_code]), text)
    assert again.num_items == N_ITEMS + 1 and int(again.embedder.id_rows[-1]) == 0
    trie.add_items(np.array([new_code]))
    # its vector is codes + text only: the ID table is untouched
    expected = again.shared(again.embedder.item_tokens[-1]).sum(0) + again.embedder.text_proj(torch.from_numpy(text))[0]
    torch.testing.assert_close(again.embedder.catalog()[-1], expected)
    everything = [[i for i in range(N_ITEMS)]]  # every old item excluded: the new one is the only answer
    items, _ = recommend_topk(again, trie, everything, k=1, settings=DecodingSettings(beam_size=4),
                              exclude_history=True)
    assert items.tolist() == [[N_ITEMS]]
    again.save_pretrained(tmp_path / "gen2")
    third = load_generator(tmp_path / "gen2")
    assert third.num_items == N_ITEMS + 1 and np.array_equal(third.item_codes, again.item_codes)


def test_loading_with_the_wrong_class_is_explained(tmp_path):
    from sidrec.seqmodel import SemanticIdGenerator

    tiny_item_generator(5).save_pretrained(tmp_path / "gen")
    with pytest.raises(ValueError, match="load_generator"):
        SemanticIdGenerator.from_pretrained(tmp_path / "gen")


def test_item_table_must_match_the_tokenizer():
    from sidrec.utils.run_folder import check_item_table

    model = tiny_item_generator(6)
    check_item_table(model, model.item_codes, where="run")
    other = model.item_codes.copy()
    other[[0, 1]] = other[[1, 0]]
    with pytest.raises(ValueError, match="retrain the generator"):
        check_item_table(model, other, where="run")


def test_inputs_keep_the_most_recent_items_and_reject_empty_histories():
    ids, mask = pad_item_histories([[0, 1, 2, 3, 4], [7]], max_items=3)
    assert ids.tolist() == [[3, 4, 5], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="empty history"):
        pad_item_histories([[1], []], max_items=3)


def test_id_rows_only_for_items_seen_often_enough():
    rows = item_id_rows(np.array([0, 3, 1, 5, 2]), min_count=2)
    assert rows.tolist() == [0, 1, 0, 2, 3]
    assert item_id_rows(np.array([4, 4]), min_count=0).tolist() == [0, 0]


def test_user_windows_cover_every_target_once():
    from sidrec.train.generator_tasks import user_windows

    seqs = [list(range(10)), [5, 6], [7]]
    windows = user_windows(seqs, max_items=4)
    assert all(2 <= len(w) <= 5 for w in windows)
    targets = sorted(t for w in windows if w[0] < 10 and w != [5, 6] for t in w[1:])
    assert targets == list(range(1, 10))  # items 1..9 of the first user, each once
    assert [5, 6] in windows and not any(w == [7] for w in windows)  # a 1-item user gives no window
    batch = windows_batch([[3, 4, 5], [8, 9]])
    assert batch["input_ids"].tolist() == [[4, 5], [9, 0]]
    assert batch["target_items"].tolist() == [[4, 5], [9, -100]]


def test_distillation_targets_are_the_dense_mass_under_the_true_prefix():
    """Slow reference: for each target and semantic level (the collision level, last, is not distilled), sum
    the dense softmax over items sharing the target's prefix, per next code, renormalise, and take the
    cross-entropy with the decoder's level distribution."""
    model = tiny_item_generator(7).eval()
    logits = [torch.randn(3, size) for size in SIZES]  # stand-ins for the decoder's level logits
    dense = torch.randn(3, N_ITEMS)
    targets = torch.tensor([0, 17, 39])
    codes = model.item_codes
    probs = torch.softmax(dense, dim=-1).numpy()
    expected = []
    for p, target in enumerate(targets.tolist()):
        total = 0.0
        for t, size in enumerate(SIZES[:-1]):
            under = [i for i in range(N_ITEMS) if tuple(codes[i, :t]) == tuple(codes[target, :t])]
            mass = np.zeros(size)
            for i in under:
                mass[codes[i, t]] += probs[p, i]
            soft = mass / mass.sum()
            total -= float((soft * torch.log_softmax(logits[t][p], -1).numpy()).sum())
        expected.append(total / (len(SIZES) - 1))
    got = model.distill_losses(logits, dense, targets)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_reserve_cold_changes_at_most_ceil_eps_k_slots_each_to_a_cold_item():
    from sidrec.decoding import reserve_cold

    rng = np.random.default_rng(0)
    cold = torch.zeros(50, dtype=torch.bool)
    cold[rng.choice(50, 12, replace=False)] = True
    items = torch.stack([torch.from_numpy(rng.permutation(50)[:20]) for _ in range(30)])  # (30, 20) ranked
    items[3, 15:] = -1  # a short candidate list
    scores = -torch.arange(20, dtype=torch.float32).expand(30, 20).clone()
    base, _ = reserve_cold(items, scores, cold, epsilon=0.0, k=10)
    assert torch.equal(base, items[:, :10])  # epsilon 0 = the plain top 10
    for eps in (0.1, 0.2, 0.5):
        got, _ = reserve_cold(items, scores, cold, epsilon=eps, k=10)
        limit = math.ceil(eps * 10)
        for u in range(30):
            changed = set(got[u].tolist()) - set(base[u].tolist())
            assert len(changed) <= limit and all(cold[i] for i in changed)
            assert set(got[u].tolist()) <= set(items[u].tolist())  # only candidates
            n_cold = int(cold[got[u].clamp(min=0)][got[u] >= 0].sum())
            available = int(cold[items[u].clamp(min=0)][items[u] >= 0].sum())
            assert n_cold >= min(limit, available)  # the reserved share is filled when candidates allow
            kept = [i for i in got[u].tolist() if i in set(base[u].tolist())]
            assert kept == [i for i in base[u].tolist() if i in set(kept)]  # survivors keep their order
    with pytest.raises(ValueError, match="epsilon"):
        reserve_cold(items, scores, cold, epsilon=1.5, k=10)


def test_code_prior_is_the_popularity_share_under_each_prefix():
    from sidrec.decoding import CodePrior

    codes = random_catalog(N_ITEMS, seed=11)
    trie = CatalogTrie(codes=codes, level_sizes=SIZES)
    counts = np.random.default_rng(0).integers(0, 50, N_ITEMS)
    trie.remove_items([3])  # a removed item carries no popularity
    prior = CodePrior(trie=trie, item_counts=counts, smoothing=1.0)
    mass = (counts + 1.0) * trie.active
    paths = trie.paths(codes)
    for level in range(len(SIZES)):
        nodes = torch.from_numpy(np.unique(paths[:, level]))
        got = prior.log_prior(level, nodes).numpy()
        for row, node in enumerate(nodes.tolist()):
            under = paths[:, level] == node
            for code in range(SIZES[level]):
                below = mass[under & (codes[:, level] == code)].sum()
                want = np.log(below / mass[under].sum()) if below > 0 else -np.inf
                assert np.isclose(got[row, code], want, atol=1e-5) or (np.isinf(want) and np.isinf(got[row, code]))


def test_popularity_correction_lets_rare_items_into_the_beam():
    """Weight 0 is the plain search; a positive weight moves the beam towards items the prior disfavours."""
    from sidrec.decoding import CodePrior

    model = tiny_item_generator(12)
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    counts = np.where(np.arange(N_ITEMS) % 2 == 0, 200, 0)  # even items popular, odd ones never seen
    model.item_counts.copy_(torch.as_tensor(counts, dtype=torch.float32))
    prior = CodePrior(trie=trie, item_counts=counts)
    ids, mask = model.history_inputs([[1, 2, 3], [4, 5], [7, 8, 9, 10]])
    plain = constrained_beam_search(model, trie, ids, mask, beam_size=6, k=6)
    zero = constrained_beam_search(model, trie, ids, mask, beam_size=6, k=6, prior=prior, prior_weight=0.0)
    assert torch.equal(plain.items, zero.items)
    rare = constrained_beam_search(model, trie, ids, mask, beam_size=6, k=6, prior=prior, prior_weight=1.0)
    assert_valid(rare, trie)
    odd = lambda r: int((r.items % 2 == 1).sum())  # noqa: E731
    assert odd(rare) > odd(plain)
    used = {tuple(c) for c in model.item_codes.tolist()}
    trie.add_items(np.array([next(c for c in random_catalog(60, seed=5).tolist() if tuple(c) not in used)]))
    with pytest.raises(ValueError, match="before items were added"):
        constrained_beam_search(model, trie, ids, mask, beam_size=6, k=6, prior=prior, prior_weight=1.0)


def test_teacher_forced_item_scores_equal_the_beam_scores_of_the_same_items():
    """``score_items`` gives any item the log-probability the beam search would give it (dropout off)."""
    model = tiny_item_generator(13).train()
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    histories = [[1, 2, 3], [4], [39, 0, 11, 11]]
    cands = beam_candidates(model, trie, histories, beam_size=6, with_dense=False)
    ids, mask = model.history_inputs(histories)
    got = model.score_items(ids, mask, torch.cat([cands.items, torch.full((3, 1), -1)], 1))
    torch.testing.assert_close(got[:, :6], cands.scores, rtol=1e-4, atol=1e-4)
    assert torch.isinf(got[:, 6]).all() and model.training


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
def test_fast_teacher_forced_scores_equal_the_hf_decoder_reference(ff: str):
    """``teacher_forced_scores`` (the beam's incremental decoder, a user's items at once) = ``score_items``."""
    from sidrec.decoding.teacher import teacher_forced_scores

    model = tiny_item_generator(16, ff=ff).train()
    histories = [[1, 2, 3], [4], [39, 0, 11, 11, 5, 6, 7, 8, 9]]
    ids, mask = model.history_inputs(histories)
    items = torch.tensor([[0, 5, 39, 7], [12, 12, 3, 1], [38, 2, 20, 21]])
    fast = teacher_forced_scores(model, ids, mask, model.embedder.item_tokens[items + 1], chunk_users=2)
    torch.testing.assert_close(fast, model.score_items(ids, mask, items), rtol=1e-4, atol=1e-4)
    assert model.training  # restored


def _slow_joined(model, trie, histories, *, beam: int, dense: int, new: int, prior, prior_weight: float):
    """The reference: the beam's items, then each user's best ``dense`` other items by dense score, then the
    ``new`` unseen ones whose text is closest to the user's recent items (the knn query: the last 20, the j-th
    newest weighted 0.2**j), each scored by exact log-probability (minus the prior) one item at a time."""
    cands = beam_candidates(model, trie, histories, beam_size=beam, prior=prior, prior_weight=prior_weight)
    ids, mask = model.history_inputs(histories)
    full = model.dense_scores(ids, mask)  # (U, N)
    text = model.embedder.text[1:].double().numpy()
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    out = []
    for u, beam_items in enumerate(cands.items.tolist()):
        rest = [i for i in torch.argsort(full[u], descending=True, stable=True).tolist()
                if i not in beam_items and trie.active[i]]
        query = sum(0.2**j * text[i] for j, i in enumerate(reversed(histories[u][-20:])))
        closest = np.argsort(-(text @ (query / np.linalg.norm(query))), kind="stable").tolist()
        chosen = rest[:dense] + [i for i in closest if i in rest[dense:] and model.item_counts[i] == 0][:new]
        scores = {}
        for i in beam_items + chosen:
            if i < 0:
                continue
            logp = float(model.score_items(ids[u : u + 1], mask[u : u + 1], torch.tensor([[i]]))[0, 0])
            if prior_weight:  # the beam's scores are corrected sums: log p(item) - w * log p_pop(item)
                logp -= prior_weight * float(prior.item_log_prior(torch.tensor(i)))
            scores[i] = logp
        out.append(scores)
    return out


@pytest.mark.parametrize("prior_weight", [0.0, 0.5])
def test_joined_candidates_equal_a_slow_reference_and_are_all_catalog_items(prior_weight: float):
    from sidrec.decoding import CodePrior

    model = tiny_item_generator(14, weight_std=0.0).eval()
    counts = np.where(np.arange(N_ITEMS) < 24, 5, 0)  # items 24..39 never seen in training
    model.item_counts.copy_(torch.as_tensor(counts, dtype=torch.float32))
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    trie.remove_items([3, 36])  # removed items never join
    prior = CodePrior(trie=trie, item_counts=counts)
    histories = [[1, 2, 3], [4, 30], [35, 36, 5], [0]]
    got = beam_candidates(model, trie, histories, beam_size=5, prior=prior, prior_weight=prior_weight,
                          dense_candidates=6, new_candidates=3)
    want = _slow_joined(model, trie, histories, beam=5, dense=6, new=3, prior=prior, prior_weight=prior_weight)
    assert got.items.shape == got.scores.shape == got.dense.shape == (4, 5 + 6 + 3)
    for u in range(4):
        row = [i for i in got.items[u].tolist() if i >= 0]
        assert len(row) == len(set(row)) and all(trie.active[i] for i in row)
        assert set(row) == set(want[u])
        for slot, item in enumerate(got.items[u].tolist()):
            if item >= 0:
                assert abs(float(got.scores[u, slot]) - want[u][item]) < 1e-4
        assert sum(model.item_counts[i] == 0 for i in row) >= 3  # 14 unseen active items, 3 joined
    ids, mask = model.history_inputs(histories)
    torch.testing.assert_close(got.dense, model.dense_scores(ids, mask).gather(1, got.items.clamp(min=0))
                               .masked_fill(got.items < 0, float("-inf")), rtol=1e-5, atol=1e-5)


def test_an_added_item_always_joins_and_outranks_the_beam_when_it_scores_best():
    """LIGER's fix for new items: an item added after training is a candidate for every user."""
    model = tiny_item_generator(15, weight_std=0.0).eval()
    model.item_counts.fill_(3.0)
    trie = CatalogTrie(codes=model.item_codes, level_sizes=SIZES)
    histories = [[1, 2, 3], [4], [7, 8, 9, 10]]
    ids, mask = model.history_inputs(histories)
    user = model.user_states(ids, mask)[0]  # (D,) user 0, unchanged by adding items
    text = model.embedder.text_proj.weight.T @ user  # (TEXT_DIM,) the text direction user 0 likes most
    used = {tuple(c) for c in model.item_codes.tolist()}
    new_code = next(c for c in random_catalog(60, seed=11).tolist() if tuple(c) not in used)
    model.add_items(np.array([new_code]), (100.0 * text / text.norm()).detach().numpy()[None, :])
    trie.add_items(np.array([new_code]))
    cands = beam_candidates(model, trie, histories, beam_size=4, new_candidates=1)
    assert (cands.items == N_ITEMS).any(1).all()  # a candidate for every user
    settings = DecodingSettings(beam_size=4, dense_weight=1e6, new_candidates=1)
    items, _ = recommend_topk(model, trie, histories, k=3, settings=settings)
    assert int(items[0, 0]) == N_ITEMS  # user 0's best item by far, though nobody ever bought it
    beam_only, _ = recommend_topk(model, trie, histories, k=3, settings=settings.replace(new_candidates=0))
    beam = beam_candidates(model, trie, histories[:1], beam_size=4)
    assert (N_ITEMS in beam_only[0].tolist()) == (N_ITEMS in beam.items[0].tolist())


def test_catalog_vectors_are_reused_in_inference_until_a_weight_or_the_table_changes():
    model = tiny_item_generator(5).eval()
    emb = model.embedder

    def fresh() -> torch.Tensor:
        return emb(torch.arange(1, emb.num_items + 1))

    with torch.no_grad():
        first = emb.catalog()
        assert emb.catalog() is first  # reused
        torch.testing.assert_close(first, fresh())
        model.shared.weight[3] += 1.0  # an in-place weight change (an optimizer step, a load)
        second = emb.catalog()
        assert second is not first
        torch.testing.assert_close(second, fresh())
        used = {tuple(c) for c in model.item_codes.tolist()}
        for _ in range(2):  # twice without a lookup between: a freed table's id must not match
            new_code = next(c for c in random_catalog(60, seed=11).tolist() if tuple(c) not in used)
            used.add(tuple(new_code))
            model.add_items(np.array([new_code]), np.ones((1, TEXT_DIM), dtype=np.float32))
        third = emb.catalog()
        assert third.shape[0] == N_ITEMS + 2
        torch.testing.assert_close(third, fresh())
        unit = emb.unit_text()  # the normalised text table follows the additions too
        assert emb.unit_text() is unit and unit.shape[0] == N_ITEMS + 2
        torch.testing.assert_close(unit, torch.nn.functional.normalize(emb.text[1:].float(), dim=1))
    model.train()
    assert emb.catalog() is not third  # training computes with gradients, never from the cache


def test_text_scores_are_the_knn_baselines_query_and_pick_the_cold_slots():
    from sidrec.decoding import reserve_cold
    from sidrec.decoding.text_profile import text_scores
    from sidrec.eval.baselines.knn import KnnQuery, KnnScorer

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    histories = [[1, 2, 3], [7], list(range(25))]
    got = text_scores(torch.from_numpy(emb), histories)  # (3, 30)
    knn = KnnScorer(embeddings=emb, query=KnnQuery(window=20, decay=0.2))
    queries = knn.query_vectors(histories)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    want = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    from sidrec.decoding.text_profile import candidate_text_scores

    cands = torch.tensor([[4, 0, -1], [29, 7, 3], [1, 2, 5]])  # each user's own candidates, -1 = none
    unit = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1)
    own = candidate_text_scores(unit, histories, cands)
    torch.testing.assert_close(own[cands >= 0], got.gather(1, cands.clamp(min=0))[cands >= 0])
    assert torch.isinf(own[0, 2])
    # the reserved slots take the cold candidates with the highest priority, not the ranking's order
    items = torch.tensor([[0, 1, 2, 3, 4, 5]])
    scores = -torch.arange(6, dtype=torch.float32)[None, :]
    cold = torch.tensor([False, False, False, True, True, True])
    top, _ = reserve_cold(items, scores, cold, epsilon=0.5, k=2)
    assert top.tolist() == [[0, 3]]  # by rank: the best-ranked cold candidate
    top, _ = reserve_cold(items, scores, cold, epsilon=0.5, k=2, priority=torch.tensor([[0, 0, 0, 0.1, 0.9, 0.5]]))
    assert top.tolist() == [[0, 4]]  # by priority: the most similar text
