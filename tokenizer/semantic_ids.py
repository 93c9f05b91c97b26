"""``SemanticIdTokenizer``: the item -> semantic-ID table plus the quantizer that made it.

``codes`` is ``int64 (N, L)``: ``L - 1`` semantic levels from the quantizer and a last collision level
(0 for items whose semantic prefix is unique; 0..n-1 inside a group of n items sharing it). Row ``i``
belongs to ``item_ids[i]`` (= item index ``i`` of the prepared dataset). ``level_sizes[-1]`` is the
collision level's size, ``max(largest group, config.collision_min_size)``; the headroom above the
largest group is what ``assign`` can use for cold-start items landing in an existing group.

Folder layout (``save_pretrained``): ``config.json`` (tokenizer config, quantizer config, embedding model
and text template, and ``table``: the row count and fingerprint of the ID table, checked on load),
``model.safetensors`` (quantizer tensors), ``semantic_ids.tsv`` (``item_id<TAB>c0 c1 ..``) and
``stats.json`` (fit statistics; ``dataset_fingerprint``: the prepared dataset it was fitted on).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.tokenizer.base import Quantizer, build_quantizer
from sidrec.tokenizer.collisions import (
    SPREAD_CANDIDATES,
    append_collision_level,
    collision_level_size,
    reassign_last_level,
    spread_large_groups,
)
from sidrec.tokenizer.config import TokenizerConfig
from sidrec.tokenizer.embeddings import check_embeddings, embed_texts
from sidrec.tokenizer.features import CollaborativeFeatures
from sidrec.tokenizer.sizing import code_space_warning, resolve_sizes
from sidrec.tokenizer.stats import decoded_cosine, tokenizer_stats
from sidrec.utils import (
    atomic_write_json,
    atomic_write_text,
    config_to_dict,
    load_config,
    load_safetensors,
    read_json,
)
from sidrec.utils.ids import bad_id_char, describe_char, split_lines
from sidrec.utils.io import save_tensors
from sidrec.utils.memory import paused_gc
from sidrec.utils.provenance import check_table, table_record
from sidrec.utils.threads import torch_threads

logger = logging.getLogger(__name__)

FORMAT = "sidrec.semantic_ids"
FORMAT_VERSION = 1
TABLE_FILE = "semantic_ids.tsv"
FEATURES_FILE = "features.safetensors"
PLAN_CHUNK = 1024  # new items embedded and given codes at a time (a full catalog is refused after one chunk)

NewItem = Mapping[str, Any] | tuple[str, str]


def _reassign(prefix: np.ndarray, cands: np.ndarray, config: TokenizerConfig,
              last_level_size: int) -> tuple[np.ndarray, int, int]:
    """The ``reassign`` strategy: free next-best codes, then spreading of groups over the cap.

    ``cands (N, k)``: every item's last-level codes, nearest first (``encode_with_candidates``).
    Returns the new prefix ``(N, L-1)``, the items moved to a free code and the items moved by spreading.
    """
    prefix, moved = reassign_last_level(prefix, cands[:, :config.reassign_candidates])
    prefix, spread = spread_large_groups(prefix, cands, max_group=config.max_collision_group,
                                         last_level_size=last_level_size)
    return prefix, moved, spread


def _quantizer_input(text: np.ndarray, config: TokenizerConfig, cf: np.ndarray | None, known: np.ndarray | None
                     ) -> tuple[np.ndarray, CollaborativeFeatures | None, dict[str, Any] | None]:
    """What the quantizer is fitted on: the text embedding, or text + collaborative vectors (then also the
    fitted ``CollaborativeFeatures`` and their fit info)."""
    if cf is None:
        return text, None, None
    features = CollaborativeFeatures(cf_weight=config.cf_weight, ridge=config.cf_ridge)
    known = np.ones(len(text), dtype=bool) if known is None else np.asarray(known, dtype=bool)
    info = features.fit(text, cf, known)
    return features.transform(text, cf, known), features, info


class SemanticIdTokenizer:
    """Semantic IDs of a catalog: ``item_ids``, ``codes (N, L)``, ``level_sizes``, the fitted quantizer."""

    def __init__(
        self, *, item_ids: Sequence[str], codes: np.ndarray, level_sizes: Sequence[int], quantizer: Quantizer,
        config: TokenizerConfig, text_template: str = "", stats: dict[str, Any] | None = None,
        features: CollaborativeFeatures | None = None,
    ) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        self.features = features  # text (+ collaborative) -> quantizer input; None = the text embedding itself
        self.item_ids: list[str] = [str(i) for i in item_ids]
        self.level_sizes: list[int] = [int(k) for k in level_sizes]
        self.quantizer = quantizer
        self.config = config
        self.text_template = text_template
        self.stats: dict[str, Any] = dict(stats or {})
        if codes.ndim != 2 or codes.shape != (len(self.item_ids), len(self.level_sizes)):
            raise ValueError(f"codes have shape {codes.shape}; expected ({len(self.item_ids)}, {len(self.level_sizes)})"
                             " = (number of item_ids, number of level_sizes)")
        if self.level_sizes[:-1] != quantizer.level_sizes:
            raise ValueError(f"level_sizes {self.level_sizes} do not start with the quantizer's {quantizer.level_sizes}")
        if (codes < 0).any() or (codes >= np.asarray(self.level_sizes)).any():
            raise ValueError(f"codes out of range for level_sizes {self.level_sizes}")
        self._index: dict[str, int] = {}
        for i, item in enumerate(self.item_ids):
            if item in self._index:
                raise ValueError(f"item_id {item!r} appears twice (rows {self._index[item]} and {i}); ids must be unique")
            self._index[item] = i
        self.codes = codes
        self._by_code: dict[tuple[int, ...], int] = {}
        for i, row in enumerate(map(tuple, codes.tolist())):
            if row in self._by_code:
                raise ValueError(f"items {self.item_ids[self._by_code[row]]!r} and {self.item_ids[i]!r} share "
                                 f"semantic ID {row}; every full ID must be unique")
            self._by_code[row] = i

    # -- sizes and lookups ------------------------------------------------------------------------
    @property
    def text_dim(self) -> int:
        """Width of the item text embeddings this tokenizer reads (the embedding model's)."""
        return self.features.text_dim if self.features is not None else int(self.quantizer.input_dim)

    def quantizer_input(self, text: np.ndarray) -> np.ndarray:
        """What the quantizer encodes for items known only by their text embedding ``(N, text_dim)``: the text
        itself, or text + a collaborative vector predicted from it (``CollaborativeFeatures``)."""
        return text if self.features is None else self.features.transform(text)

    @property
    def num_fitted_items(self) -> int:
        """Rows the quantizer was fitted on (the first ones); later rows came from ``assign`` (new items)."""
        return int(self.stats.get("num_items", self.num_items))

    def assigned_items(self) -> np.ndarray:
        """``bool (N,)``: True for rows added by ``assign`` after the fit (cold-start items)."""
        mask = np.zeros(self.num_items, dtype=bool)
        mask[self.num_fitted_items :] = True
        return mask

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_levels(self) -> int:
        """Levels per ID including the collision level."""
        return len(self.level_sizes)

    def index_of(self, item_id: str) -> int:
        """Row of ``item_id``; ``KeyError`` if unknown."""
        return self._index[item_id]

    def item_for_codes(self, codes: Sequence[int]) -> int | None:
        """Row whose full ID is ``codes``, or None."""
        return self._by_code.get(tuple(int(c) for c in codes))

    # -- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, *, item_ids: Sequence[str], embeddings: np.ndarray, config: TokenizerConfig,
        text_template: str = "", accelerator: Any = None, cf: np.ndarray | None = None,
        cf_known: np.ndarray | None = None,
    ) -> SemanticIdTokenizer:
        """Fit ``config.method`` on ``embeddings (N, D)``, resolve collisions, compute stats.

        ``cf (N, Dc)``: collaborative item vectors (e.g. SASRec's) to quantize with the text (``cf_known``:
        ``bool (N,)`` rows that have one; the others get one predicted from their text; see
        ``sidrec.tokenizer.features``). A null ``config.codebook_size`` is sized to the catalog
        (``sidrec.tokenizer.sizing``); the stored config holds the resolved size. A code space too small for
        the catalog is logged as a warning (also in ``stats["code_space_warning"]``).
        """
        with paused_gc():  # the collision passes and the ID table build millions of small tuples
            return cls._fit(item_ids=item_ids, embeddings=embeddings, config=config, text_template=text_template,
                            accelerator=accelerator, cf=cf, cf_known=cf_known)

    @classmethod
    def _fit(cls, *, item_ids: Sequence[str], embeddings: np.ndarray, config: TokenizerConfig,
             text_template: str, accelerator: Any, cf: np.ndarray | None = None,
             cf_known: np.ndarray | None = None) -> SemanticIdTokenizer:
        start = time.perf_counter()
        text = check_embeddings(embeddings, what="item embeddings")
        if len(text) != len(item_ids):
            raise ValueError(f"{len(item_ids)} item_ids but {len(text)} embedding rows; they must match row for row")
        if len(text) == 0:
            raise ValueError("no items to tokenize; the catalog is empty")
        emb, features, cf_info = _quantizer_input(text, config, cf, cf_known)
        explicit = config.codebook_size is not None or config.method == "fsq"
        config = resolve_sizes(config, len(emb))
        quantizer = build_quantizer(config)
        with torch_threads(config.torch_threads):
            t0 = time.perf_counter()
            info = quantizer.fit(emb, accelerator=accelerator)
            fit_seconds = time.perf_counter() - t0
            moved = spread = 0
            if config.collision_strategy == "reassign":
                k = max(config.reassign_candidates, SPREAD_CANDIDATES)
                prefix, cands = quantizer.encode_with_candidates(emb, k)  # (N, L-1), (N, k)
                plain = prefix
                prefix, moved, spread = _reassign(prefix, cands, config, quantizer.level_sizes[-1])
                del cands
            else:
                prefix = quantizer.encode(emb)  # (N, L-1)
                plain = prefix
        coll = append_collision_level(prefix)
        sizes = [*quantizer.level_sizes, collision_level_size(coll, config.collision_min_size)]
        recon = decoded_cosine(emb, prefix, quantizer.decode)
        plain_stats = tokenizer_stats(method=config.method, prefix=plain, level_sizes=quantizer.level_sizes,
                                      collision_level_size=sizes[-1], recon_cosine=0.0, fit_seconds=0.0)
        recon_plain = recon if moved + spread == 0 else decoded_cosine(emb, plain, quantizer.decode)
        stats = tokenizer_stats(
            method=config.method, prefix=prefix, level_sizes=quantizer.level_sizes, collision_level_size=sizes[-1],
            recon_cosine=recon, fit_seconds=fit_seconds,
            extra={"collision_strategy": config.collision_strategy, "reassigned_items": int(moved),
                   "spread_items": int(spread), "codebook_size_source": "explicit" if explicit else "catalog",
                   "unique_before_collision_plain": plain_stats["unique_before_collision"],
                   "max_collision_group_plain": plain_stats["max_collision_group"],
                   "recon_cosine_plain": recon_plain,
                   "embedding_model": config.embedding_model, "embedding_dim": int(text.shape[1]),
                   "quantizer_input_dim": int(emb.shape[1]), "collaborative": cf_info,
                   "seed": config.seed, "train_info": info},
        )
        warning = code_space_warning(config=config, num_items=len(emb), explicit=explicit, stats=stats)
        stats["code_space_warning"] = warning
        if warning:
            logger.warning("!" * 20 + " %s", warning)
        stats["tokenize_seconds"] = time.perf_counter() - start
        logger.info("tokenizer %s: %d items, level sizes %s, unique_before_collision %.4f, max group %d, "
                    "recon cos %.4f, fit %.1fs, total %.1fs", config.method, len(emb), sizes,
                    stats["unique_before_collision"], stats["max_collision_group"], recon, fit_seconds,
                    stats["tokenize_seconds"])
        codes = np.concatenate([prefix, coll[:, None]], axis=1)  # (N, L)
        return cls(item_ids=item_ids, codes=codes, level_sizes=sizes, quantizer=quantizer, config=config,
                   text_template=text_template, stats=stats, features=features)

    # -- cold start ---------------------------------------------------------------------------
    def assign(self, new_items: Iterable[NewItem], *, cache_dir: str | os.PathLike | None = None,
               show_progress: bool = False) -> np.ndarray:
        """Give IDs to items not in the table; returns their codes ``(M, L)`` and appends the rows.

        ``new_items``: dicts with ``item_id`` plus metadata fields (rendered with the fitted template,
        ``sidrec.data.render_item_text``) or ``(item_id, text)`` pairs with the text already rendered.
        They are embedded with the fitted model, encoded with the fitted quantizer, and their collisions
        are resolved against the existing table; existing IDs never change. With ``collision_strategy
        = "reassign"`` a new item first tries its next-best free last-level codes. ``stats`` describe the
        fit and are not recomputed. ``ValueError`` (and no change) for an existing or repeated item_id,
        or when a group would outgrow the collision level.
        """
        ids, _, codes = self.plan_new_items(new_items, cache_dir=cache_dir, show_progress=show_progress)
        self.append_items(ids, codes)
        return codes

    def plan_new_items(self, new_items: Iterable[NewItem], *, cache_dir: str | os.PathLike | None = None,
                       show_progress: bool = False, chunk: int = PLAN_CHUNK) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(ids, embeddings (M, D), codes (M, L))`` for new items; the table is unchanged.

        Embeds and plans ``chunk`` items at a time, each chunk against the table and the chunks before it, so
        that a catalog that cannot take the items is refused after the chunk that overflows, not after
        embedding all of them."""
        ids, texts = self._parse_new_items(new_items)
        embs: list[np.ndarray] = []
        codes: list[np.ndarray] = []
        for start in range(0, len(ids), chunk):
            emb = embed_texts(texts[start : start + chunk], model_name=self.config.embedding_model,
                              template=self.text_template, cache_dir=cache_dir,
                              batch_size=self.config.embedding_batch_size, show_progress=show_progress)
            pending = np.concatenate(codes) if codes else None
            codes.append(self.plan_codes(ids[start : start + chunk], emb, pending=pending))
            embs.append(emb)
        if not ids:
            return [], np.zeros((0, self.text_dim), dtype=np.float32), np.zeros((0, self.num_levels), dtype=np.int64)
        return ids, np.concatenate(embs), np.concatenate(codes)

    def embed_new_items(self, new_items: Iterable[NewItem], *, cache_dir: str | os.PathLike | None = None,
                        show_progress: bool = False) -> tuple[list[str], np.ndarray]:
        """``(ids, embeddings (M, D))`` of items not in the table, embedded as the fit was (same model and
        template); nothing is assigned. ``assign`` = this + ``assign_embeddings``; a caller that also needs
        the embeddings (a generator that reads item text) calls the two itself."""
        ids, texts = self._parse_new_items(new_items)
        if not ids:
            return [], np.zeros((0, self.text_dim), dtype=np.float32)
        emb = embed_texts(texts, model_name=self.config.embedding_model, template=self.text_template,
                          cache_dir=cache_dir, batch_size=self.config.embedding_batch_size,
                          show_progress=show_progress)
        return ids, emb

    def _parse_new_items(self, new_items: Iterable[NewItem]) -> tuple[list[str], list[str]]:
        ids: list[str] = []
        texts: list[str] = []
        for n, item in enumerate(new_items):
            if isinstance(item, Mapping):
                if "item_id" not in item:
                    raise ValueError(f"new item #{n} has no 'item_id' key; give dicts with item_id + text fields")
                from sidrec.data import render_item_text

                ids.append(_new_item_id(item["item_id"], n))
                texts.append(render_item_text(item, self.text_template or None))
            elif isinstance(item, tuple | list) and len(item) == 2:
                ids.append(_new_item_id(item[0], n))
                texts.append(str(item[1]))
            else:
                raise ValueError(f"new item #{n} is {type(item).__name__}; give a dict with item_id + fields "
                                 "or an (item_id, text) pair")
        self._check_new_ids(ids)
        empty = [i for i, t in zip(ids, texts, strict=True) if not t.strip()]
        if empty:
            logger.warning("%d new item(s) have no text (e.g. %r): each is embedded as an empty string, so its "
                           "semantic ID says nothing about it; give fields of the template (%s)", len(empty),
                           empty[0], self.text_template or "title, ...")
        return ids, texts

    def _check_new_ids(self, ids: Sequence[str]) -> None:
        seen: set[str] = set()
        for n, item in enumerate(ids):
            _new_item_id(item, n)
            if item in self._index:
                raise ValueError(f"item_id {item!r} already has a semantic ID (row {self._index[item]}); "
                                 "assign() only adds new items")
            if item in seen:
                raise ValueError(f"item_id {item!r} appears twice among the new items")
            seen.add(item)

    def assign_embeddings(self, item_ids: Sequence[str], embeddings: np.ndarray) -> np.ndarray:
        """``assign`` for items already embedded (``(M, D)``, same model as the fit)."""
        ids = [_new_item_id(i, n) for n, i in enumerate(item_ids)]
        codes = self.plan_codes(ids, embeddings)
        self.append_items(ids, codes)
        return codes

    def plan_codes(self, item_ids: Sequence[str], embeddings: np.ndarray, *,
                   pending: np.ndarray | None = None) -> np.ndarray:
        """The codes ``(M, L)`` that ``assign_embeddings`` would give these new items; the table is unchanged.

        A caller that must record the codes before the catalog changes (a server's change log) plans, records,
        then applies them with ``append_items``. ``pending``: codes planned for other new items, not appended
        yet, that these must not collide with. An item whose own collision group is full goes to the nearest
        of its ``reassign_candidates`` last-level codes whose group has room (counted in the log); only when
        none has room is the whole call refused."""
        ids = [_new_item_id(i, n) for n, i in enumerate(item_ids)]
        self._check_new_ids(ids)
        emb = check_embeddings(embeddings, dim=self.text_dim, what="new item embeddings")
        if len(emb) != len(ids):
            raise ValueError(f"{len(ids)} new item_ids but {len(emb)} embedding rows")
        emb = self.quantizer_input(emb)  # + a collaborative vector predicted from the text, when the codes carry one
        prefix = self.quantizer.encode(emb)  # (M, L-1)
        cands = self.quantizer.last_level_candidates(emb, self.config.reassign_candidates)  # (M, C), col 0 = own
        next_free: dict[tuple[int, ...], int] = {}
        taken = self.codes if pending is None or not len(pending) else np.concatenate([self.codes, pending])
        for row in map(tuple, taken.tolist()):
            head = row[:-1]
            next_free[head] = max(next_free.get(head, 0), row[-1] + 1)
        cap, moved = self.level_sizes[-1], 0
        reassign = self.config.collision_strategy == "reassign"
        new_codes = np.zeros((len(ids), self.num_levels), dtype=np.int64)
        for i in range(len(ids)):
            own = tuple(prefix[i].tolist())
            alts = [(*own[:-1], int(c)) for c in cands[i].tolist()]  # nearest last-level codes first
            head = next((a for a in alts if a not in next_free), own) if reassign else own  # a free prefix
            if next_free.get(head, 0) >= cap:  # its group is full: the nearest group with room
                head = next((a for a in alts if next_free.get(a, 0) < cap), None)
                if head is None:
                    raise ValueError(
                        f"new item {ids[i]!r}: its semantic group {own} and its {len(alts) - 1} nearest ones are "
                        f"full (the collision level holds {cap}); nothing was added. Refit the tokenizer with a "
                        "larger --collision-min-size (or more levels), or raise --reassign-candidates")
                moved += 1
            idx = next_free.get(head, 0)
            next_free[head] = idx + 1
            new_codes[i] = (*head, idx)
        if moved:
            logger.info("%d new item(s) found their own semantic group full and took the nearest one with room",
                        moved)
        return new_codes

    def append_items(self, item_ids: Sequence[str], codes: np.ndarray) -> None:
        """Append new rows with given codes ``(M, L)`` (from ``plan_codes``, or replayed from a change log).

        ``ValueError`` and no change when an id is taken or repeated, or a code is out of range or already
        some item's semantic ID."""
        ids = [_new_item_id(i, n) for n, i in enumerate(item_ids)]
        self._check_new_ids(ids)
        codes = np.asarray(codes, dtype=np.int64).reshape(len(ids), -1)
        if codes.shape[1] != self.num_levels or (codes < 0).any() or (codes >= np.asarray(self.level_sizes)).any():
            raise ValueError(f"new codes must be ({len(ids)}, {self.num_levels}) within level sizes "
                             f"{self.level_sizes}; got shape {codes.shape}")
        rows = [tuple(r) for r in codes.tolist()]
        taken = [r for r in rows if r in self._by_code]
        if taken or len(set(rows)) != len(rows):
            raise ValueError(f"new codes {taken[0] if taken else 'repeat'}: every full semantic ID must be unique; "
                             "plan them with plan_codes() against the current table")
        start = self.num_items  # only now mutate, so a failure above leaves the table untouched
        for i, item in enumerate(ids):
            self._index[item] = start + i
            self._by_code[rows[i]] = start + i
        self.item_ids.extend(ids)
        self.codes = np.concatenate([self.codes, codes], axis=0)
        logger.info("assigned semantic IDs to %d new items (%d total)", len(ids), self.num_items)

    # -- persistence ----------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """What goes in ``config.json``."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "method": self.quantizer.name,
            "level_sizes": self.level_sizes, "num_items": self.num_items,
            "embedding_model": self.config.embedding_model, "embedding_dim": self.text_dim,
            "features": None if self.features is None else self.features.get_config(),
            "text_template": self.text_template, "config": config_to_dict(self.config),
            "quantizer": self.quantizer.get_config(), "table": table_record(self.item_ids, self.codes),
        }

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json, model.safetensors, semantic_ids.tsv and stats.json into ``directory``.

        Callers that replace a run's tokenizer should write into ``sidrec.utils.atomic_dir``.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for item in self.item_ids:
            if bad_id_char(item) is not None:
                raise ValueError(f"item_id {item!r} holds {describe_char(bad_id_char(item))}, a tab or line-break "
                                 f"character, and cannot be written to {TABLE_FILE}; rename the item")
        save_tensors(self.quantizer.state_tensors(), d / "model.safetensors")
        if self.features is not None:
            save_tensors(self.features.state_tensors(), d / FEATURES_FILE)
        lines = ["item_id\tcodes"] + [f"{item}\t{' '.join(map(str, row))}"
                                      for item, row in zip(self.item_ids, self.codes.tolist(), strict=True)]
        atomic_write_text(d / TABLE_FILE, "\n".join(lines) + "\n")
        atomic_write_json(d / "stats.json", self.stats)
        atomic_write_json(d / "config.json", self.config_dict())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SemanticIdTokenizer:
        """Load a folder written by ``save_pretrained`` (e.g. ``RUN/tokenizer``)."""
        d = Path(directory)
        refit = f"refit it (`sidrec tokenize --run {d.parent} --overwrite`) or restore the folder"
        for f in ("config.json", "model.safetensors", TABLE_FILE):
            if not (d / f).is_file():
                raise ValueError(f"{d} has no {f}; train one with `python -m sidrec.train.tokenizer --run RUN`")
        meta = read_json(d / "config.json", fix=refit)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{d}/config.json is not a semantic-ID tokenizer (format {fmt!r})")
        try:
            config = load_config(TokenizerConfig, None, meta["config"])
            level_sizes = [int(k) for k in meta["level_sizes"]]
            quantizer = Quantizer.from_state(meta["quantizer"], load_safetensors(d / "model.safetensors", fix=refit))
        except (KeyError, TypeError) as e:
            raise ValueError(f"{d}/config.json lacks or garbles {e}; {refit}") from e
        features = None
        if meta.get("features"):
            features = CollaborativeFeatures.from_state(meta["features"], load_safetensors(d / FEATURES_FILE, fix=refit))
        expected = features.dim if features is not None else meta.get("embedding_dim")
        if expected != quantizer.input_dim or (features is not None and features.text_dim != meta.get("embedding_dim")):
            raise ValueError(f"{d}: config.json says embedding_dim {meta.get('embedding_dim')} but the quantizer "
                             f"expects {quantizer.input_dim}; the folder is inconsistent, refit the tokenizer")
        ids, codes = _read_table(d / TABLE_FILE, len(level_sizes), fix=refit)
        # the table's checksum: its row count and fingerprint as written (older folders: the count only)
        record = meta.get("table") or ({"rows": meta["num_items"]} if "num_items" in meta else None)
        if record is not None and "fingerprint" not in record and int(record["rows"]) != len(ids):
            raise ValueError(f"{d / TABLE_FILE} holds {len(ids)} rows, but {d}/config.json records "
                             f"{record['rows']} items: the table was truncated or edited; {refit}")
        if record is not None and "fingerprint" in record:
            check_table(record, ids, codes, recorded_by=f"{d}/config.json", table=str(d / TABLE_FILE), fix=refit)
        stats = read_json(d / "stats.json", fix=refit) if (d / "stats.json").is_file() else {}
        return cls(item_ids=ids, codes=codes, level_sizes=level_sizes, quantizer=quantizer, config=config,
                   text_template=meta.get("text_template", ""), stats=stats, features=features)

    @property
    def dataset_fingerprint(self) -> str | None:
        """The prepared dataset this table was fitted on (None when unknown: fitted outside a run folder)."""
        value = self.stats.get("dataset_fingerprint")
        return str(value) if value else None

    def table_record(self) -> dict[str, Any]:
        """``{"rows", "fingerprint"}`` of the current ID table (``sidrec.utils.provenance``)."""
        return table_record(self.item_ids, self.codes)


