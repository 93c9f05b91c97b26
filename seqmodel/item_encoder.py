"""Item-level inputs for the ``item`` generator family: one vector per history item, causal T5 encoder.

``ItemEmbedder`` turns an item index into one vector built from what sidrec knows about the item:

- the sum of its L level-token embeddings (the generator's shared token table, so the codes mean the
  same in the encoder, the decoder and the output layer);
- optionally a learned projection of its frozen text embedding (the tokenizer's sentence embedding);
- optionally a learned per-item ID embedding, only for items seen in training. Every other item (rare
  below ``id_min_count``, or added later by ``add_items``) has ID row 0, which is all zeros, so it is
  represented by its codes and text alone: a cold item is never pushed down by an untrained ID vector.

``CausalItemEncoder`` runs T5 self-attention blocks (the HF modules, RMS norms, relative position bias
of block 0 shared by all blocks) over those vectors with a causal mask, so position t summarises items
0..t: one encoder pass per user serves every next-item target of the sequence (SASRec-style), and at
inference the last position is the user state. Token ids are item index + 1 (0 = padding), right-padded.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import T5Config
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.t5.modeling_t5 import T5Attention, T5LayerFF, T5LayerNorm, T5LayerSelfAttention

__all__ = ["CausalItemEncoder", "ItemEmbedder", "causal_padding_bias", "last_states"]

PAD_ITEM = 0  # item token 0 = padding; item index i is token i + 1


def causal_padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``(B, 1, T, T)``: query t sees keys j <= t that are real items, else a large negative."""
    length = attention_mask.shape[1]
    positions = torch.arange(length, device=attention_mask.device)
    causal = positions[None, :] <= positions[:, None]  # (T, T) key j <= query t
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


