"""Baselines on a small real Beauty slice and on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sidrec.eval.baselines.base import Scorer, topk_from_scores
from sidrec.eval.baselines.knn import KNN_BASELINES, KnnQuery, KnnScorer, sweep
from sidrec.eval.baselines.popularity import PopularityScorer


def test_topk_from_scores_excludes_history_and_fills_with_minus_one():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.4, 0.2, 0.8, 0.6]])
    assert topk_from_scores(scores, 3).tolist() == [[1, 2, 3], [2, 3, 0]]
    out = topk_from_scores(scores, 4, histories=[[1, 2], [2]], exclude_history=True)
    assert out.tolist() == [[3, 0, -1, -1], [3, 0, 1, -1]]
    assert topk_from_scores(scores, 6).shape == (2, 6)  # k > N: padded with -1
    assert (topk_from_scores(scores, 6)[:, 4:] == -1).all()


def test_popularity_on_real_slice(tiny_run):
    from sidrec.data import PreparedDataset

    ds = PreparedDataset.load(tiny_run)
    counts = ds.train_item_counts()
    scorer = PopularityScorer(counts=counts)
    assert isinstance(scorer, Scorer)
    split = ds.eval_split("test")
    top = scorer.recommend(split.histories, 10)
    assert top.shape == (len(split), 10)
    assert (top == top[0]).all()  # the same list for everyone
    assert counts[top[0, 0]] == counts.max()
    assert (np.diff(counts[top[0]]) <= 0).all()  # non-increasing popularity
    excl = PopularityScorer(counts=counts, exclude_history=True).recommend(split.histories, 10)
    for row, hist in zip(excl, split.histories, strict=True):
        assert not set(row.tolist()) & set(hist)
        assert len(set(row.tolist())) == 10


def test_knn_on_hand_made_embeddings():
    # items 0..3 on a half circle: 0 and 1 are close, 2 is between, 3 is far
    angles = np.array([0.0, 0.1, 0.5, 3.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[2.0], [1.0], [3.0], [0.5]])
    scorer = KnnScorer(embeddings=emb, query=KNN_BASELINES["knn-last"])  # scale must not matter (cosine)
    top = scorer.recommend([[3, 0], [2], []], 3)
    assert top[0].tolist() == [1, 2, 3]  # neighbours of item 0, itself dropped
    assert top[1].tolist() == [1, 0, 3]
    assert top[2].tolist() == [-1, -1, -1]  # empty history
    top = KnnScorer(embeddings=emb, query=KnnQuery(window=1), exclude_history=True).recommend([[3, 1, 0]], 3)
    assert top[0].tolist() == [2, -1, -1]


def _circle(angles: list[float], scales: list[float]) -> np.ndarray:
    a = np.asarray(angles)
    return np.stack([np.cos(a), np.sin(a)], axis=1) * np.asarray(scales)[:, None]  # (N, 2)


def test_knn_recency_weighted_query_by_hand():
    # unit vectors at these angles (rescaled: only directions count)
    #   e0 = (1, 0), e1 = (0.98007, 0.19867), e2 = (0.54030, 0.84147), e3 = (-0.02920, 0.99957),
    #   e4 = (-0.98999, 0.14112)
    emb = _circle([0.0, 0.2, 1.0, 1.6, 3.0], [2.0, 1.0, 0.5, 3.0, 1.0])
    history = [3, 0, 2]  # oldest first: the newest item is 2, then 0
    # last item only: cos to e2 = e3 0.825 (0.6 rad), e1 0.697 (0.8), e0 0.540 (1.0), e4 -0.416 (2.0); 2 dropped
    last = KnnScorer(embeddings=emb, query=KnnQuery(window=1), name="knn-last")
    assert last.recommend([history], 4)[0].tolist() == [3, 1, 0, 4]
    # window 2, decay 0.5: q = e2 + 0.5 e0 = (1.04030, 0.84147)
    #   q.e1 = 1.18674, q.e3 = 0.81074, q.e4 = -0.91114; query items 2 and 0 dropped
    two = KnnScorer(embeddings=emb, query=KnnQuery(window=2, decay=0.5))
    np.testing.assert_allclose(two.query_vectors([history]), [[1.040302, 0.841471]], atol=1e-5)
    assert two.recommend([history], 4)[0].tolist() == [1, 3, 4, -1]
    # a tiny decay is nearly the last item again: q = e2 + 0.01 e0 -> q.e3 = 0.8250, q.e1 = 0.7065
    nearly_last = KnnScorer(embeddings=emb, query=KnnQuery(window=2, decay=0.01))
    assert nearly_last.recommend([history], 3)[0].tolist() == [3, 1, 4]
    # a history shorter than the window: the query is its items only (here e2), only they are dropped
    assert two.recommend([[2]], 3)[0].tolist() == [3, 1, 0]
    # exclude_history drops the older item 3 too
    excl = KnnScorer(embeddings=emb, query=KnnQuery(window=2, decay=0.5), exclude_history=True)
    assert excl.recommend([history, []], 3).tolist() == [[1, 4, -1], [-1, -1, -1]]


def test_knn_query_validation_and_names():
    emb = _circle([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="window"):
        KnnScorer(embeddings=emb, query=KnnQuery(window=0))
    with pytest.raises(ValueError, match="decay"):
        KnnScorer(embeddings=emb, query=KnnQuery(window=3, decay=0.0))
    with pytest.raises(ValueError, match="unknown kNN baseline"):
        KnnScorer.from_texts(["a", "b"], name="knn-first")
    assert KNN_BASELINES["knn-last"] == KnnQuery(window=1)


def test_knn_sweep_rows():
    emb = _circle([0.0, 0.2, 1.0, 1.6, 3.0], [1.0] * 5)
    # target 1 is first for (2, 0.5) (see the hand example) and second for the last item alone
    rows = sweep(emb, [[3, 0, 2]], np.array([1]), windows=[1, 2], decays=[0.01, 0.5])
    assert [(r["window"], r["decay"]) for r in rows] == [(1, 1.0), (2, 0.01), (2, 0.5)]
    assert [r["recall@10"] for r in rows] == [1.0, 1.0, 1.0]
    np.testing.assert_allclose([r["ndcg@10"] for r in rows], [1 / np.log2(3), 1 / np.log2(3), 1.0])


def test_knn_rejects_zero_embeddings():
    with pytest.raises(ValueError, match="all zero"):
        KnnScorer(embeddings=np.zeros((3, 4)))
