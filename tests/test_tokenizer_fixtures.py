"""Fixtures (no tests) shared by test_tokenizer.py and test_quantizers.py: 600 real Beauty items embedded with MiniLM once.

The embeddings are cached in pytest's cache folder (keyed by model + template + text hash, like the
library cache), so only the first test session on a machine pays for the encoding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("SIDREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NUM_ITEMS = 600


def _beauty_items(n: int) -> list[dict]:
    path = SHARED_DATA / "amazon2014_beauty" / "items.jsonl"
    if not path.is_file():
        pytest.skip(f"shared dataset {path} not available")
    items = []
    with open(path) as f:
        for line in f:
            items.append(json.loads(line))
            if len(items) == n:
                break
    return items


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread while these tests run: several threads on a small shared CPU are much slower.

    Autouse in every module that imports it (the tokenizer, reliability and generator-training tests)."""
    from sidrec.utils.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def beauty_items() -> list[dict]:
    """The first 600 Beauty item records (dicts with item_id, title, brand, categories, ...)."""
    return _beauty_items(NUM_ITEMS)


@pytest.fixture(scope="session")
def beauty_texts(beauty_items) -> list[str]:
    from sidrec.data import DEFAULT_TEMPLATE, render_item_text

    return [render_item_text(it, DEFAULT_TEMPLATE) for it in beauty_items]


@pytest.fixture(scope="session")
def embedding_cache(request) -> Path:
    return Path(request.config.cache.mkdir("sidrec_embeddings"))


@pytest.fixture(scope="session")
def beauty_emb(beauty_texts, embedding_cache) -> np.ndarray:
    """MiniLM embeddings ``(600, 384)`` of the Beauty slice."""
    from sidrec.data import DEFAULT_TEMPLATE
    from sidrec.tokenizer import embed_texts

    return embed_texts(beauty_texts, template=DEFAULT_TEMPLATE, cache_dir=embedding_cache, show_progress=False)


def small_config(method: str, **overrides):
    """A fast config for tests: 16 codes per level, few epochs, TIGER's plain collision level."""
    from sidrec.tokenizer import TokenizerConfig
    from sidrec.utils import load_config

    base = {"method": method, "codebook_size": 16, "rqvae_epochs": 20, "fsq_epochs": 20, "fsq_levels": 2,
            "kmeans_niter": 10, "rqvae_batch_size": 256, "fsq_batch_size": 256, "rqvae_dead_code_every": 5,
            "rqvae_dead_code_stop_before_end": 5, "rqvae_hidden_dims": [64], "fsq_hidden_dims": [64],
            "rqvae_latent_dim": 16, "fsq_lr": 3e-3, "collision_strategy": "append"}
    base.update(overrides)
    return load_config(TokenizerConfig, None, base)
