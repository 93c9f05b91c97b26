"""Long semantic IDs and the parallel family: the OPQ tokenizer, collaborative features, the parallel model's
loss, exact ranking against a brute-force loop, and the faiss backend against the torch one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import small_config
from torch.nn import functional as F

from sidrec.decoding import DigitCatalog, ExactRanker, rank_exact
from sidrec.seqmodel.parallel_model import ParallelIdGenerator, build_parallel_config
from sidrec.tokenizer import SemanticIdTokenizer
from sidrec.tokenizer.features import CollaborativeFeatures

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [16] * 8 + [4]  # 8 digits of 16 codes and a collision digit
TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_kv": 8, "d_ff": 32, "dropout_rate": 0.0, "max_items": 5}


def opq_config(**overrides):
    return small_config("opq", num_levels=8, opq_pca_dim=32, collision_strategy="reassign", **overrides)


def random_codes(n: int, seed: int = 0, sizes: list[int] = SIZES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def tiny_parallel(n: int = 60, *, seed: int = 0, head: str = "tied", dense_head: bool = False, codes=None,
                  text_dim: int = 0, item_loss_weight: float = 0.0):
    torch.manual_seed(seed)
    codes = random_codes(n, seed) if codes is None else codes
    config = build_parallel_config(level_sizes=SIZES, num_items=len(codes), head=head, dense_head=dense_head,
                                   text_dim=text_dim, item_loss_weight=item_loss_weight, **TINY)
    text = np.random.default_rng(seed).normal(size=(len(codes), text_dim)).astype(np.float32) if text_dim else None
    return ParallelIdGenerator.build(config, item_codes=codes, text=text).eval()


# -- the OPQ tokenizer ----------------------------------------------------------------------------------------
def test_opq_tokenizer_contract(beauty_emb, tmp_path):
    tok = SemanticIdTokenizer.fit(item_ids=[str(i) for i in range(len(beauty_emb))], embeddings=beauty_emb,
                                  config=opq_config())
    assert tok.codes.shape == (len(beauty_emb), 9) and tok.level_sizes[:8] == [16] * 8
    # every fitted item's digits are the quantizer's code for its embedding, except the few moved off a
    # shared ID by the collision strategy (counted in the stats); all IDs are distinct
    encoded = tok.quantizer.encode(tok.quantizer_input(beauty_emb))
    moved = (encoded != tok.codes[:, :8]).any(1)
    assert moved.sum() == tok.stats["reassigned_items"] + tok.stats["spread_items"]
    assert len({tuple(r) for r in tok.codes.tolist()}) == len(beauty_emb)
    assert tok.stats["method"] == "opq" and tok.stats["max_collision_group"] >= 1
    # digits are independent: decoding the codes reconstructs the (whitened-PCA) embedding fairly well
    recon = tok.quantizer.decode(tok.codes[:, :8])
    cos = (recon * beauty_emb).sum(1) / np.linalg.norm(recon, axis=1) / np.linalg.norm(beauty_emb, axis=1)
    assert cos.mean() > 0.5
    tok.save_pretrained(tmp_path / "tok")
    again = SemanticIdTokenizer.from_pretrained(tmp_path / "tok")
    np.testing.assert_array_equal(again.codes, tok.codes)
    # a new item gets its own ID from its text (nearest codes), existing IDs never change
    new = again.assign_embeddings(["new"], beauty_emb[:1] + 0.01)
    assert new.shape == (1, 9) and again.item_for_codes(new[0]) == len(beauty_emb)


def test_collaborative_features_use_known_vectors_and_predict_the_others():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(400, 12)).astype(np.float32)
    cf = text @ rng.normal(size=(12, 5)) + 0.01 * rng.normal(size=(400, 5))  # collaborative = linear in text
    known = np.arange(400) < 300
    features = CollaborativeFeatures(cf_weight=2.0, ridge=1.0)
    info = features.fit(text, cf, known)
    assert info["known_items"] == 300 and info["predicted_items"] == 100 and info["text_to_cf_r2"] > 0.99
    out = features.transform(text, cf, known)  # (N, 12 + 5)
    t = features.tensors
    expected_cf = 2.0 * (cf[:300] - t["cf_mean"]) / t["cf_std"] / np.sqrt(5)
    np.testing.assert_allclose(out[:300, 12:], expected_cf, rtol=1e-4, atol=1e-4)  # known rows: the real vector
    predicted = features.transform(text[300:])[:, 12:]  # new items: predicted from text alone
    truth = 2.0 * (cf[300:] - t["cf_mean"]) / t["cf_std"] / np.sqrt(5)
    assert np.abs(predicted - truth).mean() < 0.05 * np.abs(truth).mean()
    np.testing.assert_allclose(out[300:], features.transform(text[300:]), rtol=1e-5)  # unknown rows use the map
    again = CollaborativeFeatures.from_state(features.get_config(), features.state_tensors())
    np.testing.assert_allclose(again.transform(text), features.transform(text))


def test_tokenizer_with_collaborative_codes_round_trips_and_assigns_from_text(beauty_emb, tmp_path):
    rng = np.random.default_rng(1)
    cf = rng.normal(size=(len(beauty_emb), 8)).astype(np.float32)
    known = np.ones(len(beauty_emb), dtype=bool)
    known[-50:] = False  # e.g. never seen in training
    ids = [str(i) for i in range(len(beauty_emb))]
    tok = SemanticIdTokenizer.fit(item_ids=ids, embeddings=beauty_emb, config=opq_config(cf_weight=1.0), cf=cf,
                                  cf_known=known)
    assert tok.stats["collaborative"]["predicted_items"] == 50 and tok.text_dim == beauty_emb.shape[1]
    assert tok.quantizer.input_dim == beauty_emb.shape[1] + 8
    tok.save_pretrained(tmp_path / "tok")
    again = SemanticIdTokenizer.from_pretrained(tmp_path / "tok")
    assert again.features is not None
    np.testing.assert_allclose(again.quantizer_input(beauty_emb[:5]), tok.quantizer_input(beauty_emb[:5]))
    # a new item needs only its text: its collaborative part is predicted
    new = again.assign_embeddings(["new"], beauty_emb[:1])
    digits = again.quantizer.encode(again.quantizer_input(beauty_emb[:1]))[0]
    assert new.shape == (1, 9) and (new[0, :7] == digits[:7]).all()  # the last digit may move off a taken ID


# -- the parallel model ---------------------------------------------------------------------------------------
def test_parallel_loss_is_the_mean_per_digit_cross_entropy_on_a_hand_built_batch():
    model = tiny_parallel(seed=1).train()
    inputs = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])  # item tokens (index + 1), right-padded
    mask = (inputs > 0).long()
    targets = torch.tensor([[1, 2, 9, -100], [7, -100, -100, -100]])  # the next item at each position
    torch.manual_seed(0)
    out = model(input_ids=inputs, attention_mask=mask, target_items=targets)
    torch.manual_seed(0)  # the same dropout masks (none at rate 0, but the same RNG path)
    states = model.encoder(input_ids=inputs, attention_mask=mask).last_hidden_state
    codes = torch.from_numpy(model.item_codes)
    total, n = 0.0, 0
    for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)]:
        logits = model.digit_logits(states[b, t][None])[0]  # (M, Kmax)
        for m, size in enumerate(SIZES):
            total += F.cross_entropy(logits[m, :size][None], codes[targets[b, t], m][None])
            n += 1
    torch.testing.assert_close(out.loss, total / n)
    assert float(out.item_loss) == 0.0


def test_item_loss_is_the_catalog_softmax_over_summed_digit_logits():
    model = tiny_parallel(seed=2, item_loss_weight=0.5).train()
    inputs, targets = torch.tensor([[3, 4]]), torch.tensor([[10, 20]])
    out = model(input_ids=inputs, attention_mask=torch.ones_like(inputs), target_items=targets)
    states = model.encoder(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state[0]
    logits = model.digit_logits(states)  # (2, M, Kmax)
    codes = torch.from_numpy(model.item_codes)  # (N, M)
    scores = torch.stack([logits[:, m, codes[:, m]] for m in range(len(SIZES))], -1).sum(-1)  # (2, N)
    scores = scores * model.item_scale  # the item softmax's (learned) temperature; ranking is unaffected
    torch.testing.assert_close(out.item_loss, F.cross_entropy(scores, targets[0]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.loss, out.digit_loss + 0.5 * out.item_loss)


def test_save_load_same_scores_and_added_items(tmp_path):
    model = tiny_parallel(seed=3, text_dim=6)
    model.save_pretrained(tmp_path / "gen")
    from sidrec.seqmodel import load_generator

    again = load_generator(tmp_path / "gen")
    assert type(again) is ParallelIdGenerator and np.array_equal(again.item_codes, model.item_codes)
    ids, mask = model.history_inputs([[1, 2, 3], [7]])
    torch.testing.assert_close(model.digit_log_probs(ids, mask), again.digit_log_probs(ids, mask))
    new = random_codes(2, seed=99)
    again.add_items(new, np.zeros((2, 6), dtype=np.float32))
    assert again.num_items == 62 and np.array_equal(again.item_codes[-2:], new)


def test_input_dropout_drops_item_vectors_in_training_only_and_survives_a_round_trip(tmp_path):
    torch.manual_seed(0)
    codes = random_codes(40)
    config = build_parallel_config(level_sizes=SIZES, num_items=40, input_dropout=0.5, **TINY)
    model = ParallelIdGenerator.build(config, item_codes=codes, text=None)
    plain = ParallelIdGenerator.build(build_parallel_config(level_sizes=SIZES, num_items=40, **TINY),
                                      item_codes=codes, text=None)
    plain.load_state_dict(model.state_dict())
    ids, mask = model.history_inputs([[1, 2, 3, 4], [7, 8]])
    # inference ignores it: the same weights give the same scores with and without it
    torch.testing.assert_close(model.digit_log_probs(ids, mask), plain.digit_log_probs(ids, mask))
    # training drops elements of the item vectors: about half of them are zero, the rest scaled by 1 / (1 - p)
    seen = {}
    hook = model.encoder.block[0].register_forward_pre_hook(lambda _m, args: seen.update(x=args[0]))
    model.train()
    model.encoder(input_ids=ids, attention_mask=mask)
    hook.remove()
    vectors = model.embedder(ids) * model.config.d_model**0.5  # (B, T, D) what the encoder reads
    real = mask.bool()[..., None].expand_as(vectors)
    zeroed = (seen["x"] == 0) & real
    assert 0.3 < zeroed.float().sum() / real.sum() < 0.7
    torch.testing.assert_close(seen["x"][real & ~zeroed], 2 * vectors[real & ~zeroed])
    model.eval().save_pretrained(tmp_path / "gen")
    from sidrec.seqmodel import load_generator

    assert load_generator(tmp_path / "gen").config.input_dropout == 0.5


# -- exact ranking --------------------------------------------------------------------------------------------
def brute_force(log_probs: torch.Tensor, codes: np.ndarray, active: np.ndarray, k: int,
                exclude: list[list[int]] | None = None) -> list[list[int]]:
    """Every item's score by a loop over its digits; best first, ties by the lower index."""
    out = []
    for u in range(log_probs.shape[0]):
        scores = [(float(sum(log_probs[u, m, codes[i, m]] for m in range(codes.shape[1]))), i)
                  for i in range(len(codes)) if active[i] and not (exclude and i in exclude[u])]
        out.append([i for _, i in sorted(scores, key=lambda s: (-s[0], s[1]))[:k]])
    return out


