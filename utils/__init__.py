"""Small shared helpers: typed configs, atomic file output and checked input, provenance, logging."""

from sidrec.utils.config import (
    Choice,
    Range,
    Text,
    check_fields,
    config_from_args,
    config_to_dict,
    load_config,
    parse_overrides,
    resolve_config_path,
    validate_config,
)
from sidrec.utils.io import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    follow_umask,
    load_safetensors,
    load_safetensors_into,
    read_json,
)
from sidrec.utils.logs import configure_logging

__all__ = [
    "Choice",
    "Range",
    "Text",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "follow_umask",
    "check_fields",
    "config_from_args",
    "config_to_dict",
    "configure_logging",
    "parse_overrides",
    "load_config",
    "load_safetensors",
    "load_safetensors_into",
    "read_json",
    "resolve_config_path",
    "validate_config",
]
