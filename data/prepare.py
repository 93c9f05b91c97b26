"""Turn a :class:`RawDataset` into a :class:`PreparedDataset`: k-core, ID remapping, sequences, text."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sidrec.data.cold import split_cold_items
from sidrec.data.dataset import FlatSequences, PreparedDataset
from sidrec.data.raw import RawDataset
from sidrec.data.text import DEFAULT_TEMPLATE, render_item_text, template_fields, validate_template
from sidrec.utils.config import Range, Rule, Text
from sidrec.utils.ids import bad_id_char, describe_char
from sidrec.utils.memory import paused_gc

logger = logging.getLogger(__name__)

MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs >= 1 training item + valid + test


@dataclass
class PrepareConfig:
    """How to prepare a raw dataset.

    min_user_count / min_item_count: iterative k-core filter (0 = off). Already-filtered benchmark data
    (e.g. Amazon 5-core, the bundled Beauty) needs none.
    text_template: ``"; "``-separated segments with ``{field}`` placeholders; segments whose fields are all
    missing are skipped.
    cold_items: share of the catalog held out as new (cold-start) items, 0 = off (``sidrec.data.cold``):
    the newest by first interaction (timestamps; else a random choice seeded by cold_seed) keep only the
    interactions that are a user's test target, and are numbered last. At most 0.5: the tokenizer and
    every model are fitted on the warm items (at 0.999 two warm items were left, and tokenize failed later).
    """

    min_user_count: int = 0
    min_item_count: int = 0
    text_template: str = DEFAULT_TEMPLATE
    cold_items: float = 0.0
    cold_seed: int = 0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "min_user_count": Range(0), "min_item_count": Range(0), "text_template": Text(),
        "cold_items": Range(0.0, 0.5), "cold_seed": Range(0),
    }

    def validate(self) -> None:
        if self.min_user_count < 0 or self.min_item_count < 0:
            raise ValueError("min_user_count and min_item_count must be >= 0")
        validate_template(self.text_template)


def _k_core(raw: RawDataset, keep: np.ndarray, alive: np.ndarray, min_user: int, min_item: int) -> None:
    """Iterative k-core on the row mask ``keep (n,)`` and user mask ``alive (U,)``, in place.

    Each round drops the items with fewer than ``min_item`` kept interactions, then the users left with
    fewer than ``max(min_user, 1)``; it stops when a round drops nothing.
    """
    users, items = raw.user_codes, raw.item_codes
    while True:
        counts = np.bincount(items[keep], minlength=len(raw.item_vocab))
        bad_items = (counts > 0) & (counts < min_item)
        if bad_items.any():
            keep &= ~bad_items[items]
        lengths = np.bincount(users[keep], minlength=len(raw.user_vocab))
        bad_users = alive & (lengths < max(min_user, 1))
        if bad_users.any():
            alive &= ~bad_users
            keep &= alive[users]
        if not bad_users.any() and not bad_items.any():
            return


def prepare(raw: RawDataset, config: PrepareConfig | None = None) -> tuple[PreparedDataset, dict[str, int]]:
    """Filter, remap and render ``raw``; returns the dataset and counts of what was dropped (also logged).

    Works on the int32 codes of ``raw`` (numpy masks and counts, no per-interaction Python objects) until
    the final sequences are built.
    """
    with paused_gc():
        return _prepare(raw, config)


def _prepare(raw: RawDataset, config: PrepareConfig | None) -> tuple[PreparedDataset, dict[str, int]]:
    """``prepare`` without the paused garbage collector."""
    from sidrec.utils.config import validate_config

    config = config or PrepareConfig()
    validate_config(config)
    _check_template_fields(raw, config.text_template)
    keep, alive, lengths, kcore_users, num_short = _filter_users(raw, config)
    flat, offsets, order, kept_users = _number_items(raw, keep, alive, lengths)
    cold_info: dict[str, int | float | str] = {}
    num_cold = 0
    if config.cold_items > 0:
        times = raw.times[keep] if raw.times is not None else None  # parallel to flat
        split = split_cold_items(flat, offsets, len(order), fraction=config.cold_items, seed=config.cold_seed,
                                 times=times)
        flat, offsets, order = split.flat, split.offsets, order[split.items]
        kept_users, num_cold, cold_info = kept_users[split.users], split.num_cold, split.info
    item_ids = [raw.item_vocab[i] for i in order.tolist()]
    sequences = FlatSequences(flat, offsets)  # lists are built on access: 240 MB at 30M, not 1.2 GB
    _check_item_ids(raw, item_ids)
    texts = [render_item_text(raw.item_meta[i], config.text_template) for i in item_ids]
    titles = [_title(raw.item_meta[i]) for i in item_ids]
    dataset = PreparedDataset(
        name=raw.name, item_ids=item_ids, item_texts=texts, item_titles=titles,
        user_ids=[raw.user_vocab[u] for u in kept_users.tolist()], sequences=sequences,
        text_template=config.text_template, source=raw.source, num_cold_items=num_cold,
        cold_method=str(cold_info.get("cold_method", "")),
    )
    in_catalog = set(item_ids)
    dropped = {
        "users_kcore": kcore_users,
        "users_too_short": num_short,
        "interactions": raw.num_interactions - int(offsets[-1]),
        "items_without_interactions": raw.meta_without_interactions
        + sum(1 for i in raw.item_meta if i not in in_catalog),
        **{k: v for k, v in cold_info.items() if k in ("cold_interactions_removed", "cold_users_too_short")},
    }
    if dropped["items_without_interactions"]:
        logger.info("%d item(s) in the metadata have no kept interaction and are not in the catalog",
                    dropped["items_without_interactions"])
    _check_texts(raw, config.text_template, texts)
    return dataset, dropped


def _filter_users(
    raw: RawDataset, config: PrepareConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """The k-core filter, then drop users too short for leave-one-out (logged); an error if none is left.

    Returns the kept-interaction mask ``(n,)``, the kept-user mask ``(U,)``, each user's number of kept
    interactions ``(U,)``, and how many users the k-core and the length rule dropped.
    """
    users = raw.user_codes  # (n,) grouped by user, users 0..U-1 in order
    n_users0 = len(raw.user_vocab)
    keep = np.ones(raw.num_interactions, dtype=bool)
    alive = np.ones(n_users0, dtype=bool)
    if config.min_user_count or config.min_item_count:
        _k_core(raw, keep, alive, config.min_user_count, config.min_item_count)
    kcore_users = n_users0 - int(alive.sum())
    lengths = np.bincount(users[keep], minlength=n_users0)
    short = np.flatnonzero(alive & (lengths < MIN_SEQUENCE_LENGTH))
    if len(short):
        alive[short] = False
        keep &= alive[users]
        logger.warning(
            "dropped %d user(s) with fewer than %d interactions (leave-one-out needs a training item, a "
            "validation item and a test item), e.g. user %r", len(short), MIN_SEQUENCE_LENGTH,
            raw.user_vocab[short[0]],
        )
    if not alive.any():
        raise ValueError(
            f"{raw.source or raw.name}: no user has {MIN_SEQUENCE_LENGTH} or more interactions after filtering; "
            "lower min_user_count/min_item_count or add data"
        )
    return keep, alive, lengths, kcore_users, len(short)


def _number_items(
    raw: RawDataset, keep: np.ndarray, alive: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kept sequences as flat item indices ``(m,)`` + offsets ``(U' + 1,)``, the raw item code of each
    index ``(N,)`` and the kept users ``(U',)``.

    Items are numbered by first appearance in the kept sequences, so the numbering is reproducible.
    """
    kept = raw.item_codes[keep]  # (m,) raw item codes in sequence order
    order = pc.unique(pa.array(kept)).to_numpy()  # raw item codes by first appearance (hash-based, O(m))
    new_index = np.full(len(raw.item_vocab), -1, dtype=np.int64)
    new_index[order] = np.arange(len(order))
    flat = new_index[kept]  # (m,) item indices
    del kept
    kept_users = np.flatnonzero(alive)
    offsets = np.zeros(len(kept_users) + 1, dtype=np.int64)
    np.cumsum(lengths[kept_users], out=offsets[1:])
    return flat, offsets, order, kept_users


