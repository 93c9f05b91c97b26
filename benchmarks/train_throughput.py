"""Training throughput of our generator step vs a plain HF T5 loop on the same config and batch.

    python benchmarks/train_throughput.py --run runs/beauty --config generator/cpu-small [--repeats 5]

"ours" = what ``sidrec.train.generator`` runs per optimiser step: ``SemanticIdGenerator`` (level-restricted
logits, per-level loss) prepared by ``accelerate``, backward, grad clipping, AdamW, LR schedule.
"plain" = ``T5ForConditionalGeneration`` with the same T5Config and weights, ``labels=`` loss over the full
vocabulary, backward, AdamW: the reference a user would write by hand. Both see the same real batch
(the first ``batch_size`` training examples of RUN, encoded by ``ExampleCollator``). Each repeat times
``--steps`` steps after ``--warmup`` untimed ones; the table shows medians over repeats. Without
``--run`` a synthetic batch (random codes, 20-item histories) is used.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def _batch(args, cfg):
    from sidrec.seqmodel import SemanticIdVocab
    from sidrec.train.generator import ExampleCollator, load_item_codes

    if args.run:
        from sidrec.data import PreparedDataset
        from sidrec.seqmodel import build_examples

        dataset = PreparedDataset.load(args.run)
        codes, sizes = load_item_codes(Path(args.run), dataset.item_ids)
        seqs = dataset.train_sequences()[: 4 * cfg.batch_size]
        rows = list(build_examples(seqs, max_items=cfg.max_items).select(range(cfg.batch_size)))
        user_ids = dataset.user_ids
    else:
        rng = np.random.default_rng(0)
        sizes = [256, 256, 256, 8]
        codes = np.stack([rng.integers(0, s, 5000) for s in sizes], axis=1)
        rows = [{"user": i, "history": rng.integers(0, 5000, cfg.max_items).tolist(), "target": int(rng.integers(5000))}
                for i in range(cfg.batch_size)]
        user_ids = [str(i) for i in range(cfg.batch_size)]
    vocab = SemanticIdVocab(level_sizes=sizes, num_user_buckets=cfg.user_buckets)
    collator = ExampleCollator(vocab=vocab, item_codes=codes, user_ids=user_ids if cfg.user_buckets else None,
                               max_items=cfg.max_items)
    return vocab, collator(rows)


def _time(step, warmup: int, steps: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out.append((time.perf_counter() - t0) / steps)
    return out


def main() -> None:
    from transformers import T5ForConditionalGeneration

    from sidrec.seqmodel import SemanticIdGenerator, build_t5_config
    from sidrec.train.common import make_accelerator
    from sidrec.train.generator import GeneratorTrainConfig, inverse_sqrt_lambda
    from sidrec.utils import config_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None)
    parser.add_argument("--config", default="generator/cpu-small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args, rest = parser.parse_known_args()
    cfg = config_from_args(GeneratorTrainConfig, args.config, rest)
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab, batch = _batch(args, cfg)
    config = build_t5_config(
        vocab=vocab, d_model=cfg.d_model, num_layers=cfg.num_layers, num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads, d_kv=cfg.d_kv, d_ff=cfg.d_ff, dropout_rate=cfg.dropout,
        feed_forward_proj=cfg.feed_forward_proj, max_items=cfg.max_items,
    )
    torch.manual_seed(0)
    ours = SemanticIdGenerator(config).train()
    plain = T5ForConditionalGeneration(config).train()
    plain.load_state_dict(ours.state_dict())

    accelerator = make_accelerator(seed=0, mixed_precision=cfg.mixed_precision)
    opt = torch.optim.AdamW(ours.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, inverse_sqrt_lambda(cfg.warmup_steps))
    ours_p, opt = accelerator.prepare(ours, opt)
    ours_batch = {k: v.to(accelerator.device) for k, v in batch.items()}

    def ours_step() -> None:
        loss = ours_p(**ours_batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(ours_p.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()

    plain_opt = torch.optim.AdamW(plain.parameters(), lr=cfg.lr)
    plain_batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    plain.to(accelerator.device)

    def plain_step() -> None:
        loss = plain(**plain_batch).loss
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad()

    b, s = batch["input_ids"].shape
    tokens = int(batch["attention_mask"].sum()) + b * vocab.num_levels  # encoder tokens + decoder targets
    rows = []
    times = {}
    # interleave repeats so both see the same machine load
    t_ours, t_plain = [], []
    for _ in range(args.repeats):
        t_ours += _time(ours_step, args.warmup, args.steps, 1)
        t_plain += _time(plain_step, args.warmup, args.steps, 1)
    for name, t in (("ours", t_ours), ("plain", t_plain)):
        med = statistics.median(t)
        times[name] = med
        rows.append((name, med, b / med, tokens / med))
    print(f"config={args.config} overrides={' '.join(rest) or '-'} batch={b} enc_len={s} levels={vocab.num_levels} "
          f"vocab={vocab.vocab_size} params={sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M "
          f"threads={torch.get_num_threads()} device={accelerator.device} repeats={args.repeats}x{args.steps} steps")
    print(f"{'loop':<6} {'s/step':>8} {'examples/s':>11} {'tokens/s':>10} {'vs plain':>9}")
    for name, med, ex, tok in rows:
        print(f"{name:<6} {med:8.3f} {ex:11.1f} {tok:10.0f} {times['plain'] / med:8.2f}x")
    print(f"examples_per_s={b / times['ours']:.1f} tokens_per_s={tokens / times['ours']:.0f} "
          f"speedup_vs_plain={times['plain'] / times['ours']:.3f}")


if __name__ == "__main__":
    main()
