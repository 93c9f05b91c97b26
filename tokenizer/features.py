"""Collaborative features: what the quantizer sees when semantic IDs should also carry who-buys-what.

Codes made from item text alone group items that read alike; codes that also carry a collaborative
embedding (an ID model's item vectors, e.g. SASRec's) group items that are bought together, which is what
a generator has to predict (LETTER: +6-10% from a collaborative regulariser on the tokenizer).
``CollaborativeFeatures`` builds the quantizer's input row by row:

    [ standardized text / sqrt(Dt) , cf_weight * standardized cf / sqrt(Dc) ]

(each block then has the same total variance at ``cf_weight`` 1). Items without a collaborative vector (new
items, items never seen in training) get one predicted from their text by a ridge regression fitted on
the items that have one, so ``assign`` and ``Recommender.add_items`` still need nothing but text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["CollaborativeFeatures"]


class CollaborativeFeatures:
    """Text embedding + collaborative embedding -> the quantizer's input (see the module docstring).

    Args:
        cf_weight: weight of the collaborative block (0 = text only, but the width stays).
        ridge: L2 penalty of the text -> collaborative map (on standardized inputs).
    """

    def __init__(self, *, cf_weight: float = 1.0, ridge: float = 10.0) -> None:
        if cf_weight < 0 or ridge < 0:
            raise ValueError(f"cf_weight and ridge must be >= 0, got {cf_weight}, {ridge}")
        self.cf_weight, self.ridge = float(cf_weight), float(ridge)
        self.tensors: dict[str, np.ndarray] = {}

    @property
    def text_dim(self) -> int:
        return int(self.tensors["text_mean"].shape[0])

    @property
    def cf_dim(self) -> int:
        return int(self.tensors["cf_mean"].shape[0])

    @property
    def dim(self) -> int:
        return self.text_dim + self.cf_dim

    def fit(self, text: np.ndarray, cf: np.ndarray, known: np.ndarray) -> dict[str, Any]:
        """Fit the standardization and the text -> cf map on the ``known`` rows (``bool (N,)``)."""
        text, cf = np.asarray(text, dtype=np.float64), np.asarray(cf, dtype=np.float64)
        known = np.asarray(known, dtype=bool)
        if len(text) != len(cf) or known.shape != (len(text),):
            raise ValueError(f"text {text.shape}, cf {cf.shape} and known {known.shape} must have the same rows")
        if known.sum() < 2:
            raise ValueError("collaborative features need at least 2 items with a collaborative embedding")
        t_mean, t_std = text[known].mean(0), text[known].std(0) + 1e-6
        c_mean, c_std = cf[known].mean(0), cf[known].std(0) + 1e-6
        x, y = (text[known] - t_mean) / t_std, (cf[known] - c_mean) / c_std
        gram = x.T @ x + self.ridge * np.eye(x.shape[1])
        weight = np.linalg.solve(gram, x.T @ y)  # (Dt, Dc): standardized text -> standardized cf
        fitted = x @ weight
        r2 = 1.0 - float(((y - fitted) ** 2).sum() / max(((y - y.mean(0)) ** 2).sum(), 1e-12))
        self.tensors = {name: value.astype(np.float32) for name, value in
                        {"text_mean": t_mean, "text_std": t_std, "cf_mean": c_mean, "cf_std": c_std,
                         "ridge_weight": weight}.items()}
        return {"cf_dim": int(cf.shape[1]), "known_items": int(known.sum()), "predicted_items": int((~known).sum()),
                "text_to_cf_r2": round(r2, 4)}

    def predict_cf(self, text: np.ndarray) -> np.ndarray:
        """The standardized collaborative vector predicted from text: ``(N, Dt) -> (N, Dc)``."""
        t = self.tensors
        return ((np.asarray(text, dtype=np.float32) - t["text_mean"]) / t["text_std"]) @ t["ridge_weight"]

    def transform(self, text: np.ndarray, cf: np.ndarray | None = None, known: np.ndarray | None = None) -> np.ndarray:
        """``(N, Dt + Dc)`` quantizer input; rows not ``known`` (all, when ``cf`` is None) use the predicted cf."""
        t = self.tensors
        text = np.asarray(text, dtype=np.float32)
        if text.ndim != 2 or text.shape[1] != self.text_dim:
            raise ValueError(f"text embeddings must be (N, {self.text_dim}), got {text.shape}")
        cf_std = self.predict_cf(text)
        if cf is not None:
            mask = np.ones(len(text), dtype=bool) if known is None else np.asarray(known, dtype=bool)
            cf_std[mask] = (np.asarray(cf, dtype=np.float32)[mask] - t["cf_mean"]) / t["cf_std"]
        text_part = (text - t["text_mean"]) / t["text_std"] / np.sqrt(self.text_dim)
        cf_part = self.cf_weight * cf_std / np.sqrt(self.cf_dim)
        return np.concatenate([text_part, cf_part], axis=1).astype(np.float32)

    # -- persistence ----------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"cf_weight": self.cf_weight, "ridge": self.ridge, "text_dim": self.text_dim, "cf_dim": self.cf_dim}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"features.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.tensors.items()}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> CollaborativeFeatures:
        features = cls(cf_weight=float(config["cf_weight"]), ridge=float(config["ridge"]))
        names = ("text_mean", "text_std", "cf_mean", "cf_std", "ridge_weight")
        missing = [n for n in names if f"features.{n}" not in tensors]
        if missing:
            raise ValueError(f"the tokenizer's collaborative features lack {missing}; refit the tokenizer")
        features.tensors = {n: tensors[f"features.{n}"].numpy().astype(np.float32) for n in names}
        if (features.text_dim, features.cf_dim) != (int(config["text_dim"]), int(config["cf_dim"])):
            raise ValueError("the tokenizer's collaborative features do not match their config; refit the tokenizer")
        return features
