"""Text-embedding kNN baseline: items whose text embedding is closest to the last history item's.

It shows what the semantic IDs add beyond the embeddings they are built from. Search is exact
inner product (``faiss.IndexFlatIP``) over L2-normalised embeddings, i.e. cosine similarity.
The query item itself is always dropped from its own neighbour list (it is its own nearest
neighbour, and in leave-one-out it is a history item); with ``exclude_history`` every other
history item is dropped too.
"""

from __future__ import annotations

import logging
import os

import numpy as np

logger = logging.getLogger(__name__)


class KnnScorer:
    """Nearest neighbours (cosine) of each user's last history item in text-embedding space."""

    name = "knn"

    def __init__(self, *, embeddings: np.ndarray, exclude_history: bool = False) -> None:
        import faiss

        emb = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty (num_items, dim) array, got {emb.shape}")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)  # (N, 1)
        if (norms == 0).any():
            raise ValueError(f"{int((norms == 0).sum())} item embeddings are all zero; re-embed those items")
        self.emb = emb / norms
        self.index = faiss.IndexFlatIP(self.emb.shape[1])
        self.index.add(self.emb)
        self.exclude_history = exclude_history

    @classmethod
    def from_texts(
        cls, texts: list[str], *, template: str = "", cache_dir: str | os.PathLike | None = None,
        exclude_history: bool = False,
    ) -> KnnScorer:
        """Embed item texts with the tokenizer's embedder (sharing its ``RUN/cache``)."""
        from sidrec.tokenizer import embed_texts

        emb = embed_texts(texts, template=template, cache_dir=cache_dir, show_progress=False)
        return cls(embeddings=emb, exclude_history=exclude_history)

    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices; users with an empty history get ``-1`` rows (counted in the log)."""
        n = len(histories)
        out = np.full((n, k), -1, dtype=np.int64)
        rows = [i for i, h in enumerate(histories) if h]
        if len(rows) < n:
            logger.info("knn: %d users with an empty history get no recommendations", n - len(rows))
        if not rows:
            return out
        extra = 1 + (max(len(histories[i]) for i in rows) if self.exclude_history else 0)
        search_k = min(k + extra, self.emb.shape[0])
        queries = self.emb[[histories[i][-1] for i in rows]]  # (R, D)
        _, nbrs = self.index.search(queries, search_k)  # (R, search_k)
        for r, i in enumerate(rows):
            drop = set(histories[i]) if self.exclude_history else {histories[i][-1]}
            kept = [int(j) for j in nbrs[r] if j >= 0 and j not in drop][:k]
            out[i, : len(kept)] = kept
        return out
