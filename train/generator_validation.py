"""Validation and selection for generator training: VALID metrics, and the ranking settings they choose.

Training never reads TEST. At each validation the users of a fixed random VALID sample are sharded over
processes, ranked and gathered back (``gather_for_metrics``). A beam family (``tiger``, ``item``) ranks
the trie-constrained beam's candidates, and with a dense head every ``hybrid_weights`` weight is scored;
a family that scores the whole catalog exactly (``parallel``) ranks it in full. What the best validation
chose is returned as ``DecodingSettings`` and saved beside the model (``generator/decoding.json``);
``calibrate_prior`` then sweeps the beam's popularity correction on the kept checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from sidrec.decoding import DecodingSettings
from sidrec.utils.metrics import ranking_metrics

logger = logging.getLogger(__name__)

__all__ = ["ValidationData", "calibrate_prior", "evaluate_generator", "settings_from", "validate"]


@dataclass
class ValidationData:
    """What every validation of one run uses: the VALID sample and the catalog it ranks.

    ``trie``: the catalog trie (beam families; a cold-start split's held-out items removed); ``split``: the
    ``EvalSplit`` sample; ``user_ids``: the dataset's (for user tokens); ``available``: ``bool (N,)`` items
    that exist at training time (exact ranking never proposes the others).
    """

    trie: Any
    item_codes: np.ndarray
    split: Any
    user_ids: Sequence[str]
    available: np.ndarray


@torch.no_grad()
def evaluate_generator(
    model, *, trie, item_codes: np.ndarray, histories: Sequence[Sequence[int]], user_ids: Sequence[str] | None,
    settings: DecodingSettings, k: int = 10, batch_size: int = 256,
) -> np.ndarray:
    """Top-k item indices ``(U, k)`` by trie-constrained beam search, ranked as ``settings`` say (the hybrid
    ranking for a dense head; -1 = fewer than k items). ``user_ids`` are used iff the model has user tokens."""
    from sidrec.decoding import recommend_topk

    users = list(user_ids) if user_ids is not None and model.vocab.num_user_buckets else None
    items, _ = recommend_topk(model, trie, histories, k=k, settings=settings, item_codes=item_codes,
                              user_ids=users, batch_size=batch_size)
    return items.numpy()


def _dense_topk(model, histories: Sequence[Sequence[int]], k: int) -> torch.Tensor:
    """Top-k of the dense head alone over the whole catalog ``(B, k)`` (validation ablation)."""
    input_ids, mask = model.history_inputs(histories)
    device = next(model.parameters()).device
    scores = model.dense_scores(input_ids.to(device), mask.to(device))  # (B, N)
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.cpu()


def _local_beam(model, data: ValidationData, idx: np.ndarray, cfg, *, prior_weight: float, prior,
                dense_alone: bool) -> dict[str, torch.Tensor]:
    """One batch of VALID users ranked by a beam family: candidates (+ dense scores) of this process."""
    from sidrec.decoding import beam_candidates

    histories = [data.split.histories[i] for i in idx]
    use_users = model.vocab.num_user_buckets > 0
    cands = beam_candidates(
        model, data.trie, histories, beam_size=cfg.beam_size, item_codes=data.item_codes,
        user_ids=[data.user_ids[data.split.user_index[i]] for i in idx] if use_users else None,
        batch_size=cfg.eval_batch_size, prior_weight=prior_weight, prior=prior,
        dense_candidates=cfg.dense_candidates, new_candidates=cfg.new_candidates,
    )
    local = {"items": cands.items, "scores": cands.scores}
    if cfg.uses_dense_head():
        local["dense"] = cands.dense
        if cfg.valid_dense and dense_alone:
            local["dense_top"] = _dense_topk(model, histories, 10)
    return local


class _ExactBatches:
    """Ranks batches of VALID users exactly over the available catalog (the ``parallel`` family), with every
    dense weight at once; the ranker (and its index) is built on the first batch."""

    def __init__(self, data: ValidationData, weights: Sequence[float]) -> None:
        self.data, self.weights, self.ranker = data, list(weights), None

    def __call__(self, model, idx: np.ndarray) -> dict[str, torch.Tensor]:
        from sidrec.decoding.exact import ExactRanker

        if self.ranker is None:
            self.ranker = ExactRanker(model, available=self.data.available)
        histories = [self.data.split.histories[i] for i in idx]
        ranked = self.ranker.topk_by_weight(histories, k=10, dense_weights=self.weights)
        return {f"items@{w}": ranked[w][0] for w in self.weights}


def _gather(accelerator, model, data: ValidationData, cfg, rank_batch, tail: np.ndarray | None) -> dict[str, Any]:
    """Rank every VALID user (sharded over processes) with ``rank_batch(model, idx)``; gathered results."""
    users = np.arange(len(data.split))
    local_tail = torch.from_numpy(tail if tail is not None else np.zeros(len(data.split), dtype=bool))
    loader = accelerator.prepare_data_loader(
        DataLoader(users, batch_size=cfg.eval_batch_size, shuffle=False), device_placement=False
    )
    unwrapped = accelerator.unwrap_model(model)
    was_training = unwrapped.training
    unwrapped.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        idx = batch.cpu().numpy()
        local = {**rank_batch(unwrapped, idx), "targets": torch.from_numpy(data.split.targets[idx]),
                 "tail": local_tail[idx]}
        # gathered per batch, while the loader is active, so gather_for_metrics drops the padding users
        gathered = accelerator.gather_for_metrics({k: v.to(accelerator.device) for k, v in local.items()})
        for key, value in gathered.items():
            parts.setdefault(key, []).append(value.cpu())
    unwrapped.train(was_training)
    return {k: torch.cat(v) for k, v in parts.items()}


def _tail_metrics(top: torch.Tensor, targets: np.ndarray, tail: np.ndarray) -> dict[str, Any]:
    hits = (top.numpy() == targets[:, None]).any(1)
    in_tail = tail.astype(bool)
    return {"tail_recall@10": float(hits[in_tail].mean()) if in_tail.any() else float("nan"),
            "tail_users": int(in_tail.sum())}


def validate(accelerator, model, *, data: ValidationData, cfg, ranking: str = "beam", prior_weight: float = 0.0,
             tail: np.ndarray | None = None, dense_alone: bool = True) -> dict[str, Any]:
    """VALID metrics over all processes (``ranking``: ``beam`` or ``exact``, the family's).

    Beam: with a dense head the candidates are ranked with every ``cfg.hybrid_weights`` weight; the
    top-level metrics are the best weight's (``hybrid_weight``), with ``by_weight`` and, when
    ``cfg.valid_dense`` and ``dense_alone``, ``dense`` (the dense head alone over the whole catalog).
    ``prior_weight`` corrects the search for popularity; ``tail`` (``bool (U,)``) adds the Recall@10 of
    those users (``tail_recall@10``).
    """
    from sidrec.decoding import Candidates, popularity_prior

    if ranking == "exact":
        return _validate_exact(accelerator, model, data=data, cfg=cfg, tail=tail)
    prior = popularity_prior(accelerator.unwrap_model(model), data.trie) if prior_weight else None
    cat = _gather(accelerator, model, data, cfg, lambda m, idx: _local_beam(
        m, data, idx, cfg, prior_weight=prior_weight, prior=prior, dense_alone=dense_alone), tail)
    targets = cat["targets"].numpy()
    candidates = Candidates(cat["items"], cat["scores"], cat.get("dense"))
    by_weight = {}
    for weight in (cfg.hybrid_weights if cfg.uses_dense_head() else [0.0]):
        top, _ = candidates.rank(weight=weight, k=10)
        by_weight[weight] = ranking_metrics(top.numpy(), targets, ks=(1, 5, 10))
    best = max(by_weight, key=lambda w: by_weight[w]["ndcg@10"])  # ties: the first (smallest) weight
    metrics = {**by_weight[best], "users": int(len(targets))}
    if tail is not None:
        metrics.update(_tail_metrics(candidates.rank(weight=best, k=10)[0], targets, cat["tail"].numpy()))
    if cfg.uses_dense_head():
        metrics["hybrid_weight"] = float(best)
        metrics["by_weight"] = {str(w): {k: round(m[k], 5) for k in ("recall@10", "ndcg@10")} for w, m in by_weight.items()}
        if "dense_top" in cat:
            m = ranking_metrics(cat["dense_top"].numpy(), targets, ks=(1, 5, 10))
            metrics["dense"] = {k: round(m[k], 5) for k in ("recall@10", "ndcg@10")}
    return metrics


def _validate_exact(accelerator, model, *, data: ValidationData, cfg, tail: np.ndarray | None) -> dict[str, Any]:
    """VALID metrics of exact ranking over the whole available catalog; with a dense head, for every
    ``cfg.hybrid_weights`` weight (``logp + w * dense``), the best one on top (``hybrid_weight``)."""
    weights = list(cfg.hybrid_weights) if cfg.uses_dense_head() else [0.0]
    cat = _gather(accelerator, model, data, cfg, _ExactBatches(data, weights), tail)
    targets = cat["targets"].numpy()
    by_weight = {w: ranking_metrics(cat[f"items@{w}"].numpy(), targets, ks=(1, 5, 10)) for w in weights}
    best = max(by_weight, key=lambda w: by_weight[w]["ndcg@10"])  # ties: the first (smallest) weight
    metrics: dict[str, Any] = {**by_weight[best], "users": int(len(targets))}
    if tail is not None:
        metrics.update(_tail_metrics(cat[f"items@{best}"], targets, cat["tail"].numpy()))
    if cfg.uses_dense_head():
        metrics["hybrid_weight"] = float(best)
        metrics["by_weight"] = {str(w): {k: round(m[k], 5) for k in ("recall@10", "ndcg@10")} for w, m in by_weight.items()}
    return metrics


def settings_from(metrics: dict[str, Any], cfg) -> DecodingSettings:
    """The ranking a validation chose: the beam (and joining candidates) it ran with and, for a dense head,
    the best weight."""
    return DecodingSettings(beam_size=cfg.beam_size, dense_weight=float(metrics.get("hybrid_weight", 0.0)),
                            dense_candidates=cfg.dense_candidates, new_candidates=cfg.new_candidates)


def calibrate_prior(accelerator, *, model, settings: DecodingSettings, data: ValidationData, cfg,
                    train_counts: np.ndarray) -> dict[str, Any]:
    """Validate the kept model again with each ``cfg.prior_weights`` popularity correction.

    Returns ``{"sweep", "settings"}``: every row of the sweep (with the Recall@10 of users whose target has
    1-9 training interactions, the long tail the correction is for) for ``training.json``, and the settings
    of the best (prior weight, hybrid weight) pair on VALID NDCG@10 (``settings`` when no correction wins).
    """
    counts = train_counts[data.split.targets]
    tail = (counts >= 1) & (counts <= 9)
    sweep = []
    for weight in sorted(set(cfg.prior_weights)):
        m = validate(accelerator, model, data=data, cfg=cfg, prior_weight=weight, tail=tail, dense_alone=False)
        sweep.append({"prior_weight": weight, "hybrid_weight": m.get("hybrid_weight", 0.0),
                      **{k: round(m[k], 5) for k in ("recall@10", "ndcg@10", "tail_recall@10")}})
        logger.info("popularity correction %.2f: valid recall@10 %.4f ndcg@10 %.4f, tail (1-9 interactions, %d "
                    "users) recall@10 %.4f (hybrid weight %g)", weight, m["recall@10"], m["ndcg@10"],
                    m["tail_users"], m["tail_recall@10"], m.get("hybrid_weight", 0.0))
    best = max(sweep, key=lambda row: row["ndcg@10"])  # ties: the smallest correction
    chosen = settings
    if best["prior_weight"] > 0:  # the weight without a correction stays for the "uncorrected" ablation
        chosen = settings.replace(prior_weight=best["prior_weight"], dense_weight=best["hybrid_weight"],
                                  dense_weight_plain=settings.dense_weight)
    logger.info("kept popularity correction %.2f with hybrid weight %g (valid ndcg@10 %.4f)", best["prior_weight"],
                best["hybrid_weight"], best["ndcg@10"])
    return {"sweep": sweep, "settings": chosen}
