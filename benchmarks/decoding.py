"""Decoding benchmark: trie-constrained beam search vs HF generate vs the encoder-only floor.

    HF_HUB_OFFLINE=1 nice python benchmarks/decoding.py --run runs/beauty [--threads 1] [--repeats 5]

Model: the ``generator/tiger`` preset's sizes (d_model 128, 4+4 layers, 6 heads x 64, d_ff 1024, 2000
user buckets), randomly initialised (decoding speed does not depend on training). Catalog: the real
semantic IDs of ``RUN/tokenizer`` if it exists, else 12,101 random distinct codes (3 levels of 256 +
a collision level); the table says which. Histories: the test split of ``RUN/dataset`` when it matches
the catalog, else random histories of Beauty-like lengths; encoded with ``encode_histories`` (user token
+ last 20 items).

For batch 1, 64 and 256 at beam 20 the same user batches go through (a) ``constrained_beam_search``,
(b) the same with the history excluded, (c) HF ``generate`` with ``prefix_allowed_tokens_fn`` over the
same trie and (d) the encoder-only forward (the floor no decoder can beat). Each row: users/s from the
median call latency, p50/p99 latency over the calls; the speed-up is the ratio of medians measured in
this run. ``identical`` = our top-k items and scores equal HF's on every user of every HF call (scores
within 1e-4, ties may reorder). Then a synthetic 1M-item catalog: trie build time, trie memory,
add/remove of 1,000 items, users/s at batch 64. Ends with one ``key=value`` line.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from sidrec.decoding import CatalogTrie, constrained_beam_search, hf_constrained_generate, topk_mismatches
from sidrec.seqmodel.inputs import encode_histories
from sidrec.seqmodel.model import SemanticIdGenerator, build_t5_config
from sidrec.seqmodel.vocab import SemanticIdVocab
from sidrec.utils import resolve_config_path

BEAUTY_ITEMS = 12_101


def random_catalog(
    n: int, *, seed: int, semantic_levels: int = 3, size: int = 256
) -> tuple[np.ndarray, list[int]]:
    """n random semantic codes with TIGER's collision level appended (0..g-1 inside a group of g)."""
    rng = np.random.default_rng(seed)
    prefixes = rng.integers(0, size, size=(n, semantic_levels))  # (n, L-1), may collide
    order = np.lexsort(prefixes.T[::-1])
    sorted_prefixes = prefixes[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (sorted_prefixes[1:] != sorted_prefixes[:-1]).any(axis=1)
    starts = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    collision = np.empty(n, dtype=np.int64)
    collision[order] = np.arange(n) - starts
    codes = np.concatenate([prefixes, collision[:, None]], axis=1)
    return codes, [size] * semantic_levels + [int(collision.max()) + 1]


def unused_codes(codes: np.ndarray, n: int, *, seed: int, size: int = 256) -> np.ndarray:
    """n new codes (collision level 0) whose semantic prefix no item of ``codes`` has."""
    rng = np.random.default_rng(seed)
    keys = codes[:, :-1] @ (size ** np.arange(codes.shape[1] - 2, -1, -1))  # (N,) prefix as one int
    candidates = np.unique(rng.integers(0, size ** (codes.shape[1] - 1), size=4 * n))
    candidates = rng.permutation(candidates[~np.isin(candidates, keys)])[:n]
    digits = [(candidates // size**p) % size for p in range(codes.shape[1] - 2, -1, -1)]
    return np.stack([*digits, np.zeros_like(candidates)], axis=1)


def load_catalog(run: Path, seed: int) -> tuple[np.ndarray, list[int], str]:
    """The run's semantic IDs if a tokenizer was trained, else a synthetic Beauty-sized catalog."""
    if (run / "tokenizer" / "config.json").is_file():
        from sidrec.tokenizer import SemanticIdTokenizer

        tok = SemanticIdTokenizer.from_pretrained(run / "tokenizer")
        return np.asarray(tok.codes, dtype=np.int64), list(tok.level_sizes), f"real ({run / 'tokenizer'})"
    codes, sizes = random_catalog(BEAUTY_ITEMS, seed=seed)
    return codes, sizes, "synthetic (random 3x256 + collision level; no RUN/tokenizer)"


def load_histories(run: Path, num_items: int, count: int, seed: int) -> tuple[list[list[int]], str]:
    """Test-split histories of the run's dataset, or random ones with Beauty-like lengths."""
    rng = np.random.default_rng(seed)
    if (run / "dataset" / "prepare.json").is_file():
        from sidrec.data import PreparedDataset

        data = PreparedDataset.load(run)
        if data.num_items == num_items:
            split = data.eval_split("test")
            pick = rng.permutation(len(split.histories))[:count]
            return [list(split.histories[i]) for i in pick], f"test split of {run / 'dataset'}"
    lengths = np.minimum(4 + rng.geometric(1 / 5.0, size=count), 200)  # mean ~8.9 like Beauty's test split
    return [rng.integers(0, num_items, size=n).tolist() for n in lengths], "synthetic (random, mean len ~9)"


def tiger_model(level_sizes: Sequence[int], seed: int) -> SemanticIdGenerator:
    """A randomly initialised generator with the tiger preset's sizes, in eval mode."""
    preset = yaml.safe_load(resolve_config_path("generator/tiger").read_text())
    vocab = SemanticIdVocab(level_sizes=level_sizes, num_user_buckets=int(preset["user_buckets"]))
    config = build_t5_config(
        vocab=vocab,
        d_model=preset["d_model"],
        num_layers=preset["num_layers"],
        num_decoder_layers=preset["num_decoder_layers"],
        num_heads=preset["num_heads"],
        d_kv=preset["d_kv"],
        d_ff=preset["d_ff"],
        feed_forward_proj=preset["feed_forward_proj"],
    )
    torch.manual_seed(seed)
    return SemanticIdGenerator(config).eval()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def summarise(batch: int, latencies: list[float]) -> dict[str, float]:
    median = statistics.median(latencies)
    return {
        "users_s": batch / median,
        "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)),
        "calls": len(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--run", default="runs/beauty", help="run folder (tokenizer/ and dataset/ are used if present)"
    )
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--k", type=int, default=20, help="items returned per user (<= beam)")
    p.add_argument("--batches", default="1,64,256")
    p.add_argument(
        "--repeats", type=int, default=5, help="calls per batch size for ours / encoder (<= 3 at >= 256)"
    )
    p.add_argument(
        "--hf-repeats", type=int, default=3, help="HF generate calls per batch size (2 at batch >= 256)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)"
    )
    p.add_argument("--million", type=int, default=1_000_000, help="synthetic catalog size (0 = skip)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    run = Path(args.run)
    wall = time.perf_counter()

    codes, level_sizes, catalog_source = load_catalog(run, args.seed)
    trie = CatalogTrie(codes=codes, level_sizes=level_sizes)
    model = tiger_model(level_sizes, args.seed)
    need = max(*batches, 64) * max(args.repeats, args.hf_repeats)
    histories, history_source = load_histories(run, len(codes), need, args.seed)
    user_ids = [f"user{i}" for i in range(len(histories))]
    vocab = model.vocab
    print(f"catalog: {len(codes)} items, level_sizes {level_sizes}, {catalog_source}")
    print(
        f"histories: {history_source}; model: tiger preset sizes, random init; beam {args.beam}, k {args.k}"
    )
    print(f"torch threads: {args.threads}; shared 2-core machine, timings are noisy")

    def batch_inputs(batch: int, r: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        sl = slice(r * batch, (r + 1) * batch)
        ids, mask = encode_histories(vocab, codes, histories[sl], user_ids=user_ids[sl], max_items=20)
        return ids, mask, histories[sl]

    search = {"beam_size": args.beam, "k": args.k}
    with torch.inference_mode():  # warm-up
        ids, mask, _ = batch_inputs(1, 0)
        constrained_beam_search(model, trie, ids, mask, **search)
        hf_constrained_generate(model, trie, ids, mask, **search)

    rows: list[tuple[str, int, dict[str, float]]] = []
    mismatched_users = compared_users = 0
    for batch in batches:
        lat: dict[str, list[float]] = {"ours": [], "ours+exclude": [], "hf_generate": [], "encoder_only": []}
        hf_calls = args.hf_repeats if batch < 256 else min(args.hf_repeats, 2)
        calls = args.repeats if batch < 256 else min(args.repeats, 3)  # keeps the run under 10 min
        for r in range(max(calls, hf_calls)):
            ids, mask, hist = batch_inputs(batch, r)
            if r < calls:
                t, ours = timed(lambda: constrained_beam_search(model, trie, ids, mask, **search))  # noqa: B023
                lat["ours"].append(t)
                t, _ = timed(lambda: constrained_beam_search(model, trie, ids, mask, exclude=hist, **search))  # noqa: B023
                lat["ours+exclude"].append(t)
                with torch.inference_mode():
                    t, _ = timed(lambda: model.encoder(input_ids=ids, attention_mask=mask))  # noqa: B023
                lat["encoder_only"].append(t)
            if r < hf_calls:
                if r >= calls:
                    ours = constrained_beam_search(model, trie, ids, mask, **search)
                t, ref = timed(lambda: hf_constrained_generate(model, trie, ids, mask, **search))  # noqa: B023
                lat["hf_generate"].append(t)
                problems = topk_mismatches(ours, ref)
                bad = {msg.split(":")[0] for msg in problems}
                mismatched_users += len(bad)
                compared_users += batch
                if problems:
                    print(f"  batch {batch} call {r}: {len(bad)} users differ from HF, e.g. {problems[0]}")
        for name, values in lat.items():
            rows.append((name, batch, summarise(batch, values)))

    print()
    print(
        f"{'method':<14}{'batch':>6}{'users/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'calls':>7}{'vs HF':>8}{'vs enc':>8}"
    )
    table = {(name, batch): stats for name, batch, stats in rows}
    for name, batch, stats in rows:
        vs_hf = stats["users_s"] / table[("hf_generate", batch)]["users_s"]
        vs_enc = stats["users_s"] / table[("encoder_only", batch)]["users_s"]
        print(
            f"{name:<14}{batch:>6}{stats['users_s']:>10.1f}{stats['p50_ms']:>10.1f}{stats['p99_ms']:>10.1f}"
            f"{stats['calls']:>7}{vs_hf:>7.1f}x{vs_enc:>8.2f}"
        )
    print("(p99 over few calls is close to the max; users/s = batch / median latency)")

    ref_batch = 64 if 64 in batches else batches[-1]
    speedup = table[("ours", ref_batch)]["users_s"] / table[("hf_generate", ref_batch)]["users_s"]
    floor = table[("ours", ref_batch)]["users_s"] / table[("encoder_only", ref_batch)]["users_s"]
    identical = mismatched_users == 0
    print(f"identical to HF: {identical} ({compared_users - mismatched_users}/{compared_users} users)")

    million: dict[str, float] = {}
    if args.million:
        big_codes, big_sizes = random_catalog(args.million, seed=args.seed + 1)
        builds = []
        for _ in range(2):
            t, big = timed(lambda: CatalogTrie(codes=big_codes, level_sizes=big_sizes))  # noqa: B023
            builds.append(t)
        built_mib = big.nbytes() / 2**20
        fresh = unused_codes(big_codes, 1000, seed=args.seed + 2)
        t_add, _ = timed(lambda: big.add_items(fresh))
        t_remove, _ = timed(lambda: big.remove_items(np.arange(1000)))
        big_model = tiger_model(big_sizes, args.seed)
        big_hist = [
            np.random.default_rng(r).integers(0, args.million, size=len(h)).tolist()
            for r, h in enumerate(histories)
        ]
        lat_big = []
        for r in range(args.repeats):
            sl = slice(r * 64, (r + 1) * 64)
            ids, mask = encode_histories(
                big_model.vocab, big.codes, big_hist[sl], user_ids=user_ids[sl], max_items=20
            )
            t, _ = timed(lambda: constrained_beam_search(big_model, big, ids, mask, **search))  # noqa: B023
            lat_big.append(t)
        million = {
            "build_s": statistics.median(builds),
            "mb": built_mib,
            "mb_after_add": big.nbytes() / 2**20,
            "add_ms": 1e3 * t_add,
            "remove_ms": 1e3 * t_remove,
            "users_s": 64 / statistics.median(lat_big),
        }
        print(
            f"\nsynthetic {args.million:,}-item catalog (level_sizes {big_sizes}): trie build "
            f"{million['build_s']:.2f} s (median of 2), trie memory {million['mb']:.0f} MiB "
            f"({million['mb_after_add']:.0f} MiB allocated after the add: capacity doubling), add 1,000 items "
            f"{million['add_ms']:.0f} ms, remove 1,000 items {million['remove_ms']:.0f} ms, "
            f"ours at batch 64 {million['users_s']:.1f} users/s ({args.repeats} calls)"
        )

    elapsed = time.perf_counter() - wall
    print(f"benchmark wall time {elapsed:.0f} s")
    fields = {
        "speedup_vs_hf": f"{speedup:.2f}",
        "identical": str(identical).lower(),
        "floor_fraction": f"{floor:.3f}",
        "ref_batch": str(ref_batch),
        "ours_users_s": f"{table[('ours', ref_batch)]['users_s']:.1f}",
        "hf_users_s": f"{table[('hf_generate', ref_batch)]['users_s']:.2f}",
        "encoder_users_s": f"{table[('encoder_only', ref_batch)]['users_s']:.1f}",
        "catalog": "real" if catalog_source.startswith("real") else "synthetic",
        "threads": str(args.threads),
    }
    if million:
        fields.update(
            big_items=str(args.million),
            big_trie_build_s=f"{million['build_s']:.2f}",
            big_trie_mib=f"{million['mb']:.0f}",
            big_users_s_b64=f"{million['users_s']:.1f}",
        )
    print(" ".join(f"{k}={v}" for k, v in fields.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
