"""The public API and CLI on a tiny real run: recommend, exclude_seen, unknown ids, add/remove items, reload."""

from __future__ import annotations

import shutil

import pytest

import sidrec
from sidrec.cli import main as cli_main
from sidrec.data import PreparedDataset


@pytest.fixture()
def rec(trained_run):
    return sidrec.Recommender.from_pretrained(trained_run)


def test_recommend_one_and_many(rec, trained_run):
    dataset = PreparedDataset.load(trained_run)
    history = [dataset.item_ids[i] for i in dataset.sequences[0][:3]]
    one = rec.recommend(history, k=5)
    assert len(one) == 5 and all(isinstance(r, sidrec.api.Recommendation) for r in one)
    assert len({r.item_id for r in one}) == 5  # distinct items
    assert not set(history) & {r.item_id for r in one}  # exclude_seen=True by default
    assert [r.score for r in one] == sorted((r.score for r in one), reverse=True)
    titles = dict(zip(dataset.item_ids, dataset.item_titles, strict=True))
    assert all(r.title == titles[r.item_id] for r in one)
    many = rec.recommend([history, history[:1]], k=3)
    assert [len(x) for x in many] == [3, 3]
    assert [r.item_id for r in many[0]] == [r.item_id for r in one[:3]]  # batching does not change results


def test_exclude_seen_false_can_return_history(rec, trained_run):
    dataset = PreparedDataset.load(trained_run)
    everything = list(dataset.item_ids)
    # with every item in the history, excluding the seen ones leaves nothing to recommend
    assert rec.recommend(everything, k=3) == []
    assert len(rec.recommend(everything, k=3, exclude_seen=False)) == 3


def test_unknown_ids_and_empty_histories(rec, caplog):
    known = rec.tokenizer.item_ids[0]
    with pytest.raises(ValueError, match="unknown item id"):
        rec.recommend([known, "no-such-item"])
    assert len(rec.recommend([known, "no-such-item"], k=2, on_unknown="skip")) == 2
    assert "skipped 1 unknown item id" in caplog.text
    with pytest.raises(ValueError, match="empty"):
        rec.recommend([])
    with pytest.raises(ValueError, match="on_unknown"):
        rec.recommend([known], on_unknown="ignore")


def test_add_and_remove_items(rec):
    n = rec.num_items
    top = rec.recommend([rec.tokenizer.item_ids[0]], k=3)
    removed = top[0].item_id
    assert rec.remove_items([removed]) == 1 and rec.num_items == n - 1
    for _ in range(3):
        assert removed not in {r.item_id for r in rec.recommend([rec.tokenizer.item_ids[0]], k=10)}
    codes_before = rec.tokenizer.codes.copy()
    added = rec.add_items([{"item_id": "new-1", "title": "Rose Lip Balm", "brand": "Acme",
                            "categories": [["Beauty", "Skin Care", "Lips"]]}])
    assert added == ["new-1"] and rec.num_items == n
    assert (rec.tokenizer.codes[: len(codes_before)] == codes_before).all()  # existing IDs unchanged
    # the new item is reachable: with every other item excluded, it is the only possible answer
    others = [i for i in rec.tokenizer.item_ids if i not in ("new-1", removed)]
    got = rec.recommend(others, k=1)
    assert [(r.item_id, r.title) for r in got] == [("new-1", "Rose Lip Balm")]
    with pytest.raises(ValueError, match="unknown item id"):
        rec.remove_items(["nope"])


def test_save_reload_without_training_data(rec, tmp_path):
    rec.remove_items([rec.tokenizer.item_ids[1]])
    rec.save_pretrained(tmp_path / "release")
    again = sidrec.Recommender.from_pretrained(tmp_path / "release")  # no dataset/ in this folder
    history = [rec.tokenizer.item_ids[0], rec.tokenizer.item_ids[2]]
    assert again.recommend(history, k=5) == rec.recommend(history, k=5)
    assert again.num_items == rec.num_items


def test_missing_parts_are_explained(tmp_path, trained_run):
    shutil.copytree(trained_run / "tokenizer", tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="generator is missing"):
        sidrec.Recommender.from_pretrained(tmp_path)


