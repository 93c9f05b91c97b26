"""Incremental T5 decoder for beam search: one decoder position at a time for B users x K beams.

Why not ``model.decoder(..., cache=...)``: HF's decoder keeps one cross-attention K/V copy per beam
(``B*K`` rows of ``(H, S, d_kv)``), computes it from ``B*K`` copies of the encoder output and gathers it
on every beam reorder. All beams of a user attend to the same encoder states, so here the
cross-attention K/V are projected once per user ``(B, H, S, d_kv)`` and the K beam queries of a user
attend to them together (the beam axis becomes the query-length axis). Only the tiny self-attention cache
``(B*K, H, L, d_kv)`` is reordered between steps.

The arithmetic is the HF T5 decoder's (RMS layer norms, unscaled dot products, relative position bias of
block 0 shared by all blocks, the model's own feed-forward modules, the final layer norm and the
``d_model**-0.5`` output scaling when ``config.scale_decoder_outputs``), checked against
``model.generate`` in ``tests/test_decoding.py``. For speed the layer norms are one fused
``F.rms_norm`` each (T5LayerNorm's math: no mean subtraction, no bias) and q/k/v are one matmul with
the three weights concatenated: few, large ops matter on a small, shared CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["T5IncrementalDecoder"]


class T5IncrementalDecoder:
    """Runs a ``T5ForConditionalGeneration``-style decoder position by position with beam reordering.

    Args:
        model: a T5ForConditionalGeneration (or subclass) in eval mode.
        encoder_states: ``(B, S, D)`` encoder output, one row per user.
        attention_mask: ``(B, S)`` encoder padding mask (1 = token, 0 = padding).
        max_length: number of decoder positions that will be run (the number of code levels).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        encoder_states: torch.Tensor,
        attention_mask: torch.Tensor,
        max_length: int,
    ) -> None:
        decoder = model.decoder
        config = model.config
        self._embed = decoder.embed_tokens
        self._blocks = decoder.block
        self._final_norm = decoder.final_layer_norm
        self._heads = int(config.num_heads)
        self._d_kv = int(config.d_kv)
        scale = getattr(config, "scale_decoder_outputs", getattr(config, "tie_word_embeddings", True))
        self._out_scale = float(config.d_model) ** -0.5 if scale else None
        self._batch = encoder_states.shape[0]
        self._max_length = max_length
        # relative position bias of decoder self-attention, shared by all blocks
        first = self._blocks[0].layer[0].SelfAttention
        bias = first.compute_bias(max_length, max_length, device=encoder_states.device)  # (1, H, L, L)
        self._position_bias = bias[0].to(encoder_states.dtype)  # (H, L, L)
        # per block: fused self-attention q|k|v weight (3*H*dk, D) and the layer norm weights
        self._self_qkv = [
            torch.cat(
                [
                    b.layer[0].SelfAttention.q.weight,
                    b.layer[0].SelfAttention.k.weight,
                    b.layer[0].SelfAttention.v.weight,
                ]
            )
            for b in self._blocks
        ]
        self._norm_eps = float(self._final_norm.variance_epsilon)
        # cross-attention keys/values, once per user: one (B, S, 2*H*dk) matmul per block
        b, s, _ = encoder_states.shape
        self._cross_k: list[torch.Tensor] = []
        self._cross_v: list[torch.Tensor] = []
        for block in self._blocks:
            attn = block.layer[1].EncDecAttention
            kv = F.linear(encoder_states, torch.cat([attn.k.weight, attn.v.weight]))  # (B, S, 2*H*dk)
            kv = kv.view(b, s, 2, self._heads, self._d_kv).permute(2, 0, 3, 1, 4)  # (2, B, H, S, dk)
            self._cross_k.append(kv[0])
            self._cross_v.append(kv[1])
        # additive mask (B, 1, 1, S): 0 for tokens, a large negative for padding
        keep = attention_mask.to(torch.bool)[:, None, None, :]
        neg = torch.finfo(encoder_states.dtype).min
        self._cross_bias = torch.zeros(keep.shape, dtype=encoder_states.dtype, device=encoder_states.device)
        self._cross_bias.masked_fill_(~keep, neg)
        # per block: self-attention keys and values of every position, (L, R, 2, H, d_kv)
        self._self_kv: list[torch.Tensor] | None = None
        self._position = 0

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep/duplicate self-attention cache rows: new row r continues old row ``rows[r]`` (R_new,)."""
        if self._self_kv is None:
            raise ValueError("reorder() called before the first step(); nothing to reorder")
        filled = self._position  # only positions 0..filled-1 hold data: copy just those
        reordered = []
        for cache in self._self_kv:
            new = cache.new_empty((cache.shape[0], rows.numel(), *cache.shape[2:]))
            torch.index_select(cache[:filled], 1, rows, out=new[:filled])
            reordered.append(new)
        self._self_kv = reordered

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per beam and return the decoder output at this position.

        Args:
            tokens: ``(B*K,)`` token ids, user-major (rows ``b*K .. b*K+K-1`` belong to user b), where K
                is the same for every user. At the first step the cache is empty and any K works.

        Returns:
            ``(B*K, D)`` final hidden states (scaled like the model's lm_head input).
        """
        t = self._position
        rows = tokens.shape[0]
        self._begin_step(t, rows)
        beams = rows // self._batch
        heads, d_kv = self._heads, self._d_kv
        bias = self._position_bias[:, t, : t + 1]  # (H, t+1)
        dim = (self._embed.weight.shape[1],)
        eps = self._norm_eps
        hidden = self._embed(tokens)  # (R, D)
        for i, block in enumerate(self._blocks):
            # causal self-attention over positions 0..t
            layer = block.layer[0]
            attn = layer.SelfAttention
            normed = F.rms_norm(hidden, dim, layer.layer_norm.weight, eps)
            qkv = F.linear(normed, self._self_qkv[i]).view(rows, 3, heads, d_kv)  # (R, 3, H, dk)
            q = qkv[:, 0]  # (R, H, dk)
            self._self_kv[i][t] = qkv[:, 1:]
            past = self._self_kv[i][: t + 1]  # (t+1, R, 2, H, dk)
            # at most L keys per query: elementwise products beat R*H tiny matmuls
            scores = (past[:, :, 0] * q).sum(-1) + bias.T[:, None, :]  # (t+1, R, H)
            weights = torch.softmax(scores.float(), dim=0).to(q.dtype)
            context = (weights[..., None] * past[:, :, 1]).sum(0).reshape(rows, heads * d_kv)  # (R, H*dk)
            hidden = hidden + attn.o(context)
            # cross-attention: the K beams of a user are K queries against the user's encoder states
            layer = block.layer[1]
            attn = layer.EncDecAttention
            normed = F.rms_norm(hidden, dim, layer.layer_norm.weight, eps)
            q = attn.q(normed).view(self._batch, beams, heads, d_kv).transpose(1, 2)  # (B, H, K, dk)
            context = F.scaled_dot_product_attention(
                q, self._cross_k[i], self._cross_v[i], attn_mask=self._cross_bias, scale=1.0
            )  # (B, H, K, dk)
            context = context.transpose(1, 2).reshape(rows, heads * d_kv)
            hidden = hidden + attn.o(context)
            # feed-forward (the model's own dense-act-dense module, relu or gated)
            layer = block.layer[2]
            hidden = hidden + layer.DenseReluDense(F.rms_norm(hidden, dim, layer.layer_norm.weight, eps))
        hidden = F.rms_norm(hidden, dim, self._final_norm.weight, eps)
        if self._out_scale is not None:
            hidden = hidden * self._out_scale
        self._position = t + 1
        return hidden

    def _begin_step(self, t: int, rows: int) -> None:
        """Check step ``t`` with ``rows`` token rows can run; allocate the self-attention cache at step 0."""
        if t >= self._max_length:
            raise ValueError(f"step() called {t + 1} times but max_length={self._max_length}")
        if rows % self._batch:
            raise ValueError(f"tokens has {rows} rows, not a multiple of the batch size {self._batch}")
        if self._self_kv is None:
            shape = (self._max_length, rows, 2, self._heads, self._d_kv)
            self._self_kv = [self._cross_k[0].new_empty(shape) for _ in self._blocks]
        elif self._self_kv[0].shape[1] != rows:
            raise ValueError(
                f"tokens has {rows} rows but the cache holds {self._self_kv[0].shape[1]}; reorder first"
            )
