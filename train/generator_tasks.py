"""What each generator family brings to the one training loop: its model, its batches and its loss.

``train.generator`` owns the loop (accelerate, validation, states, budgets, early stopping); a family is
a small class registered here under the name a preset's ``family:`` field uses:

- ``tiger``: TIGER's setup. One example per prefix of every user's training sequence (``[a] -> b``,
  ``[a, b] -> c``, ...), encoded as the history's level tokens (+ a user token), one target each.
- ``item``: one window per user (longer users are cut into windows), one encoder position per item,
  and a target at every position: the decoder generates item t+1's codes from positions 0..t for all
  t at once, and the dense head is trained on the same positions (``ItemLevelGenerator``).

A task exposes ``num_examples``, ``ranking`` (how validation ranks: ``beam`` or ``exact``), ``build_model()``,
``loader(generator) -> (DataLoader, sampler)`` and ``loss(model, batch) -> (loss, parts)``; the model's
forward computes the loss so that DDP synchronises its gradients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from sidrec.train.common import LengthGroupedBatchSampler
from sidrec.utils.run_folder import RunFolder

logger = logging.getLogger(__name__)

__all__ = ["TASKS", "ItemTask", "TaskContext", "TigerTask", "build_task", "collate_windows", "user_windows"]


@dataclass
class TaskContext:
    """Everything a family needs to build its model and batches."""

    cfg: Any  # GeneratorTrainConfig
    run: Path
    dataset: Any  # sidrec.data.PreparedDataset
    tokenizer: Any  # sidrec.tokenizer.SemanticIdTokenizer (checked against the dataset)
    accelerator: Any

    @property
    def item_codes(self) -> np.ndarray:
        return np.asarray(self.tokenizer.codes, dtype=np.int64)

    @property
    def level_sizes(self) -> list[int]:
        return [int(s) for s in self.tokenizer.level_sizes]


TASKS: dict[str, type] = {}


def register_task(name: str) -> Callable[[type], type]:
    """Class decorator: make a task available as ``family: name``."""

    def wrap(cls: type) -> type:
        TASKS[name] = cls
        return cls

    return wrap


def build_task(ctx: TaskContext):
    """The task of ``ctx.cfg.family``; ``ValueError`` naming the known families otherwise."""
    cls = TASKS.get(ctx.cfg.family)
    if cls is None:
        raise ValueError(f"unknown generator family {ctx.cfg.family!r}; choose one of {', '.join(sorted(TASKS))}")
    return cls(ctx)


def _grouped_loader(data, lengths: Sequence[int], collate, cfg, generator: torch.Generator):
    """A DataLoader over ``data``: length-grouped batches (or a plain shuffle), seeded by ``generator``."""
    if cfg.group_by_length:
        sampler = LengthGroupedBatchSampler(lengths=lengths, batch_size=cfg.batch_size, seed=cfg.seed)
        return DataLoader(data, batch_sampler=sampler, collate_fn=collate, generator=generator), sampler
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, drop_last=False,
                        generator=generator)
    return loader, None


# ---------------------------------------------------------------------------------------- tiger
class ExampleCollator:
    """Examples (``user``, ``history``, ``target``) -> ``input_ids``, ``attention_mask``, ``labels (B, L)``."""

    def __init__(self, *, vocab, item_codes: np.ndarray, user_ids: Sequence[str] | None, max_items: int) -> None:
        self.vocab = vocab
        self.item_codes = item_codes
        self.item_tokens = torch.from_numpy(vocab.codes_to_tokens(item_codes))  # (N, L)
        self.user_ids = user_ids
        self.max_items = max_items

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from sidrec.seqmodel.inputs import encode_histories

        users = None if self.user_ids is None else [self.user_ids[r["user"]] for r in rows]
        input_ids, attention_mask = encode_histories(
            self.vocab, self.item_codes, [r["history"] for r in rows], user_ids=users, max_items=self.max_items
        )
        labels = self.item_tokens[torch.tensor([r["target"] for r in rows])]  # (B, L)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@register_task("tiger")
class TigerTask:
    """TIGER: every prefix is an example (token-level encoder inputs, one target per example)."""

    ranking = "beam"  # how validation ranks: trie-constrained beam search

    def __init__(self, ctx: TaskContext) -> None:
        from sidrec.seqmodel import SemanticIdVocab, load_or_build_examples

        self.ctx = ctx
        cfg = ctx.cfg
        self.vocab = SemanticIdVocab(level_sizes=ctx.level_sizes, num_user_buckets=cfg.user_buckets)
        with ctx.accelerator.main_process_first():
            self.examples = load_or_build_examples(
                ctx.run, ctx.dataset.train_sequences(), fingerprint=ctx.dataset.fingerprint(), max_items=cfg.max_items
            )
        self.num_examples = len(self.examples)

    def build_model(self):
        from sidrec.seqmodel import SemanticIdGenerator, build_t5_config

        return SemanticIdGenerator(build_t5_config(vocab=self.vocab, **self.ctx.cfg.t5_kwargs()))

    def loader(self, generator: torch.Generator):
        cfg = self.ctx.cfg
        user_ids = self.ctx.dataset.user_ids if cfg.user_buckets > 0 else None
        collate = ExampleCollator(vocab=self.vocab, item_codes=self.ctx.item_codes, user_ids=user_ids,
                                  max_items=cfg.max_items)
        lengths = [min(len(h), cfg.max_items) for h in self.examples["history"]] if cfg.group_by_length else []
        return _grouped_loader(self.examples, lengths, collate, cfg, generator)

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = model(**batch).loss
        return loss, {}


# ---------------------------------------------------------------------------------------- item
def user_windows(sequences: Sequence[Sequence[int]], max_items: int) -> list[list[int]]:
    """Training windows of at most ``max_items + 1`` items, cut from the end of each sequence.

    Consecutive windows overlap by one item, so every next-item target of a sequence appears exactly
    once (the first item is never a target). Sequences with fewer than 2 items give none (counted in
    the log).
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    windows: list[list[int]] = []
    skipped = 0
    for seq in sequences:
        if len(seq) < 2:
            skipped += 1
            continue
        end = len(seq)
        while end > 1:
            start = max(0, end - (max_items + 1))
            windows.append(list(seq[start:end]))
            end = start + 1
    if skipped:
        logger.info("%d users have fewer than 2 training items and give no training window", skipped)
    return windows


