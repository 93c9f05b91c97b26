"""History -> encoder input ids: the one encoding used by training, validation, evaluation and the API.

A history is a list of item indices in interaction order. Its last ``max_items`` items (left
truncation: the most recent ones are kept) become their L level tokens each, flattened in order,
optionally preceded by the user's hash token (TIGER). Rows are right-padded with pad (0) to the longest
row of the batch, and the attention mask is 1 on real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sidrec.seqmodel.vocab import PAD_TOKEN_ID, SemanticIdVocab

__all__ = ["encode_histories"]


def encode_histories(
    vocab: SemanticIdVocab,
    item_codes: np.ndarray,
    histories: Sequence[Sequence[int]],
    *,
    user_ids: Sequence[str] | None = None,
    max_items: int = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder inputs for a batch of histories.

    Args:
        vocab: the generator's vocabulary.
        item_codes: ``int (N, L)`` semantic IDs, row i = item index i (``SemanticIdTokenizer.codes``).
        histories: per user, item indices in interaction order (may be empty only with ``user_ids``).
        user_ids: external user ids, one per history, to prepend the user token (vocab must have
            user buckets); None = no user token.
        max_items: keep at most this many most recent items.

    Returns:
        ``input_ids (B, S)`` int64 and ``attention_mask (B, S)`` int64, with
        ``S = user + L * min(max_items, longest history)``.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    codes = np.asarray(item_codes)
    num_items = codes.shape[0]
    batch = len(histories)
    lengths = np.fromiter((min(len(h), max_items) for h in histories), dtype=np.int64, count=batch)
    width = int(lengths.max()) if batch else 0
    index = np.full((batch, max(width, 1)), -1, dtype=np.int64)  # (B, M) item index, -1 = padding
    for b, history in enumerate(histories):
        n = lengths[b]
        if n:
            index[b, :n] = history[len(history) - n :]
    if index.size and index.max() >= num_items:
        raise ValueError(
            f"history item index {int(index.max())} >= number of items with codes ({num_items}); "
            "the codes table must come from the tokenizer trained on this run's dataset"
        )
    if (index[:, :width] < -1).any():
        raise ValueError("history item indices must be >= 0")
    tokens = vocab.codes_to_tokens(codes)[index.clip(min=0)]  # (B, M, L)
    tokens[index < 0] = PAD_TOKEN_ID
    tokens = tokens.reshape(batch, -1)  # (B, M*L)
    if user_ids is not None:
        if len(user_ids) != batch:
            raise ValueError(f"user_ids has {len(user_ids)} entries for {batch} histories")
        tokens = np.concatenate([vocab.user_tokens(user_ids)[:, None], tokens], axis=1)  # (B, 1 + M*L)
    elif batch and lengths.min() == 0:
        raise ValueError("an empty history needs a user token (pass user_ids) or at least one item")
    input_ids = torch.from_numpy(np.ascontiguousarray(tokens))
    attention_mask = (input_ids != PAD_TOKEN_ID).long()
    return input_ids, attention_mask
