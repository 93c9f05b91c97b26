"""The ``parallel`` generator family: every digit of the next item's long semantic ID at once (RPG-style).

RPG (Hou et al., KDD 2025, "Generating Long Semantic IDs in Parallel for Recommendation") replaces the
beam search over a few short codes by long, flat IDs (``tokenizer/opq.py``: M independent digits of 256)
whose digits are all predicted at once:

- **Input**: one causal encoder position per history item (the item family's ``CausalItemEncoder`` over
  T5 blocks). An item's vector is ``scale * mean`` of its M digit embeddings (scaled so that the mean of M
  vectors is not sqrt(M) times smaller than one: ``digit_input_scale``, 0 = sqrt(M)), plus, optionally, a
  projection of its frozen text embedding and, for items seen in training, a learned ID embedding.
- **Heads**: at every position, one head per digit: the user state is projected per digit (``W_m``) and
  scored against that digit's code embeddings: ``tied`` (the input table), ``untied`` (an own table) or
  ``cosine`` (tied, cosine similarity over a temperature).
- **Loss**: the mean per-digit cross-entropy of the next item's digits, at every position.
- **Scoring**: an item's log-probability is the sum of its digits' log-probabilities. The per-digit
  log-probabilities are a ``(M, K)`` table per user, so scoring the whole catalog is a gather and a sum
  (``sidrec.decoding.exact``): exact, no beam, nothing lost on the way; new items score like any other.

A checkpoint folder holds the item table (codes as tokens, text, ID rows, training counts) with the
weights and rebuilds itself; ``add_items`` appends cold-start items.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.models.t5.modeling_t5 import T5Config, T5PreTrainedModel
from transformers.utils import ModelOutput

from sidrec.seqmodel.config import ParallelHeads
from sidrec.seqmodel.item_encoder import CausalItemEncoder, ItemEmbedder, last_states
from sidrec.seqmodel.item_model import item_id_rows
from sidrec.seqmodel.item_table import ItemTable
from sidrec.seqmodel.model import (
    CONFIG_FILE,
    GENERATOR_FORMAT_VERSION,
    WEIGHTS_FILE,
    build_t5_config,
    is_tied_to_shared,
    save_generator_folder,
)
from sidrec.seqmodel.vocab import SemanticIdVocab
from sidrec.utils import load_safetensors_into, read_json

logger = logging.getLogger(__name__)

__all__ = ["DigitScores", "ParallelGeneratorConfig", "ParallelIdGenerator", "ParallelLossOutput", "build_parallel_config",
           "item_id_rows"]

FAMILY = "parallel"
HEADS = ParallelHeads.HEADS
_DEFAULT = ParallelHeads()  # the heads' defaults are declared once, in seqmodel/config.py


class ParallelGeneratorConfig(T5Config):
    """``config.json`` of a ``parallel`` generator: T5 block sizes (the encoder's; no decoder) plus its own.

    level_sizes (via ``build_t5_config``): codes per digit, the tokenizer's (the collision level included);
    num_items: rows of the item table; text_dim: width of the frozen text input (0 = none); num_id_rows: items
    with a learned ID embedding (0 = none); id_dropout, input_dropout, digit_input_scale, head, head_temperature:
    as ``sidrec.seqmodel.config.ItemInputs`` / ``ParallelHeads``; item_loss_weight: the full-catalog item
    softmax's weight next to the per-digit cross-entropy; item_negatives: items it samples per step (0 = all);
    dense_head / dense_loss_weight: also train a dense head (``s * h . v_i``, the item's input vector, full
    softmax) whose score exact ranking can add to the digits' (``DecodingSettings.dense_weight``).
    """

    sidrec_family: str = FAMILY
    num_items: int = 0
    text_dim: int = 0
    num_id_rows: int = 0
    id_dropout: float = 0.0
    input_dropout: float = 0.0
    digit_input_scale: float = _DEFAULT.digit_input_scale
    head: str = _DEFAULT.head
    head_temperature: float = _DEFAULT.head_temperature
    item_loss_weight: float = _DEFAULT.item_loss_weight
    item_negatives: int = _DEFAULT.item_negatives
    dense_head: bool = False
    dense_loss_weight: float = 1.0


def build_parallel_config(
    *, level_sizes: Sequence[int], num_items: int, text_dim: int = 0, num_id_rows: int = 0, id_dropout: float = 0.0,
    input_dropout: float = 0.0, digit_input_scale: float = _DEFAULT.digit_input_scale, head: str = _DEFAULT.head,
    head_temperature: float = _DEFAULT.head_temperature, item_loss_weight: float = _DEFAULT.item_loss_weight,
    item_negatives: int = _DEFAULT.item_negatives, dense_head: bool = False, dense_loss_weight: float = 1.0,
    **t5_kwargs: Any,
) -> ParallelGeneratorConfig:
    """A ``ParallelGeneratorConfig`` for IDs of ``level_sizes`` (T5 sizes as in ``build_t5_config``)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    t5_kwargs.pop("num_decoder_layers", None)  # no decoder: every digit comes from the encoder's state
    return build_t5_config(
        vocab=SemanticIdVocab(level_sizes=list(level_sizes)), config_class=ParallelGeneratorConfig,
        sidrec_family=FAMILY, num_items=int(num_items), text_dim=int(text_dim), num_id_rows=int(num_id_rows),
        id_dropout=float(id_dropout), input_dropout=float(input_dropout), digit_input_scale=float(digit_input_scale),
        head=head,
        head_temperature=float(head_temperature), item_loss_weight=float(item_loss_weight),
        item_negatives=int(item_negatives), dense_head=bool(dense_head), dense_loss_weight=float(dense_loss_weight),
        num_decoder_layers=0,
        **t5_kwargs,
    )


@dataclass(frozen=True)
class DigitScores:
    """A batch of users as exact ranking sees them.

    Attributes:
        states: ``(B, D)`` user states (the encoder output at each history's last item).
        log_probs: ``(B, M, Kmax)`` log-probabilities of every digit's codes (-inf past a digit's size).
        log_norm: ``(B,)`` the sum over digits of each digit's log-sum-exp: summed logits minus this is the
            item's log-probability.
    """

    states: torch.Tensor
    log_probs: torch.Tensor
    log_norm: torch.Tensor


@dataclass
class ParallelLossOutput(ModelOutput):
    """Training output of ``ParallelIdGenerator``: the total loss, the mean per-digit cross-entropy and the
    full-catalog item cross-entropy (0 when ``item_loss_weight`` is 0)."""

    loss: torch.Tensor | None = None
    digit_loss: torch.Tensor | None = None
    item_loss: torch.Tensor | None = None
    dense_loss: torch.Tensor | None = None


class ParallelIdGenerator(ItemTable, T5PreTrainedModel):
    """Causal item encoder + one head per digit (see the module docstring).

    Build with ``ParallelIdGenerator.build(config, item_codes=..., text=..., id_rows=...)``;
    ``from_pretrained(folder)`` restores one (item table included).
    """

    family = FAMILY
    config_class = ParallelGeneratorConfig
    base_model_prefix = "parallel"

    def __init__(self, config: ParallelGeneratorConfig) -> None:
        super().__init__(config)
        if config.sidrec_family != FAMILY:
            raise ValueError(f"config is for the {config.sidrec_family!r} family, not {FAMILY!r}")
        self.vocab = SemanticIdVocab(level_sizes=config.level_sizes)
        self.max_items = int(config.max_items)
        n, digits, d = int(config.num_items), self.vocab.num_levels, int(config.d_model)
        self.shared = nn.Embedding(self.vocab.vocab_size, d)  # every digit's code embeddings (vocab tokens)
        scale = float(config.digit_input_scale) or math.sqrt(digits)
        embedder = ItemEmbedder(
            token_embedding=self.shared, item_tokens=torch.zeros(n, digits, dtype=torch.long),
            text=torch.zeros(n, int(config.text_dim)) if config.text_dim else None,
            id_rows=torch.zeros(n, dtype=torch.long), num_id_rows=int(config.num_id_rows), d_model=d,
            id_dropout=float(config.id_dropout), code_scale=scale / digits,
        )
        self.encoder = CausalItemEncoder(config, embedder)
        self.digit_proj = nn.Parameter(torch.empty(digits, d, d))  # (M, D, D): W_m, the user state per digit
        self.output = nn.Embedding(self.vocab.vocab_size, d) if config.head == "untied" else None
        parts = 1 + (int(config.text_dim) > 0) + (int(config.num_id_rows) > 0)  # code, text, ID parts of v_i
        self.dense_scale = nn.Parameter(torch.tensor(float(parts) ** -0.5)) if config.dense_head else None
        # the item softmax's temperature: an item's summed logits add M digits' (std ~ sqrt(M) at the start);
        # learned, and monotone, so exact ranking (by the summed log-probabilities) is unaffected
        self.item_scale = nn.Parameter(torch.tensor(digits ** -0.5)) if config.item_loss_weight > 0 else None
        self.register_buffer("item_counts", torch.zeros(n, dtype=torch.float32))  # training interactions
        self.register_buffer("code_index", self._code_index(), persistent=False)  # (M, Kmax) tokens, -1 = none
        self.post_init()
        self._init_sidrec_weights()

    def _code_index(self) -> torch.Tensor:
        """``(M, Kmax)``: the vocab token of digit m's code k, -1 where digit m has fewer than Kmax codes."""
        sizes = self.vocab.level_sizes
        index = torch.full((len(sizes), max(sizes)), -1, dtype=torch.long)
        for m, size in enumerate(sizes):
            index[m, :size] = torch.arange(size) + self.vocab.level_offsets[m]
        return index

    @torch.no_grad()
    def _init_sidrec_weights(self) -> None:
        """Code, text and ID parts at std d^-0.5 per dimension (as the item family's: the encoder input is
        scaled by sqrt(d)); the digit projections start as the identity, so every digit head initially
        scores codes by the user state itself."""
        std = self.config.d_model ** -0.5
        self.shared.weight.normal_(0.0, std)
        if self.output is not None:
            self.output.weight.normal_(0.0, std)
        emb = self.embedder
        if emb.text_proj is not None:
            emb.text_proj.weight.normal_(0.0, std)
        if emb.id_embedding is not None:
            emb.id_embedding.weight.normal_(0.0, std)
            emb.id_embedding.weight[0].zero_()
        eye = torch.eye(self.config.d_model)
        self.digit_proj.copy_(eye.expand_as(self.digit_proj) + torch.randn_like(self.digit_proj) * std * 0.1)

    @classmethod
    def build(cls, config: ParallelGeneratorConfig, *, item_codes: np.ndarray, text: np.ndarray | None,
              id_rows: np.ndarray | None = None, item_counts: np.ndarray | None = None) -> ParallelIdGenerator:
        """A new model whose item table is ``item_codes (N, M)``, ``text (N, Dt)`` (when the config reads
        text), ``id_rows (N,)`` (0 = no ID embedding; None = none) and training counts ``item_counts (N,)``."""
        model = cls(config)
        model.set_item_table(item_codes=item_codes, text=text, id_rows=id_rows, item_counts=item_counts)
        return model

    # ------------------------------------------------------------------ item table: ItemTable

    # ------------------------------------------------------------------ inputs, states, digit scores
    def digit_table(self) -> torch.Tensor:
        """``(M, Kmax, D)``: every digit's code vectors as the heads score them (zeros where a digit has fewer
        codes). The logit of code k of digit m is ``digit_queries(h)[m] . digit_table()[m, k]``."""
        table = (self.output or self.shared).weight[self.code_index.clamp(min=0)]  # (M, Kmax, D)
        if self.config.head == "cosine":
            table = F.normalize(table, dim=-1)
        return table * (self.code_index >= 0)[..., None]

    def digit_queries(self, states: torch.Tensor) -> torch.Tensor:
        """``(P, D) -> (M, P, D)``: the user state projected for each digit (``W_m``; unit length over the
        temperature for the cosine head)."""
        queries = torch.einsum("pd,mde->mpe", states, self.digit_proj)  # (M, P, D)
        if self.config.head == "cosine":
            queries = F.normalize(queries, dim=-1) / float(self.config.head_temperature)
        return queries

    def digit_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Every digit's logits over its codes: ``(P, D) -> (P, M, Kmax)`` (-inf where a digit has fewer codes)."""
        logits = torch.bmm(self.digit_queries(states), self.digit_table().transpose(1, 2)).transpose(0, 1)
        return logits.masked_fill(self.code_index < 0, float("-inf"))  # (P, M, Kmax)

    @torch.no_grad()
    def user_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, chunk_users: int = 64) -> torch.Tensor:
        """The user state of each history (the encoder output at its last item): ``(B, T) -> (B, D)``."""
        return last_states(self.encoder, input_ids, attention_mask, width=self.config.d_model, chunk_users=chunk_users)

    @torch.no_grad()
    def digit_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DigitScores:
        """What exact ranking needs for each history, in eval mode whatever mode the model is in (see
        ``DigitScores``): an item's log-probability is the sum of ``log_probs`` at its digits, or, with linear
        heads, ``states . u_i - log_norm``."""
        was_training = self.training
        self.eval()
        try:
            states = self.user_states(input_ids, attention_mask)  # (B, D)
            logits = self.digit_logits(states).float()  # (B, M, Kmax)
            log_norm = torch.logsumexp(logits, dim=-1)  # (B, M)
            return DigitScores(states=states, log_probs=logits - log_norm[..., None], log_norm=log_norm.sum(-1))
        finally:
            self.train(was_training)

    def dense_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Dense scores ``s * h . v_i`` of every catalog item: ``(P, D) -> (P, N)`` (``v_i`` = the item's input
        vector: its digits, text and ID parts)."""
        if self.dense_scale is None:
            raise ValueError("this generator was trained without a dense head (dense_head: false)")
        return (states * self.dense_scale) @ self.embedder.catalog().T

    @torch.no_grad()
    def dense_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Dense scores ``(B, N)`` of every catalog item for each history, in eval mode (the dense-alone ablation)."""
        was_training = self.training
        self.eval()
        try:
            return self.dense_logits(self.user_states(input_ids, attention_mask))
        finally:
            self.train(was_training)

    @property
    def has_dense_head(self) -> bool:
        return self.dense_scale is not None

    def digit_log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, M, Kmax)`` log-probabilities of every digit's codes for the next item (``digit_scores``)."""
        return self.digit_scores(input_ids, attention_mask).log_probs

    # ------------------------------------------------------------------ training
    def set_training_catalog(self, available: np.ndarray) -> None:
        """Items the full-catalog item softmax may use in training: ``bool (N,)`` (a cold-start split's held-out
        items do not exist yet, not even as negatives). Not saved: inference ranks the whole catalog."""
        mask = torch.as_tensor(np.asarray(available, dtype=bool))
        if mask.shape != (self.num_items,):
            raise ValueError(f"available must be ({self.num_items},) booleans, got {tuple(mask.shape)}")
        self.register_buffer("training_catalog", mask.to(self.item_counts.device), persistent=False)

    def catalog_rows(self) -> torch.Tensor:
        """``(N, M)``: each item's rows in a flattened ``(M * Kmax)`` per-digit table (code + m * Kmax)."""
        codes = self.embedder.item_tokens[1:] - self.code_index[:, 0]  # (N, M)
        return codes + torch.arange(codes.shape[1], device=codes.device) * self.code_index.shape[1]

    @property
    def linear_heads(self) -> bool:
        """Whether every digit's logits are linear in the user state (``tied`` / ``untied`` heads, not ``cosine``):
        then an item's summed logits are ``h . u_i`` with ``u_i = sum_m W_m e_{m, c_m}`` (``item_vectors``)."""
        return self.config.head != "cosine"

    def code_vectors(self) -> torch.Tensor:
        """``(M * Kmax, D)``: ``W_m e_{m,k}`` for every digit m and code k, so that logit(m, k) = h . row (linear heads)."""
        table = self.digit_table()  # (M, Kmax, D)
        return torch.einsum("mde,mke->mkd", self.digit_proj, table).reshape(-1, table.shape[-1])

    def item_vectors(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, D)`` composed item vectors ``u_i`` (rows of ``catalog_rows()``, or the given ``rows (n, M)``): an
        item's summed digit logits are ``h . u_i``, so scoring the whole catalog is one ``(B, D) x (D, N)`` product."""
        if not self.linear_heads:
            raise ValueError("item vectors need linear digit heads (head: tied or untied, not cosine)")
        table = self.code_vectors()  # (M*Kmax, D)
        sums = self._catalog_sums() if rows is None else self._code_sums(rows, table.shape[0])
        return sums @ table  # (n, D)

    def _catalog_sums(self) -> torch.Tensor:
        """``_code_sums`` of the whole item table, cached while the table keeps its size and device."""
        cached = getattr(self, "_sums_cache", None)
        if cached is None or cached.shape[0] != self.num_items or cached.device != self.digit_proj.device:
            cached = self._sums_cache = self._code_sums(self.catalog_rows(), self.code_index.numel())
        return cached

    @staticmethod
    def _code_sums(rows: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """``(n, M * Kmax)`` sparse (CSR) 0/1 matrix with a 1 at each item's digit rows (``rows (n, M)``): times a
        ``(M * Kmax, D)`` table it sums each item's rows (its backward is a sparse product too: several times
        faster on CPU than ``embedding_bag``'s)."""
        n, m = rows.shape
        width = int(rows.max()) + 1 if width is None else width
        crow = torch.arange(0, n * m + 1, m, device=rows.device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is long stable
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, rows.reshape(-1), torch.ones(n * m, device=rows.device),
                                           size=(n, width))

    def item_loss(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the softmax over item scores (their summed digit logits, ``h . u_i``) for user states
        ``(P, D)`` and target indices ``items (P,)``: against the whole training catalog, or against
        ``item_negatives`` items drawn uniformly from it (shared by the batch; a draw equal to the target is
        masked out)."""
        available = getattr(self, "training_catalog", None)
        negatives = int(self.config.item_negatives)
        states = states * self.item_scale  # the softmax's temperature (see __init__)
        if not negatives or negatives >= self.num_items:
            scores = states @ self.item_vectors().T  # (P, N)
            if available is not None:
                scores = scores.masked_fill(~available, float("-inf"))
            return F.cross_entropy(scores.float(), items)
        pool = torch.nonzero(available).view(-1) if available is not None else None
        draw = torch.randint(0, len(pool) if pool is not None else self.num_items, (negatives,), device=states.device)
        sampled = pool[draw] if pool is not None else draw  # (S,)
        rows = self.catalog_rows()
        positive = (states * self.item_vectors(rows[items])).sum(-1, keepdim=True)  # (P, 1)
        negative = states @ self.item_vectors(rows[sampled]).T  # (P, S)
        negative = negative.masked_fill(sampled[None, :] == items[:, None], float("-inf"))
        scores = torch.cat([positive, negative], dim=1)  # (P, 1 + S): the target first
        return F.cross_entropy(scores.float(), torch.zeros_like(items))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_items: torch.Tensor,
                **_: Any) -> ParallelLossOutput:
        """The next item's losses at every position: the mean per-digit cross-entropy (RPG) plus
        ``item_loss_weight`` x the cross-entropy of the full-catalog softmax over item scores.

        ``input_ids (B, T)`` item tokens (index + 1, 0 = padding), ``attention_mask (B, T)``,
        ``target_items (B, T)`` the next item's index at each position (-100 where there is none).
        """
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        valid = target_items >= 0  # (B, T)
        targets = self.embedder.item_tokens[target_items[valid] + 1] - self.code_index[:, 0]  # (P, M) codes
        logits = self.digit_logits(states[valid])  # (P, M, Kmax)
        digit_loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        item_loss = dense_loss = torch.zeros_like(digit_loss)
        weight = float(self.config.item_loss_weight)
        if weight > 0:
            item_loss = self.item_loss(states[valid], target_items[valid])
        dense_weight = float(self.config.dense_loss_weight) if self.has_dense_head else 0.0
        if dense_weight > 0:
            scores = self.dense_logits(states[valid])  # (P, N)
            available = getattr(self, "training_catalog", None)
            if available is not None:
                scores = scores.masked_fill(~available, float("-inf"))
            dense_loss = F.cross_entropy(scores.float(), target_items[valid])
        loss = digit_loss + weight * item_loss + dense_weight * dense_loss
        return ParallelLossOutput(loss=loss, digit_loss=digit_loss, item_loss=item_loss, dense_loss=dense_loss)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:  # type: ignore[override]
        """Write ``config.json``, ``model.safetensors`` and ``vocab.json`` to a folder (atomically)."""
        save_generator_folder(self, save_directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *_: Any, **__: Any) -> ParallelIdGenerator:  # type: ignore[override]
        """Load a folder written by :meth:`save_pretrained` (CPU, eval mode)."""
        folder = Path(directory)
        retrain = "retrain it (`sidrec train --run RUN --overwrite`) or restore the folder"
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, "vocab.json") if not (folder / f).is_file()]
        if missing:
            raise ValueError(f"{folder} is not a sidrec generator folder (missing {', '.join(missing)}); {retrain}")
        raw = read_json(folder / CONFIG_FILE, fix=retrain)
        if not isinstance(raw, dict) or raw.get("sidrec_format_version") != GENERATOR_FORMAT_VERSION:
            raise ValueError(f"{folder}: not a generator of format {GENERATOR_FORMAT_VERSION}; {retrain}")
        try:
            model = cls(ParallelGeneratorConfig.from_dict(raw))
        except Exception as e:  # transformers' config validators raise their own types
            raise ValueError(f"{folder / CONFIG_FILE} does not describe a valid generator ({e}); {retrain}") from e
        if SemanticIdVocab.load(folder) != model.vocab:
            raise ValueError(f"{folder}: vocab.json disagrees with config.json (level_sizes)")
        missing_keys, unexpected = load_safetensors_into(model, folder / WEIGHTS_FILE, strict=False, fix=retrain)
        if unexpected or [k for k in missing_keys if not is_tied_to_shared(model, k)]:
            raise ValueError(f"{folder}/{WEIGHTS_FILE} does not match config.json (missing {missing_keys}, "
                             f"unexpected {unexpected}); the folder mixes files from different models")
        return model.eval()