def grid_log_probs(batch: int, seed: int) -> torch.Tensor:
    """Log-probabilities on a coarse grid (multiples of 1/8: sums are exact in float32, ties are common)."""
    gen = torch.Generator().manual_seed(seed)
    lp = -torch.randint(0, 24, (batch, len(SIZES), max(SIZES)), generator=gen).float() / 8
    for m, size in enumerate(SIZES):
        lp[:, m, size:] = float("-inf")
    return lp


def test_exact_ranking_equals_a_brute_force_loop_with_ties_removals_additions_and_exclusions():
    codes = random_codes(80, seed=4)
    codes[41] = codes[40]  # an exact tie: equal codes, equal scores (the lower index ranks first)
    catalog = DigitCatalog(codes=codes, level_sizes=SIZES)
    lp = grid_log_probs(5, seed=5)
    exclude = [[0, 1], [], [40], [79, 3, 2], []]
    for chunk in (7, 1000):  # chunked and whole-catalog passes give the same lists
        items, _ = rank_exact(lp, catalog, k=12, exclude=exclude, item_chunk=chunk)
        assert items.tolist() == brute_force(lp, codes, catalog.active, 12, exclude)
    catalog.remove_items([int(items[0, 0]), 17])
    extra = random_codes(5, seed=6)
    assert catalog.add_items(extra).tolist() == [80, 81, 82, 83, 84]
    all_codes = np.concatenate([codes, extra])
    items, scores = rank_exact(lp, catalog, k=12, exclude=exclude, item_chunk=9)
    assert items.tolist() == brute_force(lp, all_codes, catalog.active, 12, exclude)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    small = DigitCatalog(codes=codes[:3], level_sizes=SIZES)
    items, scores = rank_exact(lp, small, k=5, exclude=[[0]] * 5)  # fewer items than k: -1 / -inf
    assert (items[:, 2:] == -1).all() and torch.isinf(scores[:, 2:]).all()


