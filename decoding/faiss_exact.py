"""Exact ranking of a digit catalog with faiss ``IndexPQ``: the same scores as ``decoding.exact``, faster on CPU.

A parallel generator's logit for code k of digit m is ``q_m . e_{m,k}`` (``digit_queries`` and
``digit_table``), so an item's summed logits are an inner product between the stacked queries
``[q_1 .. q_M]`` and the stacked code vectors ``[e_{1,c_1} .. e_{M,c_M}]``: exactly what a product-quantization
index with inner-product metric computes from the items' codes (its look-up table is the logits). faiss's
scan (SIMD, threaded over users) beats the gather-sum of ``decoding.exact`` on CPU (measured in
``benchmarks/generator_decoding.py``); it returns summed logits, which differ from summed log-probabilities by
a per-user constant (each digit's log-sum-exp) that is added back, so scores equal ``exact_scores``'.

The PQ index sits in an ``IndexIDMap`` keyed by item index: added items are appended as codes, removed
items are deleted from it (``sync`` mirrors the catalog); history items are skipped by asking for
``k + |history|`` and filtering. faiss breaks ties by its own order (rare with real-valued scores); ``rank_exact`` is the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sidrec.decoding.exact import DigitCatalog

__all__ = ["MAX_FAISS_CODES", "FaissDigitIndex"]

MAX_FAISS_CODES = 256  # one byte per digit in faiss's PQ codes


class FaissDigitIndex:
    """An ``IndexPQ`` (inner product) over ``catalog``'s codes whose centroids are ``table (M, K, D)``.

    Rebuild it (or call ``set_table``) when the model's code vectors change; ``add_items`` and
    ``remove_items`` on the catalog must be mirrored here (``sync``).
    """

    def __init__(self, *, catalog: DigitCatalog, table: torch.Tensor | np.ndarray) -> None:
        import faiss

        if catalog.width > MAX_FAISS_CODES:
            raise ValueError(f"faiss PQ codes hold at most {MAX_FAISS_CODES} codes per digit, this catalog has "
                             f"{catalog.width}; use the torch backend (sidrec.decoding.exact)")
        self.catalog = catalog
        m, d = catalog.num_digits, int(np.shape(table)[2])
        self.pq = faiss.IndexPQ(m * d, m, 8, faiss.METRIC_INNER_PRODUCT)
        self.index = faiss.IndexIDMap(self.pq)  # ids = item indices, whatever is removed
        self.set_table(table)
        self._indexed = 0
        self._in_index = np.zeros(0, dtype=bool)  # (N,) rows currently in the index
        self.sync()

    def set_table(self, table: torch.Tensor | np.ndarray) -> None:
        """Use ``table (M, Kmax, D)`` as the index's centroids (padded to 256 codes per digit with zeros)."""
        import faiss

        t = torch.as_tensor(table, dtype=torch.float32).detach().cpu()
        m, k, d = t.shape
        full = torch.zeros(m, MAX_FAISS_CODES, d)
        full[:, :k] = t
        faiss.copy_array_to_vector(full.numpy().reshape(-1), self.pq.pq.centroids)
        self.pq.is_trained = True
        self.index.is_trained = True

    def sync(self) -> None:
        """Mirror the catalog: index its rows added since the last call (their codes, no training) and
        delete the rows it no longer offers."""
        import faiss

        cat = self.catalog
        if cat.num_items > self._indexed:
            new = np.arange(self._indexed, cat.num_items)
            keep = new[cat.active[new]]
            codes = cat.codes[keep].astype(np.uint8)  # (n, M)
            self.index.add_sa_codes(np.ascontiguousarray(codes), keep.astype(np.int64))
            self._in_index = np.concatenate([self._in_index, cat.active[new]])
            self._indexed = cat.num_items
        gone = np.flatnonzero(self._in_index & ~cat.active)
        if len(gone):
            self.index.remove_ids(faiss.IDSelectorBatch(gone.astype(np.int64)))
            self._in_index[gone] = False

    def search(self, queries: torch.Tensor, log_norm: torch.Tensor, *, k: int,
               exclude: Sequence[Sequence[int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` items ``(B, k)`` and log-probabilities for ``queries (M, B, D)`` (``digit_queries``);
        ``log_norm (B,)`` = the sum over digits of each digit's log-sum-exp (added back to the logits)."""
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())  # faiss follows torch's thread setting
        self.sync()
        batch = queries.shape[1]
        q = np.ascontiguousarray(queries.transpose(0, 1).reshape(batch, -1).float().cpu().numpy())  # (B, M*D)
        extra = max((len(h) for h in exclude), default=0) if exclude else 0
        want = min(k + extra, self.catalog.num_active)
        if want > 0:
            scores, items = self.index.search(q, want)
        else:
            scores, items = np.zeros((batch, 0), dtype=np.float32), np.zeros((batch, 0), dtype=np.int64)
        return _finish(torch.from_numpy(items), torch.from_numpy(scores) - log_norm[:, None].cpu(), k, exclude)


def _finish(items: torch.Tensor, scores: torch.Tensor, k: int,
            exclude: Sequence[Sequence[int]] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop excluded items, keep the first ``k`` per row, pad with ``-1`` / ``-inf``."""
    out_items = torch.full((items.shape[0], k), -1, dtype=torch.long)
    out_scores = torch.full((items.shape[0], k), float("-inf"))
    for u in range(items.shape[0]):
        keep = items[u] >= 0
        if exclude:
            banned = torch.as_tensor(list(exclude[u]), dtype=torch.long)
            keep &= ~torch.isin(items[u], banned)
        row_items, row_scores = items[u][keep][:k], scores[u][keep][:k]
        out_items[u, : len(row_items)], out_scores[u, : len(row_scores)] = row_items, row_scores.float()
    return out_items, out_scores
