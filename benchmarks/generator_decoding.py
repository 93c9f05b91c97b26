"""Decoding speed per generator family: ``cpu-small`` (tiger), ``hybrid`` (item, beam) and ``parallel`` (exact).

    python benchmarks/generator_decoding.py --run runs/beauty [--batch 256] [--beams 20,50] [--repeats 5]
    python benchmarks/generator_decoding.py --synthetic 1000000 [--threads 2]   # the parallel family at scale

Both models have their preset's sizes and random weights (decoding cost does not depend on training).
Catalog: the real semantic IDs of ``RUN/tokenizer``; histories: the test split of ``RUN/dataset`` (the same
users for every row). Rows: ``cpu-small`` through ``recommend_topk`` (encode + beam search), ``hybrid``
generation only (encode + beam search), ``hybrid`` on the beam's candidates only (the popularity-corrected
beam search at ``--prior-weight``, the dense scores of the candidates and the hybrid ranking; the prior is
built once, as the ``Recommender`` does) and ``hybrid`` as served (the same, with ``--join`` items by dense
score and 20 unseen ones joining the candidates, each scored by teacher forcing: the preset's setting). users/s = batch / median latency over ``--repeats`` calls; the ratio is
against ``cpu-small`` at the same beam in this run. The ``parallel`` rows (preset sizes, random weights, the
run's table when it has long IDs, else a random 32 x 256 table of the same size) rank the whole catalog
exactly, once with the torch gather-sum and once with faiss ``IndexPQ`` (the same scores; the agreement of
their top-10 is printed). ``--synthetic N`` measures only the parallel family on N random items (32 digits of
256 + a collision digit), to see where exact ranking stands at large catalogs. Ends with a ``key=value`` line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from sidrec.data import PreparedDataset
from sidrec.decoding import CatalogTrie, ExactRanker, beam_candidates, popularity_prior
from sidrec.seqmodel import ItemLevelGenerator, SemanticIdGenerator, SemanticIdVocab, build_t5_config
from sidrec.seqmodel.item_model import build_item_config, item_id_rows
from sidrec.seqmodel.parallel_model import ParallelIdGenerator, build_parallel_config
from sidrec.tokenizer import SemanticIdTokenizer
from sidrec.utils import resolve_config_path

NEW_CANDIDATES = 20  # unseen items joining the served beam (the hybrid preset's new_candidates)
BACKENDS = ("torch", "faiss", "matmul")  # the exact backends; torch (the gather-sum) is the reference
T5_KEYS = ("d_model", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "d_ff", "feed_forward_proj",
           "max_items")


def preset(name: str) -> dict:
    return yaml.safe_load(resolve_config_path(name).read_text())


def t5_sizes(cfg: dict) -> dict:
    sizes = {k: cfg[k] for k in T5_KEYS if k in cfg}
    sizes["dropout_rate"] = 0.0
    return sizes


def tiger_model(sizes: list[int]) -> SemanticIdGenerator:
    cfg = preset("generator/cpu-small")
    vocab = SemanticIdVocab(level_sizes=sizes, num_user_buckets=int(cfg.get("user_buckets", 0)))
    return SemanticIdGenerator(build_t5_config(vocab=vocab, **t5_sizes(cfg))).eval()


def item_model(codes: np.ndarray, sizes: list[int], counts: np.ndarray, text_dim: int = 384) -> ItemLevelGenerator:
    cfg = preset("generator/hybrid")
    id_rows = item_id_rows(counts, int(cfg.get("id_min_count", 1)))
    text = np.random.default_rng(0).normal(size=(len(codes), text_dim)).astype(np.float32)
    config = build_item_config(vocab=SemanticIdVocab(level_sizes=sizes), num_items=len(codes), text_dim=text_dim,
                               num_id_rows=int(id_rows.max()), **t5_sizes(cfg))
    return ItemLevelGenerator.build(config, item_codes=codes, text=text, id_rows=id_rows).eval()


def parallel_model(codes: np.ndarray, sizes: list[int]) -> ParallelIdGenerator:
    """The ``parallel`` preset's sizes over ``codes`` (no text or ID input: scoring cost does not depend on them)."""
    cfg = preset("generator/parallel")
    keys = {k: cfg[k] for k in ("digit_input_scale", "head", "head_temperature") if k in cfg}
    config = build_parallel_config(level_sizes=sizes, num_items=len(codes), **keys, **t5_sizes(cfg))
    return ParallelIdGenerator.build(config, item_codes=codes, text=None).eval()


