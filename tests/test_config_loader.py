"""The typed-config loader: presets, overrides, and errors for typos."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sidrec.utils.config import load_config, parse_overrides, resolve_config_path


@dataclass
class Demo:
    lr: float = 1e-3
    max_steps: int = 100
    bf16: bool = False
    name: str = "x"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    limit: int | None = None


def test_overrides_are_typed():
    cfg = load_config(Demo, None, parse_overrides(Demo, ["--lr", "0.01", "--max-steps=20", "--bf16",
                                                         "--layers", "3,4", "--limit", "none"]))
    assert cfg == Demo(lr=0.01, max_steps=20, bf16=True, layers=[3, 4], limit=None)
    assert load_config(Demo, None, {"limit": "7", "max_steps": "1e3"}).limit == 7


def test_unknown_field_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown Demo field '--max-step'.*Did you mean 'max_steps'.*Valid fields: bf16, layers"):
        parse_overrides(Demo, ["--max-step", "3"])


def test_yaml_typo_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.1\nmax_stpes: 3\n")
    with pytest.raises(ValueError, match=r"unknown Demo field 'max_stpes' in .*c\.yaml"):
        load_config(Demo, p)


def test_bad_value_type():
    with pytest.raises(ValueError, match="expected true/false"):
        load_config(Demo, None, {"bf16": "maybe"})


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="neither a file nor a preset"):
        resolve_config_path("generator/does-not-exist")
