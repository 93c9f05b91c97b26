"""Text-embedding kNN baseline: items whose text embedding is closest to the user's recent items.

It shows what the semantic IDs add beyond the embeddings they are built from. Embeddings are
L2-normalised; the query is a recency-weighted sum of the last ``window`` history items'
embeddings (weight ``decay**j`` for the item ``j`` steps before the last one), and items are
ranked by exact inner product with it (``faiss.IndexFlatIP``); with ``window=1`` that is the
cosine similarity to the last item. The query items themselves are always dropped from the
list (each is close to its own query and, in leave-one-out, a history item); with
``exclude_history`` every other history item is dropped too.

Two named baselines (``sidrec evaluate --baselines knn,knn-last``, :data:`KNN_BASELINES`):

- ``knn``: the last 20 items, decay 0.2 (the VALID winner below);
- ``knn-last``: the last item only (the classic item-to-item baseline, the ``knn`` of before).

Chosen on the Beauty VALID split (all 22,363 users, full ranking, history not excluded, MiniLM
embeddings of the default text template; ``python -m sidrec.eval.baselines.knn --run RUN``
prints the grid, 2026-11-28): windows 1, 2, 3, 5, 10, 20 x decays 0.1, 0.2, 0.3, 0.5, 0.7, 1.0.
NDCG@10 rises from 0.0377 (last item) to 0.0386-0.0395 for decays 0.1-0.3 at any window >= 2
(window 20 / decay 0.2 best, 0.0395; windows 5 and 10 give 0.0394); a plain mean is much worse
(decay 1.0: 0.0340 at window 2, 0.0232 at window 20). TEST was scored once, after the choice:

| name | valid Recall@10 | valid NDCG@10 | test Recall@10 | test NDCG@10 (95% CI) |
|---|---|---|---|---|
| ``knn`` (20 items, decay 0.2) | 0.0672 | 0.0395 | 0.0652 | 0.0398 [0.0376, 0.0419] |
| ``knn-last`` | 0.0659 | 0.0377 | 0.0627 | 0.0379 [0.0358, 0.0400] |

Read it plainly: the gain comes from dropping the query items (the recent history), not from
the averaged query. Ranked by the same recency-weighted query but with only the last item
dropped, VALID NDCG@10 is 0.0374 (below ``knn-last``), and ``knn-last`` with
``--exclude-history`` scores VALID 0.0393 / TEST 0.0396, as much as ``knn``. So on Beauty,
``knn`` is in effect ``knn-last`` that never repeats the user's last 20 items.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnnQuery:
    """How a history becomes a kNN query: the last ``window`` items, the ``j``-th newest weighted ``decay**j``."""

    window: int = 1
    decay: float = 1.0

    def validate(self) -> None:
        if self.window < 1:
            raise ValueError(f"knn window must be >= 1 (1 = last item only), got {self.window}")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"knn decay must be in (0, 1] (1 = plain mean), got {self.decay}")


#: The kNN baselines ``sidrec evaluate --baselines`` knows, by name.
KNN_BASELINES: dict[str, KnnQuery] = {
    "knn": KnnQuery(window=20, decay=0.2),
    "knn-last": KnnQuery(window=1, decay=1.0),
}


class KnnScorer:
    """Nearest neighbours (inner product of normalised embeddings) of a recency-weighted query."""

    def __init__(
        self, *, embeddings: np.ndarray, query: KnnQuery = KNN_BASELINES["knn"], exclude_history: bool = False,
        name: str = "knn", batch_size: int = 4096,
    ) -> None:
        import faiss

        query.validate()
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)  # (N, D)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty (num_items, dim) array, got {emb.shape}")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)  # (N, 1)
        if (norms == 0).any():
            raise ValueError(f"{int((norms == 0).sum())} item embeddings are all zero; re-embed those items")
        self.emb = emb / norms
        self.index = faiss.IndexFlatIP(self.emb.shape[1])
        self.index.add(self.emb)
        self.query = query
        self.exclude_history = exclude_history
        self.name = name
        self.batch_size = batch_size

    @classmethod
    def from_texts(
        cls, texts: list[str], *, template: str = "", cache_dir: str | os.PathLike | None = None,
        exclude_history: bool = False, name: str = "knn",
    ) -> KnnScorer:
        """The named baseline ``name`` (a key of :data:`KNN_BASELINES`) over the tokenizer's embeddings.

        Embeds with the tokenizer's embedder, sharing its cache (``cache_dir=RUN/cache`` and the
        dataset's ``template`` find the entry the tokenizer wrote, so nothing is re-embedded).
        """
        if name not in KNN_BASELINES:
            raise ValueError(f"unknown kNN baseline {name!r}; choose from {', '.join(KNN_BASELINES)}")
        from sidrec.tokenizer import embed_texts

        emb = embed_texts(texts, template=template, cache_dir=cache_dir, show_progress=False)
        return cls(embeddings=emb, query=KNN_BASELINES[name], exclude_history=exclude_history, name=name)

    def query_vectors(self, histories: list[list[int]]) -> np.ndarray:
        """``(U, D)`` recency-weighted sums of the last ``window`` items' normalised embeddings.

        Every history must be non-empty. The scale of a query does not change its ranking.
        """
        w, n = self.query.window, len(histories)
        idx = np.zeros((n, w), dtype=np.int64)  # (U, W) newest first, 0-padded
        weight = np.zeros((n, w), dtype=np.float32)  # (U, W) 0 on padding
        decay = self.query.decay ** np.arange(w, dtype=np.float64)  # (W,)
        for i, h in enumerate(histories):
            recent = h[::-1][:w]
            idx[i, : len(recent)] = recent
            weight[i, : len(recent)] = decay[: len(recent)]
        return np.einsum("uw,uwd->ud", weight, self.emb[idx]).astype(np.float32)  # (U, D)

    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices; users with an empty history get ``-1`` rows (counted in the log)."""
        n = len(histories)
        out = np.full((n, k), -1, dtype=np.int64)
        rows = [i for i, h in enumerate(histories) if h]
        if len(rows) < n:
            logger.info("%s: %d users with an empty history get no recommendations", self.name, n - len(rows))
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            drops = [set(histories[i]) if self.exclude_history else set(histories[i][-self.query.window :])
                     for i in chunk]
            search_k = min(k + max(len(d) for d in drops), self.emb.shape[0])
            _, nbrs = self.index.search(self.query_vectors([histories[i] for i in chunk]), search_k)  # (R, search_k)
            for r, i in enumerate(chunk):
                kept = [int(j) for j in nbrs[r] if j >= 0 and j not in drops[r]][:k]
                out[i, : len(kept)] = kept
        return out


