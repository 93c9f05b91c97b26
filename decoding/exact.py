"""Exact ranking of the whole catalog for a generator that predicts every digit of an item at once.

A ``parallel`` generator gives, per user, the log-probability of every code of every digit: a ``(M, K)``
table. An item's log-probability is the sum of its M digits' entries, so scoring the catalog is a gather
and a sum over an ``(N, M)`` table of codes: no beam, no lost target, every item (new ones included)
scored by the same rule. ``DigitCatalog`` holds that table (add and remove items by editing it);
``exact_scores`` does the gather-sum for a batch of users as one ``embedding_bag`` over the catalog
(``(N, M)`` indices into the ``(M*K, B)`` transposed table: M rows of B floats summed per item, never an
``(B, N, M)`` temporary); ``rank_exact`` keeps the top-k over chunks of items, ties broken by the lower
item index, with history exclusion; ``exact_topk`` runs a model end to end.

The same sum of digit scores is an inner product between the user's stacked per-digit query vectors and
an item's stacked code embeddings (minus a per-user constant), which is what a product-quantization index
computes; ``sidrec.decoding.faiss_exact`` serves it with faiss ``IndexPQ`` (exact over the codes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["BACKENDS", "DigitCatalog", "ExactRanker", "exact_scores", "exact_topk", "rank_exact",
           "topk_with_index_ties"]

#: items scored per ``embedding_bag`` call: bounds the ``(B, chunk)`` score block (256 users: 256 MiB)
ITEM_CHUNK = 1 << 18


class DigitCatalog:
    """The catalog as rows of digit codes, for exact ranking.

    Args:
        codes: ``(N, M)`` int codes (row = item index, as the tokenizer's table).
        level_sizes: codes per digit (len M); the gather table is ``M x max(level_sizes)``.
        available: ``bool (N,)`` items that may be recommended (default all).
    """

    def __init__(self, *, codes: np.ndarray, level_sizes: Sequence[int], available: np.ndarray | None = None) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        sizes = np.asarray(level_sizes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != len(sizes):
            raise ValueError(f"codes must be (N, {len(sizes)}), got {codes.shape}")
        if len(codes) and ((codes < 0).any() or (codes >= sizes).any()):
            raise ValueError(f"codes out of range for level sizes {list(level_sizes)}")
        self.level_sizes = [int(s) for s in sizes]
        self.width = int(sizes.max())
        self._offsets = torch.arange(len(sizes), dtype=torch.long) * self.width  # (M,)
        self.flat = torch.from_numpy(codes) + self._offsets  # (N, M) rows of the (M*K, B) table
        self.active = np.ones(len(codes), dtype=bool) if available is None else np.asarray(available, dtype=bool).copy()
        if self.active.shape != (len(codes),):
            raise ValueError(f"available must be ({len(codes)},) booleans, got {self.active.shape}")

    @property
    def num_items(self) -> int:
        return int(self.flat.shape[0])

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    @property
    def num_digits(self) -> int:
        return len(self.level_sizes)

    @property
    def codes(self) -> np.ndarray:
        return (self.flat - self._offsets).numpy()

    def restricted(self, mask: np.ndarray) -> DigitCatalog:
        """A view offering only the active items where ``mask`` (``bool``, padded with False) is True."""
        view = DigitCatalog.__new__(DigitCatalog)
        view.level_sizes, view.width, view._offsets, view.flat = self.level_sizes, self.width, self._offsets, self.flat
        mask = np.asarray(mask, dtype=bool)
        view.active = self.active & np.pad(mask, (0, max(0, self.num_items - len(mask))))[: self.num_items]
        return view

    def add_items(self, codes: np.ndarray) -> np.ndarray:
        """Append items (cold start); returns their indices (never renumbers the others)."""
        codes = np.asarray(codes, dtype=np.int64).reshape(-1, self.num_digits)
        if len(codes) and ((codes < 0).any() or (codes >= np.asarray(self.level_sizes)).any()):
            raise ValueError(f"codes out of range for level sizes {self.level_sizes}")
        start = self.num_items
        self.flat = torch.cat([self.flat, torch.from_numpy(codes) + self._offsets])
        self.active = np.concatenate([self.active, np.ones(len(codes), dtype=bool)])
        return np.arange(start, self.num_items)

    def remove_items(self, items: Sequence[int] | np.ndarray) -> int:
        """Stop recommending these items; returns how many were active."""
        idx = np.asarray(items, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_items):
            raise ValueError(f"item indices must be in [0, {self.num_items})")
        removed = int(self.active[idx].sum())
        self.active[idx] = False
        return removed


def exact_scores(log_probs: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` sums of ``log_probs (B, M, K)`` at each item's digits (``flat (n, M)`` = code + m * K)."""
    batch = log_probs.shape[0]
    table = log_probs.reshape(batch, -1).T.contiguous()  # (M*K, B): one row per (digit, code)
    return F.embedding_bag(flat, table, mode="sum").T  # (B, n)


def topk_with_index_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row, best first; equal scores ranked by the lower column (deterministic, unlike
    ``torch.topk``). ``(B, n) -> (B, k)`` values and columns (k <= n)."""
    vals, idx = torch.topk(scores, k, dim=1)
    kth = vals[:, -1:]  # (B, 1)
    crowded = (scores == kth).sum(1) > (vals == kth).sum(1)  # a tie cut by the boundary: choose by index
    if bool(crowded.any()):
        rows = torch.nonzero(crowded).view(-1)
        order = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices[:, :k]  # lower index first
        idx[rows], vals[rows] = order, scores[rows].gather(1, order)
    # within the selection: descending score, then ascending column
    order = torch.argsort(idx, dim=1, stable=True)
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    order = torch.argsort(-vals, dim=1, stable=True)
    return vals.gather(1, order), idx.gather(1, order)


def rank_exact(log_probs: torch.Tensor, catalog: DigitCatalog, *, k: int,
               exclude: Sequence[Sequence[int]] | None = None, item_chunk: int = ITEM_CHUNK,
               extra: Callable[[int, int], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` active items ``(B, k)`` and their scores, best first (ties: lower index first; ``-1`` / ``-inf``
    where fewer than k items are left). The score is the item's log-probability (the sum of ``log_probs
    (B, M, K)`` at its digits) plus, when given, ``extra(start, stop) -> (B, stop - start)`` for those items
    (e.g. a weighted dense score). ``exclude``: per-user items never returned."""

    def chunk_scores(start: int, stop: int) -> torch.Tensor:
        scores = exact_scores(log_probs, catalog.flat[start:stop])  # (B, n)
        return scores if extra is None else scores + extra(start, stop)

    return rank_chunks(chunk_scores, catalog, batch=log_probs.shape[0], k=k, exclude=exclude, item_chunk=item_chunk)


def rank_chunks(chunk_scores: Callable[[int, int], torch.Tensor], catalog: DigitCatalog, *, batch: int, k: int,
                exclude: Sequence[Sequence[int]] | None = None, item_chunk: int = ITEM_CHUNK) -> tuple[torch.Tensor,
                                                                                                      torch.Tensor]:
    """Top-``k`` active items of ``batch`` users over the catalog, scored ``item_chunk`` items at a time by
    ``chunk_scores(start, stop) -> (B, stop - start)`` (a fresh tensor); the running top-k keeps ties by the
    lower index. ``exclude``: per-user items never returned."""
    best_vals = torch.full((batch, 0), float("-inf"))
    best_idx = torch.zeros((batch, 0), dtype=torch.long)
    active = torch.from_numpy(catalog.active)
    rows = [u for u, items in enumerate(exclude or []) for _ in items]
    cols = torch.as_tensor([int(i) for items in (exclude or []) for i in items], dtype=torch.long)
    for start in range(0, catalog.num_items, item_chunk):
        stop = min(start + item_chunk, catalog.num_items)
        scores = chunk_scores(start, stop).float()  # (B, n)
        scores.masked_fill_(~active[start:stop][None, :], float("-inf"))
        if rows:
            inside = (cols >= start) & (cols < stop)
            scores[torch.as_tensor(rows)[inside], cols[inside] - start] = float("-inf")
        vals, idx = topk_with_index_ties(scores, min(k, stop - start))
        merged_vals, merged_idx = torch.cat([best_vals, vals], 1), torch.cat([best_idx, idx + start], 1)
        best_vals, pos = topk_with_index_ties(merged_vals, min(k, merged_vals.shape[1]))
        best_idx = merged_idx.gather(1, pos)
    return _pad(best_idx, best_vals, k)


def _pad(items: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``k`` (``-1`` / ``-inf`` past the catalog or where only ``-inf`` scores are left)."""
    if items.shape[1] < k:
        pad = k - items.shape[1]
        scores = torch.cat([scores, torch.full((scores.shape[0], pad), float("-inf"))], 1)
        items = torch.cat([items, torch.full((items.shape[0], pad), -1, dtype=torch.long)], 1)
    return items.masked_fill(torch.isinf(scores) & (scores < 0), -1), scores


BACKENDS = ("auto", "matmul", "faiss", "torch")
#: catalog size from which ``auto`` prefers faiss over matmul on a CPU (measured, 2 threads, batch 256: 12,101
#: items matmul 5,242 / faiss 5,489 users/s, about equal; 1M items 137 / 281: faiss 2x)
FAISS_ABOVE = 200_000


class ExactRanker:
    """Top-k over the whole catalog for a ``parallel`` generator, with the catalog kept beside the model.

    Args:
        model: a ``ParallelIdGenerator`` (``digit_scores``, ``item_vectors``, ``digit_table``, ``item_codes``).
        catalog: the ``DigitCatalog`` to rank (default: the model's item table, restricted to ``available``).
        backend: how the summed digit scores of every item are computed, all exact (the same scores):
            ``matmul`` (linear heads: ``states . u_i - log_norm``, one ``(B, D) x (D, N)`` product over the composed
            item vectors, cached per catalog), ``faiss`` (``IndexPQ`` over the codes; at most 256 codes per
            digit), ``torch`` (``rank_exact``'s gather-sum: the reference, any head) or ``auto`` (matmul for
            linear heads below ``FAISS_ABOVE`` items, faiss on CPU when it applies, else torch).
    """

    def __init__(self, model, *, catalog: DigitCatalog | None = None, available: np.ndarray | None = None,
                 backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model = model
        self.catalog = catalog or DigitCatalog(codes=model.item_codes, level_sizes=model.vocab.level_sizes,
                                               available=available)
        linear = getattr(model, "linear_heads", False)
        if backend == "auto":
            cpu = next(model.parameters()).device.type == "cpu"
            faiss_ok = cpu and self.catalog.width <= 256 and _has_faiss()
            large = self.catalog.num_items >= FAISS_ABOVE
            backend = "matmul" if linear and not (large and faiss_ok) else "faiss" if faiss_ok else "torch"
        if backend == "matmul" and not linear:
            raise ValueError("the matmul backend needs linear digit heads (head: tied or untied); use faiss or torch")
        self.backend = backend
        self._faiss = None
        self._vectors: torch.Tensor | None = None  # (N, D) composed item vectors (matmul), grown with the catalog
        if backend == "faiss":
            from sidrec.decoding.faiss_exact import FaissDigitIndex

            with torch.no_grad():
                self._faiss = FaissDigitIndex(catalog=self.catalog, table=model.digit_table())

    def add_items(self, codes: np.ndarray) -> np.ndarray:
        """Append items to the catalog (the index and the item vectors follow); returns their indices."""
        return self.catalog.add_items(codes)

    def remove_items(self, items: Sequence[int] | np.ndarray) -> int:
        return self.catalog.remove_items(items)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """``(N, D)`` composed item vectors of the catalog's rows (matmul backend), computed for new rows only."""
        done = 0 if self._vectors is None else self._vectors.shape[0]
        if done < self.catalog.num_items:
            rows = self.catalog.flat[done:].to(self.model.digit_proj.device)
            new = self.model.item_vectors(rows).detach().float().cpu()
            self._vectors = new if self._vectors is None else torch.cat([self._vectors, new])
        return self._vectors

    @torch.no_grad()
    def topk(self, histories: Sequence[Sequence[int]], *, k: int, exclude_history: bool = False,
             batch_size: int = 256, dense_weight: float = 0.0, only: np.ndarray | None = None) -> tuple[torch.Tensor,
                                                                                                       torch.Tensor]:
        """Top-``k`` items ``(U, k)`` and scores, best first (``-1`` / ``-inf`` where fewer exist). The score is
        the item's log-probability, plus ``dense_weight`` x the dense score for a model with a dense head.
        ``only``: ``bool (N,)``, rank just these items (e.g. the cold ones)."""
        out = self.topk_by_weight(histories, k=k, exclude_history=exclude_history, batch_size=batch_size,
                                  dense_weights=(dense_weight,), only=only)
        return out[dense_weight]

    @torch.no_grad()
    def topk_by_weight(self, histories: Sequence[Sequence[int]], *, k: int, dense_weights: Sequence[float] = (0.0,),
                       exclude_history: bool = False, batch_size: int = 256,
                       only: np.ndarray | None = None) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
        """``topk`` for each of ``dense_weights`` at once (the model runs once per batch): ``{weight: (items,
        scores)}``. faiss serves only weight 0 over the whole active catalog (the dense score does not fold
        into its index); the other cases use the gather-sum."""
        model = self.model
        catalog = self.catalog if only is None else self.catalog.restricted(only)
        device = next(model.parameters()).device
        if any(dense_weights) and not getattr(model, "has_dense_head", False):
            raise ValueError("dense_weight > 0 needs a generator with a dense head (dense_head: true)")
        parts: dict[float, list[tuple[torch.Tensor, torch.Tensor]]] = {w: [] for w in dense_weights}
        dense_items = model.embedder.catalog().detach().float().cpu() if any(dense_weights) else None  # (N, D)
        for start in range(0, len(histories), batch_size):
            batch = [list(h) for h in histories[start : start + batch_size]]
            input_ids, mask = (t.to(device) for t in model.history_inputs(batch))
            scores = model.digit_scores(input_ids, mask)
            user = (scores.states * model.dense_scale).float().cpu() if dense_items is not None else None
            for w in dense_weights:
                dense = None if w == 0 else (lambda a, b, w=w, u=user: w * u @ dense_items[a:b].T)  # (B, b - a)
                parts[w].append(self._rank(scores, catalog, k=k, exclude=batch if exclude_history else None,
                                           dense=dense, whole=only is None))
        return {w: (torch.cat([p[0] for p in v]) if v else torch.zeros((0, k), dtype=torch.long),
                    torch.cat([p[1] for p in v]) if v else torch.zeros((0, k))) for w, v in parts.items()}

    @torch.no_grad()
    def full_scores(self, histories: Sequence[Sequence[int]], *, dense_weight: float = 0.0) -> torch.Tensor:
        """``(B, N)`` every catalog item's score for each history (log-probability, + ``dense_weight`` x dense),
        ``-inf`` for items the catalog does not offer: what fusion with another model's scores needs."""
        model = self.model
        device = next(model.parameters()).device
        input_ids, mask = (t.to(device) for t in model.history_inputs([list(h) for h in histories]))
        scores = model.digit_scores(input_ids, mask)
        if self.backend == "matmul":
            out = scores.states.float().cpu() @ self.item_vectors().T - scores.log_norm.float().cpu()[:, None]
        else:
            out = exact_scores(scores.log_probs.cpu(), self.catalog.flat)  # (B, N)
        if dense_weight:
            items = model.embedder.catalog().detach().float().cpu()
            out = out + dense_weight * (scores.states * model.dense_scale).float().cpu() @ items.T
        return out.masked_fill(~torch.from_numpy(self.catalog.active)[None, :], float("-inf"))

    def _rank(self, scores, catalog: DigitCatalog, *, k: int, exclude, dense, whole: bool) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
        """One batch's top-k with this ranker's backend (``dense``: the weighted dense part, or None)."""
        if self.backend == "faiss" and dense is None and whole:
            queries = self.model.digit_queries(scores.states)
            return self._faiss.search(queries, scores.log_norm, k=k, exclude=exclude)
        if self.backend == "matmul":
            vectors, states, norm = self.item_vectors(), scores.states.float().cpu(), scores.log_norm.float().cpu()

            def chunk(a: int, b: int) -> torch.Tensor:
                out = states @ vectors[a:b].T - norm[:, None]  # (B, b - a) log-probabilities
                return out if dense is None else out + dense(a, b)

            return rank_chunks(chunk, catalog, batch=states.shape[0], k=k, exclude=exclude)
        return rank_exact(scores.log_probs.cpu(), catalog, k=k, exclude=exclude, extra=dense)


def _has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def exact_topk(
    model, histories: Sequence[Sequence[int]], *, k: int, catalog: DigitCatalog | None = None,
    available: np.ndarray | None = None, exclude_history: bool = False, batch_size: int = 256,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items ``(U, k)`` and log-probabilities of a ``parallel`` generator over the whole catalog
    (``ExactRanker`` built for this call). ``exclude_history``: never return a user's own history items."""
    ranker = ExactRanker(model, catalog=catalog, available=available, backend=backend)
    return ranker.topk(histories, k=k, exclude_history=exclude_history, batch_size=batch_size)
