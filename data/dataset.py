"""The prepared dataset: remapped item/user indices, per-user sequences, item texts, leave-one-out splits.

Item index ``i`` (0..N-1) is the position in ``item_ids``; every later stage (tokenizer table, trie,
generator, baselines) uses these indices. Stored in ``RUN/dataset/`` as two HF ``datasets`` (``items``,
``users``) plus ``stats.json`` and ``prepare.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.utils import atomic_dir
from sidrec.utils.memory import paused_gc
from sidrec.utils.run_folder import RunFolder

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


class FlatSequences(Sequence[list[int]]):
    """Read-only per-user sequences stored as one int64 array and offsets (what ``prepare`` returns).

    Indexing and iteration give plain ``list[int]`` (built on access); 30M interactions take 240 MB here
    instead of about 1.2 GB as Python lists of ints. ``PreparedDataset.load`` returns real lists.
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat = np.asarray(flat, dtype=np.int64)  # (sum of lengths,) item indices
        self.offsets = np.asarray(offsets, dtype=np.int64)  # (U + 1,) user u = flat[offsets[u]:offsets[u + 1]]
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[-1] != len(self.flat):
            raise ValueError("offsets must be (num_users + 1,) and end at len(flat)")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):  # int -> list[int]; slice -> list[list[int]]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"user {index} out of range for {len(self)} sequences")
        return self.flat[self.offsets[index]:self.offsets[index + 1]].tolist()

    def __iter__(self):
        bounds = self.offsets.tolist()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            yield self.flat[a:b].tolist()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a == list(b) for a, b in zip(self, other, strict=True))

    def lengths(self) -> np.ndarray:
        """``(U,)`` sequence lengths."""
        return np.diff(self.offsets)


@dataclass
class PreparedDataset:
    """Users' item sequences over a remapped catalog, with one rendered text per item.

    ``sequences`` is a ``list[list[int]]`` (``load``, hand-built datasets) or, from ``prepare``, a
    read-only ``FlatSequences`` that reads the same way.
    """

    name: str
    item_ids: list[str]
    item_texts: list[str]
    item_titles: list[str | None]
    user_ids: list[str]
    sequences: list[list[int]] | FlatSequences
    text_template: str
    source: str = ""
    num_cold_items: int = 0  # a cold-start split's held-out items: the last item indices (sidrec.data.cold)
    cold_method: str = ""  # how they were chosen (timestamps or a seeded random choice)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if not (len(self.item_texts) == len(self.item_titles) == n):
            raise ValueError("item_ids, item_texts and item_titles must have the same length")
        if len(self.user_ids) != len(self.sequences):
            raise ValueError("user_ids and sequences must have the same length")
        if not 0 <= self.num_cold_items < max(n, 1):
            raise ValueError(f"num_cold_items must be in [0, {n}), got {self.num_cold_items}")

    # -- sizes -------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return int(self._lengths().sum())

    def _lengths(self) -> np.ndarray:
        if isinstance(self.sequences, FlatSequences):
            return self.sequences.lengths()
        return np.fromiter(map(len, self.sequences), dtype=np.int64, count=self.num_users)

    @property
    def cold_items(self) -> np.ndarray:
        """``bool (N,)``: True for the items a cold-start split held out (never seen in training)."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.num_items - self.num_cold_items :] = True
        return mask

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
    def _flat(self) -> tuple[np.ndarray, np.ndarray]:
        """All sequences as one int64 array ``(sum of lengths,)`` and the ``(U + 1,)`` offsets."""
        if isinstance(self.sequences, FlatSequences):
            return self.sequences.flat, self.sequences.offsets
        lengths = self._lengths()
        offsets = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(itertools.chain.from_iterable(self.sequences), dtype=np.int64, count=int(offsets[-1]))
        return flat, offsets

    def fingerprint(self) -> str:
        """A short hash of the catalog and sequences: equal fingerprints mean the same data and split."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.item_ids).encode())
        h.update(b"\x1e")
        h.update("\x1f".join(self.item_texts).encode())
        flat, offsets = self._flat()  # the same bytes as hashing np.asarray(seq) user by user, 3x faster
        bounds = offsets.tolist()
        for u, a, b in zip(self.user_ids, bounds[:-1], bounds[1:], strict=True):
            h.update(u.encode() + b":" + flat[a:b].tobytes())
        if self.num_cold_items:  # (absent for datasets without a cold split: their fingerprints are unchanged)
            h.update(f"\x1dcold={self.num_cold_items}".encode())
        return h.hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        lengths = self._lengths()
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
            **({"cold_items": self.num_cold_items, "cold_test_users": self._cold_test_users(),
                "cold_method": self.cold_method} if self.num_cold_items else {}),
        }

    def _cold_test_users(self) -> int:
        flat, offsets = self._flat()
        return int((flat[offsets[1:] - 1] >= self.num_items - self.num_cold_items).sum())

    # -- storage -----------------------------------------------------------------------------
    def save(self, run_dir: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
        """Write ``RUN/dataset/`` atomically; returns the folder."""
        import datasets
        import pyarrow as pa
        from datasets import Dataset, DatasetInfo, Features, Sequence, Value

        out = RunFolder(run_dir).dataset_dir
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        with atomic_dir(out) as tmp:
            Dataset.from_dict(
                {"item_id": self.item_ids, "text": self.item_texts, "title": self.item_titles}
            ).save_to_disk(str(tmp / "items"))
            flat, offsets = self._flat()  # Arrow list column straight from numpy: no per-user Python work
            users = pa.table({"user_id": pa.array(self.user_ids, type=pa.string()),
                              "items": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))})
            del flat, offsets
            Dataset(users, info=DatasetInfo(features=Features({"user_id": Value("string"),
                                                               "items": Sequence(Value("int64"))}))
                    ).save_to_disk(str(tmp / "users"))
            meta = {"format_version": FORMAT_VERSION, "name": self.name, "text_template": self.text_template,
                    "source": self.source, "num_cold_items": self.num_cold_items,
                    "cold_method": self.cold_method, **(extra or {})}
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

        folder = RunFolder(run_dir).dataset_dir
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
                table = load_from_disk(str(folder / name))
                with paused_gc():  # millions of small lists: the collector would re-scan them as they pile up
                    tables[name] = table.to_dict()
            except Exception as e:  # FileNotFoundError, ArrowInvalid, ...: name the folder, not the library
                raise ValueError(f"{folder / name} cannot be loaded ({type(e).__name__}: {e}); {redo}") from e
        items, users = tables["items"], tables["users"]
        try:
            dataset = cls(
                name=meta["name"], item_ids=items["item_id"], item_texts=items["text"],
                item_titles=items["title"], user_ids=users["user_id"],
                sequences=users["items"], text_template=meta["text_template"],
                source=meta.get("source", ""), num_cold_items=int(meta.get("num_cold_items", 0)),
                cold_method=meta.get("cold_method", ""),
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
            if recorded is not None and recorded != (found := dataset.fingerprint()):
                raise ValueError(f"{folder}: the data hash to fingerprint {found}, but {stats_path} "
                                 f"records {recorded}; the folder was modified or partly replaced; {redo}")
        return dataset