def sweep(
    embeddings: np.ndarray, histories: list[list[int]], targets: np.ndarray, *, windows: list[int],
    decays: list[float], k: int = 10,
) -> list[dict]:
    """Recall@k / NDCG@k of every (window, decay) on one split; rows in grid order.

    ``window=1`` is evaluated once (the decay does not matter there). Pass the VALID split to choose.
    """
    from sidrec.utils.metrics import ranking_metrics

    rows = []
    for window in windows:
        for decay in [1.0] if window == 1 else decays:
            scorer = KnnScorer(embeddings=embeddings, query=KnnQuery(window=window, decay=decay))
            m = ranking_metrics(scorer.recommend(histories, k), targets, ks=(k,))
            rows.append({"window": window, "decay": decay, f"recall@{k}": m[f"recall@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m sidrec.eval.baselines.knn --run RUN``: the (window, decay) grid on VALID, best by NDCG@10."""
    from sidrec.data import PreparedDataset
    from sidrec.tokenizer import embed_texts
    from sidrec.utils import configure_logging

    p = argparse.ArgumentParser(prog="python -m sidrec.eval.baselines.knn", description=main.__doc__)
    p.add_argument("--run", required=True, help="run folder with dataset/ (and cache/ from `sidrec tokenize`)")
    p.add_argument("--split", default="valid", choices=("valid", "test"), help="choose on valid (default)")
    p.add_argument("--windows", default="1,2,3,5,10,20", help="comma list of history lengths")
    p.add_argument("--decays", default="0.1,0.2,0.3,0.5,0.7,1.0", help="comma list of decays in (0, 1]")
    args = p.parse_args(argv)
    configure_logging()
    windows = [int(w) for w in args.windows.split(",")]
    decays = [float(d) for d in args.decays.split(",")]
    for w in windows:
        KnnQuery(window=w).validate()
    for d in decays:
        KnnQuery(decay=d).validate()
    ds = PreparedDataset.load(args.run)
    emb = embed_texts(ds.item_texts, template=ds.text_template, cache_dir=os.path.join(args.run, "cache"),
                      show_progress=False)
    split = ds.eval_split(args.split)
    rows = sweep(emb, split.histories, split.targets, windows=windows, decays=decays)
    best = max(rows, key=lambda r: r["ndcg@10"])
    print(f"{args.split} split, {len(split)} users, full ranking, history not excluded")
    print(f"{'window':>6} {'decay':>6} {'recall@10':>10} {'ndcg@10':>8}")
    for r in rows:
        mark = "  <- best" if r is best else ""
        print(f"{r['window']:>6} {r['decay']:>6.2f} {r['recall@10']:>10.4f} {r['ndcg@10']:>8.4f}{mark}")
    print(f"window={best['window']} decay={best['decay']} recall@10={best['recall@10']:.4f} "
          f"ndcg@10={best['ndcg@10']:.4f} split={args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
