"""Amazon Reviews 2018 (Ni et al.): ``<Category>[_5].json.gz`` + ``meta_<Category>.json.gz``.

Reviews: JSON lines with ``reviewerID``, ``asin``, ``unixReviewTime`` (seconds). Meta: JSON lines with
``asin``, ``title``, ``brand``, ``category`` (one path, a flat list), ``description`` and ``feature``
(lists of strings), ``price``, ``main_cat``, ``details``; they are stored as ``title``, ``brand``,
``categories`` (``[category]``: rendered ``A > B > C``), ``description``, ``features``, ``price``,
``main_category``, ``details`` (other fields, e.g. images and also_buy, are dropped). The downloads
repeat some items: the first row wins and the repeats are counted in the log. Each user's reviews are
ordered by ``unixReviewTime``, ties in file order.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sidrec.data.amazon import category_path, check_covered, finish, read_meta, read_reviews
from sidrec.data.generic import _find
from sidrec.data.raw import RawDataset
from sidrec.data.rawio import iter_json_objects

#: ``<Category>.json[.gz]`` or ``<Category>_5.json[.gz]``, not a 2014 ``reviews_`` or a ``meta_`` file.
REVIEWS = re.compile(r"(?!meta_|reviews_)(.+?)(_5)?\.json(\.gz)?$")


def _convert(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "item_id": str(obj["asin"]).strip(), "title": obj.get("title"), "brand": obj.get("brand"),
        "categories": category_path(obj.get("category")), "description": obj.get("description"),
        "features": obj.get("feature"), "price": obj.get("price"), "main_category": obj.get("main_cat"),
        "details": obj.get("details"),
    }


def review_files(folder: Path) -> list[Path]:
    """The 2018 review files in ``folder``."""
    return sorted(p for p in folder.iterdir() if REVIEWS.fullmatch(p.name))


def read_amazon2018(folder: Path) -> RawDataset:
    """Read Amazon-2018 ``<Cat>.json.gz`` (or ``<Cat>_5.json.gz``) + ``meta_<Cat>.json.gz``."""
    reviews = review_files(folder)
    if len(reviews) != 1:
        raise ValueError(f"{folder}: expected exactly one <Category>.json[.gz] (Amazon 2018 reviews) next to "
                         f"meta_<Category>.json[.gz], found {[p.name for p in reviews]}")
    rpath = reviews[0]
    category = REVIEWS.fullmatch(rpath.name).group(1)
    mpath = _find(folder, f"meta_{category}.json")
    if mpath is None:
        raise ValueError(f"{folder}: missing meta_{category}.json.gz next to {rpath.name}; download the "
                         "metadata file of the same category")
    log = read_reviews(rpath, user="reviewerID", item="asin", time="unixReviewTime")
    meta, skipped = read_meta(iter_json_objects(mpath), mpath, id_field="asin", keep=set(log.item_vocab),
                              convert=_convert, strict=False)
    check_covered(log, meta, rpath, mpath, "asin")
    return finish(log, meta, skipped, name=f"amazon2018_{category.lower()}", folder=folder)