def collate_windows(windows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Windows -> ``input_ids (B, T)`` item tokens (index + 1, right-padded), ``attention_mask (B, T)`` and
    ``target_items (B, T)`` (the next item's index at each position, -100 where there is none)."""
    width = max(len(w) for w in windows) - 1
    inputs = torch.zeros((len(windows), width), dtype=torch.long)
    targets = torch.full((len(windows), width), -100, dtype=torch.long)
    for i, window in enumerate(windows):
        seq = torch.as_tensor(window, dtype=torch.long)
        inputs[i, : len(window) - 1] = seq[:-1] + 1
        targets[i, : len(window) - 1] = seq[1:]
    return {"input_ids": inputs, "attention_mask": (inputs > 0).long(), "target_items": targets}


@register_task("item")
class ItemTask:
    """Item-level causal encoder, a target at every position, jointly trained dense head."""

    ranking = "beam"

    def __init__(self, ctx: TaskContext) -> None:
        from sidrec.seqmodel import SemanticIdVocab

        self.ctx = ctx
        cfg = ctx.cfg
        if cfg.user_buckets:
            raise ValueError("the item family has no user token: set user_buckets: 0")
        self.vocab = SemanticIdVocab(level_sizes=ctx.level_sizes, num_user_buckets=0)
        self.windows = user_windows(ctx.dataset.train_sequences(), cfg.max_items)
        self.num_examples = len(self.windows)

    def _text(self) -> np.ndarray | None:
        if not self.ctx.cfg.text_input:
            return None
        from sidrec.tokenizer import embed_texts

        tok, ds = self.ctx.tokenizer, self.ctx.dataset
        with self.ctx.accelerator.main_process_first():  # shares the tokenizer's cache entry in RUN/cache
            return embed_texts(ds.item_texts, model_name=tok.config.embedding_model, template=ds.text_template,
                               cache_dir=RunFolder(self.ctx.run).cache_dir, show_progress=False)

    def build_model(self):
        """The family's model over the run's item table: text embeddings, ID rows for items seen at least
        ``id_min_count`` times, training counts; a cold split's held-out items kept out of its training
        catalog (not even negatives)."""
        from sidrec.seqmodel.item_model import item_id_rows

        text = self._text()
        counts = self.ctx.dataset.train_item_counts()
        id_rows = item_id_rows(counts, self.ctx.cfg.id_min_count)
        model_class, config = self._model_config(text_dim=0 if text is None else text.shape[1],
                                                 num_id_rows=int(id_rows.max(initial=0)))
        model = model_class.build(config, item_codes=self.ctx.item_codes, text=text, id_rows=id_rows,
                                  item_counts=counts)
        if self.ctx.dataset.num_cold_items:
            model.set_training_catalog(~self.ctx.dataset.cold_items)
        return model

    def _model_config(self, *, text_dim: int, num_id_rows: int):
        """``(model class, its config)`` of this family."""
        from sidrec.seqmodel.item_model import ItemLevelGenerator, build_item_config

        cfg = self.ctx.cfg
        config = build_item_config(
            vocab=self.vocab, num_items=self.ctx.dataset.num_items, text_dim=text_dim, num_id_rows=num_id_rows,
            id_dropout=cfg.id_dropout, input_dropout=cfg.input_dropout, dense_head=cfg.dense_head,
            dense_loss_weight=cfg.dense_weight, distill_weight=cfg.distill_weight, **cfg.t5_kwargs(),
        )
        logger.info("item generator: %d items, text %s, %d items with an ID embedding (>= %d training interactions)",
                    config.num_items, "on" if text_dim else "off", config.num_id_rows, cfg.id_min_count)
        return ItemLevelGenerator, config

    def loader(self, generator: torch.Generator):
        lengths = [len(w) for w in self.windows] if self.ctx.cfg.group_by_length else []
        return _grouped_loader(self.windows, lengths, collate_windows, self.ctx.cfg, generator)

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(**batch)
        return out.loss, {"generation": out.generation_loss.detach(), "dense": out.dense_loss.detach(),
                          "distill": out.distill_loss.detach()}


# ---------------------------------------------------------------------------------------- parallel
@register_task("parallel")
class ParallelTask(ItemTask):
    """All digits of the next item at every position (RPG-style); exact ranking of the whole catalog.

    Batches are the item family's user windows; the model reads item positions and predicts every digit
    of the tokenizer's table (long OPQ IDs, or any table) with one head per digit.
    """

    ranking = "exact"

    def _model_config(self, *, text_dim: int, num_id_rows: int):
        from sidrec.seqmodel.parallel_model import ParallelIdGenerator, build_parallel_config

        cfg = self.ctx.cfg
        config = build_parallel_config(
            level_sizes=self.ctx.level_sizes, num_items=self.ctx.dataset.num_items,
            text_dim=text_dim, num_id_rows=num_id_rows, id_dropout=cfg.id_dropout,
            input_dropout=cfg.input_dropout, digit_input_scale=cfg.digit_input_scale, head=cfg.head,
            head_temperature=cfg.head_temperature, item_loss_weight=cfg.item_loss_weight,
            item_negatives=cfg.item_negatives, dense_head=cfg.dense_head, dense_loss_weight=cfg.dense_weight,
            **cfg.t5_kwargs(),
        )
        logger.info("parallel generator: %d items, %d digits of %s codes, text %s, %d items with an ID embedding",
                    config.num_items, len(config.level_sizes), sorted(set(config.level_sizes)),
                    "on" if text_dim else "off", config.num_id_rows)
        return ParallelIdGenerator, config

    @staticmethod
    def loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(**batch)
        return out.loss, {"digits": out.digit_loss.detach(), "items": out.item_loss.detach(),
                          "dense": out.dense_loss.detach()}
