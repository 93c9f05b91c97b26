"""The prepared dataset: remapped item/user indices, per-user sequences, item texts, leave-one-out splits.

Item index ``i`` (0..N-1) is the position in ``item_ids``; every later stage (tokenizer table, trie,
generator, baselines) uses these indices. Stored in ``RUN/dataset/`` as two HF ``datasets`` (``items``,
``users``) plus ``stats.json`` and ``prepare.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.utils import atomic_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("valid", "test")


@dataclass
class EvalSplit:
    """Leave-one-out evaluation examples: each user's history and the held-out next item."""

    histories: list[list[int]]
    targets: np.ndarray  # (U,) item indices
    user_index: np.ndarray  # (U,) user indices into PreparedDataset.user_ids

    def __len__(self) -> int:
        return len(self.histories)

    def sample(self, n: int | None, *, seed: int = 0) -> EvalSplit:
        """A seeded random ``n`` users, kept in their original order (all when ``n`` is None or >= len).

        Random, not the first ``n``: user order in benchmark files is not random (on Beauty the first
        3,000 users score about half the average NDCG@10), so a prefix is a biased sample.
        """
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"cannot sample {n} users; ask for at least 1 (or None for all)")
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return EvalSplit([self.histories[i] for i in idx], self.targets[idx], self.user_index[idx])


@dataclass
class PreparedDataset:
    """Users' item sequences over a remapped catalog, with one rendered text per item."""

    name: str
    item_ids: list[str]
    item_texts: list[str]
    item_titles: list[str | None]
    user_ids: list[str]
    sequences: list[list[int]]
    text_template: str
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if not (len(self.item_texts) == len(self.item_titles) == n):
            raise ValueError("item_ids, item_texts and item_titles must have the same length")
        if len(self.user_ids) != len(self.sequences):
            raise ValueError("user_ids and sequences must have the same length")

    # -- sizes -------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def item_index(self) -> dict[str, int]:
        """External item id -> item index."""
        return {iid: i for i, iid in enumerate(self.item_ids)}

    # -- splits ------------------------------------------------------------------------------
    def train_sequences(self) -> list[list[int]]:
        """Each user's sequence without the two held-out items (``seq[:-2]``)."""
        return [s[:-2] for s in self.sequences]

    def eval_split(self, split: str) -> EvalSplit:
        """Leave-one-out: valid = ``seq[:-2] -> seq[-2]``; test = ``seq[:-1] -> seq[-1]``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose 'valid' or 'test'")
        cut = 2 if split == "valid" else 1
        histories = [s[:-cut] for s in self.sequences]
        targets = np.fromiter((s[-cut] for s in self.sequences), dtype=np.int64, count=self.num_users)
        return EvalSplit(histories, targets, np.arange(self.num_users, dtype=np.int64))

    def train_item_counts(self) -> np.ndarray:
        """Interaction counts per item over the training sequences only. (N,)"""
        counts = np.zeros(self.num_items, dtype=np.int64)
        for s in self.train_sequences():
            np.add.at(counts, np.asarray(s, dtype=np.int64), 1)
        return counts

    # -- identity ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A short hash of the catalog and sequences: equal fingerprints mean the same data and split."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.item_ids).encode())
        h.update(b"\x1e")
        h.update("\x1f".join(self.item_texts).encode())
        for u, s in zip(self.user_ids, self.sequences, strict=True):
            h.update(u.encode() + b":" + np.asarray(s, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        lengths = np.asarray([len(s) for s in self.sequences])
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": int(lengths.sum()),
            "seq_len_min": int(lengths.min()),
            "seq_len_median": float(np.median(lengths)),
            "seq_len_mean": round(float(lengths.mean()), 2),
            "seq_len_max": int(lengths.max()),
            "items_without_text": sum(1 for t in self.item_texts if not t),
            "fingerprint": self.fingerprint(),
        }

    # -- storage -----------------------------------------------------------------------------
    def save(self, run_dir: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
        """Write ``RUN/dataset/`` atomically; returns the folder."""
        import datasets
        from datasets import Dataset

        out = Path(run_dir) / "dataset"
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        with atomic_dir(out) as tmp:
            Dataset.from_dict(
                {"item_id": self.item_ids, "text": self.item_texts, "title": self.item_titles}
            ).save_to_disk(str(tmp / "items"))
            Dataset.from_dict({"user_id": self.user_ids, "items": self.sequences}).save_to_disk(str(tmp / "users"))
            meta = {"format_version": FORMAT_VERSION, "name": self.name, "text_template": self.text_template,
                    "source": self.source, **(extra or {})}
            (tmp / "prepare.json").write_text(json.dumps(meta, indent=2) + "\n")
            (tmp / "stats.json").write_text(json.dumps(self.stats(), indent=2) + "\n")
        if bars:
            datasets.enable_progress_bars()
        return out

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> PreparedDataset:
        """Load ``RUN/dataset/`` written by :meth:`save` (``sidrec prepare``)."""
        from datasets import load_from_disk

        from sidrec.utils import read_json

        folder = Path(run_dir) / "dataset"
        meta_path = folder / "prepare.json"
        if not meta_path.is_file():
            raise ValueError(
                f"{folder}: no prepared dataset; run `sidrec prepare --dataset NAME_OR_PATH --out {run_dir}` first"
            )
        redo = f"prepare it again: `sidrec prepare --dataset NAME_OR_PATH --out {run_dir} --overwrite`"
        meta = read_json(meta_path, fix=redo)
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            version = meta.get("format_version") if isinstance(meta, dict) else None
            raise ValueError(
                f"{folder}: prepared with dataset format {version}, this sidrec reads "
                f"{FORMAT_VERSION}; run `sidrec prepare` again"
            )
        tables = {}
        for name in ("items", "users"):
            try:
                tables[name] = load_from_disk(str(folder / name)).to_dict()
            except Exception as e:  # FileNotFoundError, ArrowInvalid, ...: name the folder, not the library
                raise ValueError(f"{folder / name} cannot be loaded ({type(e).__name__}: {e}); {redo}") from e
        items, users = tables["items"], tables["users"]
        try:
            dataset = cls(
                name=meta["name"], item_ids=items["item_id"], item_texts=items["text"],
                item_titles=items["title"], user_ids=users["user_id"],
                sequences=users["items"], text_template=meta["text_template"],
                source=meta.get("source", ""),
            )
        except KeyError as e:
            raise ValueError(f"{folder}: missing column or key {e}; {redo}") from e
        stats_path = folder / "stats.json"
        if stats_path.is_file():
            stats = read_json(stats_path, fix=redo)
            recorded = stats.get("fingerprint") if isinstance(stats, dict) else None
            counts = {"items": dataset.num_items, "users": dataset.num_users}
            wrong = {k: (stats.get(k), v) for k, v in counts.items() if isinstance(stats, dict) and stats.get(k) != v}
            if wrong:
                detail = ", ".join(f"{k}: recorded {a}, found {b}" for k, (a, b) in wrong.items())
                raise ValueError(f"{folder}: the tables disagree with {stats_path} ({detail}); "
                                 f"the folder was modified or partly replaced; {redo}")
            if recorded is not None and recorded != dataset.fingerprint():
                raise ValueError(f"{folder}: the data hash to fingerprint {dataset.fingerprint()}, but {stats_path} "
                                 f"records {recorded}; the folder was modified or partly replaced; {redo}")
        return dataset
