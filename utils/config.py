"""Typed configs: dataclasses filled from YAML presets and ``--field value`` overrides.

Every stage describes its settings as a flat ``@dataclass`` whose defaults explain
themselves. A preset (``configs/<stage>/<name>.yaml``) sets some fields; the command line
overrides any field (``--max-steps 20`` sets ``max_steps``). A key that is not a field is
an error that lists the valid fields, so a typo never passes silently.

A config class declares what each field may hold in ``FIELD_RULES`` (``{name: Range | Choice | Text}``):
every number a range, every enum its allowed values. ``validate_config`` checks them (then the class's
own ``validate()`` for rules across fields) before any model is built; the message names the field, the
value and what is allowed. A value that cannot be read as the field's type (``--lr abc``, ``lr: fast``)
and a YAML syntax error name the field or the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"


def _preset_roots() -> list[Path]:
    roots = [_CONFIG_ROOT]
    try:  # installed (non-editable) layout: presets ship as package data of sidrec.configs
        import sidrec.configs as _cfg

        roots.append(Path(_cfg.__file__).resolve().parent)
    except Exception:  # pragma: no cover - only when the package is half-installed
        pass
    return roots


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """Return the YAML file for a path, or for a preset name like ``"generator/tiger"``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for root in _preset_roots():
        for cand in (root / p, root / f"{p}.yaml"):
            if cand.is_file():
                return cand
    presets = sorted(
        str(f.relative_to(root).with_suffix("")) for root in _preset_roots() if root.is_dir()
        for f in root.glob("*/*.yaml")
    )
    raise ValueError(
        f"config {str(name_or_path)!r} is neither a file nor a preset; "
        f"give a YAML path or one of: {', '.join(sorted(set(presets)))}"
    )


