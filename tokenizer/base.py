"""The quantizer interface and the name -> class registry.

A quantizer maps item embeddings ``float32 (N, D)`` to ``int64 (N, L)`` codes (one per semantic level)
and back. Every method (RQ-VAE, RQ-KMeans, FSQ) implements the same small interface so that the
semantic-ID table, the entry point and the benchmark never branch on the method: they look the class
up in ``QUANTIZERS`` by name.

Persistence is a folder with ``config.json`` (the registered name, constructor params, input dim) and
``model.safetensors`` (tensors only, never pickle).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import torch

from sidrec.tokenizer.embeddings import check_embeddings
from sidrec.utils import atomic_write_json, load_safetensors, read_json
from sidrec.utils.io import save_tensors

if TYPE_CHECKING:
    from sidrec.tokenizer.config import TokenizerConfig

logger = logging.getLogger(__name__)

QUANTIZERS: dict[str, type[Quantizer]] = {}

#: Rows per call of ``_encode`` / ``_decode`` / ``_last_level_candidates``: the public wrappers walk the
#: catalog in chunks so that no method holds per-item intermediates (distances, activations) for all N.
CHUNK_ROWS = 4096
Q = TypeVar("Q", bound="type[Quantizer]")


def register_quantizer(name: str):
    """Class decorator: make a quantizer available under ``name`` (config ``method``)."""

    def deco(cls: Q) -> Q:
        if name in QUANTIZERS and QUANTIZERS[name] is not cls:
            raise ValueError(f"quantizer name {name!r} is already registered by {QUANTIZERS[name].__name__}")
        cls.name = name
        QUANTIZERS[name] = cls
        return cls

    return deco


def get_quantizer_class(name: str) -> type[Quantizer]:
    """The class registered under ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return QUANTIZERS[name]
    except KeyError:
        raise ValueError(f"unknown quantizer {name!r}; registered: {sorted(QUANTIZERS)}") from None


def build_quantizer(config: TokenizerConfig) -> Quantizer:
    """An unfitted quantizer for ``config.method``, built from the config's fields."""
    return get_quantizer_class(config.method).from_config(config)


