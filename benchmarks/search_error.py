"""Where a beam generator loses the target: search error against model error, by exact scoring.

    python benchmarks/search_error.py --run runs/beauty [--users 1000] [--beams 20,50] [--threads 2]

For a trained beam-family generator (``RUN/generator``, e.g. the ``hybrid`` preset's item family), the exact
log-probability of EVERY catalog item is computed for ``--users`` VALID users (a seeded sample): the whole
trie is expanded level by level, one batched decoder call per level and user over every distinct prefix
of that level. The same users are then decoded by the trie-constrained beam search (each ``--beams``),
and both are ranked two ways:

- generation only: the item's log-probability (what the beam maximises);
- as shipped: the generator's own ``DecodingSettings`` (popularity-corrected log-probability plus the dense
  weight times the dense score; the beam ranks its candidates, exact ranks the whole catalog);
- beam + ``--join`` joined (default 50): the beam's candidates and the best items by dense score over the
  whole catalog, each scored exactly (``sidrec.decoding.join_candidates``), ranked as shipped.

Search error = what exact ranking recovers that the beam lost (the target among the beam's candidates,
exact vs beam Recall@10, the target's exact rank); model error = what even exact ranking misses (its own
Recall@10). Prints a table and ends with ``key=value``. Valid split only: nothing here reads TEST.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sidrec.decoding import CatalogTrie, beam_candidates, popularity_prior
from sidrec.utils.metrics import ranking_metrics
from sidrec.utils.run_folder import RunFolder


def level_prefix_ids(codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level t: the distinct length-t prefixes ``(P_t, t)`` and each item's prefix row ``(N,)``."""
    out = []
    for t in range(codes.shape[1]):
        if t == 0:
            out.append((np.zeros((1, 0), dtype=np.int64), np.zeros(len(codes), dtype=np.int64)))
            continue
        uniq, inverse = np.unique(codes[:, :t], axis=0, return_inverse=True)
        out.append((uniq, inverse.reshape(-1)))
    return out


@torch.inference_mode()
def exact_log_probs(model, input_ids: torch.Tensor, mask: torch.Tensor, codes: np.ndarray,
                    prefixes: list[tuple[np.ndarray, np.ndarray]], chunk: int = 4096) -> torch.Tensor:
    """``(N,)`` exact log-probability of every item for ONE user (``input_ids (1, S)``): the sum over levels
    of the level's log-softmax (over that level's codes, as the beam search scores them) at the item's code."""
    vocab = model.vocab
    states = model.get_encoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (1, S, D)
    total = torch.zeros(len(codes))
    scale = model.config.d_model ** -0.5 if getattr(model.config, "scale_decoder_outputs", True) else 1.0
    for t, (uniq, row) in enumerate(prefixes):
        padded = np.pad(uniq, ((0, 0), (0, vocab.num_levels - t)))  # (P, L): any valid codes after the prefix
        tokens = torch.from_numpy(vocab.codes_to_tokens(padded)[:, :t])  # (P, t)
        start = torch.zeros((len(tokens), 1), dtype=torch.long)
        dec_in = torch.cat([start, tokens], dim=1)  # (P, t+1): decoder start, then the prefix's tokens
        lo, hi = vocab.level_range(t)
        level_lp = []
        for s in range(0, len(dec_in), chunk):
            part = dec_in[s : s + chunk]
            hidden = model.decoder(input_ids=part, encoder_hidden_states=states.expand(len(part), -1, -1),
                                   encoder_attention_mask=mask.expand(len(part), -1)).last_hidden_state[:, -1]
            logits = (hidden * scale) @ model.lm_head.weight[lo:hi].T  # (p, C_t)
            level_lp.append(torch.log_softmax(logits.float(), dim=-1))
        lp = torch.cat(level_lp)  # (P_t, C_t)
        total += lp[torch.from_numpy(row), torch.from_numpy(codes[:, t])]
    return total


