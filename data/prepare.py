"""Turn a :class:`RawDataset` into a :class:`PreparedDataset`: k-core, ID remapping, sequences, text."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from sidrec.data.dataset import PreparedDataset
from sidrec.data.readers import RawDataset
from sidrec.data.text import DEFAULT_TEMPLATE, render_item_text, validate_template

logger = logging.getLogger(__name__)

MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs >= 1 training item + valid + test


@dataclass
class PrepareConfig:
    """How to prepare a raw dataset.

    min_user_count / min_item_count: iterative k-core filter (0 = off). Already-filtered benchmark data
    (e.g. Amazon 5-core, the bundled Beauty) needs none.
    text_template: ``"; "``-separated segments with ``{field}`` placeholders; segments whose fields are all
    missing are skipped.
    """

    min_user_count: int = 0
    min_item_count: int = 0
    text_template: str = DEFAULT_TEMPLATE

    def validate(self) -> None:
        if self.min_user_count < 0 or self.min_item_count < 0:
            raise ValueError("min_user_count and min_item_count must be >= 0")
        validate_template(self.text_template)


def _k_core(seqs: dict[str, list[str]], min_user: int, min_item: int) -> dict[str, list[str]]:
    while True:
        counts = Counter(i for s in seqs.values() for i in s)
        bad_items = {i for i, c in counts.items() if c < min_item}
        new = {u: [i for i in s if i not in bad_items] for u, s in seqs.items()} if bad_items else seqs
        new = {u: s for u, s in new.items() if len(s) >= max(min_user, 1)}
        if len(new) == len(seqs) and not bad_items:
            return new
        seqs = new


def prepare(raw: RawDataset, config: PrepareConfig | None = None) -> tuple[PreparedDataset, dict[str, int]]:
    """Filter, remap and render ``raw``; returns the dataset and counts of what was dropped (also logged)."""
    config = config or PrepareConfig()
    config.validate()
    seqs: dict[str, list[str]] = {}
    for u, i in zip(raw.users, raw.items, strict=True):
        seqs.setdefault(u, []).append(i)
    n_users0, n_inter0 = len(seqs), len(raw.items)
    if config.min_user_count or config.min_item_count:
        seqs = _k_core(seqs, config.min_user_count, config.min_item_count)
    kcore_users = n_users0 - len(seqs)
    short = [u for u, s in seqs.items() if len(s) < MIN_SEQUENCE_LENGTH]
    for u in short:
        del seqs[u]
    if short:
        logger.warning(
            "dropped %d user(s) with fewer than %d interactions (leave-one-out needs a training item, a "
            "validation item and a test item), e.g. user %r", len(short), MIN_SEQUENCE_LENGTH, short[0],
        )
    if not seqs:
        raise ValueError(
            f"{raw.source or raw.name}: no user has {MIN_SEQUENCE_LENGTH} or more interactions after filtering; "
            "lower min_user_count/min_item_count or add data"
        )
    # Items are numbered by first appearance in the kept sequences, so the numbering is reproducible.
    item_ids: list[str] = []
    index: dict[str, int] = {}
    for s in seqs.values():
        for i in s:
            if i not in index:
                index[i] = len(item_ids)
                item_ids.append(i)
    texts = [render_item_text(raw.item_meta[i], config.text_template) for i in item_ids]
    titles = [_title(raw.item_meta[i]) for i in item_ids]
    dataset = PreparedDataset(
        name=raw.name, item_ids=item_ids, item_texts=texts, item_titles=titles, user_ids=list(seqs),
        sequences=[[index[i] for i in s] for s in seqs.values()], text_template=config.text_template,
        source=raw.source,
    )
    dropped = {
        "users_kcore": kcore_users,
        "users_too_short": len(short),
        "interactions": n_inter0 - dataset.num_interactions,
        "items_without_interactions": len(raw.item_meta.keys() - index.keys()),
    }
    if dropped["items_without_interactions"]:
        logger.info("%d item(s) in the metadata have no kept interaction and are not in the catalog",
                    dropped["items_without_interactions"])
    n_no_text = sum(1 for t in texts if not t)
    if n_no_text:
        logger.warning("%d item(s) have no text in any template field; they stay in the catalog", n_no_text)
    return dataset, dropped


def _title(meta: dict) -> str | None:
    t = meta.get("title")
    return str(t).strip() if t not in (None, "") else None