def _new_item_id(value: Any, n: int) -> str:
    """A new item's id as a string; ``ValueError`` for None, an empty id, or a tab or line break in it."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | np.integer):
        raise ValueError(f"new item #{n} has item_id {value!r}; give a non-empty string (or an integer)")
    item = str(value)
    if not item.strip():
        raise ValueError(f"new item #{n} has an empty item_id {value!r}; give every item a non-empty id")
    char = bad_id_char(item)
    if char is not None:
        raise ValueError(f"new item #{n} has item_id {item!r} holding {describe_char(char)}, a tab or line-break "
                         f"character; {TABLE_FILE} is a line-based, tab-separated table: rename the item")
    return item


def _read_table(path: Path, num_levels: int, *, fix: str) -> tuple[list[str], np.ndarray]:
    """``semantic_ids.tsv`` -> item ids and ``codes (N, L)``; errors name the file and the line."""
    try:
        lines = split_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e}); {fix}") from e
    if not lines or lines[0] != "item_id\tcodes":
        raise ValueError(f"{path}: the first line must be the header 'item_id<TAB>codes'; {fix}")
    ids: list[str] = []
    rows: list[list[int]] = []
    for n, line in enumerate(lines[1:], start=2):
        item, sep, codes = line.partition("\t")
        try:
            row = [int(c) for c in codes.split()]
        except ValueError:
            row = []
        if not sep or len(row) != num_levels:
            raise ValueError(f"{path}, line {n}: expected 'item_id<TAB>' and {num_levels} integer codes, "
                             f"got {line[:120]!r}; {fix}")
        ids.append(item)
        rows.append(row)
    return ids, np.asarray(rows, dtype=np.int64).reshape(len(ids), num_levels)
