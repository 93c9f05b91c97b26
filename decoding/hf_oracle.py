"""Reference decoding through HF ``generate``: the slow, obviously-correct oracle for the fast path.

``trie_prefix_allowed_tokens_fn`` walks the trie in Python for every beam at every step, which is why
HF-constrained generation is slow; it is used by the tests and by ``benchmarks/decoding.py`` to check
that ``constrained_beam_search`` returns the same items and scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from sidrec.decoding.beam import BeamSearchResult, Exclude, _flatten_exclude, _resolve_level_offsets
from sidrec.decoding.trie import CatalogTrie

__all__ = ["hf_constrained_generate", "topk_mismatches", "trie_prefix_allowed_tokens_fn"]


def trie_prefix_allowed_tokens_fn(
    trie: CatalogTrie,
    *,
    level_offsets: Sequence[int],
    batch_size: int = 1,
    exclude: Exclude = None,
) -> Callable[[int, torch.Tensor], list[int]]:
    """Build a ``prefix_allowed_tokens_fn`` for HF ``generate`` that allows only catalog prefixes.

    Args:
        trie: catalog of allowed semantic IDs.
        level_offsets: token id of code 0 at each level.
        batch_size: number of users in the ``generate`` call (needed only with ``exclude``).
        exclude: per-user item indices to forbid, like ``constrained_beam_search``'s ``exclude``.

    The returned function receives the decoder sequence so far (starting with the decoder start token)
    and returns the token ids of codes that lead to at least one active, non-excluded item. Allowed
    lists are memoised per prefix (users without exclusions), so HF's baseline is not slowed by the
    trie walk. The memo assumes the trie is not modified while the function is in use.
    """
    offsets = [int(o) for o in level_offsets]
    levels = trie.num_levels
    excluded = _excluded_prefix_counts(trie, exclude, batch_size)
    cache: dict[tuple[int, int], list[int]] = {}  # (level, node) -> allowed tokens without exclusions

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        generated = sent[1:].tolist()  # drop the decoder start token
        t = len(generated)
        if t >= levels:
            return [int(sent[0])]
        node = 0
        for level, token in enumerate(generated):
            code = token - offsets[level]
            if not 0 <= code < trie.level_sizes[level]:
                return [offsets[t]]  # a filler beam off the trie (only below -1e9 scores)
            node = trie.child(level, node, code)
            if node < 0:
                return [offsets[t]]
        user_excluded = excluded[batch_id] if exclude is not None else None
        if not user_excluded:
            tokens = cache.get((t, node))
            if tokens is None:
                tokens = (trie.allowed_codes(t, node) + offsets[t]).tolist() or [offsets[t]]
                cache[(t, node)] = tokens
            return tokens
        prefix = tuple(tok - off for tok, off in zip(generated, offsets, strict=False))
        counts = trie.counts(t, torch.tensor([node]))[0].numpy().astype(np.int64)  # (C_t,)
        for code in np.flatnonzero(counts > 0):
            counts[code] -= user_excluded[(*prefix, int(code))]
        codes = np.flatnonzero(counts > 0)
        if codes.size == 0:
            return [offsets[t]]
        return (codes + offsets[t]).tolist()

    return allowed


def _excluded_prefix_counts(trie: CatalogTrie, exclude: Exclude, batch_size: int) -> list[Counter]:
    """Per user, how many of its distinct active excluded items lie below each code prefix (tuple of codes)."""
    users, items = _flatten_exclude(exclude, batch_size)
    excluded: list[Counter] = [Counter() for _ in range(batch_size)]
    for user, item in set(zip(users.tolist(), items.tolist(), strict=True)):
        if trie.active[item]:
            code = tuple(int(c) for c in trie.codes[item])
            for t in range(trie.num_levels):  # one count per prefix + code on the item's path
                excluded[user][code[: t + 1]] += 1
    return excluded


@torch.inference_mode()
def hf_constrained_generate(
    model: nn.Module,
    trie: CatalogTrie,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    beam_size: int,
    k: int,
    exclude: Exclude = None,
    level_offsets: Sequence[int] | None = None,
) -> BeamSearchResult:
    """Same contract as ``constrained_beam_search``, computed with HF ``generate`` (slow reference).

    Scores are raw summed log-probabilities (``length_penalty=0``). Sequences whose HF score is below
    -1e8 are HF's filler beams (fewer valid items than beams) and are reported as item -1.
    """
    offsets = _resolve_level_offsets(model, trie, level_offsets)
    levels, batch = trie.num_levels, input_ids.shape[0]
    fn = trie_prefix_allowed_tokens_fn(trie, level_offsets=offsets, batch_size=batch, exclude=exclude)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            num_beams=beam_size,
            num_return_sequences=k,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=False,
            max_new_tokens=levels,
            min_new_tokens=levels,
            prefix_allowed_tokens_fn=fn,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
        )
    finally:
        model.train(was_training)
    tokens = out.sequences[:, 1 : levels + 1].cpu()  # (B*k, L)
    codes = tokens - torch.tensor(offsets)[None, :]
    if beam_size > 1:
        scores = out.sequences_scores.float().cpu()  # (B*k,)
    else:  # greedy search reports processed logits only: re-score the raw ones
        logp = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.logits], dim=1)  # (B, L, V)
        scores = logp.gather(2, out.sequences[:, 1 : levels + 1, None])[..., 0].sum(1).cpu()
    valid = (scores > -1e8) & (codes >= 0).all(1) & (codes < torch.tensor(trie.level_sizes)).all(1)
    items = torch.full((codes.shape[0],), -1, dtype=torch.long)
    if valid.any():
        items[valid] = torch.from_numpy(trie.lookup(codes[valid].numpy()))
    scores = scores.masked_fill(items < 0, float("-inf"))
    codes = codes.masked_fill(items[:, None] < 0, -1)
    return BeamSearchResult(
        items=items.view(batch, k), scores=scores.view(batch, k), codes=codes.view(batch, k, levels)
    )


def topk_mismatches(ours: BeamSearchResult, ref: BeamSearchResult, *, tol: float = 1e-4) -> list[str]:
    """Differences between two top-k results, tolerant to ties: empty when they agree.

    Scores must agree position by position within ``tol`` (same -inf pattern); items must agree except
    among reference scores tied within ``tol``, where ours must be one of the tied reference items.
    """
    problems: list[str] = []
    if ours.items.shape != ref.items.shape:
        return [f"shapes differ: {tuple(ours.items.shape)} vs {tuple(ref.items.shape)}"]
    for u in range(ref.items.shape[0]):
        s_ours, s_ref = ours.scores[u], ref.scores[u]
        finite = torch.isfinite(s_ref)
        if not torch.equal(torch.isfinite(s_ours), finite):
            problems.append(f"user {u}: valid positions differ: {s_ours.tolist()} vs {s_ref.tolist()}")
            continue
        gap = (s_ours[finite] - s_ref[finite]).abs()
        if gap.numel() and float(gap.max()) > tol:
            problems.append(f"user {u}: scores differ by up to {float(gap.max()):.2e}")
            continue
        ref_finite_scores, ref_finite_items = s_ref[finite], ref.items[u][finite]
        for i in torch.nonzero(finite).view(-1).tolist():
            tied = (ref_finite_scores - s_ref[i]).abs() <= tol
            if int(ours.items[u, i]) not in set(ref_finite_items[tied].tolist()):
                problems.append(f"user {u} rank {i}: item {int(ours.items[u, i])} vs {int(ref.items[u, i])}")
    return problems
