"""The catalog file ``RUN/catalog.jsonl``: item id -> title, kept apart from the training data.

Inference (``sidrec.Recommender``) needs titles to show results but never the interactions, so
``sidrec prepare`` writes the catalog next to ``RUN/dataset/`` and a released recommender carries it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from sidrec.utils import atomic_write_text
from sidrec.utils.ids import split_lines

CATALOG_FILE = "catalog.jsonl"


def save_catalog(path: str | os.PathLike, item_ids: Sequence[str], titles: Sequence[str | None],
                 removed: Sequence[str] = ()) -> None:
    """Write one ``{"item_id", "title"[, "removed"]}`` line per item, in item-index order."""
    gone = set(removed)
    lines = []
    for iid, title in zip(item_ids, titles, strict=True):
        row = {"item_id": iid, "title": title}
        if iid in gone:
            row["removed"] = True
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_catalog(path: str | os.PathLike) -> tuple[list[str], list[str | None], list[str]]:
    """Read a catalog file: item ids, titles and the ids marked removed."""
    ids: list[str] = []
    titles: list[str | None] = []
    removed: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} cannot be read ({e}); rerun `sidrec prepare` or save the recommender again") from e
    for lineno, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids.append(str(row["item_id"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}, line {lineno}: expected {{\"item_id\": ..., \"title\": ...}} ({e})") from e
        titles.append(row.get("title"))
        if row.get("removed"):
            removed.append(ids[-1])
    return ids, titles, removed
