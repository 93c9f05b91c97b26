"""Cold-start split (issue 12): held-out items never reach training, validation or the tokenizer fit; they
get IDs through assign(), the beam search reaches them, and the epsilon share changes only what it may."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from test_eval_e2e import _fake_embedding_cache

import sidrec
from sidrec.cli import main as cli_main
from sidrec.data import PreparedDataset, load_raw, prepare
from sidrec.data.prepare import PrepareConfig


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory, beauty_slice):
    """The 300-user Beauty slice prepared with 10% cold items, a tokenizer (random embeddings) and a tiny
    item-family generator trained on it."""
    run = tmp_path_factory.mktemp("cold") / "run"
    assert cli_main(["prepare", "--dataset", str(beauty_slice), "--out", str(run), "--cold-items", "0.1"]) == 0
    _fake_embedding_cache(run, PreparedDataset.load(run))
    assert cli_main(["tokenize", "--run", str(run), "--config", "tokenizer/rqkmeans", "--codebook-size", "16",
                     "--kmeans-niter", "5"]) == 0
    assert cli_main(["train", "--run", str(run), "--config", "generator/hybrid", "--d-model", "32",
                     "--num-layers", "1", "--num-decoder-layers", "1", "--num-heads", "2", "--d-kv", "16",
                     "--d-ff", "64", "--max-steps", "6", "--warmup-steps", "2", "--batch-size", "32",
                     "--eval-every", "3", "--valid-max-users", "40", "--save-every", "0", "--beam-size", "20",
                     "--text-input", "false"]) == 0
    return run


def test_cold_items_appear_only_as_test_targets(beauty_slice):
    raw = load_raw(str(beauty_slice))
    plain, _ = prepare(raw)
    ds, dropped = prepare(raw, PrepareConfig(cold_items=0.1))
    cold = ds.cold_items
    assert ds.num_cold_items == round(0.1 * plain.num_items) == cold.sum()
    assert cold[-ds.num_cold_items:].all() and not cold[: ds.num_items - ds.num_cold_items].any()  # numbered last
    assert not any(cold[i] for seq in ds.train_sequences() for i in seq)  # no training position
    valid, test = ds.eval_split("valid"), ds.eval_split("test")
    assert not cold[valid.targets].any()  # no validation target
    assert not any(cold[i] for h in test.histories for i in h)  # not even in the test histories
    stats = ds.stats()
    assert stats["cold_test_users"] == int(cold[test.targets].sum()) > 0
    assert "timestamps" in stats["cold_method"]
    # the newest by first interaction: every cold item was first seen no earlier than any warm one
    first = {}
    for item, time in zip(raw.items, raw.times.tolist(), strict=True):
        first[item] = min(first.get(item, time), time)
    warm_ids, cold_ids = ds.item_ids[: -ds.num_cold_items], ds.item_ids[-ds.num_cold_items:]
    assert min(first[i] for i in cold_ids) >= max(first[i] for i in warm_ids)  # (ties: same day)
    assert dropped["cold_interactions_removed"] > 0


def test_without_timestamps_the_cold_choice_is_seeded(tmp_path, beauty_slice):
    folder = tmp_path / "nots"
    folder.mkdir()
    lines = (beauty_slice / "interactions.csv").read_text().splitlines()
    header = lines[0].split(",")
    keep = [header.index("user_id"), header.index("item_id")]
    (folder / "interactions.csv").write_text(
        "\n".join(",".join(row.split(",")[c] for c in keep) for row in lines) + "\n")
    shutil.copy(beauty_slice / "items.jsonl", folder / "items.jsonl")
    raw = load_raw(str(folder))
    assert raw.times is None
    a, _ = prepare(raw, PrepareConfig(cold_items=0.1, cold_seed=1))
    b, _ = prepare(raw, PrepareConfig(cold_items=0.1, cold_seed=1))
    c, _ = prepare(raw, PrepareConfig(cold_items=0.1, cold_seed=2))
    assert "random" in a.cold_method
    cold = lambda d: set(d.item_ids[-d.num_cold_items:])  # noqa: E731
    assert cold(a) == cold(b) != cold(c)


def test_tokenizer_fits_on_warm_items_and_assigns_the_cold_ones(cold_run):
    from sidrec.tokenizer import SemanticIdTokenizer
    from sidrec.tokenizer.config import TokenizerConfig
    from sidrec.tokenizer.embeddings import embed_texts

    ds = PreparedDataset.load(cold_run)
    tok = SemanticIdTokenizer.from_pretrained(cold_run / "tokenizer")
    warm = ds.num_items - ds.num_cold_items
    assert tok.item_ids == ds.item_ids and tok.num_fitted_items == warm
    assert np.array_equal(tok.assigned_items(), ds.cold_items)
    # the quantizer saw the warm rows only: fitting on them alone gives the same warm codes
    emb = embed_texts(ds.item_texts, template=ds.text_template, cache_dir=cold_run / "cache", show_progress=False)
    config = TokenizerConfig(**{**tok.config.__dict__})
    again = SemanticIdTokenizer.fit(item_ids=ds.item_ids[:warm], embeddings=emb[:warm], config=config,
                                    text_template=ds.text_template)
    assert np.array_equal(again.codes, tok.codes[:warm])


def test_the_beam_reaches_cold_items_and_training_never_saw_them(cold_run):
    import json

    from sidrec.decoding import CatalogTrie, DecodingSettings, recommend_topk
    from sidrec.seqmodel import load_generator

    ds = PreparedDataset.load(cold_run)
    model = load_generator(cold_run / "generator")
    cold = ds.cold_items
    assert (model.embedder.id_rows[1:][cold] == 0).all()  # no ID embedding: never a training interaction
    log = json.loads((cold_run / "generator" / "training.json").read_text())
    assert all(h["users"] == 40 for h in log["history"])
    trie = CatalogTrie(codes=model.item_codes, level_sizes=model.vocab.level_sizes)
    warm_items = np.flatnonzero(~cold).tolist()
    # with every warm item excluded, only cold items can come out, and they do
    items, _ = recommend_topk(model, trie, [warm_items], k=min(5, int(cold.sum())),
                              settings=DecodingSettings.load(cold_run / "generator").replace(beam_size=20),
                              exclude_history=True)
    got = items[0][items[0] >= 0].numpy()
    assert len(got) == min(5, int(cold.sum())) and cold[got].all()


def test_cold_share_changes_at_most_its_slots_each_to_a_cold_item(cold_run):
    from sidrec.eval.generator import GeneratorScorer

    ds = PreparedDataset.load(cold_run)
    scorer = GeneratorScorer.from_run(cold_run, item_ids=ds.item_ids, user_ids=ds.user_ids,
                                      dataset_fingerprint=ds.fingerprint(), beam_size=40, batch_size=16)
    split = ds.eval_split("test").sample(60, seed=0)
    base = scorer.recommend(split.histories, 20)
    assert np.array_equal(scorer.variant(cold_share=0.0).recommend(split.histories, 20), base)
    cold = ds.cold_items
    for share in (0.1, 0.2):  # a share of the top 10 (what Recall@10 sees); the list goes on as ranked
        got = scorer.variant(cold_share=share).recommend(split.histories, 20)
        for row, before in zip(got, base, strict=True):
            changed = set(row[:10].tolist()) - set(before[:10].tolist())
            assert len(changed) <= math.ceil(share * 10) and all(cold[i] for i in changed)
            assert set(row.tolist()) - {-1} <= set(before.tolist()) | changed  # the rest: the plain ranking
            assert len(set(row[row >= 0].tolist())) == int((row >= 0).sum())  # each item once
        top, top_before = got[:, :10], base[:, :10]
        assert cold[top[top >= 0]].sum() > cold[top_before[top_before >= 0]].sum()  # reserved slots filled


def test_evaluate_reports_warm_and_cold_slices_and_the_share_sweep(cold_run, tmp_path):
    import json

    from sidrec.eval.evaluate import main as evaluate_main

    assert evaluate_main(["--run", str(cold_run), "--split", "test", "--baselines", "popularity,knn",
                          "--bootstrap", "0", "--cold-share", "0.1,0.2", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["dataset"]["cold_items"] > 0
    for block in [result, *result["generator_variants"].values(), *result["baselines"].values()]:
        parts = block["slices"]["target_cold"]
        assert set(parts) == {"warm", "cold"}
        assert parts["warm"]["users"] + parts["cold"]["users"] == result["num_users"]
    assert {"generator (cold share 0.1)", "generator (cold share 0.2)"} <= set(result["generator_variants"])
    # popularity never recommends an item without training interactions
    assert result["baselines"]["popularity"]["slices"]["target_cold"]["cold"]["recall@10"] == 0.0


def test_sasrec_never_trains_on_or_recommends_cold_items(cold_run, tmp_path):
    """An ID model has no embedding for an item born after training: SASRec on a cold-start split masks
    the held-out items out of its softmax, and its scorer never returns them."""
    from sidrec.eval.baselines.sasrec import SasrecScorer
    from sidrec.seqmodel.sasrec import SASRec
    from sidrec.train.sasrec import SasrecTrainConfig, train_sasrec

    ds = PreparedDataset.load(cold_run)
    cfg = SasrecTrainConfig(hidden_size=16, max_len=8, epochs=2, max_steps=4, batch_size=32, valid_max_users=30)
    log = train_sasrec(ds, cfg, tmp_path / "sasrec")
    assert 0 <= log["train_seconds"] <= log["elapsed_seconds"]  # validation time is not training time
    assert all(e["train_seconds"] <= e["elapsed_s"] for e in log["history"])
    model = SASRec.from_pretrained(tmp_path / "sasrec")
    warm = ds.num_items - ds.num_cold_items
    assert model.config.known_items == warm
    logits = model.item_logits(torch.randn(3, 16))  # (3, N)
    assert torch.isneginf(logits[:, warm:]).all() and torch.isfinite(logits[:, :warm]).all()
    test = ds.eval_split("test")
    top = SasrecScorer(model=model).recommend(test.histories, 20)  # (U, 20)
    assert (top < warm).all()


def test_a_fused_ranking_reserves_cold_slots_as_its_own_rows(cold_run, tmp_path):
    """On a cold-start split `--fuse sasrec --cold-share` adds the fused list with TIGER's epsilon (the new items
    closest by text take the reserved slots), for a generator that reads item text."""
    import json
    import shutil

    from sidrec.eval.evaluate import main as evaluate_main

    run = tmp_path / "run"
    shutil.copytree(cold_run, run)
    assert cli_main(["train", "--run", str(run), "--config", "generator/hybrid", "--d-model", "32",
                     "--num-layers", "1", "--num-decoder-layers", "1", "--num-heads", "2", "--d-kv", "16",
                     "--d-ff", "64", "--max-steps", "6", "--warmup-steps", "2", "--batch-size", "32",
                     "--eval-every", "3", "--valid-max-users", "40", "--save-every", "0", "--beam-size", "20",
                     "--overwrite"]) == 0  # text input on (the preset's)
    assert cli_main(["sasrec", "--run", str(run), "--epochs", "1", "--hidden-size", "16"]) == 0
    assert evaluate_main(["--run", str(run), "--split", "test", "--baselines", "sasrec", "--bootstrap", "0",
                          "--cold-share", "0.3", "--fuse", "sasrec", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    name = result["fusion"]["name"]
    share = f"{name[:-1]}, cold share 0.3)"
    rows = result["generator_variants"]
    assert share in rows and rows[share]["training"]["minutes"] == rows[name]["training"]["minutes"]
    cold = {n: rows[n]["slices"]["target_cold"]["cold"]["recall@10"] for n in (name, share)}
    assert cold[share] >= cold[name]  # the reserved slots only add cold items
    # the same through the front door: every list of 10 holds at least ceil(0.3 * 10) cold items
    fused = sidrec.Recommender.from_pretrained(run, fuse=True)
    cold_ids = {fused.tokenizer.item_ids[i] for i in np.flatnonzero(fused.tokenizer.assigned_items())}
    histories = [fused.tokenizer.item_ids[i : i + 3] for i in range(0, 60, 6)]
    for got, plain in zip(fused.recommend(histories, k=10, cold_share=0.3), fused.recommend(histories, k=10),
                          strict=True):
        ids = [r.item_id for r in got]
        assert len(set(ids) & cold_ids) >= 3 and len(ids) == 10
        assert set(ids) - cold_ids <= {r.item_id for r in plain}  # the warm items kept are the plain list's
