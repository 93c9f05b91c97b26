"""Decoding speed per generator family: ``cpu-small`` (tiger, token-level encoder) vs ``hybrid`` (item-level).

    python benchmarks/generator_decoding.py --run runs/beauty [--batch 256] [--beams 20,50] [--repeats 5]

Both models have their preset's sizes and random weights (decoding cost does not depend on training).
Catalog: the real semantic IDs of ``RUN/tokenizer``; histories: the test split of ``RUN/dataset`` (the same
users for every row). Rows: ``cpu-small`` through ``recommend_topk`` (encode + beam search), ``hybrid``
generation only (encode + beam search) and ``hybrid`` as served (the popularity-corrected beam search at
``--prior-weight``, the dense scores of the candidates and the hybrid ranking; the prior is built once,
as the ``Recommender`` does). users/s = batch / median latency over ``--repeats`` calls; the ratio is
against ``cpu-small`` at the same beam in this run. Ends with a ``key=value`` line.
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
from sidrec.decoding import CatalogTrie, beam_candidates, popularity_prior
from sidrec.seqmodel import ItemLevelGenerator, SemanticIdGenerator, SemanticIdVocab, build_t5_config
from sidrec.seqmodel.item_model import build_item_config, item_id_rows
from sidrec.tokenizer import SemanticIdTokenizer
from sidrec.utils import resolve_config_path

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
                               num_id_rows=int(id_rows.max()), hybrid_weight=1.0, **t5_sizes(cfg))
    return ItemLevelGenerator.build(config, item_codes=codes, text=text, id_rows=id_rows).eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run folder with dataset/ and tokenizer/")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--beams", default="20,50")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prior-weight", type=float, default=0.25,
                   help="popularity correction of the served search (0.25: what training chose on Beauty)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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

    def run_once(model, batch, beam: int, dense: bool) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            cands = beam_candidates(model, trie, batch, beam_size=beam, item_codes=codes, batch_size=len(batch),
                                    with_dense=dense, prior_weight=args.prior_weight if dense else 0.0,
                                    prior=prior if dense else None)
            if dense:
                cands.rank(weight=float(model.config.hybrid_weight), k=min(10, beam))
        return time.perf_counter() - t0

    rows = []
    for beam in [int(b) for b in args.beams.split(",")]:
        for label, name, dense in (("cpu-small", "cpu-small", False), ("hybrid, generation only", "hybrid", False),
                                   ("hybrid, as served", "hybrid", True)):
            model = models[name]
            run_once(model, histories[: args.batch], beam, dense)  # warm-up
            lat = [run_once(model, histories[r * args.batch : (r + 1) * args.batch], beam, dense)
                   for r in range(args.repeats)]
            rows.append((beam, label, args.batch / statistics.median(lat), 1e3 * statistics.median(lat)))
    print("\n| beam | model | users/s | median ms/call | vs cpu-small |\n|---|---|---|---|---|")
    base = {beam: ups for beam, label, ups, _ in rows if label == "cpu-small"}
    for beam, label, ups, ms in rows:
        print(f"| {beam} | {label} | {ups:.1f} | {ms:.0f} | {ups / base[beam]:.2f}x |")
    served = {beam: ups for beam, label, ups, _ in rows if label == "hybrid, as served"}
    first = min(base)
    print(f"\nhybrid_users_s_b{args.batch}_beam{first}={served[first]:.1f} "
          f"cpu_small_users_s_b{args.batch}_beam{first}={base[first]:.1f} "
          f"hybrid_vs_cpu_small={served[first] / base[first]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
