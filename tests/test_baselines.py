"""Baselines on a small real Beauty slice and on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sidrec.eval.baselines.base import Scorer, topk_from_scores
from sidrec.eval.baselines.knn import KnnScorer
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
    scorer = KnnScorer(embeddings=emb)  # scale must not matter (cosine)
    top = scorer.recommend([[3, 0], [2], []], 3)
    assert top[0].tolist() == [1, 2, 3]  # neighbours of item 0, itself dropped
    assert top[1].tolist() == [1, 0, 3]
    assert top[2].tolist() == [-1, -1, -1]  # empty history
    top = KnnScorer(embeddings=emb, exclude_history=True).recommend([[3, 1, 0]], 3)
    assert top[0].tolist() == [2, -1, -1]


def test_knn_rejects_zero_embeddings():
    with pytest.raises(ValueError, match="all zero"):
        KnnScorer(embeddings=np.zeros((3, 4)))
