"""benchmarks/sasrec_sweep.py: grid parsing, the chosen row, and a 2-setting sweep on a tiny run."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from pathlib import Path

import pytest

from sidrec.train.sasrec import SasrecTrainConfig

_SPEC = importlib.util.spec_from_file_location(
    "sasrec_sweep", Path(__file__).resolve().parents[1] / "benchmarks" / "sasrec_sweep.py")
sweep = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sweep)
FIELDS = [f.name for f in dataclasses.fields(SasrecTrainConfig)]


def test_parse_grid_is_the_product_in_order():
    assert sweep.parse_grid(["lr=0.001,0.002", "--batch-size=64, 128", "dropout=0.2"], FIELDS) == [
        {"lr": "0.001", "batch_size": "64", "dropout": "0.2"},
        {"lr": "0.001", "batch_size": "128", "dropout": "0.2"},
        {"lr": "0.002", "batch_size": "64", "dropout": "0.2"},
        {"lr": "0.002", "batch_size": "128", "dropout": "0.2"},
    ]
    assert sweep.parse_grid([], FIELDS) == [{}]  # no axis: the preset alone
    assert len(sweep.parse_grid(list(sweep.DEFAULT_GRID), FIELDS)) >= 2


@pytest.mark.parametrize("spec, match", [
    ("lr", "FIELD=V1,V2"), ("lr=", "FIELD=V1,V2"), ("learning_rate=0.1", "not a SasrecTrainConfig field"),
    ("num_threads=1", "torch_threads"),  # the old name of the thread option
])
def test_parse_grid_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        sweep.parse_grid([spec], FIELDS)


def test_parse_grid_rejects_a_repeated_field():
    with pytest.raises(ValueError, match="twice"):
        sweep.parse_grid(["lr=0.1", "lr=0.2"], FIELDS)


def _row(ndcg: float, minutes: float) -> dict:
    return {"setting": {"lr": str(ndcg)}, "best_epoch": 3, "epochs_run": 5, "recall@10": 2 * ndcg,
            "ndcg@10": ndcg, "minutes_to_best": minutes, "minutes": minutes + 1}


def test_choose_best_valid_ndcg_then_fewer_minutes():
    rows = [_row(0.03, 1.0), _row(0.05, 9.0), _row(0.05, 4.0), _row(0.04, 0.5)]
    assert sweep.choose(rows) is rows[2]
    table = sweep.format_table(rows, rows[2])
    assert table.splitlines()[3].endswith("<- chosen") and table.count("<- chosen") == 1
    with pytest.raises(ValueError, match="no settings"):
        sweep.choose([])


def test_sweep_on_tiny_run(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "dataset", run / "dataset")
    assert sweep.main(["--run", str(run), "--grid", "lr=0.001,0.01", "--epochs", "3", "--patience", "3",
                       "--hidden-size", "16", "--batch-size", "32", "--torch-threads", "1",
                       "--out", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert sum("<- chosen" in line for line in out) == 1
    last = dict(kv.split("=", 1) for kv in out[-1].split())
    assert last["lr"] in ("0.001", "0.01") and 1 <= int(last["best_epoch"]) <= 3
    assert 0.0 <= float(last["valid_ndcg@10"]) <= float(last["valid_recall@10"]) <= 1.0
    chosen = next(line for line in out if "<- chosen" in line)
    assert f"lr={last['lr']}" in chosen and f"{float(last['valid_ndcg@10']):.4f}" in chosen
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["00", "01"]  # one model per setting
