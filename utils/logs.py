"""One logging set-up for every sidrec entry point (CLI, ``python -m sidrec.train.*``, evaluation)."""

from __future__ import annotations

import logging

# Libraries whose INFO lines are noise for a sidrec user (faiss.loader reports, as errors, the CPU
# builds it could not load before it loads one that works).
QUIET_LOGGERS = ("datasets", "transformers", "accelerate", "torch.distributed", "faiss.loader", "httpx")


def configure_logging(level: int = logging.INFO, *, prefix: str = "", force: bool = False) -> None:
    """Timestamped one-line logs at ``level`` (no-op when logging is already set up, unless ``force``).

    ``prefix`` goes before the level name (e.g. ``"[rank 1] "`` under several processes).
    """
    if force or not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S", force=force)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
