"""Trie-constrained beam search over semantic IDs: batched over users, exact w.r.t. HF generate.

Per user the encoder runs once; the decoder then runs one position per code level for all
``B x beam`` prefixes at once (``T5IncrementalDecoder``: per-user cross-attention K/V, small reordered
self-attention cache). At level t only level t's slice of ``lm_head`` is scored, ``(C_t, D)``, which equals
HF's log-softmax over the full vocabulary because the generator pushes every other token to a large
negative logit. The trie masks codes that lead to no (non-excluded) active item, the
``B x (K * C_t)`` candidate scores go through one ``topk``, and the chosen codes advance trie node ids
by a gather. No Python loop runs over users or beams.

Excluded items (e.g. the user's history) are removed exactly: per user, their counts are subtracted
from the trie's active-item counts along their paths, so the last level masks the excluded items
themselves and every prefix whose items are all excluded is pruned before it can take a beam slot.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sidrec.decoding.prior import CodePrior
from sidrec.decoding.t5_step import T5IncrementalDecoder
from sidrec.decoding.trie import CatalogTrie

logger = logging.getLogger(__name__)

__all__ = ["BeamSearchResult", "UserExclusions", "constrained_beam_search"]

Exclude = Sequence[Sequence[int] | np.ndarray] | torch.Tensor | None


@dataclass(frozen=True)
class BeamSearchResult:
    """Top-k distinct items per user, best first.

    Attributes:
        items: ``int64 (B, k)`` item indices (trie / tokenizer row), -1 where fewer than k valid items exist.
        scores: ``float32 (B, k)`` sequence log-probabilities (sum over levels), ``-inf`` where items is -1.
        codes: ``int64 (B, k, L)`` the decoded semantic IDs (-1 where items is -1).
    """

    items: torch.Tensor
    scores: torch.Tensor
    codes: torch.Tensor


class UserExclusions:
    """Per-user excluded items, as (user, prefix node, code) entries at every level.

    Args:
        trie: the catalog trie.
        exclude: per user, item indices to remove (list of lists/arrays, or an int tensor ``(B, M)``
            padded with -1). Duplicates and removed items are ignored; out-of-range indices raise.
        batch_size: number of users B.
    """

    def __init__(self, *, trie: CatalogTrie, exclude: Exclude, batch_size: int) -> None:
        users, items = _flatten_exclude(exclude, batch_size)
        items_in = items
        if items.size and (items.min() < 0 or items.max() >= trie.num_items):
            raise ValueError(
                f"exclude holds item indices outside [0, {trie.num_items}) (range [{items.min()}, {items.max()}]); "
                "pad tensors with -1 and pass trie item indices"
            )
        keys = np.unique(users * max(trie.num_items, 1) + items)
        users, items = keys // max(trie.num_items, 1), keys % max(trie.num_items, 1)
        live = trie.active[items]
        users, items = users[live], items[live]
        if len(keys) < len(items_in) or not live.all():
            logger.debug(
                "exclude: %d duplicate and %d removed-item entries ignored",
                len(items_in) - len(keys),
                int((~live).sum()),
            )
        codes = trie.codes[items]  # (E, L)
        self._set(torch.from_numpy(users), torch.from_numpy(trie.paths(codes)), torch.from_numpy(codes))

    def _set(self, users: torch.Tensor, paths: torch.Tensor, codes: torch.Tensor) -> None:
        self.num_entries = int(users.numel())
        self._users = users  # (E,) user row of each entry
        self._paths = paths  # (E, L) trie node of each prefix of the excluded item
        self._codes = codes  # (E, L) the excluded item's codes

    def select(self, users: torch.Tensor) -> UserExclusions:
        """The entries of ``users`` (b,), renumbered 0..b-1 in that order (for a chunk of the batch)."""
        remap = torch.full((int(users.max()) + 1 if users.numel() else 1,), -1, dtype=torch.long)
        remap[users] = torch.arange(users.numel())
        mapped = torch.full_like(self._users, -1)  # (E,) entry's row in the chunk, -1 = not in it
        known = self._users < remap.numel()
        mapped[known] = remap[self._users[known]]
        keep = mapped >= 0
        out = UserExclusions.__new__(UserExclusions)
        out._set(mapped[keep], self._paths[keep], self._codes[keep])
        return out

    def subtract(self, level: int, nodes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Remove excluded items from beam counts in place.

        Args:
            level: the code level being decoded.
            nodes: ``(B, K)`` trie node of each beam's prefix (-1 for dead beams).
            counts: ``int32 (B, K, C_level)`` active-item counts below each beam prefix + code.
        """
        if self.num_entries == 0:
            return counts
        match = nodes[self._users] == self._paths[:, level, None]  # (E, K)
        entry, beam = match.nonzero(as_tuple=True)
        if entry.numel():
            index = (self._users[entry], beam, self._codes[entry, level])
            ones = torch.ones(entry.numel(), dtype=counts.dtype)
            counts.index_put_(index, -ones, accumulate=True)
        return counts


