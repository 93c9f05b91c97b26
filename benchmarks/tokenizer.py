"""Tokenizer benchmark on a prepared run (default: full Beauty, 12,101 items, MiniLM).

    python benchmarks/tokenizer.py --run runs/beauty [--repeats 1] [--reference-repeats 3] [--methods rqkmeans,rqvae,fsq]

For each method: fit time (median of ``--repeats`` fits, ``--reference-repeats`` for RQ-KMeans, same seed; fits are deterministic,
so the quality columns are identical across repeats), ratio of fit time vs RQ-KMeans (the reference,
measured in the same run), unique_before_collision and max_collision_group for TIGER's plain codes and
after the collision-avoiding re-assignment (next-best free last-level code), level-1 usage and
perplexity, the minimum usage over levels, and reconstruction cosine. Embedding time is measured once
without the cache (``--no-fresh-embed`` to skip it and read ``RUN/cache``). Ends with one line of
``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from sidrec.data import PreparedDataset
from sidrec.tokenizer import SemanticIdTokenizer, TokenizerConfig, embed_texts
from sidrec.utils import load_config

PRESETS = {"rqkmeans": "tokenizer/rqkmeans", "rqvae": "tokenizer/rqvae", "fsq": "tokenizer/fsq"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/beauty", help="run folder with dataset/ (sidrec prepare)")
    p.add_argument("--methods", default="rqkmeans,rqvae,fsq")
    p.add_argument("--repeats", type=int, default=1, help="fits per neural method; the table shows the median time")
    p.add_argument("--reference-repeats", type=int, default=3, help="fits of RQ-KMeans (the cheap reference)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--no-fresh-embed", action="store_true", help="take embeddings from RUN/cache only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    ds = PreparedDataset.load(run)
    model = TokenizerConfig().embedding_model

    t0 = time.perf_counter()
    if args.no_fresh_embed:
        emb = embed_texts(ds.item_texts, model_name=model, template=ds.text_template, cache_dir=run / "cache",
                          show_progress=False)
        embed_s = float("nan")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            emb = embed_texts(ds.item_texts, model_name=model, template=ds.text_template, cache_dir=tmp,
                              show_progress=False)
        embed_s = time.perf_counter() - t0

    rows = {}
    for method in args.methods.split(","):
        cfg = load_config(TokenizerConfig, PRESETS[method], {"collision_strategy": "reassign"})
        times, tok = [], None
        for _ in range(args.reference_repeats if method == "rqkmeans" else args.repeats):
            tok = SemanticIdTokenizer.fit(item_ids=ds.item_ids, embeddings=emb, config=cfg,
                                          text_template=ds.text_template)
            times.append(tok.stats["fit_seconds"])
        rows[method] = (statistics.median(times), tok.stats)

    ref = rows.get("rqkmeans", (float("nan"), None))[0]
    print(f"dataset={ds.name} items={ds.num_items} embedding={model} dim={emb.shape[1]} threads={args.threads} "
          f"repeats={args.repeats} (rqkmeans {args.reference_repeats}) embed_seconds={embed_s:.1f}")
    head = (f"{'method':<9} {'fit_s':>7} {'x_rqkm':>6} {'uniq_plain':>10} {'maxgrp_plain':>12} {'uniq_reasg':>10} "
            f"{'maxgrp_reasg':>12} {'L1_usage':>8} {'L1_ppl':>7} {'min_usage':>9} {'recon_plain':>11} {'recon_reasg':>11}")
    print(head)
    print("-" * len(head))
    for method, (fit_s, s) in rows.items():
        print(f"{method:<9} {fit_s:>7.1f} {fit_s / ref:>6.2f} {s['unique_before_collision_plain']:>10.4f} "
              f"{s['max_collision_group_plain']:>12d} {s['unique_before_collision']:>10.4f} "
              f"{s['max_collision_group']:>12d} {s['level_usage'][0]:>8.3f} {s['level_perplexity'][0]:>7.1f} "
              f"{min(s['level_usage']):>9.3f} {s['recon_cosine_plain']:>11.4f} {s['recon_cosine']:>11.4f}")
    kv = [f"embed_seconds={embed_s:.1f}"]
    for method, (fit_s, s) in rows.items():
        kv += [f"{method}_fit_seconds={fit_s:.1f}",
               f"{method}_unique_before_collision={s['unique_before_collision_plain']:.4f}",
               f"{method}_max_collision_group={s['max_collision_group_plain']}",
               f"{method}_unique_reassign={s['unique_before_collision']:.4f}",
               f"{method}_min_level_usage={min(s['level_usage']):.3f}",
               f"{method}_recon_cosine={s['recon_cosine_plain']:.4f}"]
    if "rqvae" in rows:
        kv.append(f"embed_plus_rqvae_seconds={embed_s + rows['rqvae'][0]:.1f}")
    print(" ".join(kv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