def rank_of(scores: np.ndarray, target: int) -> int:
    """0-based rank of ``target`` when ``scores`` are sorted descending (ties: the target ranks first)."""
    return int((scores > scores[target]).sum())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--beams", default="20,50")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--join", type=int, default=50,
                   help="also rank each beam joined by this many best items by dense score (0 = skip)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = RunFolder(args.run)
    dataset = folder.dataset()
    loaded = folder.generator(item_ids=dataset.item_ids, dataset_fingerprint=dataset.fingerprint())
    model, settings, codes = loaded.model.eval(), loaded.settings, np.asarray(loaded.tokenizer.codes)
    if getattr(model, "family", "") != "item":
        raise SystemExit("this diagnostic needs an item-family generator (the hybrid preset)")
    split = dataset.eval_split("valid").sample(args.users, seed=args.seed)
    trie = CatalogTrie(codes=codes, level_sizes=loaded.tokenizer.level_sizes)
    prefixes = level_prefix_ids(codes)
    t0 = time.perf_counter()
    input_ids, mask = model.history_inputs(split.histories)
    rows = []
    for u in range(len(split)):
        rows.append(exact_log_probs(model, input_ids[u : u + 1], mask[u : u + 1], codes, prefixes))
        if (u + 1) % 100 == 0:
            print(f"  exact scores: {u + 1} / {len(split)} users, {time.perf_counter() - t0:.0f} s", flush=True)
    exact = torch.stack(rows).numpy()  # (U, N)
    exact_seconds = time.perf_counter() - t0
    dense = model.dense_scores(input_ids, mask).numpy()  # (U, N)
    counts = model.item_counts.numpy() + 1.0  # CodePrior's smoothing 1: log p_pop(item) summed over levels
    log_pop = np.log(counts / counts.sum())
    shipped_exact = exact - settings.prior_weight * log_pop[None, :] + settings.dense_weight * dense
    targets = split.targets
    rows = [("exact, generation only", exact, None), ("exact, as shipped", shipped_exact, None)]
    prior = popularity_prior(model, trie) if settings.prior_weight else None
    for beam in [int(b) for b in args.beams.split(",")]:
        for label, pw, w in (("generation only", 0.0, 0.0), ("as shipped", settings.prior_weight, settings.dense_weight)):
            cands = beam_candidates(model, trie, split.histories, beam_size=beam, batch_size=256, with_dense=w > 0,
                                    prior_weight=pw, prior=prior if pw else None)
            rows.append((f"beam {beam}, {label}", cands, w))
        if args.join:  # the best items by dense score join the beam's candidates, scored exactly like them
            cands = beam_candidates(model, trie, split.histories, beam_size=beam, batch_size=256, prior=prior,
                                    prior_weight=settings.prior_weight, dense_candidates=args.join)
            rows.append((f"beam {beam} + {args.join} joined, as shipped", cands, settings.dense_weight))
    print(f"{len(split)} VALID users, {len(codes)} items, {codes.shape[1]} levels; exact scoring {exact_seconds:.0f} s "
          f"({args.threads} threads); shipped settings: prior {settings.prior_weight:g}, dense weight "
          f"{settings.dense_weight:g}")
    print(f"{'ranking':<28} {'recall@10':>9} {'ndcg@10':>8} {'target in candidates':>21} {'median target rank':>19}")
    results = {}
    exact_rank = np.array([rank_of(exact[u], t) for u, t in enumerate(targets)])
    for label, scores, weight in rows:
        if isinstance(scores, np.ndarray):
            top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
            inside = 1.0
            median = f"{np.median([rank_of(scores[u], t) for u, t in enumerate(targets)]):.0f}"
        else:
            top = scores.rank(weight=weight or 0.0, k=10)[0].numpy()
            inside = float((scores.items.numpy() == targets[:, None]).any(1).mean())
            median = "-"
        m = ranking_metrics(top, targets, ks=(10,))
        results[label] = (m["recall@10"], m["ndcg@10"], inside)
        print(f"{label:<28} {m['recall@10']:>9.4f} {m['ndcg@10']:>8.4f} {inside:>21.3f} {median:>19}")
    in_beam = {lab: v[2] for lab, v in results.items() if lab.startswith("beam")}
    print("exact rank of the target (generation only): "
          + ", ".join(f"<{k} {np.mean(exact_rank < k):.3f}" for k in (1, 10, 20, 50, 100, 1000)))
    key = max((lab for lab in in_beam if "generation" in lab), key=lambda lab: int(lab.split()[1].rstrip(",")))
    print(f"exact_gen_recall10={results['exact, generation only'][0]:.4f} "
          f"beam_gen_recall10={results[key][0]:.4f} exact_shipped_recall10={results['exact, as shipped'][0]:.4f} "
          f"target_in_beam={in_beam[key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
