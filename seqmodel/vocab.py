"""Token vocabulary of the generator: special tokens, one token per (level, code), user-hash buckets.

Why one token per (level, code) and not per code: code 17 at level 0 and code 17 at level 2 mean
different things (TIGER), so they get distinct embeddings. Layout of token ids:

- ``0`` = pad (also the decoder start token), ``1`` = eos;
- level t's codes ``0..C_t-1`` are tokens ``level_offsets[t] .. level_offsets[t] + C_t - 1``, levels in
  order, the collision level last (``level_sizes`` come from ``SemanticIdTokenizer.level_sizes``);
- then ``num_user_buckets`` user tokens; a user id maps to a bucket by a stable hash (BLAKE2b of the
  UTF-8 id, not Python's salted ``hash``), so the same user gets the same token in every process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sidrec.utils import atomic_write_json, read_json

__all__ = ["PAD_TOKEN_ID", "EOS_TOKEN_ID", "VOCAB_FORMAT_VERSION", "SemanticIdVocab"]

PAD_TOKEN_ID = 0
EOS_TOKEN_ID = 1
NUM_SPECIAL_TOKENS = 2
VOCAB_FORMAT_VERSION = 1
VOCAB_FILE = "vocab.json"


def _stable_bucket(user_id: str, buckets: int) -> int:
    digest = hashlib.blake2b(str(user_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


class SemanticIdVocab:
    """Maps semantic-ID codes and user ids to token ids and back.

    Args:
        level_sizes: codebook size of each level, collision level last (``SemanticIdTokenizer.level_sizes``).
        num_user_buckets: number of user-hash tokens (TIGER: 2000; 0 = no user token).
    """

    pad_token_id = PAD_TOKEN_ID
    eos_token_id = EOS_TOKEN_ID

    def __init__(self, *, level_sizes: Sequence[int], num_user_buckets: int = 0) -> None:
        sizes = [int(s) for s in level_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"level_sizes must be a non-empty list of positive ints, got {list(level_sizes)}")
        if num_user_buckets < 0:
            raise ValueError(f"num_user_buckets must be >= 0, got {num_user_buckets}")
        self.level_sizes: tuple[int, ...] = tuple(sizes)
        self.num_user_buckets = int(num_user_buckets)
        offsets = np.cumsum([NUM_SPECIAL_TOKENS, *sizes])
        self.level_offsets: tuple[int, ...] = tuple(int(o) for o in offsets[:-1])
        self.user_offset = int(offsets[-1])
        self.vocab_size = self.user_offset + self.num_user_buckets

    # ------------------------------------------------------------------ sizes
    @property
    def num_levels(self) -> int:
        """Number of code levels L (the decoder generates L tokens per item)."""
        return len(self.level_sizes)

    def level_range(self, level: int) -> tuple[int, int]:
        """Token ids ``[start, stop)`` of ``level``'s codes."""
        start = self.level_offsets[level]
        return start, start + self.level_sizes[level]

    # ------------------------------------------------------------------ codes <-> tokens
    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        array = np.asarray(codes)
        if array.ndim < 1 or array.shape[-1] != self.num_levels:
            raise ValueError(f"codes must have a last axis of {self.num_levels} levels, got shape {array.shape}")
        array = array.astype(np.int64, copy=False)
        sizes = np.asarray(self.level_sizes)
        if array.size and ((array < 0).any() or (array >= sizes).any()):
            raise ValueError(
                f"codes out of range for level_sizes {list(self.level_sizes)}; the codes table and the vocab "
                "must come from the same tokenizer"
            )
        return array

    def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """``(..., L)`` codes -> ``(..., L)`` token ids (int64)."""
        return self._check_codes(codes) + np.asarray(self.level_offsets, dtype=np.int64)

    def tokens_to_codes(self, tokens: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(..., L)`` token ids -> ``(..., L)`` codes; ``ValueError`` if a token is not of its level."""
        array = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        if array.ndim < 1 or array.shape[-1] != self.num_levels:
            raise ValueError(f"tokens must have a last axis of {self.num_levels} levels, got shape {array.shape}")
        codes = array.astype(np.int64) - np.asarray(self.level_offsets, dtype=np.int64)
        if codes.size and ((codes < 0).any() or (codes >= np.asarray(self.level_sizes)).any()):
            raise ValueError("tokens_to_codes: some token is not a code token of its level (position t = level t)")
        return codes

    def token_levels(self) -> np.ndarray:
        """``(V,)`` int64: the level of each token id, -1 for special and user tokens."""
        levels = np.full(self.vocab_size, -1, dtype=np.int64)
        for t in range(self.num_levels):
            start, stop = self.level_range(t)
            levels[start:stop] = t
        return levels

    # ------------------------------------------------------------------ users
    def user_token(self, user_id: str) -> int:
        """The token of ``user_id``'s hash bucket; ``ValueError`` if the vocab has no user tokens."""
        if self.num_user_buckets == 0:
            raise ValueError("this vocab has no user tokens (num_user_buckets=0); pass user_ids=None")
        return self.user_offset + _stable_bucket(user_id, self.num_user_buckets)

    def user_tokens(self, user_ids: Sequence[str]) -> np.ndarray:
        """``(U,)`` int64 user tokens for a list of user ids."""
        return np.fromiter((self.user_token(u) for u in user_ids), dtype=np.int64, count=len(user_ids))

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": VOCAB_FORMAT_VERSION,
            "pad_token_id": PAD_TOKEN_ID,
            "eos_token_id": EOS_TOKEN_ID,
            "level_sizes": list(self.level_sizes),
            "level_offsets": list(self.level_offsets),
            "num_user_buckets": self.num_user_buckets,
            "user_offset": self.user_offset,
            "vocab_size": self.vocab_size,
            "user_hash": "blake2b-64 of utf-8 user id, mod num_user_buckets",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SemanticIdVocab:
        if data.get("format_version") != VOCAB_FORMAT_VERSION:
            raise ValueError(
                f"vocab format {data.get('format_version')!r}, this sidrec reads {VOCAB_FORMAT_VERSION}; "
                "retrain the generator with this version"
            )
        vocab = cls(level_sizes=data["level_sizes"], num_user_buckets=data.get("num_user_buckets", 0))
        if list(vocab.level_offsets) != list(data.get("level_offsets", vocab.level_offsets)):
            raise ValueError("vocab.json level_offsets disagree with its level_sizes; the file is corrupt")
        return vocab

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/vocab.json``."""
        path = Path(directory) / VOCAB_FILE
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> SemanticIdVocab:
        """Read ``directory/vocab.json`` written by :meth:`save`."""
        path = Path(directory) / VOCAB_FILE
        if not path.is_file():
            raise ValueError(f"{path} not found; a generator folder holds config.json, model.safetensors, vocab.json")
        data = read_json(path, fix="retrain the generator or restore the folder")
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a vocab (a JSON object); retrain the generator or restore the folder")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path} lacks or garbles {e}; retrain the generator or restore the folder") from e

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SemanticIdVocab)
            and self.level_sizes == other.level_sizes
            and self.num_user_buckets == other.num_user_buckets
        )

    def __hash__(self) -> int:
        return hash((self.level_sizes, self.num_user_buckets))

    def __repr__(self) -> str:
        return (
            f"SemanticIdVocab(level_sizes={list(self.level_sizes)}, num_user_buckets={self.num_user_buckets}, "
            f"vocab_size={self.vocab_size})"
        )
