"""Amazon Reviews 2023 (Hou et al.): ``<Category>.jsonl[.gz]`` + ``meta_<Category>.jsonl[.gz]``.

Reviews: JSON lines with ``user_id``, ``parent_asin`` (the item: variants share it) and ``timestamp``
(milliseconds). Meta: JSON lines with ``parent_asin``, ``title``, ``features`` and ``description``
(lists of strings), ``categories`` (one path, a flat list), ``details`` (a dict), ``store``,
``main_category`` and ``price``; stored as ``title``, ``brand`` (``details["Brand"]`` if given, else
``store``), ``store``, ``categories`` (``[categories]``, or ``[[main_category]]`` when empty),
``features``, ``description``, ``details``, ``main_category``, ``price`` (images, videos and
bought_together are dropped). A repeated ``parent_asin`` keeps its first row (counted in the log). Each
user's reviews are ordered by ``timestamp``, ties in file order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sidrec.data.amazon import category_path, check_covered, finish, read_meta, read_reviews
from sidrec.data.generic import _find
from sidrec.data.raw import RawDataset
from sidrec.data.rawio import iter_json_objects

#: ``<Category>.jsonl[.gz]``, not a ``meta_`` file.
REVIEWS = re.compile(r"(?!meta_)(.+?)\.jsonl(\.gz)?$")


def _convert(obj: dict[str, Any]) -> dict[str, Any]:
    details = obj.get("details") if isinstance(obj.get("details"), dict) else None
    brand = details.get("Brand") if details else None
    main = obj.get("main_category")
    return {
        "item_id": str(obj["parent_asin"]).strip(), "title": obj.get("title"),
        "brand": brand if isinstance(brand, str) and brand.strip() else obj.get("store"),
        "store": obj.get("store"), "categories": category_path(obj.get("categories")) or ([[main]] if main else None),
        "features": obj.get("features"), "description": obj.get("description"), "details": details,
        "main_category": main, "price": obj.get("price"),
    }


def review_files(folder: Path) -> list[Path]:
    """The 2023 review files in ``folder``."""
    return sorted(p for p in folder.iterdir() if REVIEWS.fullmatch(p.name))


def read_amazon2023(folder: Path) -> RawDataset:
    """Read Amazon-2023 ``<Cat>.jsonl[.gz]`` + ``meta_<Cat>.jsonl[.gz]``."""
    reviews = review_files(folder)
    if len(reviews) != 1:
        raise ValueError(f"{folder}: expected exactly one <Category>.jsonl[.gz] (Amazon 2023 reviews) next to "
                         f"meta_<Category>.jsonl[.gz], found {[p.name for p in reviews]}")
    rpath = reviews[0]
    category = REVIEWS.fullmatch(rpath.name).group(1)
    mpath = _find(folder, f"meta_{category}.jsonl")
    if mpath is None:
        raise ValueError(f"{folder}: missing meta_{category}.jsonl[.gz] next to {rpath.name}; download the "
                         "metadata file of the same category")
    log = read_reviews(rpath, user="user_id", item="parent_asin", time="timestamp")
    meta, skipped = read_meta(iter_json_objects(mpath), mpath, id_field="parent_asin", keep=set(log.item_vocab),
                              convert=_convert, strict=False)
    check_covered(log, meta, rpath, mpath, "parent_asin")
    return finish(log, meta, skipped, name=f"amazon2023_{category.lower()}", folder=folder)
