"""``sidrec serve``: an HTTP service over a trained run (install with ``pip install 'sidrec[serve]'``).

``create_app(run)`` builds the FastAPI app; ``load_state(state_dir)`` rebuilds, offline, what a server
restarted on a state folder serves. See DEVELOPERS.md ("Serving") for the design and README "Serving" for use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "load_state"]


def create_app(run: Any = None, **kwargs: Any) -> Any:
    """The FastAPI app serving ``run`` (see ``sidrec.serve.app.create_app``)."""
    try:
        from sidrec.serve.app import create_app as _create_app
    except ImportError as e:
        raise ImportError(f"serving needs the 'serve' extra ({e}): pip install 'sidrec[serve]'") from e

    return _create_app(run, **kwargs)


def load_state(state_dir: Any) -> Any:
    """The ``Recommender`` a server restarted on ``state_dir`` serves: its CURRENT snapshot + the change log."""
    from sidrec.serve.state import load_state as _load_state

    return _load_state(state_dir)