def _check_texts(raw: RawDataset, template: str, texts: list[str]) -> None:
    """An error when no item has text under ``template``; a warning naming how many items have none."""
    n_no_text = sum(1 for t in texts if not t)
    if n_no_text == len(texts):
        raise ValueError(
            f"{raw.source or raw.name}: no item has text under the template {template!r} (its fields "
            f"{template_fields(template)} are empty for all {len(texts)} items); use fields the item "
            f"metadata has: {', '.join(_metadata_fields(raw)) or '(none)'}"
        )
    if n_no_text:
        logger.warning("%d item(s) have no text in any template field; they stay in the catalog", n_no_text)


def _metadata_fields(raw: RawDataset) -> list[str]:
    """Every field name that some item's metadata holds (besides ``item_id``)."""
    names: set[str] = set()
    for meta in raw.item_meta.values():
        names.update(meta)
    names.discard("item_id")
    return sorted(names)


def _check_template_fields(raw: RawDataset, template: str) -> None:
    """A field a custom template names must exist in some item's metadata (a typo would leave items textless).

    The default template names fields (brand, price, ...) that many datasets lack; its segments are skipped
    quietly, so only a template the user gave is checked.
    """
    if template == DEFAULT_TEMPLATE:
        return
    known = _metadata_fields(raw)
    unknown = [f for f in template_fields(template) if f not in known]
    if unknown:
        hints = [f"{u!r} -> {m[0]!r}" for u in unknown if (m := difflib.get_close_matches(u, known, n=1))]
        did = f" Did you mean {', '.join(hints)}?" if hints else ""
        raise ValueError(
            f"text template field(s) {', '.join(repr(u) for u in unknown)} appear in no item of "
            f"{raw.source or raw.name}.{did} Fields the item metadata has: {', '.join(known) or '(none)'}"
        )


def _check_item_ids(raw: RawDataset, item_ids: list[str]) -> None:
    """Item ids go into line-based tables (``semantic_ids.tsv``, ``catalog.jsonl``): no tab and no character
    that ``str.splitlines`` breaks at (``sidrec.utils.ids``)."""
    bad = [i for i in item_ids if bad_id_char(i) is not None]
    if bad:
        raise ValueError(
            f"{raw.source or raw.name}: {len(bad)} item id(s) contain a tab or a line-break character (first: "
            f"{bad[0]!r}, with {describe_char(bad_id_char(bad[0]))}); item ids are written to line-based, "
            "tab-separated tables, so rename those items"
        )


def _title(meta: dict) -> str | None:
    t = meta.get("title")
    return str(t).strip() if t not in (None, "") else None
