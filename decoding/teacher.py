"""The exact log-probability of given items under a T5 generator, all of a user's items in one decoder pass.

``teacher_forced_scores(model, input_ids, attention_mask, tokens)`` scores ``K`` given code sequences per user
(``tokens (B, K, L)``: each level's token, as the beam search emits them) by teacher forcing: level by level,
the log-softmax over that level's codes at the given code, summed: the score the beam search would have given
the item had it kept it. It runs the beam search's own incremental decoder (``T5IncrementalDecoder``): the
encoder once per user, the cross-attention keys and values projected once per user and shared by its ``K``
items, so scoring 70 items costs about what a beam of 70 costs, not 70 full decoder passes over 70 copies of the
encoder output (``ItemLevelGenerator.score_items``, the HF-decoder reference it is tested against, was 5-8x
slower). ``join_candidates`` uses it for the items that join the beam's candidates.
"""

from __future__ import annotations

import torch
from torch import nn

from sidrec.decoding.t5_step import T5IncrementalDecoder

__all__ = ["teacher_forced_scores"]


@torch.no_grad()
def teacher_forced_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          tokens: torch.Tensor, *, chunk_users: int = 64) -> torch.Tensor:
    """``(B, K)`` float32 log-probabilities of the code sequences ``tokens (B, K, L)`` (level tokens).

    ``input_ids``/``attention_mask`` ``(B, S)``: the model's encoder inputs (``model.history_inputs``). Rows
    of ``tokens`` that are not real sequences may hold any valid tokens; mask their scores yourself. Runs in
    eval mode (no dropout) whatever mode the model is in.
    """
    was_training = model.training
    model.eval()
    try:
        parts = [_score_chunk(model, input_ids[s : s + chunk_users], attention_mask[s : s + chunk_users],
                              tokens[s : s + chunk_users]) for s in range(0, tokens.shape[0], chunk_users)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else tokens.new_zeros(tokens.shape[:2], dtype=torch.float32)


def _score_chunk(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    batch, k, levels = tokens.shape
    states = model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (b, S, D)
    decoder = T5IncrementalDecoder(model=model, encoder_states=states, attention_mask=mask, max_length=levels)
    flat = tokens.reshape(batch * k, levels)  # (b*K, L), user-major like the beam's rows
    weight = model.lm_head.weight  # (V, D)
    vocab = model.vocab
    # level 0: every item of a user starts from the same start token, so one row per user, then K copies
    lo, hi = vocab.level_range(0)
    hidden = decoder.step(flat.new_full((batch,), int(model.config.decoder_start_token_id)))  # (b, D)
    logp = torch.log_softmax((hidden @ weight[lo:hi].T).float(), dim=-1)  # (b, C_0)
    total = logp.gather(1, (tokens[:, :, 0] - lo).clamp(0, hi - lo - 1)).reshape(batch * k)  # (b*K,)
    decoder.reorder(torch.arange(batch, device=tokens.device).repeat_interleave(k))
    for t in range(1, levels):
        lo, hi = vocab.level_range(t)
        hidden = decoder.step(flat[:, t - 1])  # (b*K, D)
        logp = torch.log_softmax((hidden @ weight[lo:hi].T).float(), dim=-1)  # (b*K, C_t)
        total += logp.gather(1, (flat[:, t] - lo).clamp(0, hi - lo - 1)[:, None]).squeeze(1)
    return total.view(batch, k)
