"""Every YAML preset loads into its stage's config class and names the command that uses it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from sidrec.utils import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: preset folder (or folder/name) -> the dataclass that reads it
CONFIG_CLASSES = {
    "tokenizer": "sidrec.tokenizer:TokenizerConfig",
    "generator": "sidrec.train.generator:GeneratorTrainConfig",
    "baselines/sasrec": "sidrec.train.sasrec:SasrecTrainConfig",
}

PRESETS = sorted(CONFIGS.glob("*/*.yaml"))


def _config_class(preset: Path):
    rel = preset.relative_to(CONFIGS).with_suffix("").as_posix()
    key = rel if rel in CONFIG_CLASSES else rel.split("/")[0]
    if key not in CONFIG_CLASSES:
        pytest.fail(f"no config class registered for preset {rel}; add it to CONFIG_CLASSES")
    module, name = CONFIG_CLASSES[key].split(":")
    return getattr(importlib.import_module(module), name)


def test_presets_exist():
    names = {p.relative_to(CONFIGS).with_suffix("").as_posix() for p in PRESETS}
    assert {"tokenizer/rqvae", "tokenizer/rqkmeans", "tokenizer/fsq", "generator/tiger", "generator/cpu-small",
            "baselines/sasrec"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_preset_loads(preset):
    cls = _config_class(preset)
    by_path = load_config(cls, preset)
    by_name = load_config(cls, preset.relative_to(CONFIGS).with_suffix("").as_posix())
    assert by_path == by_name
    first = preset.read_text().splitlines()[0]
    assert first.startswith("#") and ("sidrec" in first), f"{preset}: first line must give the command that uses it"
