"""Fusion of a generator with SASRec: one ranking from two models' scores over the whole catalog.

The two models err differently (the generator's codes carry item text and co-purchase signal and reach rare
and new items; SASRec's free item embeddings are sharper on popular ones), and an ensemble of SASRec with a
semantic-ID model is the published route past a CE-trained SASRec (arXiv 2603.19809: +9% NDCG@10 on Amazon).
Per user, each model's scores over the catalog are normalized (``zscore``: minus the user's mean over the
scored items, over their standard deviation; or ``logsoftmax``: the model's own log-probabilities over the
catalog), then ``fused = (1 - weight) * generator + weight * sasrec``. Items SASRec cannot score (born after it
was trained: its ``known_items``) take the generator's normalized score in SASRec's place, so for them the
fused score is the generator's alone, on the same scale as everyone else's. ``popularity`` then subtracts
``popularity * log(1 + training count)`` from every item (0 = off; new items, count 0, are untouched):
SASRec's share carries its popularity bias into the fused list, and this takes it back where VALID says so.
``text_weight`` adds a third signal for a generator that reads item text: the text kNN's score (the cosine of
each item's text with the user's recent items, ``sidrec.decoding.text_profile.text_scores``), z-scored per user
whatever ``norm`` is (a cosine is no log-probability), times ``text_weight``. It is defined for every item, new
ones included, and it is the signal that reaches the long tail (the text kNN's tail Recall@10 on Beauty is
twice SASRec's). As in the kNN baseline, the items of its own query (the user's last 20) are not scored by it
(``-inf`` from ``text_scores(drop_query=True)``): they add 0, the user's mean, and the other models decide
whether to repeat them; otherwise the user's own last item, closest to its own query, would take the top slot.
The weights, the normalization and the correction are chosen on VALID (``sidrec.eval.fusion``) and saved as
``fusion.json``; ``FusionParts`` is the same computation split in two, so that a grid normalizes a batch once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["FUSION_FILE", "NORMS", "FusionParts", "FusionSettings", "component_scores", "fuse_scores", "fused_topk",
           "log_popularity", "normalize"]

FUSION_FILE = "fusion.json"
NORMS = ("zscore", "logsoftmax")


@dataclass(frozen=True)
class FusionSettings:
    """``weight``: SASRec's share of the fused score (0 = the generator alone, 1 = SASRec alone); ``norm``: how
    each model's scores are put on one scale per user (``NORMS``); ``popularity``: the weight of the popularity
    correction (``-popularity * log(1 + training count)``, 0 = none); ``text_weight``: the weight of the
    z-scored text kNN score added to the mix (0 = none; needs a generator that reads item text)."""

    weight: float = 0.5
    norm: str = "zscore"
    popularity: float = 0.0
    text_weight: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight}")
        if self.norm not in NORMS:
            raise ValueError(f"fusion norm must be one of {NORMS}, got {self.norm!r}")
        if self.popularity < 0:
            raise ValueError(f"fusion popularity correction must be >= 0, got {self.popularity}")
        if self.text_weight < 0:
            raise ValueError(f"fusion text weight must be >= 0, got {self.text_weight}")

    def save(self, folder: str | os.PathLike, **extra: Any) -> None:
        """Write ``folder/fusion.json`` (the settings plus ``extra``: e.g. the VALID grid they won)."""
        from sidrec.utils import atomic_write_json

        atomic_write_json(Path(folder) / FUSION_FILE, {**dataclasses.asdict(self), **extra})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> FusionSettings:
        from sidrec.utils import read_json

        path = Path(folder) / FUSION_FILE
        raw = read_json(path, fix="run `sidrec evaluate --fuse sasrec` again or restore the file")
        try:
            return cls(weight=float(raw["weight"]), norm=str(raw["norm"]),  # older files: no correction, no text
                       popularity=float(raw.get("popularity", 0.0)), text_weight=float(raw.get("text_weight", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} does not hold fusion settings ({e}); run `sidrec evaluate --fuse sasrec` "
                             "again") from e


def normalize(scores: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row normalization of ``(B, N)`` scores over the finite entries (``-inf`` = not scored, kept)."""
    finite = torch.isfinite(scores)
    if norm == "logsoftmax":
        return torch.log_softmax(scores.masked_fill(~finite, float("-inf")), dim=1)
    count = finite.sum(1, keepdim=True).clamp(min=1)
    zeroed = scores.masked_fill(~finite, 0.0)
    mean = zeroed.sum(1, keepdim=True) / count
    var = ((zeroed - mean) ** 2).masked_fill(~finite, 0.0).sum(1, keepdim=True) / count
    return ((scores - mean) / var.sqrt().clamp(min=1e-6)).masked_fill(~finite, float("-inf"))


def log_popularity(item_counts: torch.Tensor | Any) -> torch.Tensor:
    """``(N,)`` ``log(1 + training count)`` per item: what the popularity correction scales."""
    return torch.log1p(torch.as_tensor(item_counts, dtype=torch.float32).clamp(min=0))


