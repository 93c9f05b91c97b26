"""SASRec model, trainer and save/load on a small real Beauty slice."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sidrec.eval.baselines.sasrec import SasrecScorer
from sidrec.seqmodel.sasrec import SASRec, SasrecModelConfig, pad_histories
from sidrec.train.common import budget_progress, cooldown_factor
from sidrec.train.sasrec import (
    SasrecTrainConfig,
    collate_windows,
    main,
    scheduled_lr,
    train_sasrec,
    training_windows,
)
from sidrec.utils import load_config


def _model(n: int = 30, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(config=SasrecModelConfig(num_items=n, hidden_size=16, num_blocks=2, num_heads=2, max_len=8,
                                           dropout=0.1, attn_dropout=0.1)).eval()


def test_collate_right_pads_with_shifted_labels():
    inputs, labels = collate_windows([[4, 5, 6], [7, 8]])
    assert inputs.tolist() == [[5, 6], [8, 0]]  # tokens = index + 1, 0 = pad
    assert labels.tolist() == [[5, 6], [8, -100]]
    assert training_windows([[1], [1, 2, 3, 4]], max_len=2) == [[2, 3, 4]]


def test_causal_and_padding_invariant():
    model = _model()
    a = model.score_last(*pad_histories([[1, 2, 3]], 8))
    b = model.score_last(*pad_histories([[1, 2, 3], [4, 5, 6, 7, 8, 9]], 8))[:1]
    torch.testing.assert_close(a, b)  # a longer neighbour in the batch changes nothing
    tokens = torch.tensor([[2, 3, 4, 5]])
    changed = torch.tensor([[2, 3, 4, 9]])
    torch.testing.assert_close(model.encode(tokens)[:, :3], model.encode(changed)[:, :3])  # no peeking ahead


def test_position_ids_count_from_the_most_recent_item(tmp_path):
    tokens = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [4, 3, 2, 1]])  # right-padded, 0 = pad
    assert _model().position_ids(tokens).tolist() == [[2, 1, 0, 0], [1, 0, 0, 0], [3, 2, 1, 0]]
    model = _model()
    model.config.positions = "from_start"
    assert model.position_ids(tokens).tolist() == [[0, 1, 2, 3]] * 3
    with pytest.raises(ValueError, match="positions must be one of"):
        SasrecModelConfig(num_items=5, positions="end").validate()
    # a checkpoint written before the option existed keeps its positions
    model.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    del cfg["positions"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert SASRec.from_pretrained(tmp_path / "old").config.positions == "from_start"


def test_length_chunks_give_the_same_loss_and_gradients():
    model = _model()  # eval mode: no dropout, so the chunked encoding must match exactly
    inputs, labels = collate_windows([[1, 2, 3, 4, 5, 6, 7], [6, 7, 8], [9, 10], [11, 12, 13, 14], [3, 4]])
    grads = []
    for chunks in (1, 2, 3, 5, 9):  # 9 > rows: empty groups are skipped
        model.zero_grad()
        loss = model(inputs, labels, length_chunks=chunks)
        loss.backward()
        grads.append((loss.detach(), model.item_emb.weight.grad.clone(), model.pos_emb.weight.grad.clone()))
    for loss, g_item, g_pos in grads[1:]:
        torch.testing.assert_close(loss, grads[0][0])
        torch.testing.assert_close(g_item, grads[0][1])
        torch.testing.assert_close(g_pos, grads[0][2])
    assert grads[0][0] > 0 and grads[0][1].abs().sum() > 0


def test_loss_decreases_when_overfitting_a_batch():
    model = _model().train()
    inputs, labels = collate_windows([[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model(inputs, labels).item()
    for _ in range(40):
        loss = model(inputs, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 3


def test_save_load_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = SASRec.from_pretrained(tmp_path / "m")
    tokens, lengths = pad_histories([[0, 1, 2], [5]], 8)
    torch.testing.assert_close(model.score_last(tokens, lengths), loaded.score_last(tokens, lengths))
    with pytest.raises(ValueError, match="no config.json"):
        SASRec.from_pretrained(tmp_path / "missing")


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        SasrecModelConfig(num_items=5, hidden_size=10, num_heads=3).validate()


def test_train_few_steps_and_score(tiny_run, tmp_path):
    from sidrec.data import PreparedDataset

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    threads = torch.get_num_threads()
    assert main(["--run", str(run), "--epochs", "2", "--max-steps", "3", "--batch-size", "32",
                 "--hidden-size", "16", "--torch-threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # restored after training
    out = run / "baselines" / "sasrec"
    log = json.loads((out / "train_log.json").read_text())
    assert log["history"][-1]["step"] == 3
    assert 0.0 <= log["best_valid_ndcg@10"] <= 1.0
    ds = PreparedDataset.load(run)
    scorer = SasrecScorer.from_pretrained(out, exclude_history=True)
    split = ds.eval_split("test")
    top = scorer.recommend(split.histories[:7], 20)
    assert top.shape == (7, 20)
    assert ((top >= 0) & (top < ds.num_items)).all()
    for row, hist in zip(top, split.histories[:7], strict=True):
        assert not set(row.tolist()) & set(hist)


def test_budget_progress_is_the_larger_spent_fraction():
    assert budget_progress(step=0, total_steps=0, train_seconds=50.0, max_seconds=0) == 0.0  # no budget
    assert budget_progress(step=30, total_steps=120, train_seconds=1e9, max_seconds=0) == 0.25  # steps only
    assert budget_progress(step=30, total_steps=0, train_seconds=45.0, max_seconds=60.0) == 0.75  # time only
    assert budget_progress(step=90, total_steps=120, train_seconds=30.0, max_seconds=60.0) == 0.75  # the larger
    assert budget_progress(step=200, total_steps=120, train_seconds=0.0, max_seconds=60.0) == 1.0  # clamped
    constant, linear = SasrecTrainConfig(lr=0.002), SasrecTrainConfig(lr=0.002, lr_schedule="linear")
    assert scheduled_lr(constant, 0.75) == 0.002
    assert scheduled_lr(linear, 0.0) == 0.002 and scheduled_lr(linear, 0.75) == pytest.approx(0.0005)
    assert scheduled_lr(linear, 1.0) == 0.0
    # the generator's cooldown: 1 until the last `cooldown` fraction of the budget, then linearly to 0
    assert cooldown_factor(0.5, 0.0) == 1.0 and cooldown_factor(0.7, 0.2) == 1.0
    assert cooldown_factor(0.9, 0.2) == pytest.approx(0.5) and cooldown_factor(1.0, 0.2) == 0.0
    with pytest.raises(ValueError, match="lr_schedule"):
        load_config(SasrecTrainConfig, "baselines/sasrec", {"lr_schedule": "cosine"})


def test_linear_schedule_anneals_to_the_end_of_the_budget(tiny_run, tmp_path, monkeypatch):
    from sidrec.data import PreparedDataset

    ds = PreparedDataset.load(tiny_run)
    cfg = SasrecTrainConfig(hidden_size=16, batch_size=32, epochs=3, max_steps=7, lr=0.004, lr_schedule="linear",
                            torch_threads=1)
    log = train_sasrec(ds, cfg, tmp_path / "s")
    assert log["history"][-1]["step"] == 7
    assert log["history"][-1]["lr"] == pytest.approx(0.004 / 7)  # the last step ran at lr * (1 - 6/7)
    lrs = [entry["lr"] for entry in log["history"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.004
    # a time budget ends the run mid-epoch once the learning rate reaches 0 (a fake clock: 1 s per reading)
    import types

    import sidrec.train.sasrec as trainer

    clock = iter(range(10**6))
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    steps_per_epoch = -(-len(training_windows(ds.train_sequences(), 50)) // 32)
    cfg = SasrecTrainConfig(hidden_size=16, batch_size=32, epochs=50, max_minutes=4 / 60, lr_schedule="linear",
                            torch_threads=1)
    log = train_sasrec(ds, cfg, tmp_path / "t")
    assert steps_per_epoch > 5 and log["epochs_run"] == 1
    assert log["history"][-1]["step"] < steps_per_epoch  # broke off mid-epoch, then validated and saved
    assert (tmp_path / "t" / "model.safetensors").exists()


def test_unknown_override_is_an_error(tiny_run):
    with pytest.raises(ValueError, match="Valid fields"):
        main(["--run", str(tiny_run), "--hiden-size", "16"])
    # the thread option is named as in the generator and tokenizer; the old name is an error naming it
    with pytest.raises(ValueError, match="--num-threads .* was renamed; use --torch-threads"):
        main(["--run", str(tiny_run), "--num-threads", "1"])
    with pytest.raises(ValueError, match="Valid fields: .*torch_threads"):  # in a YAML: the loader's list
        load_config(SasrecTrainConfig, "baselines/sasrec", {"num_threads": 1})
    assert SasrecTrainConfig().torch_threads == 0 and not hasattr(SasrecTrainConfig(), "num_threads")


@pytest.mark.slow
def test_training_learns_on_slice(tiny_run, tmp_path):
    """Trained SASRec ranks valid targets far better than the same model untrained and than chance."""
    from sidrec.data import PreparedDataset
    from sidrec.eval.metrics import ranking_metrics

    ds = PreparedDataset.load(tiny_run)
    cfg = SasrecTrainConfig(hidden_size=32, epochs=30, patience=30, batch_size=32)
    split = ds.eval_split("valid")
    torch.manual_seed(cfg.seed)
    untrained = SasrecScorer(model=SASRec(config=cfg.model_config(ds.num_items))).recommend(split.histories, 20)
    train_sasrec(ds, cfg, tmp_path / "s")
    trained = SasrecScorer.from_pretrained(tmp_path / "s").recommend(split.histories, 20)
    r_trained = ranking_metrics(trained, split.targets)["recall@20"]
    assert r_trained > 2 * ranking_metrics(untrained, split.targets)["recall@20"]
    assert r_trained > 3 * 20 / ds.num_items


def test_two_processes_stop_together(tiny_run, tmp_path):
    """Only rank 0 validates; early stopping must still end both ranks at the same epoch (no hang)."""
    import os
    import subprocess
    import sys

    from conftest import free_port

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "dataset", run / "dataset")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(free_port()), "-m", "sidrec.train.sasrec", "--run", str(run), "--epochs", "30", "--patience", "2",
           "--batch-size", "32", "--hidden-size", "16",
           "--lr-schedule", "linear", "--max-minutes", "60"]  # the ranks agree on the scheduled rate
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((run / "baselines" / "sasrec" / "train_log.json").read_text())
    assert log["epochs_run"] < 30 and log["epochs_run"] - log["best_epoch"] == 2  # stopped by patience
    assert proc.stdout.count("best_epoch=") == 1  # the summary line comes from the main process only