class Quantizer(ABC):
    """Embeddings -> codes -> reconstructed embeddings.

    Subclasses set their constructor params in ``self.params`` (JSON-ready, keyword-only constructor),
    fill ``self.input_dim`` in ``fit`` and implement the abstract methods below.
    """

    name: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.input_dim: int | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_config(cls, config: TokenizerConfig) -> Quantizer:
        """Pick this method's fields out of the flat tokenizer config."""

    # -- the interface --------------------------------------------------------------------------
    @property
    @abstractmethod
    def level_sizes(self) -> list[int]:
        """Number of codes at each semantic level (len L)."""

    @abstractmethod
    def _fit(self, emb: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        """Fit on validated ``emb (N, D)``; return JSON-ready training info (losses...)."""

    @abstractmethod
    def _encode(self, emb: np.ndarray) -> np.ndarray:
        """Validated ``emb (N, D)`` -> ``int64 (N, L)`` codes."""

    @abstractmethod
    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """``int64 (N, L)`` codes -> ``float32 (N, D)`` reconstructions."""

    @abstractmethod
    def _last_level_candidates(self, emb: np.ndarray, k: int) -> np.ndarray:
        """``int64 (N, k)``: last-level codes ranked best first, given the encoded prefix.

        Column 0 equals ``encode(emb)[:, -1]``; used to move colliding items to a free code.
        """

    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every fitted tensor, by name (CPU, contiguous)."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_tensors`` returned; ``ValueError`` on a shape mismatch."""

    # -- public wrappers with input checks --------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def is_fitted(self) -> bool:
        return self.input_dim is not None

    def fit(self, embeddings: np.ndarray, *, accelerator: Any = None) -> dict[str, Any]:
        """Fit on ``embeddings (N, D)``; returns training info. Seeded by the config's seed."""
        emb = check_embeddings(embeddings)
        self.input_dim = int(emb.shape[1])
        return self._fit(emb, accelerator=accelerator)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError(f"{type(self).__name__} is not fitted; call fit(embeddings) or from_pretrained(dir)")

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, D)`` embeddings -> ``int64 (N, L)`` codes."""
        self._require_fitted()
        emb = check_embeddings(embeddings, dim=self.input_dim)
        out = np.zeros((len(emb), self.num_levels), dtype=np.int64)
        for start in range(0, len(emb), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = self._encode(emb[start:start + CHUNK_ROWS])
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``int64 (N, L)`` codes -> ``float32 (N, D)``; ``ValueError`` for out-of-range codes."""
        self._require_fitted()
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[1] != self.num_levels:
            raise ValueError(f"codes must have shape (N, {self.num_levels}), got {codes.shape}")
        sizes = np.asarray(self.level_sizes)
        if (codes < 0).any() or (codes >= sizes).any():
            raise ValueError(f"codes out of range; level sizes are {self.level_sizes}")
        if len(codes) <= CHUNK_ROWS:
            return self._decode(codes)
        return np.concatenate([self._decode(codes[s:s + CHUNK_ROWS]) for s in range(0, len(codes), CHUNK_ROWS)])

    def last_level_candidates(self, embeddings: np.ndarray, k: int) -> np.ndarray:
        """``int64 (N, min(k, last level size))`` ranked last-level codes (column 0 = encode's choice)."""
        self._require_fitted()
        emb = check_embeddings(embeddings, dim=self.input_dim)
        k = min(int(k), self.level_sizes[-1])
        out = np.zeros((len(emb), k), dtype=np.int64)
        for start in range(0, len(emb), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = self._last_level_candidates(emb[start:start + CHUNK_ROWS], k)
        return out

    def encode_with_candidates(self, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``encode`` and ``last_level_candidates`` in one chunked pass: ``int64 (N, L)`` codes and
        ``(N, min(k, last level size))`` ranked last-level codes, stored as int16 (int32 above 32,767 codes).

        The collision strategy needs both for the whole catalog; one pass halves the work of residual
        quantizers (the residual entering the last level is computed once) and the small dtype keeps
        256 candidates per item at a third of a 384-d float32 embedding matrix.
        """
        self._require_fitted()
        emb = check_embeddings(embeddings, dim=self.input_dim)
        k = min(int(k), self.level_sizes[-1])
        dtype = np.int16 if self.level_sizes[-1] <= np.iinfo(np.int16).max else np.int32
        codes = np.zeros((len(emb), self.num_levels), dtype=np.int64)
        cands = np.zeros((len(emb), k), dtype=dtype)
        for start in range(0, len(emb), CHUNK_ROWS):
            sl = slice(start, start + CHUNK_ROWS)
            codes[sl], cands[sl] = self._encode_with_candidates(emb[sl], k)
        return codes, cands

    def _encode_with_candidates(self, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One chunk of ``encode_with_candidates``; residual quantizers override it to share the pass."""
        return self._encode(emb), self._last_level_candidates(emb, k)

    # -- persistence ----------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-ready: registered name, constructor params, input dim, level sizes."""
        self._require_fitted()
        return {"method": self.name, "params": self.params, "input_dim": self.input_dim,
                "level_sizes": self.level_sizes}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Quantizer:
        """Rebuild a fitted quantizer of the registered class named in ``config['method']``."""
        klass = get_quantizer_class(config["method"]) if cls is Quantizer else cls
        q = klass(**config["params"])
        q.input_dim = int(config["input_dim"])
        try:
            q.load_state_tensors(tensors)
        except (RuntimeError, KeyError) as e:
            raise ValueError(f"the saved {config['method']} tensors do not match its config.json "
                             f"(input_dim {config['input_dim']}): {e}") from e
        return q

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_tensors(self.state_tensors(), d / "model.safetensors")
        atomic_write_json(d / "config.json", self.get_config())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> Quantizer:
        """Load what ``save_pretrained`` wrote (the class comes from ``config.json``)."""
        d = Path(directory)
        for f in ("config.json", "model.safetensors"):
            if not (d / f).is_file():
                raise ValueError(f"{d} has no {f}; point at a folder written by save_pretrained")
        config = read_json(d / "config.json")
        config = config.get("quantizer", config) if isinstance(config, dict) else config  # a tokenizer nests it
        if not isinstance(config, dict) or "method" not in config:
            raise ValueError(f"{d / 'config.json'} is not a quantizer config (no 'method'); point at a folder "
                             "written by save_pretrained")
        return cls.from_state(config, load_safetensors(d / "model.safetensors"))
