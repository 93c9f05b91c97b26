"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from sidrec.eval.metrics import catalog_metrics, per_user_metrics, ranking_metrics, target_ranks


def _lists():
    # user 0: target 7 at position 0; user 1: target 3 at position 2; user 2: target absent;
    # user 3: target 9 at position 4 (after an empty slot and a duplicate)
    topk = np.array(
        [
            [7, 1, 2, 3, 4],
            [5, 6, 3, 8, 9],
            [1, 2, 3, 4, 5],
            [2, 2, -1, 4, 9],
        ]
    )
    targets = np.array([7, 3, 0, 9])
    return topk, targets


def test_target_ranks_by_hand():
    topk, targets = _lists()
    assert target_ranks(topk, targets).tolist() == [0, 2, -1, 4]


def test_first_occurrence_counts():
    assert target_ranks(np.array([[4, 3, 3]]), np.array([3])).tolist() == [1]


def test_ranking_metrics_by_hand():
    topk, targets = _lists()
    m = ranking_metrics(topk, targets, ks=(1, 3, 5))
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@3"] == pytest.approx(2 / 4)
    assert m["recall@5"] == pytest.approx(3 / 4)
    assert m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4)  # ranks 0 and 2
    assert m["ndcg@5"] == pytest.approx((1 + 0.5 + 1 / math.log2(6)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0 + 1 / 5) / 4)
    assert set(m) == {"recall@1", "recall@3", "recall@5", "ndcg@1", "ndcg@3", "ndcg@5", "mrr"}


def test_cutoff_longer_than_list_is_an_error():
    topk, targets = _lists()
    with pytest.raises(ValueError, match="exceeds the list length"):
        ranking_metrics(topk, targets, ks=(10,))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one item index per row"):
        ranking_metrics(np.zeros((3, 5), dtype=int), np.zeros(2, dtype=int), ks=(1,))
    with pytest.raises(ValueError, match="2-D"):
        target_ranks(np.zeros(5, dtype=int), np.zeros(5, dtype=int))


def test_per_user_means_equal_ranking_metrics():
    topk, targets = _lists()
    per_user = per_user_metrics(target_ranks(topk, targets), ks=(1, 5))
    agg = ranking_metrics(topk, targets, ks=(1, 5))
    for name, values in per_user.items():
        assert values.shape == (4,)
        assert values.mean() == pytest.approx(agg[name])


def test_catalog_metrics_by_hand():
    topk = np.array([[0, 1, -1], [1, 12, 2]])  # 12 is outside a catalog of 10
    pop = np.arange(10, dtype=float)
    m = catalog_metrics(topk, num_items=10, item_popularity=pop)
    assert m["invalid_rate"] == pytest.approx(1 / 5)
    assert m["empty_rate"] == pytest.approx(1 / 6)
    assert m["coverage"] == pytest.approx(3 / 10)  # items 0, 1, 2
    assert m["mean_popularity"] == pytest.approx((0 + 1 + 1 + 2) / 4)
    assert catalog_metrics(topk, num_items=10, k=1)["coverage"] == pytest.approx(2 / 10)
