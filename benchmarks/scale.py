"""Catalog-scale benchmark: prepare, tokenizer, trie and beam search at 1M items / 30M interactions.

    HF_HUB_OFFLINE=1 python benchmarks/scale.py --data /path/to/scale-data            # full (~13 GB disk; ~10 min to generate once, then ~4 min)
    HF_HUB_OFFLINE=1 python benchmarks/scale.py --data /tmp/scale-smoke --small       # smoke (~30 s)

Synthetic data (generated once into ``--data``, reused when the parameters match):

- Amazon-2023 format (``Synthetic.jsonl`` + ``meta_Synthetic.jsonl``, the files users download) at each
  ``--scales`` interaction count: items = ``--items`` x scale / largest scale (1M at 30M interactions),
  users = interactions / 6; each user's history length is 1 + geometric (mean 6, so about 30% of users
  have fewer than 3 reviews and are dropped); items drawn from a Zipf-like popularity (exponent 0.9);
  millisecond timestamps increasing within a user; rows shuffled over the file (the reader has to group
  them). Review lines carry the real fields (rating, title, text, images, asin, parent_asin, user_id,
  timestamp, helpful_vote, verified_purchase; ~250 bytes), meta lines the real metadata fields.
- Embeddings ``--emb-items`` x 384: 2,000 Gaussian clusters (centres N(0, I), noise 0.5 N(0, I)),
  L2-normalised, seed 0.

Measured, each in a fresh child process (peak RSS = the child's ``VmHWM``, the kernel's high-water mark
of its resident memory):

- ``prepare``: ``sidrec prepare --dataset DIR --out RUN`` (read + filter + split + write RUN/dataset and
  the catalog), at every scale.
- ``tok``: ``SemanticIdTokenizer.fit`` with the ``tokenizer/rqkmeans`` preset (codebook sized to the
  catalog) on the embedding set and on its first 12,101 rows (Beauty's catalog size; also on the real
  Beauty MiniLM embeddings with ``--beauty-emb``). ``x_matrix`` = (peak RSS - RSS before loading the
  matrix, after a small warm-up fit that initialises faiss/BLAS) / matrix bytes: the fit's memory in
  units of the embedding matrix, which itself counts as 1.
- ``trie``: ``CatalogTrie`` built from ``--trie-items`` random distinct codes in the layout the tokenizer
  picks for that many items (3 x 1024 + collision level at 10M). Peak RSS includes the input codes.
- ``beam``: ``constrained_beam_search`` (beam 20, k 20, batch 64, 1 thread) with the ``generator/tiger``
  model sizes (random init) on a 12,101-item catalog (3 x 256, random codes) and on the 1M-item codes the
  tokenizer step produced (``--beam-items`` random codes in the rule's layout if that step was skipped).
  Users/s = 64 / median latency over ``--repeats`` batches, the two catalogs' batches interleaved so that
  both see the same machine load; ``ratio`` = 1M / 12k.

Prints a table and ends with one ``key=value`` line. Timings on a shared machine are pessimistic.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BEAUTY_ITEMS = 12_101
EMB_DIM = 384
WORDS = ("rose", "matte", "gel", "serum", "balm", "tonic", "velvet", "cream", "shine", "silk", "mineral",
         "argan", "charcoal", "citrus", "mint", "ceramide", "retinol", "vitamin", "clay", "coconut")
CATEGORIES = (("Beauty & Personal Care", "Skin Care", "Face", "Creams & Moisturizers"),
              ("Beauty & Personal Care", "Makeup", "Lips", "Lipstick"),
              ("Beauty & Personal Care", "Hair Care", "Shampoo & Conditioner", "Shampoos"),
              ("Beauty & Personal Care", "Foot, Hand & Nail Care", "Nail Art & Polish"))


# ----------------------------------------------------------------------------- helpers


def parse_count(text: str) -> int:
    """``"30m"`` -> 30_000_000, ``"12k"`` -> 12_000, ``"1500"`` -> 1500."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def label(n: int) -> str:
    """30_000_000 -> ``"30m"``, 12_101 -> ``"12k"``."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n >= 1_000_000:
        return f"{n / 1e6:g}m"
    return f"{round(n / 1000)}k"


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set since it started its program.

    ``VmHWM`` of ``/proc/self/status``: Linux's ``ru_maxrss`` would also count the parent's pages that the
    fork copied before ``exec`` (the parent holds GBs after generating data), ``VmHWM`` belongs to the
    address space ``exec`` created. ``ru_maxrss`` where ``/proc`` is missing.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)


def _open_out(path: Path):
    return gzip.open(path, "wt", compresslevel=1, encoding="utf-8") if path.suffix == ".gz" else open(
        path, "w", encoding="utf-8", buffering=1 << 22)


# ----------------------------------------------------------------------------- synthetic data


def item_id(i: int) -> str:
    return f"B0{(i * 2654435761) % (1 << 32):08X}"  # a bijection on 32 bits: distinct, ASIN-like


def user_id(u: int) -> str:
    return f"A{(u * 11400714819323198485) % (1 << 64):016X}{u % 997:03d}XYZ"[:28]


def generate_amazon2023(folder: Path, *, interactions: int, items: int, seed: int, gz: bool) -> dict[str, Any]:
    """Write ``Synthetic.jsonl[.gz]`` + ``meta_Synthetic.jsonl[.gz]`` (skipped when already complete)."""
    spec = {"interactions": interactions, "items": items, "seed": seed, "gzip": gz, "version": 1}
    marker = folder / "COMPLETE.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return spec
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    # users and their history lengths (1 + geometric, mean 6), trimmed to the exact interaction count
    lengths = rng.geometric(1 / 6, size=interactions // 5 + 1000)
    lengths = lengths[np.cumsum(lengths) <= interactions]
    lengths = np.append(lengths, interactions - lengths.sum()) if lengths.sum() < interactions else lengths
    lengths = lengths[lengths > 0]
    users = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)  # (n,) grouped
    # Zipf-like item popularity (exponent 0.9) over a shuffled item order
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    cdf = np.cumsum(weights) / weights.sum()
    popularity_order = rng.permutation(items)
    picked = popularity_order[np.minimum(np.searchsorted(cdf, rng.random(interactions)), items - 1)]
    # timestamps: a start per user, then exponential gaps of ~20 days, in ms
    start = rng.integers(1_420_070_400_000, 1_640_995_200_000, size=len(lengths))
    gaps = rng.exponential(20 * 86_400_000, size=interactions).astype(np.int64)
    within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths], lengths)
    stamps = start[users] + within
    order = rng.permutation(interactions)  # rows in random file order
    ratings = rng.integers(1, 6, size=interactions)
    item_names = [item_id(i) for i in range(items)]
    review = folder / ("Synthetic.jsonl.gz" if gz else "Synthetic.jsonl")

    def write_reviews(tmp: Path) -> None:
        with _open_out(tmp) as f:
            for s in range(0, interactions, 500_000):
                rows = order[s:s + 500_000]
                lines = []
                for u, i, ts, r in zip(users[rows].tolist(), picked[rows].tolist(), stamps[rows].tolist(),
                                       ratings[rows].tolist(), strict=True):
                    asin = item_names[i]
                    lines.append(
                        f'{{"rating": {r}.0, "title": "{WORDS[i % 20]} review", "text": "Works as described, '
                        f'{WORDS[(i + u) % 20]} feel.", "images": [], "asin": "{asin}", "parent_asin": "{asin}", '
                        f'"user_id": "{user_id(u)}", "timestamp": {ts}, "helpful_vote": {u % 3}, '
                        f'"verified_purchase": true}}\n')
                f.write("".join(lines))

    _write_atomic(review, write_reviews)

    def write_meta(tmp: Path) -> None:
        with _open_out(tmp) as f:
            for s in range(0, items, 200_000):
                lines = []
                for i in range(s, min(items, s + 200_000)):
                    w = [WORDS[(i // 20**k) % 20] for k in range(4)]
                    obj = {
                        "main_category": "All Beauty", "title": f"{w[0].title()} {w[1]} {w[2]} {w[3]} no. {i}",
                        "average_rating": round(3 + (i % 20) / 10, 1), "rating_number": i % 500,
                        "features": [f"Made with {w[1]} and {w[2]}", f"{w[3].title()} finish"],
                        "description": [f"A {w[0]} {w[2]} for everyday use."],
                        "price": round(5 + (i % 4000) / 100, 2) if i % 3 else None, "images": [], "videos": [],
                        "store": f"{w[3].title()} Labs", "categories": list(CATEGORIES[i % 4]),
                        "details": {"Brand": f"{w[3].title()} Labs", "Item Form": w[2]},
                        "parent_asin": item_names[i], "bought_together": None,
                    }
                    lines.append(json.dumps(obj) + "\n")
                f.write("".join(lines))

    _write_atomic(folder / ("meta_Synthetic.jsonl.gz" if gz else "meta_Synthetic.jsonl"), write_meta)
    spec["generate_s"] = round(time.perf_counter() - t0, 1)
    marker.write_text(json.dumps({k: v for k, v in spec.items() if k != "generate_s"}))
    return spec


def generate_embeddings(path: Path, *, n: int, dim: int = EMB_DIM, clusters: int = 2000, noise: float = 0.5,
                        seed: int = 0) -> None:
    """``n x dim`` float32: Gaussian clusters (centres N(0, I), noise ``noise`` N(0, I)), L2-normalised."""
    if path.is_file() and np.load(path, mmap_mode="r").shape == (n, dim):
        return
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    labels = rng.integers(0, clusters, size=n)
    tmp = path.with_name(path.name + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, 100_000):
        x = centres[labels[s:s + 100_000]] + noise * rng.standard_normal((min(n, s + 100_000) - s, dim),
                                                                         dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + len(x)] = x
    out.flush()
    del out
    os.replace(tmp, path)


def random_codes(n: int, *, seed: int, sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    """n random semantic prefixes in ``sizes`` plus TIGER's collision level (0..g-1 inside a group)."""
    rng = np.random.default_rng(seed)
    prefixes = np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)  # (n, L-1)
    order = np.lexsort(prefixes.T[::-1])
    ordered = prefixes[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    starts = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    collision = np.empty(n, dtype=np.int64)
    collision[order] = np.arange(n) - starts
    codes = np.concatenate([prefixes, collision[:, None]], axis=1)
    return codes, [*sizes, max(8, int(collision.max()) + 1)]


# ----------------------------------------------------------------------------- tasks (run in a child)


def task_prepare(args: dict[str, Any]) -> dict[str, Any]:
    from sidrec.cli import main as cli_main

    out = Path(args["out"])
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    rc = cli_main(["prepare", "--dataset", args["dataset"], "--out", str(out)])
    seconds = time.perf_counter() - t0
    stats = json.loads((out / "dataset" / "stats.json").read_text())
    return {"rc": rc, "s": seconds, "peak": peak_rss_bytes(), "users": stats["users"], "items": stats["items"],
            "interactions": stats["interactions"]}


def task_tok(args: dict[str, Any]) -> dict[str, Any]:
    import torch  # noqa: F401  (imported before the baseline, as the fit needs it)

    from sidrec.tokenizer import SemanticIdTokenizer, TokenizerConfig
    from sidrec.utils import load_config

    warm = np.random.default_rng(1).standard_normal((3000, EMB_DIM)).astype(np.float32)
    SemanticIdTokenizer.fit(item_ids=[str(i) for i in range(len(warm))], embeddings=warm,
                            config=load_config(TokenizerConfig, "tokenizer/rqkmeans", {"codebook_size": 16}))
    del warm
    base = rss_bytes()
    emb = np.load(args["emb"]) if not args.get("rows") else np.array(np.load(args["emb"], mmap_mode="r")[: args["rows"]])
    ids = [str(i) for i in range(len(emb))]
    cfg = load_config(TokenizerConfig, "tokenizer/rqkmeans")
    t0 = time.perf_counter()
    tok = SemanticIdTokenizer.fit(item_ids=ids, embeddings=emb, config=cfg)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    if args.get("codes_out"):
        np.save(args["codes_out"], tok.codes)
        Path(args["codes_out"]).with_suffix(".json").write_text(json.dumps(tok.level_sizes))
    s = tok.stats
    return {"s": seconds, "peak": peak, "x_matrix": (peak - base) / emb.nbytes, "matrix": emb.nbytes,
            "items": len(emb), "level_sizes": tok.level_sizes, "max_group": s["max_collision_group"],
            "max_group_plain": s["max_collision_group_plain"], "unique": s["unique_before_collision"],
            "recon": s["recon_cosine"], "recon_plain": s["recon_cosine_plain"], "fit_s": s["fit_seconds"]}


def task_trie(args: dict[str, Any]) -> dict[str, Any]:
    import torch  # noqa: F401

    from sidrec.decoding import CatalogTrie
    from sidrec.tokenizer.sizing import auto_codebook_size

    n = args["items"]
    size = auto_codebook_size(n, 3)
    codes, sizes = random_codes(n, seed=3, sizes=[size] * 3)
    base = rss_bytes()
    t0 = time.perf_counter()
    trie = CatalogTrie(codes=codes, level_sizes=sizes)
    seconds = time.perf_counter() - t0
    return {"s": seconds, "peak": peak_rss_bytes(), "build_rss": peak_rss_bytes() - base, "trie": trie.nbytes(),
            "items": n, "level_sizes": sizes, "storage": trie.level_storage()}


def task_beam(args: dict[str, Any]) -> dict[str, Any]:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench_decoding", Path(__file__).resolve().parent / "decoding.py")
    bench_decoding = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_decoding)
    tiger_model = bench_decoding.tiger_model  # the decoding benchmark's model (generator/tiger sizes)

    from sidrec.decoding import CatalogTrie, constrained_beam_search
    from sidrec.seqmodel.inputs import encode_histories
    from sidrec.tokenizer.sizing import auto_codebook_size

    torch.set_num_threads(args["threads"])
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    catalogs = {"12k": random_codes(BEAUTY_ITEMS, seed=1, sizes=[256] * 3)}
    if args.get("codes") and Path(args["codes"]).is_file():
        big = np.load(args["codes"])
        catalogs["big"] = (big, json.loads(Path(args["codes"]).with_suffix(".json").read_text()))
        out["big_source"] = "tokenizer codes"
    else:
        n = args["items"]
        catalogs["big"] = random_codes(n, seed=2, sizes=[auto_codebook_size(n, 3)] * 3)
        out["big_source"] = "random codes"
    batch, repeats = 64, args["repeats"]
    lengths = np.minimum(4 + rng.geometric(1 / 5.0, size=batch * (repeats + 1)), 200)  # Beauty-like
    setups = {}
    for name, (codes, sizes) in catalogs.items():
        trie = CatalogTrie(codes=codes, level_sizes=sizes)
        model = tiger_model(sizes, seed=0)
        hist = [rng.integers(0, len(codes), size=n).tolist() for n in lengths]
        users = [f"user{i}" for i in range(len(hist))]
        inputs = [encode_histories(model.vocab, codes, hist[r * batch:(r + 1) * batch],
                                   user_ids=users[r * batch:(r + 1) * batch], max_items=20) for r in range(repeats + 1)]
        setups[name] = (model, trie, inputs)
        out[name] = {"items": len(codes), "level_sizes": sizes, "storage": trie.level_storage()}
    lat: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(repeats + 1):  # interleaved, so both catalogs see the same machine load; call 0 warms up
        for name, (model, trie, inputs) in setups.items():
            ids, mask = inputs[r]
            t0 = time.perf_counter()
            constrained_beam_search(model, trie, ids, mask, beam_size=20, k=20, num_threads=args["threads"])
            if r:
                lat[name].append(time.perf_counter() - t0)
    for name in setups:
        out[name]["users_s"] = batch / statistics.median(lat[name])
    out["ratio"] = out["big"]["users_s"] / out["12k"]["users_s"]
    out["peak"] = peak_rss_bytes()
    return out