def long_ids(num_items: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A random table of RPG-style IDs: 32 digits of 256 codes and a collision digit of 8 (all zero)."""
    rng = np.random.default_rng(seed)
    codes = np.concatenate([rng.integers(0, 256, (num_items, 32)), np.zeros((num_items, 1), dtype=np.int64)], 1)
    return codes.astype(np.int64), [256] * 32 + [8]


def time_exact(model, histories: list[list[int]], *, batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    """users/s and median ms per call of each exact backend; also the top-10 agreement of each with torch."""
    out, tops = {}, {}
    for backend in BACKENDS:
        ranker = ExactRanker(model, backend=backend)
        ranker.topk(histories[:batch], k=10, batch_size=batch)  # warm-up (and the index build)
        lat = []
        for r in range(repeats):
            t0 = time.perf_counter()
            items, _ = ranker.topk(histories[r * batch : (r + 1) * batch], k=10, batch_size=batch)
            lat.append(time.perf_counter() - t0)
            tops.setdefault(backend, []).append(items)
        out[backend] = (batch / statistics.median(lat), 1e3 * statistics.median(lat))
    reference = torch.cat(tops["torch"])
    for backend in BACKENDS[1:]:
        other = torch.cat(tops[backend])
        out[f"{backend} agreement"] = (float(np.mean([len(set(x.tolist()) & set(y.tolist())) / 10
                                                      for x, y in zip(reference, other, strict=True)])), 0.0)
    return out


def synthetic(args) -> int:
    """The parallel family alone on ``args.synthetic`` random items (see the module docstring)."""
    codes, sizes = long_ids(args.synthetic)
    model = parallel_model(codes, sizes)
    rng = np.random.default_rng(1)
    histories = [rng.integers(0, len(codes), rng.integers(1, 20)).tolist() for _ in range(args.batch * args.repeats)]
    print(f"synthetic catalog {len(codes):,} items, 33 digits; {args.batch} users per call, {args.repeats} calls, "
          f"{args.threads} thread(s); random weights, parallel preset sizes")
    res = time_exact(model, histories, batch=args.batch, repeats=args.repeats)
    print("\n| backend | users/s | median ms/call | top-10 = torch's |\n|---|---|---|---|")
    for backend in BACKENDS:
        agree = res.get(f"{backend} agreement", (1.0, 0.0))[0]
        print(f"| exact, {backend} | {res[backend][0]:.1f} | {res[backend][1]:.0f} | {100 * agree:.2f}% |")
    best = max(BACKENDS, key=lambda b: res[b][0])
    print(f"\nitems={len(codes)} " + " ".join(f"exact_{b}_users_s={res[b][0]:.1f}" for b in BACKENDS)
          + f" best={best} best_top10_agreement={res.get(f'{best} agreement', (1.0, 0.0))[0]:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run folder with dataset/ and tokenizer/")
    p.add_argument("--synthetic", type=int, default=0, help="N: time only the parallel family on N random items")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--beams", default="20,50")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--join", type=int, default=50, help="items joining the served beam by dense score (the preset's)")
    p.add_argument("--prior-weight", type=float, default=0.25,
                   help="popularity correction of the served search (0.25: what training chose on Beauty)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    faiss_threads(args.threads)
    torch.manual_seed(0)
    if args.synthetic:
        return synthetic(args)
    if not args.run:
        p.error("--run is needed (or --synthetic N)")
    run = Path(args.run)
    data = PreparedDataset.load(run)
    tok = SemanticIdTokenizer.from_pretrained(run / "tokenizer")
    codes, sizes = np.asarray(tok.codes), list(tok.level_sizes)
    trie = CatalogTrie(codes=codes, level_sizes=sizes)
    models = {"cpu-small": tiger_model(sizes), "hybrid": item_model(codes, sizes, data.train_item_counts())}
    split = data.eval_split("test")
    pick = np.random.default_rng(0).permutation(len(split))[: args.batch * args.repeats]
    histories = [list(split.histories[i]) for i in pick]
    print(f"catalog {len(codes)} items {sizes}; {args.batch} test users per call, {args.repeats} calls, "
          f"{args.threads} torch thread(s); random weights, preset sizes; served prior weight {args.prior_weight}")

    prior = popularity_prior(models["hybrid"], trie) if args.prior_weight else None

    def run_once(model, batch, beam: int, dense: bool, join: int = 0) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            cands = beam_candidates(model, trie, batch, beam_size=beam, item_codes=codes, batch_size=len(batch),
                                    with_dense=dense, prior_weight=args.prior_weight if dense else 0.0,
                                    prior=prior if dense else None, dense_candidates=join,
                                    new_candidates=NEW_CANDIDATES if join else 0)
            if dense:
                cands.rank(weight=1.0, k=min(10, beam))
        return time.perf_counter() - t0

    rows = []
    for beam in [int(b) for b in args.beams.split(",")]:
        for label, name, dense, join in (
            ("cpu-small", "cpu-small", False, 0), ("hybrid, generation only", "hybrid", False, 0),
            ("hybrid, beam candidates only", "hybrid", True, 0),
            (f"hybrid, as served (+{args.join} by dense score, +{NEW_CANDIDATES} unseen)", "hybrid", True, args.join),
        ):
            model = models[name]
            run_once(model, histories[: args.batch], beam, dense, join)  # warm-up
            lat = [run_once(model, histories[r * args.batch : (r + 1) * args.batch], beam, dense, join)
                   for r in range(args.repeats)]
            rows.append((beam, label, args.batch / statistics.median(lat), 1e3 * statistics.median(lat)))
    long_codes, long_sizes = (codes, sizes) if len(sizes) > 8 else long_ids(len(codes))
    exact = time_exact(parallel_model(long_codes, long_sizes), histories, batch=args.batch, repeats=args.repeats)
    print("\n| beam | model | users/s | median ms/call | vs cpu-small |\n|---|---|---|---|---|")
    base = {beam: ups for beam, label, ups, _ in rows if label == "cpu-small"}
    for beam, label, ups, ms in rows:
        print(f"| {beam} | {label} | {ups:.1f} | {ms:.0f} | {ups / base[beam]:.2f}x |")
    first = min(base)
    for backend in BACKENDS:
        ups, ms = exact[backend]
        print(f"| - | parallel, exact ({backend}) | {ups:.1f} | {ms:.0f} | {ups / base[first]:.2f}x (beam {first}) |")
    print("\nparallel: top-10 = the torch reference's for " + ", ".join(
        f"{b} {100 * exact[f'{b} agreement'][0]:.2f}%" for b in BACKENDS[1:]) + " of the slots")
    served = {beam: ups for beam, label, ups, _ in rows if label.startswith("hybrid, as served")}
    print(f"\nhybrid_users_s_b{args.batch}_beam{first}={served[first]:.1f} "
          f"cpu_small_users_s_b{args.batch}_beam{first}={base[first]:.1f} "
          f"hybrid_vs_cpu_small={served[first] / base[first]:.2f} "
          f"parallel_exact_users_s={max(exact[b][0] for b in BACKENDS):.1f}")
    return 0


def faiss_threads(n: int) -> None:
    """faiss's OpenMP threads, like torch's (0 = leave the default)."""
    if n > 0:
        import faiss

        faiss.omp_set_num_threads(n)


if __name__ == "__main__":
    sys.exit(main())
