"""Provenance: what each stage of a run folder was built from, and the checks every loader makes.

A run folder is a chain: ``dataset/`` -> ``tokenizer/`` (the semantic-ID table) -> ``generator/``; and
``dataset/`` -> ``baselines/sasrec/``. Each stage records the fingerprints of its inputs next to its
output, and each loader compares them with what the folder holds now, so a stage rerun alone (a new
``prepare``, a refitted tokenizer) can never silently pair with a stale later stage:

- the dataset fingerprint (``PreparedDataset.fingerprint()``, kept in ``RUN/dataset/stats.json``) is
  recorded by the tokenizer (``stats.json``), the generator (``config.json``) and SASRec (``config.json``);
- the semantic-ID table fingerprint (``table_fingerprint``: item ids and their codes, row by row) is
  recorded with its row count by the tokenizer itself (``config.json`` ``table``: a checksum of
  ``semantic_ids.tsv``) and by the generator that was trained on it.

A mismatch is a ``ProvenanceError`` (a ``ValueError``) naming both fingerprints and the command to rerun.
Folders written before these records existed load with a warning instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "GENERATOR_PROVENANCE_ATTR",
    "ProvenanceError",
    "check_dataset",
    "check_table",
    "run_dataset_fingerprint",
    "stage_record",
    "table_fingerprint",
    "table_record",
]

#: the ``config.json`` key (a T5Config attribute) under which a generator records its provenance
GENERATOR_PROVENANCE_ATTR = "sidrec_provenance"


class ProvenanceError(ValueError):
    """A stage's output was built from other inputs than the run folder now holds."""


def table_fingerprint(item_ids: Sequence[str], codes: np.ndarray) -> str:
    """16 hex digits of sha256 over each row's item id and codes (order matters)."""
    codes = np.asarray(codes, dtype=np.int64)
    if len(item_ids) != len(codes):
        raise ValueError(f"{len(item_ids)} item ids but {len(codes)} code rows")
    h = hashlib.sha256()
    h.update(f"rows={len(item_ids)};levels={codes.shape[1] if codes.ndim == 2 else 0}\0".encode())
    for item in item_ids:
        h.update(str(item).encode("utf-8") + b"\x1f")
    h.update(b"\x1e")
    h.update(np.ascontiguousarray(codes).astype("<i8").tobytes())
    return h.hexdigest()[:16]


def table_record(item_ids: Sequence[str], codes: np.ndarray) -> dict[str, Any]:
    """``{"rows": N, "fingerprint": ...}`` of a semantic-ID table."""
    return {"rows": len(item_ids), "fingerprint": table_fingerprint(item_ids, codes)}


def stage_record(**fields: Any) -> dict[str, Any]:
    """A provenance block: ``fields`` plus the sidrec version and the UTC time."""
    from sidrec.utils.version import __version__

    return {**fields, "sidrec_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_dataset_fingerprint(run: str | os.PathLike) -> str | None:
    """The fingerprint in ``RUN/dataset/stats.json``; None when the folder has no prepared dataset."""
    from sidrec.utils.io import read_json
    from sidrec.utils.run_folder import RunFolder

    stats = RunFolder(run).dataset_dir / "stats.json"
    if not stats.is_file():
        return None
    value = read_json(stats, fix=f"prepare the dataset again: `sidrec prepare --out {Path(run)} --overwrite ...`")
    fingerprint = value.get("fingerprint") if isinstance(value, dict) else None
    if not fingerprint:
        raise ValueError(f"{stats} has no 'fingerprint'; prepare the dataset again "
                         f"(`sidrec prepare --out {Path(run)} --overwrite ...`)")
    return str(fingerprint)


def check_dataset(recorded: str | None, actual: str | None, *, stage: str, dataset: str, fix: str) -> None:
    """``stage`` recorded dataset ``recorded``; the run's dataset is ``actual``. Equal, or an error.

    None on either side (a folder from before the record existed, or no dataset: a released
    recommender) skips the check; a missing record is logged.
    """
    if actual is None:
        return
    if recorded is None:
        logger.warning("%s records no dataset fingerprint (written by an older sidrec); not checked against %s",
                       stage, dataset)
        return
    if recorded != actual:
        raise ProvenanceError(
            f"{stage} was built from dataset {recorded}, but {dataset} is dataset {actual} (prepared again "
            f"since); rebuild it: `{fix}`"
        )


def check_table(
    record: dict[str, Any] | None, item_ids: Sequence[str], codes: np.ndarray, *, recorded_by: str, table: str,
    fix: str, exact: bool = True,
) -> None:
    """The table ``(item_ids, codes)`` must be the one ``record`` (``table_record``) describes.

    ``exact=False`` accepts rows appended after the recorded ones (cold-start items added to a released
    recommender); the recorded rows themselves must be unchanged. ``record`` None skips the check (logged).
    """
    if record is None:
        logger.warning("%s records no semantic-ID table fingerprint (written by an older sidrec); "
                       "not checked against %s", recorded_by, table)
        return
    try:
        rows, fingerprint = int(record["rows"]), str(record["fingerprint"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{recorded_by}: malformed semantic-ID table record {record!r}; {fix}") from e
    n = len(item_ids)
    if n < rows or (exact and n != rows):
        raise ProvenanceError(
            f"{table} holds {n} rows, but {recorded_by} records {rows} (table {fingerprint}): the table was "
            f"truncated, extended or replaced; {fix}"
        )
    found = table_fingerprint(list(item_ids[:rows]), np.asarray(codes)[:rows])
    if found != fingerprint:
        what = f"its first {rows} rows are table {found}" if n != rows else f"it is table {found}"
        raise ProvenanceError(
            f"{recorded_by} records semantic-ID table {fingerprint} ({rows} rows), but {what} in {table}: "
            f"the IDs were refitted or edited since; {fix}"
        )
