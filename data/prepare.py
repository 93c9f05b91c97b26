"""Turn a :class:`RawDataset` into a :class:`PreparedDataset`: k-core, ID remapping, sequences, text."""

from __future__ import annotations

import difflib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from sidrec.data.dataset import PreparedDataset
from sidrec.data.readers import RawDataset
from sidrec.data.text import DEFAULT_TEMPLATE, render_item_text, template_fields, validate_template
from sidrec.utils.config import Range, Rule, Text

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

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "min_user_count": Range(0), "min_item_count": Range(0), "text_template": Text(),
    }

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
    from sidrec.utils.config import validate_config

    config = config or PrepareConfig()
    validate_config(config)
    _check_template_fields(raw, config.text_template)
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
    _check_item_ids(raw, item_ids)
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
    if n_no_text == len(texts):
        raise ValueError(
            f"{raw.source or raw.name}: no item has text under the template {config.text_template!r} (its fields "
            f"{template_fields(config.text_template)} are empty for all {len(texts)} items); use fields the item "
            f"metadata has: {', '.join(_metadata_fields(raw)) or '(none)'}"
        )
    if n_no_text:
        logger.warning("%d item(s) have no text in any template field; they stay in the catalog", n_no_text)
    return dataset, dropped


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
    """Item ids go into tab-separated tables (``semantic_ids.tsv``): no tab, newline or carriage return."""
    bad = [i for i in item_ids if any(c in i for c in "\t\n\r")]
    if bad:
        raise ValueError(
            f"{raw.source or raw.name}: {len(bad)} item id(s) contain a tab or line break (first: {bad[0]!r}); "
            "item ids are written to tab-separated tables, so rename those items"
        )


def _title(meta: dict) -> str | None:
    t = meta.get("title")
    return str(t).strip() if t not in (None, "") else None