@torch.no_grad()
def component_scores(histories: list[list[int]], *, ranker: Any, sasrec: Any, dense_weight: float,
                     unit: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What a fusion mixes, for one batch of histories (item indices): ``(B, N)`` the generator's scores of the
    live catalog (``ranker.full_scores``: ``-inf`` where not offered), SASRec's (``-inf`` for items added after
    it was trained) and, given ``unit`` (the generator's normalised item text), the text kNN's scores with the
    query's own items unscored (``text_scores(drop_query=True)``); else None. The evaluation's ``FusedScorer``
    and the fused ``Recommender`` both score through it."""
    from sidrec.decoding.text_profile import text_scores

    gen = ranker.full_scores(histories, dense_weight=dense_weight)  # (B, N)
    sas = sasrec.score_histories(histories).float().cpu()  # (B, N_sasrec)
    if sas.shape[1] < gen.shape[1]:  # items added after SASRec was trained: the generator scores them
        sas = torch.cat([sas, sas.new_full((sas.shape[0], gen.shape[1] - sas.shape[1]), float("-inf"))], 1)
    text = None
    if unit is not None:
        text = text_scores(unit, histories, normalized=True, drop_query=True).float().cpu()[:, : gen.shape[1]]
    return gen, sas, text


def fuse_scores(generator: torch.Tensor, sasrec: torch.Tensor, settings: FusionSettings,
                log_pop: torch.Tensor | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, N)`` fused scores (see the module docstring). Items the generator does not offer (``-inf``) stay
    ``-inf``; items SASRec does not score (``-inf`` there, e.g. new items) get the generator's normalized score.
    ``log_pop`` ``(N',)`` (``log_popularity``; items past ``N'`` count 0) is needed when ``settings.popularity``;
    ``text`` ``(B, N)`` (the raw text kNN scores, ``text_scores(drop_query=True)``; ``-inf`` = not scored by
    text, adds 0) when ``settings.text_weight``."""
    if settings.text_weight and text is None:
        raise ValueError("this fusion adds the text score: pass text (text_scores of the generator's item text)")
    parts = FusionParts.of(normalize(generator.float(), settings.norm), normalize(sasrec.float(), settings.norm),
                           normalize(text.float(), "zscore") if settings.text_weight else None)
    return parts.mix(settings, log_pop=log_pop)


@dataclass(frozen=True)
class FusionParts:
    """One batch's normalized scores, ready to be mixed by any ``FusionSettings`` of one norm (a VALID grid
    prepares them once per batch and norm): ``gen``, ``sas``, ``text`` ``(B, N)`` with 0 where a part does not
    score an item (SASRec's gaps already hold the generator's score), and ``offered`` ``(B, N)`` the items that
    may be ranked."""

    gen: torch.Tensor
    sas: torch.Tensor
    text: torch.Tensor | None
    offered: torch.Tensor

    @classmethod
    def of(cls, gen: torch.Tensor, sas: torch.Tensor, text: torch.Tensor | None = None, *,
           offered: torch.Tensor | None = None) -> FusionParts:
        """From normalized ``gen``/``sas`` and z-scored ``text`` ``(B, N)`` (``-inf`` = not scored);
        ``offered``: what may be ranked (default: what the generator scores)."""
        finite = torch.isfinite(gen)
        offered = finite if offered is None else offered & finite
        sas = torch.where(torch.isfinite(sas), sas, gen)  # new items: the generator's score on both sides
        if text is not None:
            text = text[:, : gen.shape[1]].to(gen)
            text = text.masked_fill(~offered | ~torch.isfinite(text), 0.0)  # not scored by text: adds 0
        return cls(gen=gen.masked_fill(~offered, 0.0), sas=sas.masked_fill(~offered, 0.0), text=text, offered=offered)

    def mix(self, settings: FusionSettings, *, log_pop: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N)`` the fused scores by ``settings`` (``-inf`` where not offered)."""
        mixed = self.gen * (1.0 - settings.weight)
        mixed.add_(self.sas, alpha=settings.weight)
        if settings.text_weight:
            if self.text is None:
                raise ValueError("this fusion adds the text score: pass text (z-scored text_scores)")
            mixed.add_(self.text, alpha=settings.text_weight)
        if settings.popularity:
            if log_pop is None:
                raise ValueError("this fusion corrects for popularity: pass log_pop (the items' training counts)")
            pop = torch.zeros(mixed.shape[1])
            n = min(len(log_pop), mixed.shape[1])
            pop[:n] = log_pop[:n].to(pop)
            mixed.sub_(pop[None, :] * settings.popularity)
        return mixed.masked_fill_(~self.offered, float("-inf"))


def fused_topk(fused: torch.Tensor, histories: list[list[int]], *, k: int, exclude_history: bool,
               cold_share: float = 0.0, cold: torch.Tensor | None = None,
               unit: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items ``(B, k)`` and their fused scores, best first (``-1`` / ``-inf`` where fewer), of one
    batch's fused scores ``(B, N)``. ``cold_share``: TIGER's epsilon, up to ``ceil(cold_share * k)`` slots for
    the ``cold`` items (``bool (N,)``) whose text (``unit``: the generator's normalised item text) is closest to
    the user's recent items, as the generators reserve them (``rerank.reserve_cold_by_text``)."""
    from sidrec.decoding.rerank import reserve_cold_by_text
    from sidrec.decoding.topk import topk_from_scores

    top = torch.from_numpy(topk_from_scores(fused, k, histories=histories, exclude_history=exclude_history))
    scores = fused.gather(1, top.clamp(min=0)).masked_fill(top < 0, float("-inf"))  # (B, k)
    if cold_share <= 0:
        return top, scores
    if cold is None or unit is None:
        raise ValueError("cold_share in a fused ranking needs the cold items and the generator's item text (the "
                         "reserved slots go to the new items closest by text); this generator reads no text")
    n = fused.shape[1]
    offered = torch.zeros(n, dtype=torch.bool)
    offered[: min(n, len(cold))] = torch.as_tensor(cold)[:n]
    offered &= torch.isfinite(fused).any(0).cpu()  # (N,) cold items the catalog still offers
    return reserve_cold_by_text(top, scores, unit=unit, histories=histories, cold=offered, epsilon=cold_share, k=k,
                                exclude_history=exclude_history, score_of=lambda c: fused.gather(1, c))
