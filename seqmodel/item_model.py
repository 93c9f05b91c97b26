"""The ``item`` generator family: item-level causal encoder, every position a target, plus a dense head.

Same output as the TIGER family (``SemanticIdGenerator``): a T5 decoder generates the next item's L
level tokens, restricted per level, through the catalog trie. What changes is the input and the
training signal:

- **One encoder position per history item** (``CausalItemEncoder``): the item vector is built from its
  level-token embeddings, a projection of its frozen text embedding and, for items seen in training, an
  ID embedding (``ItemEmbedder``). The encoder is causal, so position t is the user state after items
  0..t.
- **A target at every position**: the decoder generates item t+1's codes from encoder positions 0..t for
  every t of a user in ONE forward pass (``decode_all_positions``: the cross-attention keys/values are
  projected once per user and each target's queries see a prefix of them). SASRec's economy, for a
  generator.
- **A dense head** (LIGER-style hybrid): ``score(u, i) = s * h_u . e_i`` (``s`` a learned scale), where ``h_u`` is the
  encoder state and ``e_i`` the item's input vector (tied, as SASRec ties them), trained jointly with a
  full-softmax loss. At inference the beam search proposes candidates and ``hybrid_weight`` (chosen on
  VALID) mixes their generation log-probability with the dense score; see ``sidrec.decoding.rerank``.

HF ``generate`` and ``sidrec.decoding.constrained_beam_search`` run this model unchanged: its encoder takes
item tokens (index + 1, 0 = padding) as ``input_ids`` and returns one state per item, and the decoder
is the standard T5 decoder. A checkpoint folder holds the item table (codes as tokens, text embeddings,
ID rows) with the weights, so it rebuilds itself; ``add_items`` extends it for cold-start items.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from sidrec.seqmodel.config import ItemGeneratorConfig
from sidrec.seqmodel.item_encoder import CausalItemEncoder, ItemEmbedder, last_state, last_states
from sidrec.seqmodel.item_table import ItemTable, pad_item_histories
from sidrec.seqmodel.model import SemanticIdGenerator, build_t5_config
from sidrec.seqmodel.vocab import PAD_TOKEN_ID, SemanticIdVocab

logger = logging.getLogger(__name__)

__all__ = ["ItemLevelGenerator", "ItemLossOutput", "build_item_config", "item_id_rows", "pad_item_histories"]

FAMILY = "item"


def build_item_config(
    *, vocab: SemanticIdVocab, num_items: int, text_dim: int, num_id_rows: int, max_items: int = 50,
    id_dropout: float = 0.0, input_dropout: float = 0.0, dense_head: bool = True, dense_loss_weight: float = 1.0,
    distill_weight: float = 0.0, **t5_kwargs,
) -> ItemGeneratorConfig:
    """An ``ItemGeneratorConfig`` (T5 sizes as in ``build_t5_config``) with the item-table sizes.

    Args:
        vocab: the semantic-ID vocabulary (no user buckets: the item family has no user token).
        num_items: catalog size N (rows of the item table).
        text_dim: width of the frozen text embeddings (0 = no text input).
        num_id_rows: items with a learned ID embedding (0 = none).
        max_items: history window (encoder positions).
        id_dropout: training-time probability of dropping an item's ID vector.
        input_dropout: dropout on each history item's input vector (``ItemInputs``).
        dense_head: train and use the dense head (user state . item vector).
        dense_loss_weight: weight of the dense full-softmax loss next to the generation loss.
        distill_weight: weight of the self-distillation loss: at each level the decoder also learns the
            dense head's distribution over the next code given the true prefix (a soft target carrying
            what the dense head knows about every item, where the one-hot target carries one item).
    """
    if vocab.num_user_buckets:
        raise ValueError("the item family has no user token; build its vocab with num_user_buckets=0")
    return build_t5_config(
        vocab=vocab, max_items=max_items, config_class=ItemGeneratorConfig, sidrec_family=FAMILY,
        num_items=int(num_items), text_dim=int(text_dim), num_id_rows=int(num_id_rows), id_dropout=float(id_dropout),
        input_dropout=float(input_dropout), dense_head=bool(dense_head), dense_loss_weight=float(dense_loss_weight),
        distill_weight=float(distill_weight),
        **t5_kwargs,
    )


def item_id_rows(train_counts: np.ndarray, min_count: int) -> np.ndarray:
    """``(N,)`` ID-embedding row per item: 1.. for items with at least ``min_count`` training
    interactions (in item order), 0 (no ID) for the rest. ``min_count <= 0`` means no ID embeddings."""
    counts = np.asarray(train_counts)
    if min_count <= 0:
        return np.zeros(len(counts), dtype=np.int64)
    warm = counts >= min_count
    rows = np.zeros(len(counts), dtype=np.int64)
    rows[warm] = np.arange(1, int(warm.sum()) + 1)
    return rows


@dataclass
class ItemLossOutput(ModelOutput):
    """Training output of ``ItemLevelGenerator``: the total loss and its parts."""

    loss: torch.Tensor | None = None
    generation_loss: torch.Tensor | None = None
    dense_loss: torch.Tensor | None = None
    distill_loss: torch.Tensor | None = None


class ItemLevelGenerator(ItemTable, SemanticIdGenerator):
    """T5 generator over item-level inputs with a causal encoder and a dense head (see module docstring).

    Build with ``ItemLevelGenerator.build(config, item_codes=..., text=..., id_rows=...)`` for a new model;
    ``from_pretrained(folder)`` restores one (item table included).
    """

    family = FAMILY
    config_class = ItemGeneratorConfig

    def __init__(self, config: ItemGeneratorConfig) -> None:
        super().__init__(config)
        if config.sidrec_family != FAMILY:
            raise ValueError(f"config is for the {config.sidrec_family!r} family, not {FAMILY!r}")
        n, levels, text_dim = int(config.num_items), self.vocab.num_levels, int(config.text_dim)
        embedder = ItemEmbedder(
            token_embedding=self.shared, item_tokens=torch.zeros(n, levels, dtype=torch.long),
            text=torch.zeros(n, text_dim) if text_dim else None, id_rows=torch.zeros(n, dtype=torch.long),
            num_id_rows=int(config.num_id_rows), d_model=config.d_model, id_dropout=float(config.id_dropout),
        )
        self.encoder = CausalItemEncoder(config, embedder)  # replaces the token-level T5 encoder
        self.encoder.apply(self._init_weights)  # T5's initialisation for the attention/FF blocks
        # Item vectors feed a full softmax (the dense head), so they start as SASRec's item embeddings
        # do: every part (L code tokens, text, ID) at std d^-0.5 per dimension, the encoder input scaled
        # by sqrt(d), and a learned scale s = parts^-0.5 that starts the dense logits at unit variance.
        # (T5's std-1 token table made the first dense logits noisy and then too slow to move.)
        std = config.d_model**-0.5
        parts = levels + (text_dim > 0) + (int(config.num_id_rows) > 0)
        with torch.no_grad():
            self.shared.weight.normal_(0.0, std)
            if embedder.text_proj is not None:
                embedder.text_proj.weight.normal_(0.0, std)  # unit-norm text -> std d^-0.5 per dimension
            if embedder.id_embedding is not None:
                embedder.id_embedding.weight.normal_(0.0, std)
                embedder.id_embedding.weight[0].zero_()
        self.dense_scale = nn.Parameter(torch.tensor(float(parts) ** -0.5))
        # training interactions per item (row i = item i): the popularity prior of a corrected search
        self.register_buffer("item_counts", torch.zeros(n, dtype=torch.float32))

    @classmethod
    def build(
        cls, config: ItemGeneratorConfig, *, item_codes: np.ndarray, text: np.ndarray | None, id_rows: np.ndarray,
        item_counts: np.ndarray | None = None,
    ) -> ItemLevelGenerator:
        """A new model whose item table is ``item_codes (N, L)``, ``text (N, Dt)``, ``id_rows (N,)`` and the
        training interaction counts ``item_counts (N,)`` (zeros when not given)."""
        model = cls(config)
        model.set_item_table(item_codes=item_codes, text=text, id_rows=id_rows, item_counts=item_counts)
        return model

    # ------------------------------------------------------------------ item table (ItemTable)
    def set_training_catalog(self, available: np.ndarray) -> None:
        """Items the dense softmax (and the distillation) may use in training: ``bool (N,)``.

        A cold-start split's held-out items are not in the catalog at training time, so they must not
        appear even as negatives. Not saved: inference ranks the whole catalog.
        """
        mask = torch.as_tensor(np.asarray(available, dtype=bool))
        if mask.shape != (self.num_items,):
            raise ValueError(f"available must be ({self.num_items},) booleans, got {tuple(mask.shape)}")
        self.register_buffer("training_catalog", mask.to(self.embedder.item_tokens.device), persistent=False)

    last_state = staticmethod(last_state)  # (B, T, D), (B, T) -> (B, D): the state at each row's last real item

    def dense_logits(self, user: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Dense scores ``s * u . e_i`` (``s`` = ``dense_scale``): ``user (..., D)`` against the whole catalog ``(..., N)`` or,
        with ``items (..., K)`` item indices (-1 allowed, scored -inf), against those only ``(..., K)``."""
        scale = self.dense_scale
        if items is None:
            return (user * scale) @ self.embedder.catalog().T
        vectors = self.embedder(items.clamp(min=-1) + 1)  # (..., K, D); -1 -> pad row
        scores = ((user * scale)[..., None, :] * vectors).sum(-1)  # (..., K)
        return scores.masked_fill(items < 0, float("-inf"))

    @torch.no_grad()
    def user_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, chunk_users: int = 32) -> torch.Tensor:
        """The user state of each row (the encoder output at its last real item): ``(B, T) -> (B, D)``
        (``last_states``: rows encoded in length-sorted chunks, so short histories skip the padding)."""
        return last_states(self.encoder, input_ids, attention_mask, width=self.config.d_model, chunk_users=chunk_users)

    @torch.no_grad()
    def score_items(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, items: torch.Tensor, *,
                    chunk_users: int = 16) -> torch.Tensor:
        """The exact log-probability of generating each given item (teacher forcing): ``items (B, K)`` item
        indices (-1 = none, scored -inf) -> ``(B, K)``, each level's log-softmax over that level's codes, summed
        (what the beam search accumulates; for items it did not reach). Eval mode whatever mode the model is in."""
        was_training = self.training
        self.eval()
        try:
            out = torch.full(items.shape, float("-inf"), device=items.device)
            for start in range(0, items.shape[0], chunk_users):
                rows = slice(start, start + chunk_users)
                out[rows] = self._score_chunk(input_ids[rows], attention_mask[rows], items[rows])
            return out
        finally:
            self.train(was_training)

    def _score_chunk(self, input_ids: torch.Tensor, mask: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``score_items`` for a few users: one decoder pass over all their candidates ``(b, K)``."""
        batch, k = items.shape
        states = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (b, T, D)
        labels = self.embedder.item_tokens[items.clamp(min=-1) + 1]  # (b, K, L) level tokens (-1 -> pad row)
        start = labels.new_zeros(batch, k, 1)  # decoder start token
        dec_in = torch.cat([start, labels[..., :-1]], dim=-1).view(batch * k, -1)  # (b*K, L)
        hidden = self.decoder(input_ids=dec_in, encoder_hidden_states=states.repeat_interleave(k, 0),
                              encoder_attention_mask=mask.repeat_interleave(k, 0)).last_hidden_state
        if getattr(self.config, "scale_decoder_outputs", True):
            hidden = hidden * self.config.d_model**-0.5
        flat = labels.view(batch * k, -1)
        total = hidden.new_zeros(batch * k)
        for t, level in enumerate(self.level_logits(hidden)):  # [(b*K, C_t)]
            codes = (flat[:, t] - self.vocab.level_offsets[t]).clamp(min=0)
            total = total + torch.log_softmax(level.float(), dim=-1).gather(1, codes[:, None]).squeeze(1)
        return total.view(batch, k).masked_fill(items < 0, float("-inf"))

    @torch.no_grad()
    def dense_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Dense scores of the users given by encoder inputs (see ``dense_logits``), computed in eval mode
        (no dropout) whatever mode the model is in."""
        if not self.config.dense_head:
            raise ValueError("this generator was trained without a dense head (dense_head=false)")
        was_training = self.training
        self.eval()
        try:
            return self.dense_logits(self.user_states(input_ids, attention_mask), items)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ training: all positions at once
    def decode_all_positions(
        self, states: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Decoder outputs for every target of every user in one pass (teacher forcing).

        Args:
            states: ``(B, T, D)`` causal encoder states.
            attention_mask: ``(B, T)`` 1 on real items.
            labels: ``(B, T, L)`` level tokens of the item after position t (any valid tokens where there
                is none; those rows are ignored by the caller).

        Returns:
            ``(B, T, L, D)`` decoder outputs (scaled like the lm_head input). Row (b, t) equals the HF
            decoder run on encoder states ``states[b, :t+1]`` with ``labels[b, t]`` shifted right.
        """
        batch, length, levels = labels.shape
        d_model = states.shape[-1]
        decoder = self.decoder
        inputs = torch.cat([labels.new_full((batch, length, 1), PAD_TOKEN_ID), labels[..., :-1]], dim=-1)
        hidden = decoder.dropout(decoder.embed_tokens(inputs)).view(batch * length, levels, d_model)
        neg = torch.finfo(states.dtype).min
        steps = torch.arange(levels, device=states.device)
        causal = torch.zeros(levels, levels, dtype=states.dtype, device=states.device)
        causal.masked_fill_(steps[None, :] > steps[:, None], neg)
        self_bias = decoder.block[0].layer[0].SelfAttention.compute_bias(levels, levels, device=states.device)
        self_bias = self_bias.to(states.dtype) + causal  # (1, H, L, L)
        positions = torch.arange(length, device=states.device)
        seen = (positions[None, :] <= positions[:, None])[None] & attention_mask.bool()[:, None, :]  # (B, T, T)
        cross = torch.zeros(seen.shape, dtype=states.dtype, device=states.device).masked_fill_(~seen, neg)
        cross = cross.repeat_interleave(levels, dim=1)[:, None]  # (B, 1, T*L, T): query (t, l) sees keys <= t
        for block in decoder.block:
            hidden = block.layer[0](hidden, position_bias=self_bias)[0]  # (B*T, L, D)
            hidden = hidden.view(batch, length * levels, d_model)
            hidden = block.layer[1](hidden, key_value_states=states, attention_mask=cross)[0]  # (B, T*L, D)
            hidden = block.layer[2](hidden).view(batch * length, levels, d_model)
        hidden = decoder.dropout(decoder.final_layer_norm(hidden)).view(batch, length, levels, d_model)
        if getattr(self.config, "scale_decoder_outputs", True):
            hidden = hidden * d_model**-0.5
        return hidden

    def level_logits(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Logits over level t's codes only, for every level: ``(P, L, D) -> [(P, C_t)] * L``."""
        weight = self.lm_head.weight  # (V, D)
        return [hidden[:, t] @ weight[slice(*self.vocab.level_range(t))].T for t in range(self.vocab.num_levels)]

    def level_losses(self, logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Per-target cross-entropy averaged over the L levels: ``[(P, C_t)], (P, L) -> (P,)``."""
        total = labels.new_zeros(labels.shape[0], dtype=torch.float32)
        for t, level in enumerate(logits):
            total = total + F.cross_entropy(level.float(), labels[:, t] - self.vocab.level_offsets[t], reduction="none")
        return total / self.vocab.num_levels

    def _prefix_ids(self) -> torch.Tensor:
        """``(N, L)``: column t numbers the distinct length-t code prefixes of the catalog (column 0 = 0)."""
        cached = getattr(self, "_prefix_cache", None)
        if cached is not None and cached.shape[0] == self.num_items:
            return cached
        codes = self.item_codes
        columns = [np.zeros(len(codes), dtype=np.int64)]
        for t in range(1, codes.shape[1]):
            columns.append(np.unique(codes[:, :t], axis=0, return_inverse=True)[1].reshape(-1))
        self._prefix_cache = torch.from_numpy(np.stack(columns, axis=1)).to(self.embedder.item_tokens.device)
        return self._prefix_cache

    def distill_losses(
        self, logits: Sequence[torch.Tensor], dense_logits: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy of the decoder's level distributions against the dense head's (detached).

        For target p and level t the soft target is the dense softmax's mass on each code c among the
        items that share the true target's first t codes: ``q(c) = sum_{i: prefix_t(i) = prefix_t(target),
        code_t(i) = c} p_dense(i)``, renormalised. The last (collision) level is left out: it only separates
        items sharing a full semantic prefix, where that mass is all but one-hot anyway. Averaged over the
        distilled levels: ``[(P, C_t)], (P, N), (P,) -> (P,)``.
        """
        probs = torch.softmax(dense_logits.detach().float(), dim=-1)  # (P, N)
        prefixes = self._prefix_ids()  # (N, L)
        codes = self.embedder.item_tokens[1:] - torch.as_tensor(self.vocab.level_offsets, device=probs.device)
        levels = list(logits)[: max(1, len(logits) - 1)]
        total = probs.new_zeros(probs.shape[0])
        for t, level in enumerate(levels):
            same = prefixes[:, t][None, :] == prefixes[targets, t][:, None]  # (P, N) items under the true prefix
            mass = torch.zeros(level.shape, dtype=probs.dtype, device=probs.device)
            mass.scatter_add_(1, codes[:, t].expand_as(probs), probs * same)  # (P, C_t)
            soft = mass / mass.sum(-1, keepdim=True).clamp(min=1e-12)
            total = total - (soft * torch.log_softmax(level.float(), dim=-1)).sum(-1)
        return total / len(levels)

    def forward(  # noqa: D417 - HF arguments plus target_items
        self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
        target_items: torch.LongTensor | None = None, **kwargs: Any,
    ) -> Any:
        """With ``target_items (B, T)``: the all-position training losses (``ItemLossOutput``); otherwise the
        HF forward over item-token ``input_ids`` (what ``generate`` and the single-prefix checks call)."""
        if target_items is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        losses = self.sequence_losses(input_ids, attention_mask, target_items,
                                      dense_weight=float(self.config.dense_loss_weight),
                                      distill_weight=float(self.config.distill_weight))
        return ItemLossOutput(loss=losses["loss"], generation_loss=losses["generation"], dense_loss=losses["dense"],
                              distill_loss=losses["distill"])

    def sequence_losses(
        self, input_items: torch.Tensor, attention_mask: torch.Tensor, target_items: torch.Tensor,
        *, dense_weight: float = 1.0, distill_weight: float = 0.0, reduce: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Generation (+ dense) loss at every position of a batch of item sequences.

        Args:
            input_items: ``(B, T)`` item tokens (index + 1, 0 = padding), right-padded.
            attention_mask: ``(B, T)``.
            target_items: ``(B, T)`` index of the next item at each position, -100 where there is none.
            dense_weight: weight of the dense full-softmax loss (ignored without a dense head).
            distill_weight: weight of ``distill_losses`` (needs the dense head).
            reduce: mean over targets (training); False keeps one value per target ``(P,)``, in the
                row-major order of ``target_items >= 0``.

        Returns:
            ``{"loss", "generation", "dense", "distill"}`` (the last two are 0 when not used).
        """
        states = self.encoder(input_ids=input_items, attention_mask=attention_mask).last_hidden_state  # (B,T,D)
        valid = target_items >= 0  # (B, T)
        labels = self.embedder.item_tokens[target_items.clamp(min=0) + 1]  # (B, T, L) level tokens
        hidden = self.decode_all_positions(states, attention_mask, labels)  # (B, T, L, D)
        logits = self.level_logits(hidden[valid])  # [(P, C_t)]
        targets = target_items[valid]  # (P,)
        generation = self.level_losses(logits, labels[valid])  # (P,)
        dense = distill = torch.zeros_like(generation)
        if self.config.dense_head and dense_weight > 0:
            scores = self.dense_logits(states[valid])  # (P, N)
            available = getattr(self, "training_catalog", None)
            if available is not None:
                scores = scores.masked_fill(~available, float("-inf"))
            dense = F.cross_entropy(scores.float(), targets, reduction="none")
            if distill_weight > 0:
                distill = self.distill_losses(logits, scores, targets)
        if reduce:
            generation, dense, distill = generation.mean(), dense.mean(), distill.mean()
        loss = generation + dense_weight * dense + distill_weight * distill
        return {"loss": loss, "generation": generation, "dense": dense, "distill": distill}
