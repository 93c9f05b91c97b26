"""Fit the semantic-ID tokenizer: ``python -m sidrec.train.tokenizer --run RUN [--config tokenizer/rqvae]``.

Also runs as ``accelerate launch -m sidrec.train.tokenizer --run RUN`` and ``sidrec tokenize --run RUN``.
Reads ``RUN/dataset`` (``sidrec prepare``), embeds the item texts (cached in ``RUN/cache``; the main
process embeds first, the others then read the cache), fits the configured quantizer, resolves
collisions and writes ``RUN/tokenizer/`` atomically: config.json, model.safetensors, semantic_ids.tsv,
stats.json. Any ``TokenizerConfig`` field can be overridden as ``--field value``. An existing
``RUN/tokenizer`` is replaced only with ``--overwrite``; when the new table differs, the stages trained on
the old one (``RUN/generator``, its states) are named: their loaders now refuse them.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from sidrec.data import PreparedDataset
from sidrec.tokenizer import SemanticIdTokenizer, TokenizerConfig, embed_texts
from sidrec.utils import atomic_dir, config_from_args, configure_logging, read_json, validate_config
from sidrec.utils.locks import stage_lock
from sidrec.utils.run_folder import RunFolder, later_stages_present, refuse_existing

logger = logging.getLogger(__name__)


def _old_table(run: Path) -> dict | None:
    """The ``table`` record of the tokenizer in ``run`` (None when there is none or it is unreadable)."""
    try:
        meta = read_json(RunFolder(run).tokenizer_dir / "config.json")
    except ValueError:
        return None
    return meta.get("table") if isinstance(meta, dict) else None


#: ``cf_from`` values: the run-folder model whose item vectors can go into the codes
CF_SOURCES = ("baselines/sasrec",)


def collaborative_vectors(run: RunFolder, source: str, dataset) -> tuple[np.ndarray, np.ndarray, dict]:
    """``cf (N, Dc)`` item vectors of the trained ID model ``source`` (``CF_SOURCES``), ``known (N,)`` (the
    items it actually learned: seen in training, not held out) and the provenance record of the model."""
    if source not in CF_SOURCES:
        raise ValueError(f"cf_from {source!r} is not a collaborative source; use one of {', '.join(CF_SOURCES)} "
                         "(train it first: sidrec sasrec --run RUN), or '' for text-only codes")
    model = run.sasrec(dataset_fingerprint=dataset.fingerprint())
    weights = model.item_emb.weight.detach().cpu().numpy()[1 : dataset.num_items + 1].astype(np.float32)  # (N, Dc)
    known = dataset.train_item_counts() > 0
    if dataset.num_cold_items:
        known &= ~dataset.cold_items
    record = {"from": source, "model": str(run.sasrec_dir), "dim": int(weights.shape[1]),
              "weights_fingerprint": hashlib.sha256(weights.tobytes()).hexdigest()[:16],
              "created": (model.provenance or {}).get("created"), "known_items": int(known.sum())}
    logger.info("collaborative codes: %s item vectors (%d dims) for %d of %d items; the rest predicted from text",
                source, weights.shape[1], int(known.sum()), len(known))
    return weights, known, record


def fit_run_tokenizer(run: str | Path, config: TokenizerConfig, *, accelerator=None,
                      overwrite: bool = False) -> SemanticIdTokenizer:
    """Embed ``RUN``'s items, fit the tokenizer and (on the main process) write ``RUN/tokenizer``.

    With a cold-start split the quantizer is fitted on the warm items only and the cold ones get their IDs
    through ``assign`` afterwards, as items added after training would. An existing ``RUN/tokenizer`` is an
    error unless ``overwrite``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    validate_config(config)
    run = Path(run)
    refuse_existing(run, "tokenize", overwrite=overwrite)
    old_table = _old_table(run)
    accelerator = accelerator or Accelerator()
    set_seed(config.seed)
    dataset = PreparedDataset.load(run)
    t0 = time.perf_counter()
    with accelerator.main_process_first():
        emb = embed_texts(dataset.item_texts, model_name=config.embedding_model, template=dataset.text_template,
                          cache_dir=RunFolder(run).cache_dir, batch_size=config.embedding_batch_size,
                          show_progress=accelerator.is_local_main_process)
    embed_seconds = time.perf_counter() - t0
    warm = dataset.num_items - dataset.num_cold_items  # a cold-start split numbers its held-out items last
    cf = known = cf_record = None
    if config.cf_from:
        cf, known, cf_record = collaborative_vectors(RunFolder(run), config.cf_from, dataset)
        cf, known = cf[:warm], known[:warm]
    tok = SemanticIdTokenizer.fit(item_ids=dataset.item_ids[:warm], embeddings=emb[:warm], config=config,
                                  text_template=dataset.text_template, accelerator=accelerator, cf=cf, cf_known=known)
    tok.stats["cf_source"] = cf_record
    if dataset.num_cold_items:  # new items get their IDs the way production gives them: after the fit
        tok.assign_embeddings(dataset.item_ids[warm:], emb[warm:])
        tok.stats["cold_items_assigned"] = dataset.num_cold_items
        logger.info("fitted on %d warm items; %d cold items got IDs through assign()", warm, dataset.num_cold_items)
    tok.stats["embed_seconds"] = embed_seconds
    tok.stats["dataset_fingerprint"] = dataset.fingerprint()
    if accelerator.is_main_process:
        with atomic_dir(RunFolder(run).tokenizer_dir) as tmp:
            tok.save_pretrained(tmp)
        logger.info("wrote %s", RunFolder(run).tokenizer_dir)
        later = later_stages_present(run, "tokenize")
        new_table = tok.table_record()
        if old_table is not None and later:
            if old_table.get("fingerprint") == new_table["fingerprint"]:
                logger.info("the semantic-ID table is unchanged (%s): %s still match it", new_table["fingerprint"],
                            ", ".join(later))
            else:
                logger.warning("the semantic-ID table changed (%s -> %s); trained on the old one and now refused "
                               "by their loaders: %s. Retrain: sidrec train --run %s --overwrite",
                               old_table.get("fingerprint", "unknown"), new_table["fingerprint"], ", ".join(later), run)
    accelerator.wait_for_everyone()
    return tok


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m sidrec.train.tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder holding dataset/ (from `sidrec prepare`)")
    parser.add_argument("--config", default="tokenizer/rqvae", help="preset name (tokenizer/rqvae, "
                        "tokenizer/rqkmeans, tokenizer/fsq, tokenizer/opq) or YAML path")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing RUN/tokenizer (a generator trained on the old IDs is then refused)")
    args, rest = parser.parse_known_args(argv)
    configure_logging()
    config = config_from_args(TokenizerConfig, args.config, rest)
    with stage_lock(args.run, "tokenize"):  # one writer per stage: a second `tokenize` of this run refuses
        tok = fit_run_tokenizer(args.run, config, overwrite=args.overwrite)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    s = tok.stats
    print(f"method={s['method']} items={s['num_items']} unique_before_collision={s['unique_before_collision']:.4f} "
          f"max_collision_group={s['max_collision_group']} level_usage={[round(u, 3) for u in s['level_usage']]} "
          f"recon_cosine={s['recon_cosine']:.4f} fit_seconds={s['fit_seconds']:.1f} "
          f"embed_seconds={s['embed_seconds']:.1f} out={Path(args.run) / 'tokenizer'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
