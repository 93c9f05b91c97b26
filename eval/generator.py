"""The semantic-ID generator as a scorer: encoder inputs -> trie-constrained beam search -> items."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


class GeneratorScorer:
    """Top-k items from ``RUN/generator`` + ``RUN/tokenizer`` by constrained beam search.

    The trie holds every catalog item, so every returned ID is a real item (invalid rate 0 by
    construction; the harness still measures it). ``beam_size`` is raised to ``k`` if smaller.
    """

    name = "generator"

    def __init__(
        self, *, model, tokenizer, user_ids: list[str] | None = None, beam_size: int = 20,
        batch_size: int = 64, exclude_history: bool = False, device: str | torch.device = "cpu",
    ) -> None:
        from sidrec.decoding import CatalogTrie

        self.model = model.to(device).eval()
        self.codes = np.asarray(tokenizer.codes)  # (N, L)
        self.trie = CatalogTrie(codes=self.codes, level_sizes=tokenizer.level_sizes)
        self.user_ids = user_ids
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.exclude_history = exclude_history
        self.device = torch.device(device)
        if model.vocab.num_user_buckets > 0 and user_ids is None:
            raise ValueError("this generator uses user tokens; pass the dataset's user_ids")

    @classmethod
    def from_run(
        cls, run: str | os.PathLike, *, item_ids: list[str], user_ids: list[str] | None = None, **kwargs
    ) -> GeneratorScorer:
        """Load ``RUN/generator`` and ``RUN/tokenizer``; checks the tokenizer covers this catalog."""
        from sidrec.seqmodel import SemanticIdGenerator
        from sidrec.tokenizer import SemanticIdTokenizer

        run = Path(run)
        tokenizer = SemanticIdTokenizer.from_pretrained(run / "tokenizer")
        if list(tokenizer.item_ids) != list(item_ids):
            raise ValueError(
                f"{run / 'tokenizer'} was fitted on another catalog than {run / 'dataset'} "
                "(item ids differ); retrain the tokenizer on this run"
            )
        model = SemanticIdGenerator.from_pretrained(run / "generator")
        return cls(model=model, tokenizer=tokenizer, user_ids=user_ids, **kwargs)

    @torch.no_grad()
    def recommend(
        self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None
    ) -> np.ndarray:
        """``(U, k)`` item indices (``-1`` where the trie had fewer than k items to offer)."""
        from sidrec.decoding import constrained_beam_search
        from sidrec.seqmodel import encode_histories

        use_users = self.model.vocab.num_user_buckets > 0
        if use_users and user_index is None:
            raise ValueError("this generator uses user tokens; pass user_index to recommend()")
        out = []
        for start in range(0, len(histories), self.batch_size):
            batch = histories[start : start + self.batch_size]
            uids = [self.user_ids[u] for u in user_index[start : start + len(batch)]] if use_users else None
            input_ids, mask = encode_histories(
                self.model.vocab, self.codes, batch, user_ids=uids, max_items=self.model.max_items
            )  # (B, S), (B, S)
            res = constrained_beam_search(
                self.model, self.trie, input_ids.to(self.device), mask.to(self.device),
                beam_size=max(self.beam_size, k), k=k,
                exclude=batch if self.exclude_history else None,
            )
            out.append(res.items.cpu().numpy().astype(np.int64))  # (B, k)
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
