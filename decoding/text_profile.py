"""How close each item's text is to a user's recent items: the ranking for items no model was trained on.

A generator's dense and generation scores of an item it never saw in training are unreliable (nothing taught
them), but its text is known. ``text_scores`` is the text kNN baseline's query (``sidrec.eval.baselines.knn``:
the last ``window`` history items' L2-normalised text embeddings, the ``j``-th newest weighted ``decay**j``;
window 20 and decay 0.2 were its VALID choice) against every item's normalised text embedding. Decoding uses it
to pick which never-seen items join a user's candidates and which fill the cold-start share (epsilon), as LIGER
ranks new items by a dense text model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["TEXT_DECAY", "TEXT_WINDOW", "candidate_text_scores", "closest_by_text", "model_unit_text", "text_scores"]

TEXT_WINDOW = 20  # history items in the query (the knn baseline's VALID choice)
TEXT_DECAY = 0.2  # weight of the j-th newest item: decay**j (idem)


def model_unit_text(model: object) -> torch.Tensor | None:
    """A generator's normalised item text ``(N, Dt)`` (cached by its embedder), or None when it reads no text."""
    unit_text = getattr(getattr(model, "embedder", None), "unit_text", None)
    return unit_text() if unit_text is not None else None


@torch.no_grad()
def text_scores(text: torch.Tensor, histories: Sequence[Sequence[int]], *, window: int = TEXT_WINDOW,
                decay: float = TEXT_DECAY, normalized: bool = False, items: torch.Tensor | None = None,
                drop_query: bool = False) -> torch.Tensor:
    """``(B, N)`` cosine of every item's text ``text (N, D)`` (row i = item i) with each history's query;
    ``normalized``: the rows are unit vectors already (``ItemEmbedder.unit_text``, cached), so not again;
    ``items`` ``(M,)``: score only these items, ``(B, M)`` (e.g. the never-seen ones); ``drop_query``: the
    query's own items (the last ``window`` of each history) get ``-inf``, as the kNN baseline drops them (each
    is closest to its own query; whole-catalog scores only)."""
    if drop_query and items is not None:
        raise ValueError("drop_query applies to whole-catalog scores (items=None)")
    unit = text.float() if normalized else torch.nn.functional.normalize(text.float(), dim=1)  # (N, D)
    queries = _queries(unit, histories, window=window, decay=decay)  # (B, D)
    scores = queries @ (unit if items is None else unit[items.to(unit.device)]).T  # (B, N) or (B, M)
    if drop_query:
        rows = [r for r, h in enumerate(histories) for _ in list(h)[-window:]]
        cols = [c for h in histories for c in list(h)[-window:]]
        if rows:
            scores[torch.tensor(rows), torch.tensor(cols, device=scores.device)] = float("-inf")
    return scores


@torch.no_grad()
def closest_by_text(unit: torch.Tensor, histories: Sequence[Sequence[int]], pool: torch.Tensor, *, k: int,
                    exclude_history: bool = False) -> torch.Tensor:
    """``(B, k)`` each user's ``k`` items of ``pool (C,)`` whose text is closest to the user's recent items, in
    that order (``-1`` where fewer; ``exclude_history``: never one of the user's own items). ``unit (N, D)``:
    normalised rows. What fills the cold-start slots: nothing trained a model's scores of an item it never saw."""
    sims = text_scores(unit, histories, normalized=True, items=pool).cpu()  # (B, C)
    if exclude_history and len(pool):
        where = {int(item): col for col, item in enumerate(pool.tolist())}
        rows = [r for r, h in enumerate(histories) for i in h if int(i) in where]
        cols = [where[int(i)] for h in histories for i in h if int(i) in where]
        if rows:
            sims[torch.tensor(rows), torch.tensor(cols)] = float("-inf")
    take = min(k, len(pool))
    vals, idx = sims.topk(take, dim=1)  # (B, take)
    chosen = pool.cpu()[idx].masked_fill(torch.isinf(vals), -1)
    return torch.cat([chosen, chosen.new_full((len(histories), k - take), -1)], 1)


@torch.no_grad()
def candidate_text_scores(unit: torch.Tensor, histories: Sequence[Sequence[int]], items: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` the text similarity of each user's own candidates ``items (B, K)`` (``-inf`` where ``-1``),
    with ``unit (N, D)`` normalised rows: K dot products per user, not the whole catalog."""
    queries = _queries(unit, histories, window=TEXT_WINDOW, decay=TEXT_DECAY)  # (B, D)
    rows = items.to(unit.device)
    sims = (unit[rows.clamp(min=0)] * queries[:, None, :]).sum(-1)  # (B, K)
    return sims.masked_fill(rows < 0, float("-inf"))


def _queries(unit: torch.Tensor, histories: Sequence[Sequence[int]], *, window: int, decay: float) -> torch.Tensor:
    """``(B, D)`` each history's normalised recency-weighted sum of its last ``window`` items' rows."""
    index = torch.zeros(len(histories), window, dtype=torch.long)  # (B, W) newest first
    weight = torch.zeros(len(histories), window)  # (B, W), 0 past a short history
    for row, history in enumerate(histories):
        recent = list(history)[-window:][::-1]
        index[row, : len(recent)] = torch.as_tensor(recent, dtype=torch.long)
        weight[row, : len(recent)] = decay ** torch.arange(len(recent), dtype=torch.float32)
    index, weight = index.to(unit.device), weight.to(unit.device)
    return torch.nn.functional.normalize((weight[..., None] * unit[index]).sum(1), dim=1)  # (B, D)
