"""Item text: render an item's metadata fields through a template, skipping missing fields.

The template is a ``"; "``-separated list of segments such as ``"Title: {title}"``. A segment whose
fields are all missing (None, empty string, empty list) is dropped, so an item without a brand reads
``"Title: X; Categories: Y"`` rather than ``"Title: X; Brand: ; Categories: Y"``.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from typing import Any

DEFAULT_TEMPLATE = "Title: {title}; Brand: {brand}; Categories: {categories}; Price: {price}; Description: {description}"
_SEP = "; "
_FIELD = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


def _format_value(value: Any) -> str:
    """Flatten a metadata value to text: category paths become ``A > B > C``, lists are comma-joined,
    dicts ``key: value`` pairs."""
    if value is None:
        return ""
    if type(value) is str:  # the common case first
        return value.strip()
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, dict):  # e.g. Amazon's "details": "Color: Red, Size: M"
        return ", ".join(f"{k}: {v}" for k, v in ((k, _format_value(v)) for k, v in value.items()) if v)
    if isinstance(value, list | tuple):
        parts: list[str] = []
        for v in value:
            if type(v) is str:
                s = v.strip()
            elif isinstance(v, list | tuple):  # a category path
                s = " > ".join(x for x in map(_format_value, v) if x)
            else:
                s = _format_value(v)
            if s and s not in parts:
                parts.append(s)
        return ", ".join(parts)
    return str(value).strip()


def template_fields(template: str) -> list[str]:
    """The field names a template refers to, in order."""
    return _FIELD.findall(template)


def validate_template(template: str) -> None:
    """Raise ``ValueError`` if ``template`` is not a usable ``{field}`` template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"item text template {template!r} is malformed ({e}); use fields like '{{title}}'") from e
    if not any(name for _, name, _, _ in parsed):
        raise ValueError(f"item text template {template!r} names no field; e.g. 'Title: {{title}}'")
    for _, name, spec, conv in parsed:
        if name is not None and (spec or conv or not _FIELD.fullmatch("{" + name + "}")):
            raise ValueError(f"item text template field {{{name}}} must be a plain field name, without format specs")


@functools.lru_cache(maxsize=64)
def _compiled(template: str) -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """The template's segments as (segment, field names, literal pieces between the fields)."""
    out = []
    for segment in template.split(_SEP):
        names = tuple(_FIELD.findall(segment))
        out.append((segment, names, tuple(_FIELD.split(segment)[::2])))
    return tuple(out)


def render_item_text(fields: Mapping[str, Any], template: str | None = None) -> str:
    """Render one item's text; segments whose fields are all missing are skipped.

    >>> render_item_text({"title": "Lipstick", "brand": None, "categories": [["Beauty", "Makeup"]]})
    'Title: Lipstick; Categories: Beauty > Makeup'
    """
    out: list[str] = []
    for segment, names, pieces in _compiled(template or DEFAULT_TEMPLATE):
        if not names:
            text = segment.strip()
        else:
            values = [_format_value(fields.get(n)) for n in names]
            if not any(values):
                continue
            parts = [pieces[0]]
            for value, piece in zip(values, pieces[1:], strict=True):
                parts += (value, piece)
            text = "".join(parts).strip()
        if text:
            out.append(text)
    return _SEP.join(out)
