"""Bootstrap CIs and per-slice metrics."""

from __future__ import annotations

import numpy as np
import pytest

from sidrec.eval.slices import bootstrap_ci, slice_metrics, standard_slices


def _per_user(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    hits = (rng.random(500) < 0.1).astype(float)
    return {"recall@10": hits, "mrr": hits * rng.random(500)}


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    pu = _per_user()
    a = bootstrap_ci(pu, n_boot=300, seed=3)
    b = bootstrap_ci(pu, n_boot=300, seed=3)
    c = bootstrap_ci(pu, n_boot=300, seed=4)
    assert a == b
    assert a != c
    for name, (lo, hi) in a.items():
        assert lo < pu[name].mean() < hi
    # chunking does not change the draws
    assert bootstrap_ci(pu, n_boot=300, seed=3, chunk=7) == a


def test_bootstrap_width_shrinks_with_more_users():
    small = {"x": np.tile([0.0, 1.0], 50)}
    large = {"x": np.tile([0.0, 1.0], 5000)}
    w_small = np.diff(bootstrap_ci(small, n_boot=200)["x"])[0]
    w_large = np.diff(bootstrap_ci(large, n_boot=200)["x"])[0]
    assert w_large < w_small / 5


def test_bootstrap_off():
    assert bootstrap_ci(_per_user(), n_boot=0) == {}


def test_slices_by_hand():
    pu = {"recall@10": np.array([1.0, 0.0, 1.0, 1.0, 0.0])}
    lengths = np.array([3, 4, 5, 25, 30])
    out = slice_metrics(pu, lengths, ((0, 3), (4, 5), (6, 9), (20, 10**9)))
    assert out == {
        "0-3": {"users": 1, "recall@10": 1.0},
        "4-5": {"users": 2, "recall@10": 0.5},
        "20+": {"users": 2, "recall@10": 0.5},
    }


def test_standard_slices_use_target_popularity():
    pu = {"recall@10": np.array([1.0, 0.0, 1.0])}
    counts = np.array([0, 5, 300])
    out = standard_slices(pu, histories=[[1], [1, 2, 0, 1], [0] * 12], targets=np.array([0, 2, 1]),
                          item_counts=counts)
    assert out["target_popularity"]["0"] == {"users": 1, "recall@10": 1.0}
    assert out["target_popularity"]["200+"] == {"users": 1, "recall@10": 0.0}
    assert out["target_popularity"]["1-9"] == {"users": 1, "recall@10": 1.0}
    assert out["history_length"]["0-3"]["users"] == 1
    assert out["history_length"]["10-19"]["users"] == 1


def test_bad_level():
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(_per_user(), n_boot=10, level=1.5)


def test_cold_target_slices_split_users_by_their_target():
    per_user = {"recall@10": np.array([1.0, 0.0, 1.0, 0.0])}
    cold = np.array([False, True, False, True, False])  # items 1 and 3 are cold
    out = standard_slices(per_user, histories=[[0], [0], [2], [4]], targets=np.array([1, 0, 3, 3]),
                          item_counts=np.ones(5), cold_items=cold)
    assert out["target_cold"]["cold"] == {"users": 3, "recall@10": pytest.approx(2 / 3)}
    assert out["target_cold"]["warm"] == {"users": 1, "recall@10": 0.0}
    plain = standard_slices(per_user, histories=[[0]] * 4, targets=np.array([1, 0, 3, 3]), item_counts=np.ones(5))
    assert "target_cold" not in plain
