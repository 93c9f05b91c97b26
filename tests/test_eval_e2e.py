"""``sidrec evaluate`` end to end on a tiny run folder, and the generator scorer on a tiny model."""

from __future__ import annotations

import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sidrec.eval.evaluate import main


def _fake_embedding_cache(run, ds) -> None:
    """Random item embeddings stored under the key kNN will ask for (no model run in tests)."""
    from sidrec.tokenizer.embeddings import DEFAULT_EMBEDDING_MODEL, embedding_cache_key

    key = embedding_cache_key(ds.item_texts, model_name=DEFAULT_EMBEDDING_MODEL, template=ds.text_template)
    emb = np.random.default_rng(0).normal(size=(ds.num_items, 8)).astype(np.float32)
    (run / "cache").mkdir(exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, emb, allow_pickle=False)
    (run / "cache" / f"emb-{key[:24]}.npy").write_bytes(buf.getvalue())


@pytest.fixture()
def eval_run(tiny_run, tmp_path):
    from sidrec.data import PreparedDataset
    from sidrec.train.sasrec import main as train_main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _fake_embedding_cache(run, PreparedDataset.load(run))
    train_main(["--run", str(run), "--epochs", "1", "--max-steps", "2", "--hidden-size", "16"])
    return run


def test_evaluate_writes_three_files(eval_run):
    from sidrec.data import PreparedDataset

    assert main(["--run", str(eval_run), "--split", "test", "--bootstrap", "50", "--max-users", "120"]) == 0
    out = eval_run / "eval"
    assert {"metrics.json", "report.md", "recall_at_k.png"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    ds = PreparedDataset.load(eval_run)
    assert m["dataset"]["fingerprint"] == ds.fingerprint()
    assert m["num_users"] == 120 and m["split"] == "test"
    assert m["metrics"] == {} and "missing" in m["generator_status"]
    assert set(m["baselines"]) == {"popularity", "knn", "sasrec"}
    for block in m["baselines"].values():
        met = block["metrics"]
        assert met["invalid_rate"] == 0.0
        assert 0.0 <= met["recall@1"] <= met["recall@5"] <= met["recall@10"] <= met["recall@20"] <= 1.0
        lo, hi = block["ci"]["recall@10"]
        assert lo <= met["recall@10"] <= hi
        assert sum(b["users"] for b in block["slices"]["history_length"].values()) == 120
    assert m["baselines"]["popularity"]["metrics"]["coverage"] == pytest.approx(10 / ds.num_items)
    report = (out / "report.md").read_text()
    assert "TIGER paper (beauty)" in report and "| sasrec |" in report
    # each row says how its model was trained, from the model's own log; the report is dated
    log = json.loads((eval_run / "baselines" / "sasrec" / "train_log.json").read_text())
    assert m["baselines"]["sasrec"]["training"] == {"minutes": round(log["train_seconds"] / 60, 2), "epochs": 1,
                                                    "best_epoch": 1}
    assert m["baselines"]["knn"]["training"] == {"minutes": 0.0}
    assert f"| {m['baselines']['sasrec']['training']['minutes']:.1f} min, 1 epochs (best 1) |" in report
    assert "| none |" in report and "200k steps (GPU)" in report
    assert f"- evaluated {m['date']} on cpu" in report and m["date"].endswith("UTC")
    # same seed, same numbers
    first = m
    main(["--run", str(eval_run), "--split", "test", "--bootstrap", "50", "--max-users", "120",
          "--baselines", "popularity", "--overwrite"])
    again = json.loads((out / "metrics.json").read_text())
    assert again["baselines"]["popularity"]["ci"] == first["baselines"]["popularity"]["ci"]


def test_evaluate_requires_trained_sasrec_when_asked(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(ValueError, match="no trained SASRec"):
        main(["--run", str(run), "--baselines", "sasrec", "--bootstrap", "0"])
    with pytest.raises(ValueError, match="unknown baseline"):
        main(["--run", str(run), "--baselines", "bpr", "--bootstrap", "0"])


def test_generator_scorer_on_tiny_model():
    from sidrec.eval.generator import GeneratorScorer
    from sidrec.seqmodel.model import SemanticIdGenerator, build_t5_config
    from sidrec.seqmodel.vocab import SemanticIdVocab

    sizes = [4, 4, 3]
    n = 40
    codes = np.stack([np.arange(n) // 12, (np.arange(n) // 3) % 4, np.arange(n) % 3], axis=1)  # unique rows
    torch.manual_seed(0)
    vocab = SemanticIdVocab(level_sizes=sizes, num_user_buckets=0)
    model = SemanticIdGenerator(build_t5_config(vocab=vocab, d_model=16, num_layers=1, num_decoder_layers=1,
                                                num_heads=2, d_kv=8, d_ff=32, dropout_rate=0.0))
    table = SimpleNamespace(codes=codes, level_sizes=sizes, assigned_items=lambda: np.zeros(n, dtype=bool))
    scorer = GeneratorScorer(model=model, tokenizer=table, beam_size=20, batch_size=2)
    histories = [[0, 5, 7], [3], [39, 38, 1, 2]]
    top = scorer.recommend(histories, 20)
    assert top.shape == (3, 20)
    assert ((top >= 0) & (top < n)).all()
    assert all(len(set(row.tolist())) == 20 for row in top)
    scorer.exclude_history = True
    top = scorer.recommend(histories, 20)
    for row, hist in zip(top, histories, strict=True):
        assert not set(row.tolist()) & set(hist)


def test_sample_users_is_seeded_and_ordered(tiny_run):
    from sidrec.data import PreparedDataset

    split = PreparedDataset.load(tiny_run).eval_split("test")
    a, b = split.sample(50, seed=1), split.sample(50, seed=1)
    assert a.user_index.tolist() == b.user_index.tolist()
    assert len(a) == 50 and (np.diff(a.user_index) > 0).all()
    assert a.user_index.tolist() != split.sample(50, seed=2).user_index.tolist()
    assert a.histories[0] == split.histories[a.user_index[0]]
    assert split.sample(None) is split


def test_max_users_below_one_is_a_usage_error(tiny_run):
    from sidrec.eval.evaluate import main

    with pytest.raises(SystemExit):
        main(["--run", str(tiny_run), "--max-users", "0", "--no-generator", "--baselines", "none"])


def test_evaluate_both_knn_baselines(tiny_run, tmp_path):
    from sidrec.data import PreparedDataset
    from sidrec.eval.baselines.knn import KNN_BASELINES

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _fake_embedding_cache(run, PreparedDataset.load(run))
    assert main(["--run", str(run), "--baselines", "knn,knn-last", "--bootstrap", "0", "--no-generator"]) == 0
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert list(m["baselines"]) == ["knn", "knn-last"]
    assert KNN_BASELINES["knn"].window > 1 and KNN_BASELINES["knn-last"].window == 1
    # different queries on random embeddings: the two lists differ
    assert m["baselines"]["knn"]["metrics"] != m["baselines"]["knn-last"]["metrics"]


def test_training_record_without_a_usable_log_is_unknown_not_an_error(tmp_path, caplog):
    from sidrec.eval.evaluate import training_record
    from sidrec.eval.report import training_cell

    assert training_record(tmp_path, "sasrec") is None  # no log: the report shows "-"
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "training.json").write_text("{not json")
    with caplog.at_level("WARNING"):
        assert training_record(tmp_path, "generator (dense only)") is None
    assert "not valid JSON" in caplog.text
    (tmp_path / "generator" / "training.json").write_text('{"train_seconds": 90.0, "steps": 1200, "best_step": 900}')
    record = training_record(tmp_path, "generator")
    assert record == {"minutes": 1.5, "steps": 1200, "best_step": 900}
    assert training_cell(record) == "1.5 min, 1,200 steps (best 900)"
    assert training_cell(training_record(tmp_path, "popularity")) == "none" and training_cell(None) == "-"
