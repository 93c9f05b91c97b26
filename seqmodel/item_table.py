"""The item table of the families that read one encoder position per history item (``item``, ``parallel``).

Both keep every catalog item's code tokens, text embedding and ID row in an ``ItemEmbedder`` (the encoder's
``embedder``) and its training interaction counts in an ``item_counts`` buffer; both grow the table for
cold-start items and encode histories as item indices. ``ItemTable`` holds that once; a host class provides
``encoder.embedder``, ``vocab``, ``config.num_id_rows``, ``config.num_items``, ``max_items`` and the
``item_counts`` buffer, and lists ``ItemTable`` before its ``nn.Module`` base.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sidrec.seqmodel.item_encoder import PAD_ITEM, ItemEmbedder

__all__ = ["ItemTable", "pad_item_histories"]


def pad_item_histories(histories: Sequence[Sequence[int]], max_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder inputs of the item families: the last ``max_items`` items as tokens (index + 1), right-padded.

    Returns ``input_ids (B, T)`` and ``attention_mask (B, T)`` int64. ``ValueError`` for an empty history.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    lengths = [min(len(h), max_items) for h in histories]
    if lengths and min(lengths) == 0:
        raise ValueError("an empty history cannot be encoded; the item generator needs at least one item")
    ids = np.zeros((len(histories), max(lengths, default=1)), dtype=np.int64)
    for b, (history, n) in enumerate(zip(histories, lengths, strict=True)):
        row = np.asarray(history[len(history) - n :], dtype=np.int64)
        if row.size and row.min() < 0:
            raise ValueError("history item indices must be >= 0")
        ids[b, :n] = row + 1
    input_ids = torch.from_numpy(ids)
    return input_ids, (input_ids != PAD_ITEM).long()


class ItemTable:
    """Item-table access, filling, growth and history encoding shared by the item-position families."""

    @property
    def embedder(self) -> ItemEmbedder:
        return self.encoder.embedder

    @property
    def num_items(self) -> int:
        return self.embedder.num_items

    @property
    def item_codes(self) -> np.ndarray:
        """``(N, L)`` codes of the model's item table (row i = item index i)."""
        return self.vocab.tokens_to_codes(self.embedder.item_tokens[1:])

    @property
    def reads_text(self) -> bool:
        return self.embedder.text is not None

    @torch.no_grad()
    def set_item_table(self, *, item_codes: np.ndarray, text: np.ndarray | None, id_rows: np.ndarray | None = None,
                       item_counts: np.ndarray | None = None) -> None:
        """Fill the item table: codes ``(N, L)``, text ``(N, Dt)`` (when the config reads text), ID rows ``(N,)``
        (0 = no ID embedding; None = leave them) and training counts ``(N,)``; sizes must match the config."""
        tokens = torch.from_numpy(self.vocab.codes_to_tokens(item_codes))  # (N, L)
        if tokens.shape[0] != self.num_items:
            raise ValueError(f"item table has {tokens.shape[0]} items, the config says {self.num_items}")
        emb = self.embedder
        emb.item_tokens[1:] = tokens
        if id_rows is not None:
            if len(id_rows) != self.num_items or int(np.max(id_rows, initial=0)) > self.config.num_id_rows:
                raise ValueError(f"id_rows must be ({self.num_items},) with rows <= {self.config.num_id_rows}, got "
                                 f"{len(id_rows)} rows up to {int(np.max(id_rows, initial=0))}")
            emb.id_rows[1:] = torch.as_tensor(np.asarray(id_rows), dtype=torch.long)
        if item_counts is not None:
            if len(item_counts) != self.num_items:
                raise ValueError(f"item_counts has {len(item_counts)} rows for {self.num_items} items")
            self.item_counts.copy_(torch.as_tensor(np.asarray(item_counts), dtype=torch.float32))
        if emb.text is not None:
            if text is None or tuple(np.shape(text)) != (self.num_items, emb.text.shape[1]):
                raise ValueError(f"text must be ({self.num_items}, {emb.text.shape[1]}), got "
                                 f"{None if text is None else tuple(np.shape(text))}")
            emb.text[1:] = torch.as_tensor(np.asarray(text), dtype=torch.float32)

    @torch.no_grad()
    def add_items(self, item_codes: np.ndarray, text: np.ndarray | None = None) -> None:
        """Append cold-start items: their vectors come from their codes (and text); they have no ID, and a
        training count of 0 (never seen)."""
        tokens = torch.from_numpy(self.vocab.codes_to_tokens(item_codes))  # (M, L)
        self.embedder.add_items(tokens, None if text is None else torch.as_tensor(np.asarray(text)))
        self.item_counts = torch.cat([self.item_counts, self.item_counts.new_zeros(tokens.shape[0])])
        self.config.num_items = self.num_items

    def history_inputs(
        self, histories: Sequence[Sequence[int]], *, item_codes: np.ndarray | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder inputs for item-index histories (the last ``max_items`` items as tokens, index + 1);
        ``item_codes`` only checks the caller's table matches, ``user_ids`` are not used."""
        if item_codes is not None and len(item_codes) != self.num_items:
            raise ValueError(f"the codes table has {len(item_codes)} items but this generator's item table "
                             f"{self.num_items}; load the tokenizer and generator of the same run")
        input_ids, mask = pad_item_histories(histories, self.max_items)
        if input_ids.numel() and int(input_ids.max()) > self.num_items:
            raise ValueError(f"history item index >= {self.num_items} (items in this generator's table)")
        return input_ids, mask
