"""``sidrec.Recommender``: load a trained run and recommend, add and remove items.

A recommender is three things that rebuild themselves from folders: the semantic-ID tokenizer
(``tokenizer/``: quantizer + item <-> code table), the generator (``generator/``: T5 config, weights,
vocab; any family, picked from its config) and the catalog titles (``catalog.jsonl``). The catalog trie
is built from the tokenizer's table at load time. No training data is needed.

Loading checks that the three belong together: the generator's recorded semantic-ID table must be the
tokenizer's (rows added later by ``add_items`` are fine), the catalog must list exactly the tokenizer's
items, and in a run folder (one with ``dataset/``) both must have been built from that dataset. Saving
records the current table, so a folder saved after ``add_items``/``remove_items`` loads again.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from sidrec.data import load_catalog, save_catalog
from sidrec.decoding import DecodingSettings, make_ranker, scores_whole_catalog
from sidrec.decoding.fusion import FusionSettings, component_scores, fuse_scores, fused_topk, log_popularity
from sidrec.decoding.text_profile import model_unit_text
from sidrec.seqmodel import SemanticIdGenerator
from sidrec.tokenizer import SemanticIdTokenizer
from sidrec.utils import atomic_dir
from sidrec.utils.provenance import GENERATOR_PROVENANCE_ATTR
from sidrec.utils.run_folder import RunFolder

logger = logging.getLogger(__name__)

ON_UNKNOWN = ("error", "skip")


class Recommendation(NamedTuple):
    """One recommended item: its id, its ranking score and its title.

    ``score`` is the log-probability of the item's semantic ID, plus ``hybrid_weight x`` the dense score
    for a generator with a dense head (higher is better; compare scores within one list only).
    """

    item_id: str
    score: float
    title: str | None


class NewItems(NamedTuple):
    """Items ready to join a catalog (``Recommender.prepare_items``): ids, semantic IDs ``(M, L)``, text
    embeddings ``(M, D)`` (None unless the generator reads item text) and titles."""

    ids: list[str]
    codes: np.ndarray
    text: np.ndarray | None
    titles: list[str | None]


class Recommender:
    """Next-item recommendations from a trained sidrec run.

    >>> rec = Recommender.from_pretrained("runs/quickstart")          # doctest: +SKIP
    >>> rec.recommend(["12", "873", "40"], k=5)                        # doctest: +SKIP
    [Recommendation(item_id='41', score=-2.31, title='...'), ...]
    """

    def __init__(
        self, *, tokenizer: SemanticIdTokenizer, model: SemanticIdGenerator, titles: Sequence[str | None],
        settings: DecodingSettings | None = None, beam_size: int | None = None, batch_size: int = 64,
        device: str | torch.device = "cpu", fusion: tuple[Any, FusionSettings] | None = None,
    ) -> None:
        if list(model.vocab.level_sizes) != list(tokenizer.level_sizes):
            raise ValueError(
                f"the generator was trained on semantic IDs with level sizes {model.vocab.level_sizes}, the "
                f"tokenizer has {tokenizer.level_sizes}; load the tokenizer and generator of the same run"
            )
        if len(titles) != tokenizer.num_items:
            raise ValueError(f"{len(titles)} titles for {tokenizer.num_items} items; the catalog file does not "
                             "match the tokenizer's table")
        self.tokenizer = tokenizer
        self.device = _check_device(device)
        self.model = model.to(self.device).eval()
        self.titles: list[str | None] = list(titles)
        self.settings = settings or DecodingSettings()  # how the generator ranks (its decoding.json)
        self.beam_size = beam_size  # overrides the settings' beam when recommending (never saved)
        self.batch_size = batch_size
        # the family's ranker over the live catalog: a trie + beam search, or exact scoring of every item
        self.ranker = make_ranker(self.model, codes=tokenizer.codes, level_sizes=tokenizer.level_sizes,
                                  settings=self.settings)
        # (SASRec, FusionSettings): rank by the fused scores of both (``sidrec.decoding.fusion``); None = the generator
        self.fusion = None
        if fusion is not None:
            if not scores_whole_catalog(self.model):
                raise ValueError("fusion needs a generator that scores the whole catalog (family parallel, or a "
                                 "dense head: item/hybrid)")
            if fusion[1].text_weight and model_unit_text(self.model) is None:
                raise ValueError("this fusion adds the text kNN's score (text_weight > 0), but the generator reads "
                                 "no item text; choose the fusion again for this generator (`sidrec evaluate --fuse "
                                 "sasrec`)")
            self.fusion = (fusion[0].to(self.device).eval(), fusion[1])

    # -- loading and saving ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        beam_size: int | None = None, fuse: bool | None = None) -> Recommender:
        """Load ``path/tokenizer``, ``path/generator`` and the titles in ``path/catalog.jsonl``.

        ``fuse``: rank by the generator fused with SASRec (``fusion.json`` + ``sasrec/`` of a release saved fused,
        or a run folder's ``fusion.json`` + ``baselines/sasrec``, from ``sidrec evaluate --fuse sasrec``); None =
        fused when the folder is a fused release, False = the generator alone.
        """
        folder = RunFolder(path)
        for sub in (folder.tokenizer_dir, folder.generator_dir):
            if not sub.is_dir():
                raise ValueError(
                    f"{sub} is missing; a recommender folder holds tokenizer/ and generator/ "
                    "(run `sidrec tokenize` and `sidrec train`, or `sidrec quickstart`)"
                )
        loaded = folder.generator()  # provenance checked; dataset checks only in a run folder (dataset/)
        tokenizer = loaded.tokenizer
        titles: list[str | None] = [None] * tokenizer.num_items
        removed: list[str] = []
        if folder.catalog_file.is_file():
            ids, cat_titles, removed = load_catalog(folder.catalog_file)
            _check_catalog(folder.catalog_file, ids, tokenizer)
            by_id = dict(zip(ids, cat_titles, strict=True))
            titles = [by_id.get(i) for i in tokenizer.item_ids]
        else:
            logger.warning("%s not found: recommendations will have no titles", folder.catalog_file)
        rec = cls(tokenizer=tokenizer, model=loaded.model, titles=titles, settings=loaded.settings,
                  beam_size=beam_size, device=device, fusion=_load_fusion(folder, fuse))
        if removed:
            rec.remove_items(removed)
        return rec

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a self-contained recommender folder (tokenizer/, generator/, catalog.jsonl; a fused release
        also sasrec/ and fusion.json).

        The whole release is written into a temporary sibling folder and swapped in at once
        (``sidrec.utils.atomic_dir``): after a crash or a full disk at any moment, ``path`` holds the old release
        or the new one, complete. ``path`` must be new or a release folder: a trained run folder (it holds
        ``dataset/``) or a folder with other files is refused, since the swap would replace them. The
        generator's provenance records the current semantic-ID table (grown by ``add_items``).
        """
        target = Path(path)
        _check_release_target(target)
        record = dict(getattr(self.model.config, GENERATOR_PROVENANCE_ATTR, None) or {})
        record["semantic_ids"] = self.tokenizer.table_record()
        setattr(self.model.config, GENERATOR_PROVENANCE_ATTR, record)
        with atomic_dir(target) as tmp:
            folder = RunFolder(tmp)
            self.tokenizer.save_pretrained(folder.tokenizer_dir)
            self.model.save_pretrained(folder.generator_dir)
            self.settings.save(folder.generator_dir)
            if self.fusion is not None:  # a fused release: SASRec beside the generator, and how the two are mixed
                self.fusion[0].save_pretrained(folder.root / RELEASE_SASREC)
                self.fusion[1].save(folder.root)
            removed = [self.tokenizer.item_ids[i] for i in np.flatnonzero(~self.ranker.active)]
            save_catalog(folder.catalog_file, self.tokenizer.item_ids, self.titles, removed)

    # -- catalog --------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        """Items that can be recommended now."""
        return int(self.ranker.active.sum())

    def add_items(self, items: Sequence[Mapping[str, Any]], *, cache_dir: str | os.PathLike | None = None) -> list[str]:
        """Give new items semantic IDs (no retraining) and make them recommendable at once.

        ``items``: dicts with ``item_id`` and text fields (``title``, ``brand``, ...), rendered with the
        template the tokenizer was fitted with. Existing IDs never change. Returns the added ids.
        """
        return self.apply_items(self.prepare_items(items, cache_dir=cache_dir))

    def prepare_items(self, items: Sequence[Mapping[str, Any]], *,
                      cache_dir: str | os.PathLike | None = None) -> NewItems:
        """What ``add_items`` would add (ids, semantic IDs, text embeddings when the generator reads them,
        titles), computed against the current catalog; nothing changes until ``apply_items``.

        A server records this in its change log before applying it, so a replay is exact and needs no
        embedding model."""
        items = list(items)
        if not items:
            return NewItems(ids=[], codes=np.zeros((0, self.tokenizer.num_levels), dtype=np.int64), text=None,
                            titles=[])
        self._refuse_removed(items)
        ids, emb, codes = self.tokenizer.plan_new_items(items, cache_dir=cache_dir)  # codes (M, L)
        reads_text = getattr(self.model, "reads_text", False)
        return NewItems(ids=ids, codes=codes, text=np.asarray(emb, dtype=np.float32) if reads_text else None,
                        titles=[it.get("title") for it in items])

    def apply_items(self, new: NewItems) -> list[str]:
        """Add items prepared by ``prepare_items`` (here or in another process with the same catalog)."""
        if not new.ids:
            return []
        if getattr(self.model, "reads_text", False) and new.text is None:
            raise ValueError("this generator reads item text: the new items need their text embeddings "
                             "(prepare them with prepare_items)")
        self.tokenizer.append_items(new.ids, new.codes)
        new_index = self.ranker.add_items(new.codes)
        add_to_model = getattr(self.model, "add_items", None)  # a generator with its own item table
        if add_to_model is not None:
            add_to_model(new.codes, new.text if getattr(self.model, "reads_text", False) else None)
        expected = np.arange(self.tokenizer.num_items - len(new.ids), self.tokenizer.num_items)
        if not np.array_equal(new_index, expected):  # the catalog and the table must stay row-aligned
            raise RuntimeError("the ranker's catalog and the tokenizer table went out of sync; reload the recommender")
        self.titles.extend(new.titles)
        return list(new.ids)

    def _refuse_removed(self, items: Sequence[Mapping[str, Any]]) -> None:
        """A removed item's id stays taken (its row and semantic ID are kept, inactive): say so plainly."""
        for n, item in enumerate(items):
            given = item.get("item_id") if isinstance(item, Mapping) else None
            index = self.item_index(given) if isinstance(given, str | numbers.Integral) else None  # others: checked later
            if index is not None and not self.ranker.active[index]:
                raise ValueError(f"new item #{n}: {item['item_id']!r} was removed from this catalog (remove_items); "
                                 "a removed id stays taken (its row and semantic ID are kept, inactive), so it "
                                 "cannot be added again: add it under a new id, or reload a release saved before "
                                 "the removal. Nothing was added")

    def remove_items(self, item_ids: Sequence[str]) -> int:
        """Stop recommending these items (e.g. out of stock); returns how many were removed."""
        unknown = [i for i in item_ids if self.item_index(i) is None]
        if unknown:
            raise ValueError(f"{len(unknown)} unknown item id(s), e.g. {unknown[0]!r}; nothing was removed")
        return self.ranker.remove_items([self.item_index(i) for i in item_ids])

    # -- recommending ---------------------------------------------------------------------------
    @torch.no_grad()
    def _fused(self, histories: list[list[int]], *, k: int, exclude_seen: bool,
               cold_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` by the generator's and SASRec's fused scores over the whole (live) catalog (``cold_share``:
        the new items closest by text take up to that share of the slots, ``fused_topk``)."""
        sasrec, settings = self.fusion
        cold = torch.as_tensor(self.tokenizer.assigned_items()) if cold_share else None  # (N,) added or assigned
        log_pop = log_popularity(self.model.item_counts.detach().cpu())  # (N,) added items count 0
        unit = model_unit_text(self.model)  # (N, Dt) normalised item text, or None
        items, scores = [], []
        for start in range(0, len(histories), self.batch_size):
            batch = histories[start : start + self.batch_size]
            gen, sas, text = component_scores(batch, ranker=self.ranker, sasrec=sasrec,
                                              dense_weight=self.settings.dense_weight,
                                              unit=unit if settings.text_weight else None)  # text: checked at load
            fused = fuse_scores(gen, sas, settings, log_pop, text)
            top, top_scores = fused_topk(fused, batch, k=k, exclude_history=exclude_seen, cold_share=cold_share,
                                         cold=cold, unit=unit)
            items.append(top)
            scores.append(top_scores)
        return torch.cat(items), torch.cat(scores)

    def item_index(self, item_id: Any) -> int | None:
        """The row of ``item_id`` (a string or an integer) in this catalog (removed items keep theirs), or None."""
        try:
            return self.tokenizer.index_of(item_id_string(item_id))
        except KeyError:
            return None

    def _to_indices(self, histories: list[Sequence[str]], on_unknown: str) -> list[list[int]]:
        if on_unknown not in ON_UNKNOWN:
            raise ValueError(f"on_unknown must be one of {ON_UNKNOWN}, got {on_unknown!r}")
        out, skipped = [], 0
        for u, history in enumerate(histories):
            if isinstance(history, str):
                raise ValueError(f"history {u} is a string; pass a list of item ids (e.g. ['12', '40'])")
            rows = [self.item_index(i) for i in history]
            known = [r for r in rows if r is not None]
            missing = len(history) - len(known)
            if missing and on_unknown == "error":
                bad = next(str(i) for i, r in zip(history, rows, strict=True) if r is None)
                raise ValueError(
                    f"history {u} has {missing} unknown item id(s), e.g. {bad!r}; add them with "
                    "add_items() or pass on_unknown='skip'"
                )
            skipped += missing
            if not known:
                raise ValueError(
                    f"history {u} is empty{' after skipping unknown items' if history else ''}; "
                    "a generative recommender needs at least one known item"
                )
            out.append(known)
        if skipped:
            logger.warning("skipped %d unknown item id(s) in the histories", skipped)
        return out

    @torch.no_grad()
    def recommend(
        self, history: Sequence[str] | Sequence[Sequence[str]], k: int = 10, *, exclude_seen: bool = True,
        on_unknown: str = "error", user_ids: Sequence[str] | None = None, cold_share: float = 0.0,
    ) -> list[Recommendation] | list[list[Recommendation]]:
        """Top-``k`` items for one history (a list of item ids) or a batch of them (a list of lists).

        ``exclude_seen`` removes history items from the results (k are still returned when k exist).
        ``on_unknown``: ``"error"`` (default) or ``"skip"`` unknown item ids, with a count in the log.
        ``user_ids``: only used by generators trained with user tokens (TIGER's user hashing).
        ``cold_share``: TIGER's epsilon: up to ``ceil(cold_share * k)`` of the slots go to new items (added
        with ``add_items`` or assigned after the tokenizer's fit) among the candidates (the ``hybrid`` preset
        always lets its best unseen items join them; an exact ranker and a fused recommender rank them all), the
        new items closest by text to the user's recent items first (for a generator that reads text); 0 = off.
        """
        if not 0.0 <= cold_share <= 1.0:
            raise ValueError(f"cold_share must be in [0, 1], got {cold_share!r}")
        if isinstance(history, str | bytes):
            raise ValueError(f"history is a single string ({history!r}); pass a list of item ids, oldest first "
                             f"(e.g. [{history!r}]), or a list of such lists")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a whole number >= 1, got {k!r}")
        k = int(k)
        single = len(history) == 0 or _is_single_id(history[0])
        histories = [list(history)] if single else [list(h) for h in history]
        indices = self._to_indices(histories, on_unknown)
        if self.model.vocab.num_user_buckets and user_ids is None:
            user_ids = [""] * len(indices)  # an anonymous user: one fixed bucket
        if self.fusion is not None:
            items, scores = self._fused(indices, k=k, exclude_seen=exclude_seen, cold_share=cold_share)
        else:
            items, scores = self.ranker.recommend(
                indices, k=k, settings=self.settings if self.beam_size is None else self.settings.replace(
                    beam_size=self.beam_size), user_ids=user_ids if self.model.vocab.num_user_buckets else None,
                exclude_history=exclude_seen, batch_size=self.batch_size, cold=self.tokenizer.assigned_items(),
                cold_share=cold_share,
            )
        results = [
            [Recommendation(self.tokenizer.item_ids[i], float(sc), self.titles[i])
             for i, sc in zip(row_items, row_scores, strict=True) if i >= 0]
            for row_items, row_scores in zip(items.tolist(), scores.tolist(), strict=True)
        ]
        return results[0] if single else results


def _is_single_id(value: Any) -> bool:
    """Whether a history's first element is an item id (a string or a number, numpy's included) rather than a
    history of its own (a batch)."""
    return isinstance(value, str | bytes | numbers.Number | np.generic)


def item_id_string(item_id: Any) -> str:
    """An item id as the table spells it: strings as they are, integers (numpy's too) in decimal; a float or
    anything else is a ``ValueError`` (``5.0`` is not the id ``'5'``: ids are strings or integers)."""
    if isinstance(item_id, str):
        return item_id
    if isinstance(item_id, numbers.Integral) and not isinstance(item_id, bool | np.bool_):
        return str(int(item_id))
    raise ValueError(f"item id {item_id} is a {type(item_id).__name__}; give item ids as strings (or integers), "
                     "e.g. '12'")


def _check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, or a ``ValueError`` that says what this machine has instead."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device ({e}); use 'cpu' or 'cuda'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this machine has no CUDA GPU that torch can use "
                         "(torch.cuda.is_available() is False); use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use device='cpu'")
    return dev


RELEASE_SASREC = "sasrec"  # a fused release's SASRec folder
RELEASE_PARTS = frozenset({"tokenizer", "generator", RELEASE_SASREC, "fusion.json", "catalog.jsonl"})


def _check_release_target(path: Path) -> None:
    """``ValueError`` unless ``path`` is new or holds a release only (``save_pretrained`` replaces it whole)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; save the recommender into a folder")
    if not path.is_dir():
        return
    names = {p.name for p in path.iterdir() if not p.name.startswith(".")}
    if "dataset" in names:
        raise ValueError(f"{path} is a trained run folder (it holds dataset/); a release saved there would replace "
                         "the run (and `sidrec evaluate` on it would fail): save into a new folder")
    other = sorted(names - RELEASE_PARTS)
    if other:
        raise ValueError(f"{path} holds {', '.join(other[:5])}{' ...' if len(other) > 5 else ''}, which a release "
                         "does not: saving replaces the whole folder, so save into a new or a release folder")


def _load_fusion(folder: RunFolder, fuse: bool | None) -> tuple[Any, FusionSettings] | None:
    """(SASRec, settings) of a fused release (``sasrec/``) or, asked for, of a run folder; None otherwise."""
    release = folder.root / RELEASE_SASREC
    if fuse is False or (fuse is None and not (release.is_dir() and folder.fusion_file.is_file())):
        return None
    if not folder.fusion_file.is_file():
        raise ValueError(f"{folder.fusion_file} not found: choose the fusion first (`sidrec evaluate --run "
                         f"{folder.root} --fuse sasrec`)")
    if release.is_dir():
        from sidrec.seqmodel.sasrec import SASRec

        sasrec = SASRec.from_pretrained(release)
    else:
        sasrec = folder.sasrec()
    return sasrec, FusionSettings.load(folder.root)


def _check_catalog(path: Path, ids: Sequence[str], tokenizer: SemanticIdTokenizer) -> None:
    """The catalog lists exactly the tokenizer's items (a missing or extra row means the two were mixed up)."""
    if list(ids) == list(tokenizer.item_ids):
        return
    have, want = set(ids), set(tokenizer.item_ids)
    missing, extra = [i for i in tokenizer.item_ids if i not in have], [i for i in ids if i not in want]
    if not missing and not extra and len(ids) == len(want):
        return  # the same items in another order: titles are looked up by id
    parts = []
    if missing:
        parts.append(f"lacks {len(missing)} of the tokenizer's items (e.g. {missing[0]!r})")
    if extra:
        parts.append(f"lists {len(extra)} items the tokenizer does not know (e.g. {extra[0]!r})")
    if not parts:
        parts.append(f"lists some items twice ({len(ids)} rows for {len(want)} items)")
    raise ValueError(
        f"{path} {' and '.join(parts)}: it belongs to another catalog than {path.parent / 'tokenizer'}; "
        "save both with Recommender.save_pretrained, or rerun `sidrec prepare` and the stages after it"
    )
