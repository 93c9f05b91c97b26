"""Amazon Reviews 2014 (McAuley et al.): ``reviews_<Category>[_5].json.gz`` + ``meta_<Category>.json.gz``.

Reviews: JSON lines with ``reviewerID``, ``asin``, ``unixReviewTime``. Meta: one Python-literal dict
per line (as Amazon ships them), parsed with ``ast.literal_eval``, never evaluated; every field is kept
for the reviewed items. Each user's reviews are ordered by ``unixReviewTime``, ties in file order.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sidrec.data.amazon import check_covered, finish, read_meta, read_reviews
from sidrec.data.generic import _find
from sidrec.data.raw import RawDataset
from sidrec.data.rawio import iter_lines

REVIEWS = re.compile(r"reviews_(.+?)(_5)?\.json(\.gz)?$")


def _literal_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise ValueError(f"{path}, line {lineno}: not a Python-literal dict ({e})") from e
        if not isinstance(obj, dict) or "asin" not in obj:
            raise ValueError(f"{path}, line {lineno}: expected a dict with an 'asin' key")
        yield lineno, obj


def _convert(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["item_id"] = str(obj["asin"])
    return out


def read_amazon2014(folder: Path) -> RawDataset:
    """Read Amazon-2014 ``reviews_<Cat>_5.json.gz`` + ``meta_<Cat>.json.gz``."""
    reviews = sorted(p for p in folder.iterdir() if REVIEWS.match(p.name))
    if len(reviews) != 1:
        raise ValueError(f"{folder}: expected exactly one reviews_<Category>_5.json[.gz], found {len(reviews)}")
    rpath = reviews[0]
    category = REVIEWS.match(rpath.name).group(1)
    mpath = _find(folder, f"meta_{category}.json")
    if mpath is None:
        raise ValueError(f"{folder}: missing meta_{category}.json.gz next to {rpath.name}")
    log = read_reviews(rpath, user="reviewerID", item="asin", time="unixReviewTime")
    meta, skipped = read_meta(_literal_lines(mpath), mpath, id_field="asin", keep=set(log.item_vocab),
                              convert=_convert, strict=True)
    check_covered(log, meta, rpath, mpath, "asin")
    return finish(log, meta, skipped, name=f"amazon2014_{category.lower()}", folder=folder)