class ItemEmbedder(nn.Module):
    """Item tokens ``(...)`` -> item vectors ``(..., D)`` from codes, text and (warm items only) an ID.

    Args:
        token_embedding: the generator's shared token table (level tokens live there).
        item_tokens: ``(N, L)`` level token ids of every catalog item (vocab ids, not raw codes).
        text: ``(N, Dt)`` frozen text embeddings, or None for no text input.
        id_rows: ``(N,)`` ID-embedding row of each item, 0 = no ID (rows 1..num_id_rows).
        num_id_rows: size of the ID table without row 0 (0 = no ID embeddings).
        d_model: output width.
        id_dropout: training only: the probability that an item's ID vector is dropped, so the model
            also learns to rank items from codes and text alone (what rare and new items have).
        code_scale: factor on the sum of the level-token embeddings (1 = the sum; ``1 / L`` = their mean).
    """

    def __init__(
        self, *, token_embedding: nn.Embedding, item_tokens: torch.Tensor, text: torch.Tensor | None,
        id_rows: torch.Tensor, num_id_rows: int, d_model: int, id_dropout: float = 0.0, code_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.token_embedding = token_embedding
        pad_row = torch.zeros(1, item_tokens.shape[1], dtype=torch.long)
        self.register_buffer("item_tokens", torch.cat([pad_row, item_tokens.long()]))  # (N+1, L)
        self.register_buffer("id_rows", torch.cat([torch.zeros(1, dtype=torch.long), id_rows.long()]))  # (N+1,)
        if text is not None:
            text = torch.cat([torch.zeros(1, text.shape[1], dtype=torch.float32), text.float()])
            self.register_buffer("text", text)  # (N+1, Dt)
            self.text_proj = nn.Linear(text.shape[1], d_model, bias=False)
        else:
            self.text = None
            self.text_proj = None
        self.id_embedding = nn.Embedding(num_id_rows + 1, d_model, padding_idx=0) if num_id_rows > 0 else None
        self.id_dropout = id_dropout
        self.code_scale = code_scale

    @property
    def num_items(self) -> int:
        return self.item_tokens.shape[0] - 1

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``items`` = item tokens (index + 1, 0 = pad) of any shape -> ``(*items.shape, D)``; pad rows are 0."""
        vectors = self.token_embedding(self.item_tokens[items]).sum(-2)  # (..., D)
        if self.code_scale != 1.0:
            vectors = vectors * self.code_scale
        if self.text_proj is not None:
            vectors = vectors + self.text_proj(self.text[items])
        if self.id_embedding is not None:
            rows = self.id_rows[items]  # (...,)
            if self.training and self.id_dropout > 0:
                rows = rows.masked_fill(torch.rand(rows.shape, device=rows.device) < self.id_dropout, 0)
            vectors = vectors + self.id_embedding(rows)
        return vectors * (items != PAD_ITEM)[..., None]

    def catalog(self) -> torch.Tensor:
        """Vectors of every catalog item ``(N, D)`` (row i = item index i).

        In inference (eval mode, no grad) the result is kept until a weight or the item table changes (each
        tensor's identity and in-place version are the key), so ranking does not recompute it per batch."""
        if self.training or torch.is_grad_enabled():
            return self(torch.arange(1, self.num_items + 1, device=self.item_tokens.device))
        tensors = (*self.parameters(), *self.buffers())  # held by the cache, so no id is reused while it lives
        versions = tuple(t._version for t in tensors)
        cached = getattr(self, "_catalog_cache", None)
        if (cached is None or len(cached[0]) != len(tensors) or cached[1] != versions
                or any(a is not b for a, b in zip(cached[0], tensors, strict=True))):
            vectors = self(torch.arange(1, self.num_items + 1, device=self.item_tokens.device))  # (N, D)
            cached = (tensors, versions, vectors)
            self._catalog_cache = cached
        return cached[2]

    @torch.no_grad()
    def unit_text(self) -> torch.Tensor | None:
        """``(N, Dt)`` every item's text embedding, L2-normalised (row i = item i), kept until the text table
        changes; None when the model reads no text. What ranking never-seen items by their text needs."""
        if self.text is None:
            return None
        cached = getattr(self, "_unit_text_cache", None)
        if cached is None or cached[0] is not self.text or cached[1] != self.text._version:
            cached = (self.text, self.text._version, torch.nn.functional.normalize(self.text[1:].float(), dim=1))
            self._unit_text_cache = cached
        return cached[2]

    @torch.no_grad()
    def add_items(self, item_tokens: torch.Tensor, text: torch.Tensor | None) -> None:
        """Append new items (no ID embedding: they are represented by their codes and text)."""
        self.item_tokens = torch.cat([self.item_tokens, item_tokens.to(self.item_tokens)])
        self.id_rows = torch.cat([self.id_rows, self.id_rows.new_zeros(item_tokens.shape[0])])
        if self.text is not None:
            if text is None or text.shape != (item_tokens.shape[0], self.text.shape[1]):
                raise ValueError(
                    f"this generator reads item text: pass text embeddings ({item_tokens.shape[0]}, "
                    f"{self.text.shape[1]}) for the new items"
                )
            self.text = torch.cat([self.text, text.to(self.text)])


class _EncoderBlock(nn.Module):
    """One T5 encoder block (self-attention + feed-forward), HF modules and layout ``layer[0..1]``."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([
            T5LayerSelfAttention(config, has_relative_attention_bias=has_relative_attention_bias),
            T5LayerFF(config),
        ])

    def forward(self, hidden: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        hidden = self.layer[0](hidden, position_bias=position_bias)[0]
        return self.layer[1](hidden)


class CausalItemEncoder(nn.Module):
    """Causal T5 encoder over item vectors; the ``encoder`` of an ``ItemLevelGenerator``.

    Same call as a T5 encoder stack (``input_ids`` = item tokens, ``attention_mask``) and returns a
    ``BaseModelOutput``, so HF ``generate`` and the fast beam search run it unchanged.
    """

    main_input_name = "input_ids"  # what HF generate looks up on an encoder

    def __init__(self, config: T5Config, embedder: ItemEmbedder) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        config.is_decoder = False  # no cross-attention; causality comes from the mask below
        self.config = config
        self.embedder = embedder
        self.embed_tokens = embedder.token_embedding  # the shared token table, where HF ties it
        self.block = nn.ModuleList(_EncoderBlock(config, i == 0) for i in range(config.num_layers))
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)
        # SASRec's embedding dropout: on the item vectors only (older configs have none: 0)
        self.input_dropout = nn.Dropout(float(getattr(config, "input_dropout", 0.0)))

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        """Relative position bias ``(1, H, T, T)`` with one-directional buckets (keys are never ahead)."""
        attention: T5Attention = self.block[0].layer[0].SelfAttention
        positions = torch.arange(length, device=device)
        buckets = T5Attention._relative_position_bucket(
            positions[None, :] - positions[:, None], bidirectional=False,
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )  # (T, T)
        return attention.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (1, H, T, T)

    def forward(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None, **_: object,
    ) -> BaseModelOutput:
        """``input_ids (B, T)`` item tokens (or ``inputs_embeds (B, T, D)``) -> states ``(B, T, D)``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (item tokens) or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embedder(input_ids) * self.config.d_model**0.5  # (B, T, D), SASRec's input scale
        hidden = inputs_embeds
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        bias = self.position_bias(hidden.shape[1], hidden.device).to(hidden.dtype)
        bias = bias + causal_padding_bias(attention_mask, hidden.dtype)  # (B, H, T, T)
        hidden = self.input_dropout(self.dropout(hidden))  # (B, T, D)
        for block in self.block:
            hidden = block(hidden, bias)
        hidden = self.dropout(self.final_layer_norm(hidden))
        return BaseModelOutput(last_hidden_state=hidden)


def last_state(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The state at each row's last real item: ``(B, T, D), (B, T) -> (B, D)``."""
    last = attention_mask.long().sum(1).clamp(min=1) - 1  # (B,)
    return states[torch.arange(states.shape[0], device=states.device), last]


@torch.no_grad()
def last_states(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                width: int, chunk_users: int = 32) -> torch.Tensor:
    """The user state (the causal encoder's output at the last real item) of each row: ``(B, T) -> (B, width)``.

    Rows are sorted by length and encoded in chunks of ``chunk_users``, each cut to its own longest history
    (most histories are short; one long row would otherwise make the whole batch pay for its padding).
    Causal attention makes the result independent of the padding.
    """
    lengths = attention_mask.long().sum(1)  # (B,)
    order = torch.argsort(lengths, stable=True)
    out = torch.empty(input_ids.shape[0], width, device=input_ids.device)
    for start in range(0, len(order), chunk_users):
        rows = order[start : start + chunk_users]
        cut = int(lengths[rows].max().clamp(min=1))
        ids, mask = input_ids[rows, :cut], attention_mask[rows, :cut]
        out[rows] = last_state(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)  # (b, D)
    return out