def _flatten_exclude(exclude: Exclude, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs of ``exclude`` as two int64 arrays; -1 padding dropped."""
    if exclude is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if isinstance(exclude, torch.Tensor):
        if exclude.ndim != 2 or exclude.shape[0] != batch_size:
            raise ValueError(
                f"exclude tensor must be (B={batch_size}, M) padded with -1, got {tuple(exclude.shape)}"
            )
        array = exclude.detach().cpu().numpy().astype(np.int64)
        users = np.repeat(np.arange(batch_size, dtype=np.int64), array.shape[1])
        items = array.reshape(-1)
        keep = items >= 0
        return users[keep], items[keep]
    if len(exclude) != batch_size:
        raise ValueError(f"exclude must have one list per user ({batch_size}), got {len(exclude)}")
    lists = [np.asarray(x, dtype=np.int64).reshape(-1) for x in exclude]
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    users = np.repeat(np.arange(batch_size, dtype=np.int64), lengths)
    items = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    return users, items


def _resolve_level_offsets(
    model: nn.Module, trie: CatalogTrie, level_offsets: Sequence[int] | None
) -> list[int]:
    """Token id of code 0 at each level; level t's tokens are ``offset_t .. offset_t + C_t - 1``."""
    if level_offsets is None:
        vocab = getattr(model, "vocab", None)
        if vocab is None or not hasattr(vocab, "level_offsets"):
            raise ValueError(
                "cannot find the token id of each level's code 0: pass level_offsets=vocab.level_offsets "
                "(sidrec.seqmodel.SemanticIdVocab) or use a model with a .vocab attribute"
            )
        level_offsets = vocab.level_offsets
    offsets = [int(o) for o in level_offsets]
    if len(offsets) != trie.num_levels:
        raise ValueError(
            f"level_offsets has {len(offsets)} entries but the trie has {trie.num_levels} levels"
        )
    vocab_size = model.lm_head.weight.shape[0]
    for t, (offset, size) in enumerate(zip(offsets, trie.level_sizes, strict=True)):
        if offset < 0 or offset + size > vocab_size:
            raise ValueError(
                f"level {t} tokens [{offset}, {offset + size}) fall outside the model's vocabulary ({vocab_size}); "
                "the trie's level_sizes must match the vocab the model was trained with"
            )
    return offsets


@torch.inference_mode()
def constrained_beam_search(
    model: nn.Module, trie: CatalogTrie, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
    beam_size: int, k: int, exclude: Exclude = None, level_offsets: Sequence[int] | None = None,
    chunk_users: int | None = 32, num_threads: int | None = None,
    on_encoded: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    prior: CodePrior | None = None, prior_weight: float = 0.0,
) -> BeamSearchResult:
    """Top-k catalog items per user by trie-constrained beam search.

    Gives the same items and scores as ``model.generate(num_beams=beam_size, do_sample=False,
    length_penalty=0.0, prefix_allowed_tokens_fn=trie_prefix_allowed_tokens_fn(...),
    max_new_tokens=L)`` (up to the order of ties), much faster.

    Args:
        model: the T5 generator (``T5ForConditionalGeneration`` layout: ``get_encoder()``, ``decoder``,
            ``lm_head``); switched to eval mode for the call and restored afterwards. The encoder is the
            model's own (``get_encoder()``, as HF ``generate`` calls it), so a family with other encoder
            inputs (``ItemLevelGenerator``: item tokens) runs through the same search.
        trie: catalog of allowed semantic IDs (removed items never appear).
        input_ids: ``(B, S)`` encoder input ids (one row per user; ``model.history_inputs`` builds them).
        attention_mask: ``(B, S)`` encoder padding mask.
        beam_size: beams kept per user at each level.
        k: items returned per user, ``1 <= k <= beam_size``.
        exclude: per-user item indices that must not be returned (e.g. the history); see
            ``UserExclusions``. The search still returns k items whenever k valid ones exist.
        level_offsets: token id of code 0 at each level; default ``model.vocab.level_offsets``.
        chunk_users: users are sorted by input length and searched in chunks of this many, each
            cropped to its own longest input, so short histories do not pay for the batch's longest
            one (the encoder and cross-attention cost is linear in the padded length). Results do not
            depend on it; None = one chunk.
        on_encoded: called once per chunk as ``on_encoded(users, encoder_states, attention_mask)`` with the
            chunk's rows of the batch ``(b,)``, its encoder output ``(b, S, D)`` and mask ``(b, S)``, so a
            caller can reuse the encoding (e.g. a dense head's user state) instead of encoding twice.
        prior: the catalog's popularity prior (``CodePrior`` of this trie); with ``prior_weight`` > 0 every
            level's log-probabilities lose ``prior_weight * log p_pop(code | prefix)`` before the beam picks
            (a popularity-corrected search that lets rare items through), and the returned scores are those
            corrected sums. ``prior_weight`` 0 (the default) is the plain search, equal to HF ``generate``.
        num_threads: torch CPU threads for this call (restored afterwards); None = leave as is. On an
            oversubscribed CPU (more busy threads than cores) use 1: the search runs hundreds of small
            ops per chunk and each multi-threaded op can wait a scheduler slice for its second thread
            (measured here: 2 threads ~7x slower than 1 on a loaded 2-core machine).

    Returns:
        ``BeamSearchResult`` with ``items``/``scores`` ``(B, k)`` sorted by descending score.
    """
    _check_search_args(trie, input_ids, attention_mask, beam_size=beam_size, k=k, chunk_users=chunk_users,
                       num_threads=num_threads, prior=prior, prior_weight=prior_weight)
    offsets = _resolve_level_offsets(model, trie, level_offsets)
    batch = input_ids.shape[0]
    exclusions = UserExclusions(trie=trie, exclude=exclude, batch_size=batch) if exclude is not None else None
    search = functools.partial(
        _search, model, trie, offsets=offsets, beam_size=beam_size, k=k, exclusions=exclusions,
        on_encoded=on_encoded, prior=prior if prior_weight else None, prior_weight=prior_weight,
    )
    chunks = _chunks_by_width(attention_mask, chunk_users)
    with _search_mode(model, num_threads):
        items, scores, codes = _search_chunks(search, input_ids, attention_mask, chunks, k=k, levels=trie.num_levels)
    return BeamSearchResult(items=items, scores=scores, codes=codes)


def _check_search_args(
    trie: CatalogTrie, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, beam_size: int, k: int,
    chunk_users: int | None, num_threads: int | None, prior: CodePrior | None, prior_weight: float,
) -> None:
    """``ValueError`` for arguments of ``constrained_beam_search`` that cannot work (checked before any work)."""
    if not 1 <= k <= beam_size:
        raise ValueError(f"need 1 <= k <= beam_size, got k={k}, beam_size={beam_size}")
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and attention_mask must both be (B, S), got {tuple(input_ids.shape)} "
            f"and {tuple(attention_mask.shape)}"
        )
    if chunk_users is not None and chunk_users < 1:
        raise ValueError(f"chunk_users must be >= 1 or None, got {chunk_users}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
    if prior_weight < 0 or (prior_weight and prior is None) or (prior is not None and prior.trie is not trie):
        raise ValueError(f"prior_weight must be >= 0 and needs the CodePrior of this trie (prior_weight="
                         f"{prior_weight}, prior {'given' if prior is not None else 'missing'})")
    if prior_weight and prior.built_for != (trie.num_items, trie.num_active):
        raise ValueError("the CodePrior was built before items were added to or removed from the trie; build a "
                         "new one (CodePrior(trie=trie, item_counts=...))")


def _chunks_by_width(attention_mask: torch.Tensor, chunk_users: int | None) -> list[tuple[torch.Tensor, int]]:
    """The batch's rows sorted by input width, cut into chunks of ``chunk_users`` (None = one chunk).

    Each chunk is ``(users, width)``: its rows ``(b,)`` (CPU) and the width that holds all of their tokens.
    """
    batch = attention_mask.shape[0]
    # width needed per row: one past its last real token (right, left or no padding)
    positions = torch.arange(1, attention_mask.shape[1] + 1, device=attention_mask.device)
    widths = (positions * (attention_mask != 0)).amax(dim=1).clamp(min=1).cpu()  # (B,)
    order = torch.argsort(widths, stable=True)
    size = batch if chunk_users is None else chunk_users
    chunks = []
    for first in range(0, batch, size):
        users = order[first : first + size]  # (b,) CPU
        chunks.append((users, int(widths[users].max())))
    return chunks


@contextlib.contextmanager
def _search_mode(model: nn.Module, num_threads: int | None) -> Iterator[None]:
    """Eval mode and ``num_threads`` torch CPU threads (None = as is) inside; both restored afterwards."""
    was_training = model.training
    if was_training:  # eval() walks every module: skip it when already in eval mode
        model.eval()
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if was_training:
            model.train()
        if num_threads is not None:
            torch.set_num_threads(threads_before)


def _search_chunks(
    search: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]], input_ids: torch.Tensor,
    attention_mask: torch.Tensor, chunks: list[tuple[torch.Tensor, int]], *, k: int, levels: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``search`` (``_search`` with its settings bound) on each chunk, each cropped to its own width.

    Returns items/scores ``(B, k)`` and codes ``(B, k, L)`` in the batch's row order.
    """
    batch = input_ids.shape[0]
    items = torch.full((batch, k), -1, dtype=torch.long)
    scores = torch.full((batch, k), float("-inf"), dtype=torch.float32)
    codes = torch.full((batch, k, levels), -1, dtype=torch.long)
    for users, width in chunks:
        rows = users.to(input_ids.device)
        chunk = search(input_ids[rows, :width], attention_mask[rows, :width], users=users)
        items[users], scores[users], codes[users] = chunk
    return items, scores, codes


def _search(
    model: nn.Module,
    trie: CatalogTrie,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    offsets: list[int],
    beam_size: int,
    k: int,
    exclusions: UserExclusions | None,
    users: torch.Tensor,
    on_encoded: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    prior: CodePrior | None = None,
    prior_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Beam search for one chunk of users; returns items/scores ``(b, k)`` and codes ``(b, k, L)``."""
    batch, levels = input_ids.shape[0], trie.num_levels
    device = input_ids.device
    excluded = exclusions.select(users) if exclusions is not None else None
    decoder = _encode(model, input_ids, attention_mask, users=users, levels=levels, on_encoded=on_encoded)
    start = int(model.config.decoder_start_token_id)
    tokens = torch.full((batch,), start, dtype=torch.long, device=device)  # (b*K,)
    scores = torch.zeros(batch, 1, dtype=torch.float32)  # (b, K) cumulative log-probs, on CPU
    nodes = torch.zeros(batch, 1, dtype=torch.long)  # (b, K) trie node per beam; -1 = dead
    codes = torch.zeros(batch, 1, 0, dtype=torch.long)  # (b, K, t) codes chosen so far
    weight = model.lm_head.weight  # (V, D)
    for t in range(levels):
        size = trie.level_sizes[t]
        beams = nodes.shape[1]
        hidden = decoder.step(tokens)  # (b*K, D)
        logits = hidden @ weight[offsets[t] : offsets[t] + size].T  # (b*K, C_t)
        logp = torch.log_softmax(logits.float(), dim=-1).cpu().view(batch, beams, size)
        if prior is not None:  # popularity-corrected: how much more likely the user makes each code
            logp = logp - prior_weight * prior.log_prior(t, nodes.clamp(min=0).view(-1)).view(batch, beams, size)
        counts = trie.counts(t, nodes.clamp(min=0).view(-1)).view(batch, beams, size)  # (b, K, C_t)
        if excluded is not None:
            counts = excluded.subtract(t, nodes, counts)
        ok = (counts > 0) & (nodes >= 0)[..., None]  # (b, K, C_t)
        candidates = (scores[..., None] + logp).masked_fill_(~ok, float("-inf")).view(batch, beams * size)
        width = min(beam_size if t < levels - 1 else k, beams * size)
        scores, flat = candidates.topk(width, dim=1)  # (b, K'), sorted descending
        parent = torch.div(flat, size, rounding_mode="floor")  # (b, K')
        code = flat - parent * size
        dead = torch.isneginf(scores)
        nodes = trie.step(t, nodes.gather(1, parent).clamp(min=0), code).masked_fill_(dead, -1)
        codes = torch.cat([codes.gather(1, parent[..., None].expand(-1, -1, t)), code[..., None]], dim=2)
        if t < levels - 1:
            rows = (torch.arange(batch)[:, None] * beams + parent).view(-1)  # (b*K',)
            decoder.reorder(rows.to(device))
            tokens = (code + offsets[t]).view(-1).to(device)
    items = nodes  # at the last level the trie yields item indices
    codes = codes.masked_fill(items[..., None] < 0, -1)
    return _pad_to_k(items, scores, codes, k)