# ----------------------------------------------------------------------------------------- field rules
@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``lo <= v <= hi`` (``<`` on an open end; None = unbounded). For a list field,
    every element. NaN and infinities are never allowed. ``null``: the field may also be None (an
    ``int | None`` field whose None means "choose for me", e.g. a codebook sized to the catalog)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.null
        values = value if isinstance(value, list | tuple) else [value]
        return all(self._allows_one(v) for v in values)

    def _allows_one(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        return self._describe_number() + (", or null" if self.null else "")

    def _describe_number(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "any finite number"


@dataclass(frozen=True)
class Choice:
    """Allowed strings: ``values``, or what ``provider()`` returns (a registry filled at import time)."""

    values: tuple[str, ...] = ()
    provider: Callable[[], Iterable[str]] | None = None

    def allowed(self) -> list[str]:
        return list(self.provider()) if self.provider is not None else list(self.values)

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.allowed()

    def describe(self) -> str:
        return "one of " + ", ".join(self.allowed())


@dataclass(frozen=True)
class Text:
    """Any non-empty string (a model name or path, a template)."""

    def allows(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def describe(self) -> str:
        return "a non-empty string"


Rule = Range | Choice | Text


def field_rules(cls: type) -> dict[str, Rule]:
    """The ``FIELD_RULES`` of ``cls`` and of every base class it inherits fields from (a training config
    made of field groups, e.g. ``GeneratorTrainConfig(T5Shape, ...)``); a subclass's rule wins."""
    rules: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        rules.update(vars(klass).get("FIELD_RULES", {}) or {})
    return rules


def check_fields(cfg: Any) -> None:
    """``ValueError`` for the first field whose value its rule does not allow (field, value, allowed)."""
    cls = type(cfg)
    names = _field_map(cls)
    for name, rule in field_rules(cls).items():
        if name not in names:
            raise TypeError(f"{cls.__name__}.FIELD_RULES names {name!r}, which is not a field")
        value = getattr(cfg, name)
        if not rule.allows(value):
            raise ValueError(
                f"{cls.__name__} field {name!r} (--{name.replace('_', '-')}) = {value!r} is not allowed; "
                f"allowed: {rule.describe()}"
            )


def validate_config(cfg: Any) -> None:
    """Every field rule (``check_fields``), then the class's own ``validate()`` (rules across fields)."""
    check_fields(cfg)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()


def _field_map(cls: type) -> dict[str, dataclasses.Field]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return {f.name: f for f in dataclasses.fields(cls)}


def _unknown_key_error(cls: type, key: str, source: str) -> ValueError:
    valid = sorted(_field_map(cls))
    hint = difflib.get_close_matches(key.replace("-", "_"), valid, n=1)
    did = f" Did you mean {hint[0]!r}?" if hint else ""
    return ValueError(
        f"unknown {cls.__name__} field {key!r} in {source}.{did} Valid fields: {', '.join(valid)}"
    )


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (often a string from the command line) to the field's type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, name)
    if origin in (list, tuple, Sequence):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(tp)
        out = [_coerce(v, args[0] if args else Any, name) for v in value]
        return tuple(out) if origin is tuple else out
    scalar = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}.get(tp)
    return value if scalar is None else scalar(value, name)


def _coerce_union(value: Any, tp: Any, name: str) -> Any:
    """``X | None`` and other unions: None for none/null when allowed, else the first member that reads it."""
    args = typing.get_args(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if type(None) in args:
            return None
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(value, a, name)
        except (TypeError, ValueError):
            continue
    raise ValueError(f"field {name!r}: cannot read {value!r} as {tp}")


def _coerce_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"field {name!r}: expected true/false, got {value!r}")


def _coerce_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"field {name!r}: expected an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value) if "e" in value.lower() else int(value)
        except ValueError:
            raise ValueError(f"field {name!r}: expected an integer, got {value!r}") from None
        if isinstance(number, float) and not number.is_integer():
            raise ValueError(f"field {name!r}: expected an integer, got {value!r}")
        return int(number)
    if isinstance(value, int):
        return value
    raise ValueError(f"field {name!r}: expected an integer, got {value!r}")


def _coerce_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"field {name!r}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"field {name!r}: expected a number, got {value!r}") from None


def _coerce_str(value: Any, name: str) -> str:
    if isinstance(value, dict | list):
        raise ValueError(f"field {name!r}: expected a string, got {value!r}")
    return str(value)


def _resolved_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from its defaults, then a YAML file or preset, then ``overrides``."""
    fields = _field_map(cls)
    hints = _resolved_types(cls)
    values: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path)
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{file}: not valid YAML ({e}); fix the syntax (one `field: value` per line)") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{file}: cannot be read ({e})") from e
        if not isinstance(raw, dict):
            raise ValueError(f"{file}: expected a mapping of field: value, got {type(raw).__name__}")
        for k, v in raw.items():
            if k not in fields:
                raise _unknown_key_error(cls, k, str(file))
            try:
                values[k] = _coerce(v, hints[k], k)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{file}: {cls.__name__} {e}") from None
    for k, v in (overrides or {}).items():
        key = k.replace("-", "_")
        if key not in fields:
            raise _unknown_key_error(cls, k, "the overrides")
        try:
            values[key] = _coerce(v, hints[key], key)
        except (TypeError, ValueError) as e:
            raise ValueError(f"--{key.replace('_', '-')}: {cls.__name__} {e}") from None
    cfg = cls(**values)
    validate_config(cfg)
    return cfg


def parse_overrides(cls: type, tokens: Sequence[str]) -> dict[str, str]:
    """Read ``--field value`` / ``--field=value`` / ``--flag`` pairs into a dict.

    Dashes in names become underscores. Unknown names raise ``ValueError`` listing the
    valid fields. A bare ``--flag`` (no value) sets a boolean field to true.
    """
    fields = _field_map(cls)
    hints = _resolved_types(cls)
    out: dict[str, str] = {}
    i = 0
    tokens = list(tokens)
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ValueError(f"unexpected argument {tok!r}; config overrides look like --field value")
        name, eq, val = tok[2:].partition("=")
        key = name.replace("-", "_")
        if key not in fields:
            raise _unknown_key_error(cls, "--" + name, "the command line")
        if not eq:
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if hints[key] is bool and (nxt is None or nxt.startswith("--")):
                val = "true"
            elif nxt is None or (nxt.startswith("--") and _looks_like_a_field(nxt, fields)):
                raise ValueError(f"--{name} needs a value (e.g. --{name} {_example(hints[key])})")
            else:
                val = nxt
                i += 1
        out[key] = val
        i += 1
    return out


def _looks_like_a_field(token: str, fields: Any) -> bool:
    """``--lr`` / ``--lr=0.1``: the next option, not a value (a negative number is ``-1``, one dash)."""
    return token[2:].partition("=")[0].replace("-", "_") in fields


def _example(hint: Any) -> str:
    return {int: "100", float: "0.5", str: "VALUE"}.get(hint, "VALUE")


def config_from_args(cls: type[T], config: str | os.PathLike | None, tokens: Sequence[str]) -> T:
    """``load_config`` with overrides parsed from leftover command-line tokens."""
    return load_config(cls, config, parse_overrides(cls, tokens))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)
