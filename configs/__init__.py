"""YAML presets shipped with sidrec (``configs/<stage>/<name>.yaml``).

Each preset starts with a comment giving the command that uses it. Resolve a preset by
name with :func:`sidrec.utils.config.resolve_config_path` (``"generator/tiger"``).
"""