def test_cli_recommend(trained_run, capsys):
    rec = sidrec.Recommender.from_pretrained(trained_run)
    ids = rec.tokenizer.item_ids[:2]
    assert cli_main(["recommend", "--run", str(trained_run), "--history", ",".join(ids), "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "item_id", "score"] and len(lines) == 5
    assert cli_main(["recommend", "--run", str(trained_run), "--history", "nope"]) == 1  # a clear error, exit 1


def test_item_family_recommender_serves_hybrid_scores_and_new_items(item_run, tmp_path):
    rec = sidrec.Recommender.from_pretrained(item_run)
    assert rec.model.family == "item" and rec.model.reads_text
    history = rec.tokenizer.item_ids[:3]
    top = rec.recommend(history, k=5)
    assert len(top) == 5 and not set(history) & {r.item_id for r in top}
    assert [r.score for r in top] == sorted((r.score for r in top), reverse=True)
    n_items = rec.model.num_items
    rec.add_items([{"item_id": "new-1", "title": "Rose Lip Balm", "brand": "Acme",
                    "categories": [["Beauty", "Skin Care", "Lips"]]}])
    # the generator's own item table grew too: the new item has the tokenizer's codes, its text, no ID
    assert rec.model.num_items == n_items + 1 and int(rec.model.embedder.id_rows[-1]) == 0
    assert (rec.model.item_codes[-1] == rec.tokenizer.codes[-1]).all()
    assert rec.model.embedder.text[-1].abs().sum() > 0
    others = [i for i in rec.tokenizer.item_ids if i != "new-1"]
    assert [r.item_id for r in rec.recommend(others, k=1)] == ["new-1"]  # reachable by the beam search
    rec.save_pretrained(tmp_path / "release")
    again = sidrec.Recommender.from_pretrained(tmp_path / "release")
    assert again.recommend(history, k=5) == rec.recommend(history, k=5)


def test_recommender_keeps_one_popularity_prior_and_rebuilds_it_when_the_catalog_changes(item_run):
    from sidrec.decoding import recommend_topk

    rec = sidrec.Recommender.from_pretrained(item_run)
    rec.settings = rec.settings.replace(prior_weight=0.5)
    history = rec.tokenizer.item_ids[:3]
    top = rec.recommend(history, k=5)
    prior = rec.ranker.prior(rec.settings)
    assert prior is not None and rec.ranker.prior(rec.settings) is prior  # built once, reused
    items, _ = recommend_topk(rec.model, rec.ranker.trie, [[rec.tokenizer.index_of(i) for i in history]], k=5,
                              settings=rec.settings, item_codes=rec.tokenizer.codes, exclude_history=True)
    assert [r.item_id for r in top] == [rec.tokenizer.item_ids[i] for i in items[0].tolist()]  # = a fresh prior
    rec.remove_items([top[0].item_id])
    assert rec.ranker.prior(rec.settings) is not prior
    assert top[0].item_id not in {r.item_id for r in rec.recommend(history, k=5)}
    rec.settings = rec.settings.replace(prior_weight=0.0)
    assert rec.ranker.prior(rec.settings) is None


def test_evaluate_reports_the_hybrid_ablation(item_run, tmp_path):
    import json

    from sidrec.eval.evaluate import main as evaluate_main

    assert evaluate_main(["--run", str(item_run), "--split", "test", "--baselines", "popularity",
                          "--bootstrap", "0", "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["generator"]["family"] == "item"
    expected = {"generator (generation only)", "generator (dense only)"}
    settings = json.loads((item_run / "generator" / "decoding.json").read_text())
    if settings["prior_weight"]:
        expected.add("generator (no popularity correction)")  # the preset chose a corrected beam on VALID
    if settings["dense_candidates"] or settings["new_candidates"]:
        expected.add("generator (beam candidates only)")  # the preset joins items to the beam's candidates
    assert set(result["generator_variants"]) == expected
    for block in [result, *result["generator_variants"].values()]:
        assert 0 <= block["metrics"]["recall@10"] <= 1 and block["metrics"]["invalid_rate"] == 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "generator (dense only)" in report and "generator (generation only)" in report
    log = json.loads((item_run / "generator" / "training.json").read_text())
    for block in [result, *result["generator_variants"].values()]:  # one checkpoint: one training record
        assert block["training"] == {"minutes": round(log["train_seconds"] / 60, 2), "steps": log["steps"],
                                     "best_step": log["best_step"]}
    assert f"{log['steps']:,} steps (best {log['best_step']:,})" in report


def test_a_dense_head_generator_is_fused_with_sasrec_over_the_whole_catalog(item_run, tmp_path):
    """The default family scores the whole catalog with its dense head: that is what is fused with SASRec."""
    import torch

    from sidrec.decoding.fusion import FusionSettings
    from sidrec.eval.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(item_run, run)
    assert cli_main(["sasrec", "--run", str(run), "--epochs", "1", "--hidden-size", "16"]) == 0
    rec = sidrec.Recommender.from_pretrained(run)
    histories = [[0, 1, 2], [5]]
    rec.remove_items([rec.tokenizer.item_ids[7]])
    full = rec.ranker.full_scores(histories)  # (B, N): the dense head over every item, -inf where removed
    model = rec.model
    ids, mask = model.history_inputs(histories)
    with torch.no_grad():
        expected = model.dense_logits(model.user_states(ids, mask))[:, : rec.tokenizer.num_items]
    torch.testing.assert_close(full[:, :7], expected[:, :7])
    assert torch.isinf(full[:, 7]).all()
    result = evaluate_run(run, split="test", baselines=["sasrec"], n_boot=0, fuse="sasrec", out=tmp_path / "eval")
    fused = result["generator_variants"][result["fusion"]["name"]]
    assert fused["metrics"]["invalid_rate"] == 0
    assert FusionSettings.load(run).norm == result["fusion"]["norm"]
    fused_rec = sidrec.Recommender.from_pretrained(run, fuse=True)
    history = fused_rec.tokenizer.item_ids[:3]
    top = fused_rec.recommend(history, k=5)
    assert len(top) == 5 and not set(history) & {r.item_id for r in top}
