"""Resolve ``--dataset NAME_OR_PATH``: a bundled dataset name, or a folder in a supported format."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sidrec.data.readers import RawDataset, read_dataset

#: Datasets shipped inside the package (compressed, with their provenance in SOURCE.md).
BUNDLED = {"beauty": "beauty"}


def bundled_path(name: str) -> Path:
    """The folder of a bundled dataset."""
    if name not in BUNDLED:
        raise ValueError(f"no bundled dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    return Path(str(resources.files("sidrec.data") / "bundled" / BUNDLED[name]))


def load_raw(name_or_path: str, fmt: str | None = None) -> RawDataset:
    """Read a bundled dataset by name, or a dataset folder by path."""
    if name_or_path in BUNDLED:
        raw = read_dataset(bundled_path(name_or_path), "generic")
        raw.name = f"amazon2014_{name_or_path}"
        return raw
    path = Path(name_or_path)
    if not path.exists():
        raise ValueError(
            f"dataset {name_or_path!r} is neither a bundled name ({', '.join(BUNDLED)}) nor an existing folder"
        )
    return read_dataset(path, fmt)
