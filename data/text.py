"""Item text: render an item's metadata fields through a template, skipping missing fields.

The template is a ``"; "``-separated list of segments such as ``"Title: {title}"``. A segment whose
fields are all missing (None, empty string, empty list) is dropped, so an item without a brand reads
``"Title: X; Categories: Y"`` rather than ``"Title: X; Brand: ; Categories: Y"``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

DEFAULT_TEMPLATE = "Title: {title}; Brand: {brand}; Categories: {categories}; Price: {price}; Description: {description}"
_SEP = "; "
_FIELD = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


def _format_value(value: Any) -> str:
    """Flatten a metadata value to text: category paths become ``A > B > C``, lists are comma-joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, list | tuple):
        parts: list[str] = []
        for v in value:
            if isinstance(v, list | tuple):  # a category path
                s = " > ".join(_format_value(x) for x in v if _format_value(x))
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


def render_item_text(fields: Mapping[str, Any], template: str | None = None) -> str:
    """Render one item's text; segments whose fields are all missing are skipped.

    >>> render_item_text({"title": "Lipstick", "brand": None, "categories": [["Beauty", "Makeup"]]})
    'Title: Lipstick; Categories: Beauty > Makeup'
    """
    template = template or DEFAULT_TEMPLATE
    out: list[str] = []
    for segment in template.split(_SEP):
        names = _FIELD.findall(segment)
        values = {n: _format_value(fields.get(n)) for n in names}
        if names and not any(values.values()):
            continue
        out.append(_FIELD.sub(lambda m, v=values: v[m.group(1)], segment).strip())
    return _SEP.join(s for s in out if s)
