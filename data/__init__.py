"""Datasets: readers for raw formats, preparation (k-core, remap, leave-one-out), item text, bundled Beauty."""

from sidrec.data.catalog import CATALOG_FILE, load_catalog, save_catalog
from sidrec.data.dataset import EvalSplit, PreparedDataset
from sidrec.data.prepare import MIN_SEQUENCE_LENGTH, PrepareConfig, prepare
from sidrec.data.raw import InteractionLog, RawDataset
from sidrec.data.readers import detect_format, read_dataset
from sidrec.data.sources import BUNDLED, bundled_path, load_raw
from sidrec.data.text import DEFAULT_TEMPLATE, render_item_text

__all__ = [
    "BUNDLED",
    "CATALOG_FILE",
    "DEFAULT_TEMPLATE",
    "MIN_SEQUENCE_LENGTH",
    "EvalSplit",
    "InteractionLog",
    "PrepareConfig",
    "PreparedDataset",
    "RawDataset",
    "bundled_path",
    "detect_format",
    "load_catalog",
    "load_raw",
    "prepare",
    "read_dataset",
    "render_item_text",
    "save_catalog",
]
