"""Training examples: every prefix of every user's training sequence -> the next item.

For a training sequence ``[a, b, c, d]`` (``PreparedDataset.train_sequences()``, i.e. ``seq[:-2]``) the
examples are ``[a] -> b``, ``[a, b] -> c``, ``[a, b, c] -> d``, each history cut to its last
``max_items`` items (sliding window). Examples store item indices, not tokens, so the cache does not
depend on the tokenizer; ``encode_histories`` turns them into tokens per batch.

Built once with ``datasets.map`` and cached under ``RUN/generator_cache/`` keyed by the dataset
fingerprint and ``max_items``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidrec.utils import atomic_dir

logger = logging.getLogger(__name__)

__all__ = ["EXAMPLES_FORMAT_VERSION", "build_examples", "load_or_build_examples"]

EXAMPLES_FORMAT_VERSION = 1


def _expand(batch: dict[str, list[Any]], *, max_items: int) -> dict[str, list[Any]]:
    users: list[int] = []
    histories: list[list[int]] = []
    targets: list[int] = []
    for user, items in zip(batch["user"], batch["items"], strict=True):
        for t in range(1, len(items)):
            users.append(user)
            histories.append(items[max(0, t - max_items) : t])
            targets.append(items[t])
    return {"user": users, "history": histories, "target": targets}


def build_examples(sequences: Sequence[Sequence[int]], *, max_items: int):
    """A ``datasets.Dataset`` with columns ``user`` (int), ``history`` (list[int]), ``target`` (int).

    Args:
        sequences: per user, the training item sequence (``PreparedDataset.train_sequences()``).
        max_items: history window (most recent items kept).
    """
    import datasets

    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    users = datasets.Dataset.from_dict({"user": list(range(len(sequences))), "items": [list(s) for s in sequences]})
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        examples = users.map(
            _expand, batched=True, batch_size=1000, remove_columns=["user", "items"],
            fn_kwargs={"max_items": max_items}, load_from_cache_file=False,
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    skipped = sum(1 for s in sequences if len(s) < 2)
    if skipped:
        logger.info("%d users have fewer than 2 training items and give no training example", skipped)
    return examples


def load_or_build_examples(
    run_dir: str | os.PathLike, sequences: Sequence[Sequence[int]], *, fingerprint: str, max_items: int
):
    """Training examples from ``RUN/generator_cache/`` if present, else built and cached there.

    Args:
        run_dir: the run folder.
        sequences: per user, the training item sequence.
        fingerprint: ``PreparedDataset.fingerprint()``; a different dataset never reuses the cache.
        max_items: history window.
    """
    from datasets import load_from_disk

    folder = Path(run_dir) / "generator_cache" / f"examples-v{EXAMPLES_FORMAT_VERSION}-{fingerprint}-m{max_items}"
    if folder.is_dir():
        try:
            cached = load_from_disk(str(folder))
        except Exception as e:  # a damaged cache entry is rebuilt, not trusted
            logger.warning("training-example cache %s cannot be read (%s: %s); rebuilding it", folder,
                           type(e).__name__, e)
        else:
            logger.info("training examples from cache %s", folder)
            return cached
    examples = build_examples(sequences, max_items=max_items)
    with atomic_dir(folder) as tmp:
        examples.save_to_disk(str(tmp))
    logger.info("built %d training examples from %d users -> %s", len(examples), len(sequences), folder)
    return load_from_disk(str(folder))