@pytest.mark.parametrize("backend", ["matmul", "faiss"])
def test_fast_backends_equal_the_torch_gather_sum_on_random_weights(backend):
    """matmul (``h . u_i - log_norm`` over composed item vectors) and faiss IndexPQ give the reference's lists
    and log-probabilities, before and after removing and adding items."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    model = tiny_parallel(300, seed=7)
    histories = [np.random.default_rng(u).integers(0, 300, 1 + u % 5).tolist() for u in range(40)]
    reference, fast = ExactRanker(model, backend="torch"), ExactRanker(model, backend=backend)
    a_items, a_scores = reference.topk(histories, k=15, exclude_history=True, batch_size=16)
    b_items, b_scores = fast.topk(histories, k=15, exclude_history=True, batch_size=16)
    assert torch.equal(a_items, b_items)
    torch.testing.assert_close(a_scores, b_scores, rtol=0, atol=1e-4)  # the same log-probabilities
    for ranker in (reference, fast):  # removals and additions reach both
        ranker.remove_items([int(a_items[0, 0])])
        ranker.add_items(random_codes(3, seed=8))
    assert torch.equal(reference.topk(histories, k=15)[0], fast.topk(histories, k=15)[0])


def test_auto_backend_and_cosine_heads():
    assert ExactRanker(tiny_parallel(seed=8), backend="auto").backend == "matmul"  # linear heads
    cosine = tiny_parallel(seed=8, head="cosine")
    with pytest.raises(ValueError, match="linear digit heads"):
        ExactRanker(cosine, backend="matmul")
    ranker = ExactRanker(cosine, backend="auto")
    assert ranker.backend in ("faiss", "torch")
    histories = [[1, 2], [3]]
    assert torch.equal(ranker.topk(histories, k=5)[0], ExactRanker(cosine, backend="torch").topk(histories, k=5)[0])


# -- end to end: sasrec -> collaborative OPQ codes -> parallel generator -> API and evaluation ----------------
PARALLEL_ARGS = ["--config", "generator/parallel", "--d-model", "16", "--num-layers", "1", "--num-heads", "2",
                 "--d-kv", "8", "--d-ff", "32", "--max-steps", "6", "--warmup-steps", "2", "--batch-size", "16",
                 "--eval-every", "3", "--valid-max-users", "16", "--save-every", "0", "--max-items", "10",
                 "--max-minutes", "0"]


@pytest.fixture(scope="module")
def parallel_run(trained_run, tmp_path_factory):
    """The 30-user run re-tokenized with collaborative OPQ codes and a tiny parallel generator, via the CLI."""
    import shutil

    from sidrec.cli import main as cli_main

    run = tmp_path_factory.mktemp("parallel") / "run"
    for part in ("dataset", "cache"):
        shutil.copytree(trained_run / part, run / part)
    shutil.copy(trained_run / "catalog.jsonl", run / "catalog.jsonl")
    assert cli_main(["sasrec", "--run", str(run), "--epochs", "1", "--hidden-size", "16"]) == 0
    assert cli_main(["tokenize", "--run", str(run), "--config", "tokenizer/opq", "--num-levels", "8",
                     "--opq-pca-dim", "32", "--codebook-size", "16", "--kmeans-niter", "5", "--opq-niter", "3",
                     "--cf-from", "baselines/sasrec"]) == 0
    assert cli_main(["train", "--run", str(run), *PARALLEL_ARGS]) == 0
    return run


def test_parallel_run_records_its_codes_source_settings_and_validations(parallel_run):
    import json

    from sidrec.decoding import DecodingSettings

    stats = json.loads((parallel_run / "tokenizer" / "stats.json").read_text())
    assert stats["cf_source"]["from"] == "baselines/sasrec" and stats["collaborative"]["known_items"] > 0
    log = json.loads((parallel_run / "generator" / "training.json").read_text())
    assert log["steps"] == 6 and [h["step"] for h in log["history"]] == [3, 6]
    assert all(0 <= h["ndcg@10"] <= h["recall@10"] <= 1 for h in log["history"])
    assert DecodingSettings.load(parallel_run / "generator").prior_weight == 0.0
    # the preset's training fields reach the model's config.json (input_dropout: the preset's 0.3)
    config = json.loads((parallel_run / "generator" / "config.json").read_text())
    assert config["input_dropout"] == 0.3 and config["id_dropout"] == 0.3


def test_parallel_recommender_ranks_exactly_adds_items_and_round_trips(parallel_run, tmp_path):
    import sidrec

    rec = sidrec.Recommender.from_pretrained(parallel_run)
    assert rec.model.family == "parallel" and rec.ranker.backend == "matmul"
    history = rec.tokenizer.item_ids[:3]
    top = rec.recommend(history, k=5)
    assert len(top) == 5 and not set(history) & {r.item_id for r in top}
    assert [r.score for r in top] == sorted((r.score for r in top), reverse=True) and top[0].score < 0  # log-probs
    rec.add_items([{"item_id": "new-1", "title": "Rose Lip Balm", "brand": "Acme",
                    "categories": [["Beauty", "Skin Care", "Lips"]]}])
    assert rec.model.num_items == rec.tokenizer.num_items  # the generator's item table grew with the catalog
    others = [i for i in rec.tokenizer.item_ids if i != "new-1"]
    assert [r.item_id for r in rec.recommend(others, k=1)] == ["new-1"]  # scored like any other item
    assert rec.recommend(["new-1"], k=3)  # and it can be a history item at once
    rec.remove_items([top[0].item_id])
    assert top[0].item_id not in {r.item_id for r in rec.recommend(history, k=5)}
    rec.save_pretrained(tmp_path / "release")
    again = sidrec.Recommender.from_pretrained(tmp_path / "release")
    assert again.recommend(history, k=5) == rec.recommend(history, k=5)


def test_evaluate_ranks_the_parallel_generator_exactly(parallel_run, tmp_path):
    import json

    from sidrec.eval.evaluate import main as evaluate_main

    assert evaluate_main(["--run", str(parallel_run), "--split", "test", "--baselines", "popularity",
                          "--bootstrap", "0", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["generator"]["family"] == "parallel" and result["config"]["beam_size"] is None
    assert result["metrics"]["invalid_rate"] == 0 and result["metrics"]["empty_rate"] == 0


# -- fusion with SASRec ---------------------------------------------------------------------------------------
def test_fused_scores_equal_a_hand_computation():
    from sidrec.decoding.fusion import FusionSettings, fuse_scores

    gen = torch.tensor([[-1.0, -2.0, -3.0, float("-inf")], [0.0, -1.0, -1.0, -2.0]])
    sas = torch.tensor([[3.0, 1.0, 2.0, 0.0], [1.0, 2.0, float("-inf"), 0.0]])  # user 2: item 2 new to SASRec
    fused = fuse_scores(gen, sas, FusionSettings(weight=0.25, norm="zscore"))

    def z(row):
        finite = row[torch.isfinite(row)]
        return (row - finite.mean()) / finite.std(unbiased=False)

    g0, s0, g1, s1 = z(gen[0]), z(sas[0]), z(gen[1]), z(sas[1])
    torch.testing.assert_close(fused[0, :3], 0.75 * g0[:3] + 0.25 * s0[:3])
    assert fused[0, 3] == float("-inf")  # the generator does not offer it: never recommended
    s1[2] = g1[2]  # an item SASRec cannot score takes the generator's normalized score
    torch.testing.assert_close(fused[1], 0.75 * g1 + 0.25 * s1)
    soft = fuse_scores(gen, sas, FusionSettings(weight=1.0, norm="logsoftmax"))
    torch.testing.assert_close(soft[0, :3], torch.log_softmax(sas[0], 0)[:3])
    assert soft[0, 3] == float("-inf")
    # the text kNN's score as a third signal: z-scored whatever the norm, defined for every item
    text = torch.tensor([[0.5, 0.1, 0.3, 0.2], [0.0, 0.4, 0.8, 0.1]])
    with_text = fuse_scores(gen, sas, FusionSettings(weight=0.25, norm="zscore", text_weight=0.5), text=text)
    torch.testing.assert_close(with_text[0, :3], 0.75 * g0[:3] + 0.25 * s0[:3] + 0.5 * z(text[0])[:3])
    assert with_text[0, 3] == float("-inf")
    torch.testing.assert_close(with_text[1], 0.75 * g1 + 0.25 * s1 + 0.5 * z(text[1]))
    soft_text = fuse_scores(gen, sas, FusionSettings(weight=1.0, norm="logsoftmax", text_weight=0.5), text=text)
    torch.testing.assert_close(soft_text[0, :3], torch.log_softmax(sas[0], 0)[:3] + 0.5 * z(text[0])[:3])
    with pytest.raises(ValueError, match="text"):
        fuse_scores(gen, sas, FusionSettings(text_weight=0.5))
    # an item the text does not score (a query item of the kNN: -inf) adds 0; the z-score is over the others
    dropped = text.clone()
    dropped[1, 1] = float("-inf")
    part = fuse_scores(gen, sas, FusionSettings(weight=0.25, norm="zscore", text_weight=0.5), text=dropped)
    zt = z(dropped[1])
    zt[1] = 0.0
    torch.testing.assert_close(part[1], 0.75 * g1 + 0.25 * s1 + 0.5 * zt)


def test_text_scores_drop_the_query_items_as_the_knn_baseline_does():
    from sidrec.decoding.text_profile import text_scores

    text = torch.randn(30, 6)
    histories = [list(range(25)), [3, 7]]
    full = text_scores(text, histories)
    dropped = text_scores(text, histories, drop_query=True)
    for row, history in enumerate(histories):
        query = set(history[-20:])
        assert all(torch.isinf(dropped[row, i]) for i in query)
        others = [i for i in range(30) if i not in query]
        torch.testing.assert_close(dropped[row, others], full[row, others])
    assert torch.isfinite(dropped[0, :5]).all()  # older than the 20-item window: still scored
    with pytest.raises(ValueError, match="whole-catalog"):
        text_scores(text, histories, drop_query=True, items=torch.tensor([1, 2]))


def test_fusion_is_chosen_on_valid_and_scored_as_its_own_row(parallel_run, tmp_path, monkeypatch):
    import json

    from sidrec.data import PreparedDataset
    from sidrec.decoding.fusion import FusionSettings
    from sidrec.eval.evaluate import evaluate_run
    from sidrec.eval.fusion import fused_name

    real = PreparedDataset.eval_split
    reads = []

    def spy(self, split):
        reads.append(split)
        return real(self, split)

    monkeypatch.setattr(PreparedDataset, "eval_split", spy)
    result = evaluate_run(parallel_run, split="test", baselines=["sasrec"], n_boot=0, fuse="sasrec",
                          out=tmp_path / "eval")
    assert reads[0] == "test" and reads[1:] == ["valid"]  # the fusion is chosen on VALID only
    chosen = FusionSettings.load(parallel_run)
    name = result["fusion"]["name"]
    assert name == fused_name(chosen) and name.endswith(" (fused)")  # on tiny data VALID may pick SASRec alone
    fused = result["generator_variants"][name]
    log = json.loads((parallel_run / "generator" / "training.json").read_text())
    sas_log = json.loads((parallel_run / "baselines" / "sasrec" / "train_log.json").read_text())
    minutes = {"generator": round(log["train_seconds"] / 60, 2), "sasrec": round(sas_log["train_seconds"] / 60, 2)}
    for row, block in result["generator_variants"].items():  # a fusion's training: its trained models' added up
        if row.endswith("(fused)"):
            parts = [p for p in row[: -len(" (fused)")].split(" + ") if p != "text"]
            assert block["training"]["minutes"] == pytest.approx(sum(minutes[p] for p in parts), abs=0.011)
    assert fused["metrics"]["invalid_rate"] == 0
    if chosen.text_weight:  # what each part adds: the same VALID grid's best without the generator / SASRec
        assert {"sasrec + text (fused)", "generator + text (fused)"} & set(result["generator_variants"])
    assert (chosen.weight, chosen.norm) == (result["fusion"]["weight"], result["fusion"]["norm"])
    grid = json.loads((parallel_run / "fusion.json").read_text())["grid"]
    reads_text = sidrec_model_reads_text(parallel_run)
    text_weights = {0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0} if reads_text else {0.0}
    assert len(grid) == 2 * 11 * 5 * len(text_weights)  # norms x SASRec weights x popularity x text weights
    assert {r["text_weight"] for r in grid} == text_weights
    sasrec_tail = next(r["tail_recall@10"] for r in grid if r["weight"] == 1.0 and r["popularity"] == 0.0
                       and r["text_weight"] == 0.0)
    row = next(r for r in grid if (r["weight"], r["norm"], r["popularity"], r["text_weight"]) == (
        chosen.weight, chosen.norm, chosen.popularity, chosen.text_weight))
    assert row["tail_recall@10"] >= sasrec_tail
    assert row["ndcg@10"] == max(r["ndcg@10"] for r in grid if r["tail_recall@10"] >= sasrec_tail)


def sidrec_model_reads_text(run) -> bool:
    from sidrec.decoding.text_profile import model_unit_text
    from sidrec.utils.run_folder import RunFolder

    model = RunFolder(run).generator().model
    return model_unit_text(model) is not None


def test_the_fusion_rule_keeps_sasrecs_long_tail_then_maximizes_ndcg():
    from sidrec.eval.fusion import _choose

    def row(w, p, ndcg, tail):
        return {"norm": "zscore", "weight": w, "popularity": p, "ndcg@10": ndcg, "tail_recall@10": tail}

    grid = [row(1.0, 0.0, 0.050, 0.040), row(0.6, 0.0, 0.056, 0.030), row(0.6, 0.1, 0.054, 0.041),
            row(0.5, 0.1, 0.054, 0.045), row(0.0, 0.0, 0.045, 0.020)]
    chosen = _choose(grid)  # 0.056 loses the tail; of the two 0.054 rows the smaller SASRec weight
    assert (chosen.weight, chosen.popularity) == (0.5, 0.1)
    text = [dict(r, text_weight=0.0) for r in grid] + [
        dict(row(0.5, 0.1, 0.054, 0.050), text_weight=0.2),  # a tie in NDCG: the smaller text weight wins
        dict(row(0.7, 0.0, 0.058, 0.039), text_weight=0.3),  # the best NDCG, but below SASRec's tail
        dict(row(0.7, 0.0, 0.057, 0.044), text_weight=0.1)]
    chosen = _choose(text)
    assert (chosen.weight, chosen.popularity, chosen.text_weight) == (0.7, 0.0, 0.1)
    text[-1]["ndcg@10"] = 0.054
    assert _choose(text).text_weight == 0.0
    only_sasrec = _choose(text, weight=1.0)  # an ablation: the best among SASRec's own rows
    assert only_sasrec.weight == 1.0


def test_fused_rows_are_named_by_the_signals_they_mix():
    from sidrec.decoding.fusion import FusionSettings
    from sidrec.eval.fusion import fused_name

    assert fused_name(FusionSettings(weight=0.7)) == "generator + sasrec (fused)"
    assert fused_name(FusionSettings(weight=0.7, text_weight=0.3)) == "generator + sasrec + text (fused)"
    assert fused_name(FusionSettings(weight=1.0, text_weight=0.3)) == "sasrec + text (fused)"
    assert fused_name(FusionSettings(weight=0.0, text_weight=0.3)) == "generator + text (fused)"


def test_popularity_correction_subtracts_log_counts_and_spares_new_items():
    from sidrec.decoding.fusion import FusionSettings, fuse_scores, log_popularity

    gen, sas = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[4.0, 3.0, 2.0, float("-inf")]])
    plain = fuse_scores(gen, sas, FusionSettings(weight=0.5, norm="zscore"))
    log_pop = log_popularity([9, 0, 99])  # item 3 is new: past the counts, count 0
    corrected = fuse_scores(gen, sas, FusionSettings(weight=0.5, norm="zscore", popularity=0.2), log_pop)
    torch.testing.assert_close(corrected[0], plain[0] - 0.2 * torch.tensor([math.log(10), 0.0, math.log(100), 0.0]))
    with pytest.raises(ValueError, match="log_pop"):
        fuse_scores(gen, sas, FusionSettings(popularity=0.2))


def test_fused_recommender_from_a_run_and_as_a_release(parallel_run, tmp_path):
    import sidrec
    from sidrec.eval.evaluate import evaluate_run

    if not (parallel_run / "fusion.json").is_file():
        evaluate_run(parallel_run, split="valid", baselines=[], n_boot=0, fuse="sasrec", out=tmp_path / "eval")
    alone = sidrec.Recommender.from_pretrained(parallel_run)  # a run folder is the generator alone by default
    fused = sidrec.Recommender.from_pretrained(parallel_run, fuse=True)
    assert alone.fusion is None and fused.fusion is not None
    history = fused.tokenizer.item_ids[:3]
    top = fused.recommend(history, k=5)
    assert len(top) == 5 and not set(history) & {r.item_id for r in top}
    fused.add_items([{"item_id": "new-1", "title": "Rose Lip Balm"}])  # SASRec never saw it: the generator ranks it
    others = [i for i in fused.tokenizer.item_ids if i != "new-1"]
    assert [r.item_id for r in fused.recommend(others, k=1)] == ["new-1"]
    # TIGER's epsilon in the fused list: the reserved slots go to the new items closest by text
    from sidrec.decoding.text_profile import closest_by_text, model_unit_text

    fused.add_items([{"item_id": "new-2", "title": "Cherry Lip Gloss"}, {"item_id": "new-3", "title": "Garden Hose"}])
    new = [fused.item_index(i) for i in ("new-1", "new-2", "new-3")]
    idx = [fused.item_index(i) for i in history]
    want = closest_by_text(model_unit_text(fused.model), [idx], torch.tensor(new), k=3)[0].tolist()
    got = [fused.item_index(r.item_id) for r in fused.recommend(history, k=5, cold_share=0.4)]
    plain = [fused.item_index(r.item_id) for r in fused.recommend(history, k=5)]
    reserved = [i for i in got if i in new and i not in plain]
    assert len([i for i in got if i in new]) >= 2 and reserved == [i for i in want if i not in plain][: len(reserved)]
    fused.remove_items(["new-2", "new-3"])
    fused.save_pretrained(tmp_path / "release")
    assert (tmp_path / "release" / "sasrec" / "model.safetensors").is_file()
    again = sidrec.Recommender.from_pretrained(tmp_path / "release")  # a fused release loads fused
    assert again.fusion is not None and again.recommend(history, k=5) == fused.recommend(history, k=5)
    plain = sidrec.Recommender.from_pretrained(tmp_path / "release", fuse=False)
    assert plain.fusion is None


def test_exact_ranker_reserves_cold_slots_from_the_best_cold_items():
    import math

    from sidrec.decoding import DecodingSettings, make_ranker

    model = tiny_parallel(80, seed=9)
    ranker = make_ranker(model, codes=model.item_codes, level_sizes=SIZES, settings=DecodingSettings())
    cold = np.zeros(80, dtype=bool)
    cold[60:] = True  # e.g. items added after the tokenizer's fit
    histories = [[1, 2], [3], [10, 11, 12]]
    plain, _ = ranker.recommend(histories, k=10)
    reserved, _ = ranker.recommend(histories, k=10, cold=cold, cold_share=0.2)
    best_cold, _ = ranker.topk(histories, k=10, only=cold)
    for u in range(len(histories)):
        got = reserved[u].tolist()
        assert len(set(got)) == 10 and cold[got].sum() >= min(math.ceil(0.2 * 10), cold.sum())
        assert set(got) <= set(plain[u].tolist()) | set(best_cold[u].tolist())  # only ranked candidates
    with pytest.raises(ValueError, match="cold_share needs the cold items"):
        ranker.recommend(histories, k=10, cold_share=0.2)


def test_exact_ranker_fills_cold_slots_by_text_with_exact_scores():
    """A model that reads text fills the reserved slots with the cold items whose text is closest to the user's
    recent items (the beam families' rule), never a history item, each with its exact score."""
    from sidrec.decoding import DecodingSettings, make_ranker
    from sidrec.decoding.text_profile import text_scores

    model = tiny_parallel(80, seed=4, text_dim=8)
    ranker = make_ranker(model, codes=model.item_codes, level_sizes=SIZES, settings=DecodingSettings())
    cold = np.zeros(80, dtype=bool)
    cold[50:] = True
    histories = [[1, 2], [55, 3], [10, 11, 12]]
    plain, _ = ranker.recommend(histories, k=10, exclude_history=True)
    got, scores = ranker.recommend(histories, k=10, cold=cold, cold_share=0.3, exclude_history=True)
    sims = text_scores(model.embedder.unit_text(), histories, normalized=True)  # (U, N)
    full = ranker.full_scores(histories)
    for u, history in enumerate(histories):
        row = got[u].tolist()
        assert not set(row) & set(history) and len(set(row)) == 10
        kept_cold = [i for i in plain[u].tolist()[:10] if cold[i]]
        new_cold = [i for i in row if cold[i] and i not in kept_cold]
        ranked = [i for i in torch.argsort(sims[u], descending=True).tolist() if cold[i] and i not in history
                  and i not in kept_cold]
        assert len(kept_cold) + len(new_cold) >= 3
        assert new_cold == ranked[: len(new_cold)]  # the text-closest cold items, in text order
        assert torch.allclose(scores[u], full[u, got[u]])  # every score is the item's exact score


def test_a_fused_recommender_with_text_ranks_by_the_hand_fused_scores(parallel_run):
    """A fusion with a text weight ranks by generator + SASRec + the text kNN's z-scored score, as computed by
    hand; a generator without item text refuses such a fusion."""
    import sidrec
    from sidrec.decoding.fusion import FusionSettings, fuse_scores, log_popularity
    from sidrec.decoding.text_profile import model_unit_text, text_scores
    from sidrec.utils.run_folder import RunFolder

    base = sidrec.Recommender.from_pretrained(parallel_run, fuse=False)
    if model_unit_text(base.model) is None:
        pytest.skip("the test run's generator reads no text")
    folder = RunFolder(parallel_run)
    sasrec = folder.sasrec(dataset_fingerprint=folder.dataset().fingerprint()).eval()
    settings = FusionSettings(weight=0.4, norm="zscore", popularity=0.1, text_weight=0.3)
    rec = sidrec.Recommender(tokenizer=base.tokenizer, model=base.model, titles=base.titles, settings=base.settings,
                             fusion=(sasrec, settings))
    histories = [[0, 1, 2], [5], [7, 3]]
    items, scores = rec._fused(histories, k=5, exclude_seen=True)
    gen = rec.ranker.full_scores(histories, dense_weight=rec.settings.dense_weight)
    sas = sasrec.score_histories(histories).float()
    text = text_scores(model_unit_text(base.model), histories, normalized=True, drop_query=True)
    hand = fuse_scores(gen, sas, settings, log_popularity(base.model.item_counts), text)
    for u, history in enumerate(histories):
        hand[u, history] = float("-inf")
    torch.testing.assert_close(scores, hand.topk(5, dim=1).values)
    assert items.tolist() == hand.topk(5, dim=1).indices.tolist()
    assert not torch.equal(hand, fuse_scores(gen, sas, FusionSettings(weight=0.4, popularity=0.1),
                                             log_popularity(base.model.item_counts)))  # the text part counts
    base.model.embedder.text_proj, text_table = None, base.model.embedder.text
    base.model.embedder.text = None  # a generator that reads no text
    try:
        with pytest.raises(ValueError, match="reads no item text"):
            sidrec.Recommender(tokenizer=base.tokenizer, model=base.model, titles=base.titles, fusion=(sasrec, settings))
    finally:
        base.model.embedder.text = text_table
