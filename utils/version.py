"""The package version, in one place (``sidrec.__version__`` and every provenance record read it here)."""

__version__ = "0.1.0"