def _encode(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, users: torch.Tensor, levels: int,
    on_encoded: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None,
) -> T5IncrementalDecoder:
    """Encode one chunk (calling ``on_encoded``) and return the incremental decoder over its states."""
    # the encode hook: whatever encoder the model hands HF generate (code tokens for the tiger family,
    # one item per position for the item family); the decoder is the same T5 decoder for both
    encoder_states = model.get_encoder()(
        input_ids=input_ids, attention_mask=attention_mask
    ).last_hidden_state  # (b, S, D)
    if on_encoded is not None:
        on_encoded(users, encoder_states, attention_mask)
    return T5IncrementalDecoder(
        model=model, encoder_states=encoder_states, attention_mask=attention_mask, max_length=levels
    )


def _pad_to_k(
    items: torch.Tensor, scores: torch.Tensor, codes: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad items (-1), scores (-inf) and codes (-1) to k columns when the last level had fewer candidates."""
    if items.shape[1] < k:  # fewer candidates than k in the whole last level
        batch, pad, levels = items.shape[0], k - items.shape[1], codes.shape[2]
        items = torch.cat([items, items.new_full((batch, pad), -1)], dim=1)
        scores = torch.cat([scores, scores.new_full((batch, pad), float("-inf"))], dim=1)
        codes = torch.cat([codes, codes.new_full((batch, pad, levels), -1)], dim=1)
    return items, scores, codes