TASKS = {"prepare": task_prepare, "tok": task_tok, "trie": task_trie, "beam": task_beam}


def run_child(task: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run one task in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, __file__, "--child", task, "--child-args", json.dumps(args)]
    with open(log, "a") as err:
        err.write(f"\n$ {task} {json.dumps(args)}\n")
        err.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{task} failed (exit {proc.returncode}); see {log}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="folder for the synthetic data and runs (reused between calls); required")
    p.add_argument("--scales", default="1m,10m,30m", help="interaction counts for prepare, e.g. 1m,10m,30m")
    p.add_argument("--items", default="1m", help="catalog size at the largest scale (smaller scales: pro rata)")
    p.add_argument("--emb-items", default="1m", help="rows of the synthetic embedding set for the tokenizer")
    p.add_argument("--trie-items", default="10m", help="catalog size for the trie build")
    p.add_argument("--beam-items", default="1m", help="large catalog for beam search if no tokenizer codes exist")
    p.add_argument("--repeats", type=int, default=10, help="timed beam-search batches per catalog (interleaved)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for beam search")
    p.add_argument("--gzip", action="store_true", help="write the review/meta files gzipped (.jsonl.gz)")
    p.add_argument("--skip", default="", help="comma-separated tasks to skip: prepare,tok,trie,beam")
    p.add_argument("--beauty-emb", default=None, help="also fit the real Beauty MiniLM embeddings (RUN/cache/emb-*.npy)")
    p.add_argument("--small", action="store_true", help="smoke run: 100k,300k interactions, 20k items, 50k "
                   "embeddings, 300k-item trie, 50k-item beam catalog, 3 repeats")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-args", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
        print(json.dumps(TASKS[args.child](json.loads(args.child_args))))
        return 0
    if not args.data:
        p.error("--data is required (a folder with room for the synthetic data: ~12 GB at full scale)")
    if args.small:
        args.scales, args.items, args.emb_items = "100k,300k", "20k", "50k"
        args.trie_items, args.beam_items, args.repeats = "300k", "50k", 3
    skip = {s for s in args.skip.split(",") if s}
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    log = data / "scale-benchmark.log"
    scales = sorted(parse_count(s) for s in args.scales.split(","))
    top_items = parse_count(args.items)
    emb_n = parse_count(args.emb_items)
    wall = time.perf_counter()
    print(f"scale benchmark: {os.cpu_count()} CPUs, data in {data}, log {log}; timings on a shared machine are "
          "pessimistic", flush=True)
    rows: list[tuple[str, str, float, float, str]] = []  # (step, size, seconds, peak GB, notes)
    keys: dict[str, str] = {}

    if "prepare" not in skip:
        for n in scales:
            items = max(1000, round(top_items * n / scales[-1]))
            folder = data / f"amazon2023_{label(n)}"
            spec = generate_amazon2023(folder, interactions=n, items=items, seed=0, gz=args.gzip)
            if "generate_s" in spec:
                print(f"generated {folder} in {spec['generate_s']:.0f} s", flush=True)
            r = run_child("prepare", {"dataset": str(folder), "out": str(data / f"run_{label(n)}")}, log)
            rows.append(("prepare (sidrec prepare)", f"{label(n)} interactions, {label(items)} items", r["s"],
                         r["peak"] / 1e9, f"kept {r['users']:,} users, {r['items']:,} items, "
                         f"{r['interactions']:,} interactions"))
            keys[f"prepare_{label(n)}_s"] = f"{r['s']:.1f}"
            keys[f"prepare_{label(n)}_gb"] = f"{r['peak'] / 1e9:.2f}"
            print(rows[-1], flush=True)

    codes_path = data / f"tok_codes_{label(emb_n)}.npy"
    if "tok" not in skip:
        emb = data / f"emb_{label(emb_n)}_{EMB_DIM}.npy"
        generate_embeddings(emb, n=emb_n)
        runs = [(label(emb_n), {"emb": str(emb), "codes_out": str(codes_path)}),
                ("12k", {"emb": str(emb), "rows": BEAUTY_ITEMS})]
        if args.beauty_emb:
            runs.append(("beauty", {"emb": args.beauty_emb}))
        for name, targs in runs:
            r = run_child("tok", targs, log)
            sizes = "+".join(str(s) for s in r["level_sizes"])
            rows.append(("tokenizer (rqkmeans preset)", f"{r['items']:,} x {EMB_DIM}" + (" Beauty" if name == "beauty" else ""),
                         r["s"], r["peak"] / 1e9,
                         f"{r['x_matrix']:.2f}x matrix; levels {sizes}; max group {r['max_group']} (plain "
                         f"{r['max_group_plain']}); unique {r['unique']:.3f}; recon cos {r['recon']:.3f} "
                         f"(plain {r['recon_plain']:.3f})"))
            keys[f"tok_{name}_s"] = f"{r['s']:.1f}"
            keys[f"tok_{name}_gb"] = f"{r['peak'] / 1e9:.2f}"
            keys[f"tok_{name}_x_matrix"] = f"{r['x_matrix']:.2f}"
            keys[f"tok_{name}_max_group"] = str(r["max_group"])
            keys[f"tok_{name}_levels"] = sizes
            print(rows[-1], flush=True)

    if "trie" not in skip:
        n = parse_count(args.trie_items)
        r = run_child("trie", {"items": n}, log)
        rows.append(("trie build", f"{label(n)} items", r["s"], r["peak"] / 1e9,
                     f"trie {r['trie'] / 2**20:.0f} MiB; build +{r['build_rss'] / 1e9:.2f} GB RSS (input codes "
                     f"{n * 4 * 8 / 1e9:.2f} GB before); levels {'+'.join(map(str, r['level_sizes']))}; "
                     f"storage {'/'.join(r['storage'])}"))
        keys[f"trie_{label(n)}_s"] = f"{r['s']:.2f}"
        keys[f"trie_{label(n)}_gb"] = f"{r['peak'] / 1e9:.2f}"
        keys[f"trie_{label(n)}_mib"] = f"{r['trie'] / 2**20:.0f}"
        print(rows[-1], flush=True)

    if "beam" not in skip:
        r = run_child("beam", {"codes": str(codes_path), "items": parse_count(args.beam_items),
                               "repeats": args.repeats, "threads": args.threads}, log)
        big = r["big"]
        for name, c in (("12k", r["12k"]), (label(big["items"]), big)):
            rows.append(("beam search b64, beam 20", f"{c['items']:,} items", 64 / c["users_s"], r["peak"] / 1e9,
                         f"{c['users_s']:.1f} users/s; levels {'+'.join(map(str, c['level_sizes']))}; "
                         f"trie {'/'.join(c['storage'])}" + ("" if name == "12k" else f"; {r['big_source']}")))
        keys["beam_12k_users_s"] = f"{r['12k']['users_s']:.1f}"
        keys[f"beam_{label(big['items'])}_users_s"] = f"{big['users_s']:.1f}"
        keys[f"beam_{label(big['items'])}_vs_12k"] = f"{r['ratio']:.3f}"

    print()
    print(f"{'step':<28}{'size':<34}{'seconds':>9}{'peak GB':>9}  notes")
    for step, size, seconds, gb, notes in rows:
        print(f"{step:<28}{size:<34}{seconds:>9.1f}{gb:>9.2f}  {notes}")
    print("(peak GB = the measuring process's peak RSS; beam rows: seconds per batch of 64)")
    print(f"benchmark wall time {time.perf_counter() - wall:.0f} s")
    top = label(scales[-1])
    first = [f"prepare_{top}_s", f"prepare_{top}_gb", f"tok_{label(emb_n)}_s", f"tok_{label(emb_n)}_gb",
             f"tok_{label(emb_n)}_max_group", f"trie_{label(parse_count(args.trie_items))}_s",
             f"trie_{label(parse_count(args.trie_items))}_gb"]
    ordered = [k for k in first if k in keys] + [k for k in keys if k not in first]
    print(" ".join(f"{k}={keys[k]}" for k in ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
