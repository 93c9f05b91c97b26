"""``sidrec evaluate --fuse sasrec``: the generator fused with SASRec, the fusion chosen on VALID.

    python -m sidrec.eval.fusion --run RUN [--valid-users 3000]     # choose and save RUN/fusion.json only

``choose_fusion`` scores a fixed random sample of VALID users with both models over the whole catalog, then
tries every normalization (``zscore``, ``logsoftmax``), weight of ``WEIGHTS``, popularity correction of
``POPULARITY`` and, for a generator that reads item text, text weight of ``TEXT_WEIGHTS`` (the text kNN's
score as a third signal; ``(0,)`` otherwise). The rule: the best VALID NDCG@10 among the settings whose VALID
long-tail Recall@10 (targets with 1-9 training interactions) is at least SASRec's alone, so that the fusion
does not give up the rare items that semantic IDs are for (when none is, the best NDCG@10 overall); ties: the
smaller SASRec weight, then the smaller correction, then the smaller text weight. Saved as
``RUN/fusion.json`` with the grid. TEST is never read here.
``FusedScorer`` is the fused model as a scorer for the evaluation harness. Fusion needs a generator that
scores the whole catalog: the ``parallel`` family (its exact log-probabilities), or a generator with a dense
head (``item``/``hybrid``: its dense scores, since its beam scores only its candidates). A ``tiger`` generator
cannot be fused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sidrec.decoding.fusion import (
    NORMS,
    FusionParts,
    FusionSettings,
    component_scores,
    fuse_scores,
    fused_topk,
    normalize,
)
from sidrec.decoding.text_profile import model_unit_text
from sidrec.decoding.topk import history_mask
from sidrec.eval.generator import SHARE_OF_TOP, extend_list
from sidrec.utils.metrics import ranking_metrics
from sidrec.utils.run_folder import RunFolder

logger = logging.getLogger(__name__)

__all__ = ["POPULARITY", "TEXT_WEIGHTS", "WEIGHTS", "FusedScorer", "ablations", "choose_fusion", "fused_name"]

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
POPULARITY = (0.0, 0.05, 0.1, 0.2, 0.3)  # weights of -log(1 + training count); Beauty VALID chose in this range
# of the z-scored text kNN score (the models' shares sum to 1): on Beauty VALID the best rose to 0.8 (logsoftmax),
# so the grid goes on to where the text alone nearly decides
TEXT_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0)
TAIL = (1, 9)  # training interactions of a long-tail target
VALID_USERS = 3000


def fused_name(settings: FusionSettings) -> str:
    """The row label of a fusion in reports: the signals it mixes, e.g. ``generator + sasrec + text (fused)``."""
    parts = [name for name, share in (("generator", 1.0 - settings.weight), ("sasrec", settings.weight),
                                      ("text", settings.text_weight)) if share > 0]
    return " + ".join(parts) + " (fused)"


class FusedScorer:
    """The generator's and SASRec's normalized scores over the catalog (and the text kNN's, for a generator that
    reads item text), weighted (``FusionSettings``)."""

    def __init__(self, *, generator, sasrec, settings: FusionSettings, batch_size: int = 256,
                 exclude_history: bool = False, cold_share: float = 0.0) -> None:
        from sidrec.decoding import scores_whole_catalog

        if not scores_whole_catalog(generator.model):
            raise ValueError(f"fusion needs a generator that scores the whole catalog (family parallel, or a dense "
                             f"head: item/hybrid); this one is {generator.model.family!r}, whose beam scores only "
                             "its candidates")
        from sidrec.decoding.fusion import log_popularity

        self.generator, self.sasrec = generator, sasrec
        self.batch_size, self.exclude_history = batch_size, exclude_history
        self.item_counts = generator.model.item_counts.detach().cpu()  # (N,) training interactions per item
        self.log_pop = log_popularity(self.item_counts)
        self.unit_text = model_unit_text(generator.model)  # (N, Dt) or None: the text signal's item side
        self.settings = settings
        self.cold_share = cold_share  # TIGER's epsilon in the fused list (a share of the top 10; 0 = off)

    @property
    def settings(self) -> FusionSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: FusionSettings) -> None:
        if settings.text_weight and self.unit_text is None:
            raise ValueError("this fusion adds the text score, but the generator reads no item text")
        self._settings = settings

    @property
    def name(self) -> str:
        name = fused_name(self.settings)
        return f"{name[:-1]}, cold share {self.cold_share:g})" if self.cold_share else name

    def with_cold_share(self, cold_share: float) -> FusedScorer:
        """The same fusion with TIGER's epsilon (an evaluation row per share)."""
        return FusedScorer(generator=self.generator, sasrec=self.sasrec, settings=self.settings,
                           batch_size=self.batch_size, exclude_history=self.exclude_history, cold_share=cold_share)

    def scores(self, histories: Sequence[Sequence[int]], *, with_text: bool = False) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(B, N)`` generator and SASRec scores (SASRec's padded with ``-inf`` for items it never had), and
        the raw text kNN scores when ``with_text`` and the generator reads text (else None)."""
        return component_scores([list(h) for h in histories], ranker=self.generator.ranker, sasrec=self.sasrec,
                                dense_weight=self.generator.settings.dense_weight,
                                unit=self.unit_text if with_text else None)

    @torch.no_grad()
    def recommend(self, histories: list[list[int]], k: int, user_index: np.ndarray | None = None) -> np.ndarray:
        """``(U, k)`` item indices by the fused scores; with ``cold_share``, the share is of the top 10
        (``SHARE_OF_TOP``, as the generator's rows) and the list goes on as ranked; each batch is scored once."""
        cold = torch.as_tensor(self.generator.cold) if self.cold_share else None
        out = []
        for start in range(0, len(histories), self.batch_size):
            batch = [list(h) for h in histories[start : start + self.batch_size]]
            gen, sas, text = self.scores(batch, with_text=bool(self.settings.text_weight))
            fused = fuse_scores(gen, sas, self.settings, self.log_pop, text)
            top = fused_topk(fused, batch, k=k, exclude_history=self.exclude_history)[0]  # (B, k)
            if self.cold_share:
                head = fused_topk(fused, batch, k=min(k, SHARE_OF_TOP), exclude_history=self.exclude_history,
                                  cold_share=self.cold_share, cold=cold, unit=self.unit_text)[0]
                top = torch.from_numpy(extend_list(head, top, k))
            out.append(top.numpy())
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


@torch.no_grad()
def choose_fusion(scorer: FusedScorer, histories: Sequence[Sequence[int]], targets: np.ndarray, *,
                  weights: Sequence[float] = WEIGHTS, norms: Sequence[str] = NORMS,
                  popularity: Sequence[float] = POPULARITY,
                  text_weights: Sequence[float] | None = None) -> tuple[FusionSettings, list[dict[str, Any]]]:
    """The settings chosen on these (VALID) users by the module's rule, and the whole grid. ``text_weights``:
    None = ``TEXT_WEIGHTS`` for a generator that reads text, ``(0,)`` for one that does not."""
    if text_weights is None:
        text_weights = TEXT_WEIGHTS if scorer.unit_text is not None else (0.0,)
    keys = [FusionSettings(weight=w, norm=n, popularity=p, text_weight=t)
            for n in norms for w in weights for p in popularity for t in text_weights]
    tops: dict[FusionSettings, list[np.ndarray]] = {key: [] for key in keys}
    for start in range(0, len(histories), scorer.batch_size):
        batch = [list(h) for h in histories[start : start + scorer.batch_size]]
        gen, sas, text = scorer.scores(batch, with_text=any(text_weights))
        text_z = normalize(text, "zscore") if text is not None else None
        offered = ~history_mask(batch, gen.shape[1]) if scorer.exclude_history else None  # (B, N)
        # normalized once per batch and norm, not per setting: the grid only mixes and takes the top 10
        parts = {n: FusionParts.of(normalize(gen, n), normalize(sas, n), text_z, offered=offered) for n in norms}
        for key in keys:
            vals, idx = parts[key.norm].mix(key, log_pop=scorer.log_pop).topk(10, dim=1)  # (B, 10)
            tops[key].append(idx.masked_fill(torch.isinf(vals), -1).numpy())
    targets = np.asarray(targets)
    counts = scorer.item_counts.numpy()[targets]
    tail = (counts >= TAIL[0]) & (counts <= TAIL[1])  # (U,)
    grid = []
    for key, parts in tops.items():
        top = np.concatenate(parts)
        m = ranking_metrics(top, targets, ks=(10,))
        t = ranking_metrics(top[tail], targets[tail], ks=(10,)) if tail.any() else {"recall@10": 0.0}
        grid.append({"norm": key.norm, "weight": key.weight, "popularity": key.popularity,
                     "text_weight": key.text_weight, "recall@10": round(m["recall@10"], 5),
                     "ndcg@10": round(m["ndcg@10"], 5), "tail_recall@10": round(t["recall@10"], 5)})
    return _choose(grid), grid


def _choose(grid: list[dict[str, Any]], *, weight: float | None = None) -> FusionSettings:
    """Best NDCG@10 among the rows whose tail Recall@10 is at least SASRec's alone (all rows when none is);
    ``weight``: only among the rows with this SASRec weight (the ablations)."""
    sasrec_tail = max(r["tail_recall@10"] for r in grid
                      if r["weight"] == 1.0 and r["popularity"] == 0.0 and not r.get("text_weight", 0.0))
    rows = [r for r in grid if weight is None or r["weight"] == weight]
    keeps_tail = [r for r in rows if r["tail_recall@10"] >= sasrec_tail]
    best = max(keeps_tail or rows, key=lambda r: (r["ndcg@10"], -r["weight"], -r["popularity"],
                                                  -r.get("text_weight", 0.0)))
    return FusionSettings(weight=best["weight"], norm=best["norm"], popularity=best["popularity"],
                          text_weight=best.get("text_weight", 0.0))


def ablations(scorer: FusedScorer, grid: list[dict[str, Any]]) -> list[FusedScorer]:
    """What each part of a fusion with text adds: ``sasrec + text`` (no generator) and ``generator + text`` (no
    SASRec), each chosen on the same VALID grid by the same rule among its own rows; none when the grid holds no
    text weight or the chosen fusion is already one of them."""
    if not any(r.get("text_weight", 0.0) for r in grid):
        return []
    out = []
    for weight in (1.0, 0.0):
        settings = _choose(grid, weight=weight)
        if settings.text_weight and settings != scorer.settings:
            out.append(FusedScorer(generator=scorer.generator, sasrec=scorer.sasrec, settings=settings,
                                   batch_size=scorer.batch_size, exclude_history=scorer.exclude_history))
    return out


def fit_run_fusion(run, *, generator, dataset, valid_users: int = VALID_USERS, exclude_history: bool = False,
                   batch_size: int = 256) -> tuple[FusedScorer, list[dict[str, Any]]]:
    """Choose the fusion of ``RUN``'s generator scorer and SASRec on VALID; save ``RUN/fusion.json``."""
    folder = RunFolder(run)
    sasrec = folder.sasrec(dataset_fingerprint=dataset.fingerprint()).eval()
    scorer = FusedScorer(generator=generator, sasrec=sasrec, settings=FusionSettings(), batch_size=batch_size,
                         exclude_history=exclude_history)
    split = dataset.eval_split("valid").sample(valid_users or None, seed=0)
    settings, grid = choose_fusion(scorer, split.histories, split.targets)
    scorer.settings = settings
    settings.save(folder.root, chosen_on=f"valid ({len(split)} users)", grid=grid)
    chosen = (settings.norm, settings.weight, settings.popularity, settings.text_weight)
    row = next(r for r in grid if (r["norm"], r["weight"], r["popularity"], r["text_weight"]) == chosen)
    alone = {w: next(r for r in grid if r["norm"] == settings.norm and r["weight"] == w and not r["popularity"]
                     and not r["text_weight"]) for w in (0.0, 1.0)}
    logger.info("fusion chosen on VALID (%d users): %s, SASRec weight %g, popularity correction %g, text weight %g: "
                "NDCG@10 %.4f, tail Recall@10 %.4f (generator alone %.4f / %.4f, SASRec alone %.4f / %.4f)",
                len(split), settings.norm, settings.weight, settings.popularity, settings.text_weight, row["ndcg@10"],
                row["tail_recall@10"],
                alone[0.0]["ndcg@10"], alone[0.0]["tail_recall@10"], alone[1.0]["ndcg@10"],
                alone[1.0]["tail_recall@10"])
    return scorer, grid


def main(argv: list[str] | None = None) -> int:
    from sidrec.eval.generator import GeneratorScorer
    from sidrec.utils import configure_logging

    p = argparse.ArgumentParser(prog="python -m sidrec.eval.fusion", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--valid-users", type=int, default=VALID_USERS, help="VALID users to choose on (0 = all)")
    args = p.parse_args(argv)
    configure_logging()
    dataset = RunFolder(args.run).dataset()
    generator = GeneratorScorer.from_run(args.run, item_ids=dataset.item_ids, user_ids=dataset.user_ids,
                                         dataset_fingerprint=dataset.fingerprint())
    _, grid = fit_run_fusion(args.run, generator=generator, dataset=dataset, valid_users=args.valid_users)
    print("| norm | SASRec weight | popularity | text weight | VALID Recall@10 | VALID NDCG@10 | VALID tail Recall@10 |"
          "\n|---|---|---|---|---|---|---|")
    for row in grid:
        print(f"| {row['norm']} | {row['weight']:g} | {row['popularity']:g} | {row['text_weight']:g} | "
              f"{row['recall@10']:.4f} | {row['ndcg@10']:.4f} | {row['tail_recall@10']:.4f} |")
    chosen = FusionSettings.load(args.run)
    print(f"\nfusion_norm={chosen.norm} fusion_weight={chosen.weight:g} fusion_popularity={chosen.popularity:g} "
          f"fusion_text_weight={chosen.text_weight:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
