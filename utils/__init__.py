"""Small shared helpers: typed configs, atomic file output, seeding, logging."""

from sidrec.utils.config import (
    config_from_args,
    config_to_dict,
    load_config,
    parse_overrides,
    resolve_config_path,
)
from sidrec.utils.io import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from sidrec.utils.logs import configure_logging

__all__ = [
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "config_from_args",
    "config_to_dict",
    "configure_logging",
    "parse_overrides",
    "load_config",
    "resolve_config_path",
]
