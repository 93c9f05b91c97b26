"""sidrec: generative recommendation with semantic IDs.

The public API is imported lazily so that ``import sidrec.data`` stays light.
"""

from __future__ import annotations

from sidrec.utils.version import __version__

__all__ = ["Recommender", "__version__"]


def __getattr__(name: str):
    if name == "Recommender":
        from sidrec.api import Recommender

        return Recommender
    raise AttributeError(f"module 'sidrec' has no attribute {name!r}")
