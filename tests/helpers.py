"""Helpers (no fixtures, no tests) shared by the tokenizer and quantizer tests."""

from __future__ import annotations


def small_config(method: str, **overrides):
    """A fast config for tests: 16 codes per level, few epochs, TIGER's plain collision level."""
    from sidrec.tokenizer import TokenizerConfig
    from sidrec.utils import load_config

    base = {"method": method, "codebook_size": 16, "rqvae_epochs": 20, "fsq_epochs": 20, "fsq_levels": 2,
            "kmeans_niter": 10, "rqvae_batch_size": 256, "fsq_batch_size": 256, "rqvae_dead_code_every": 5,
            "rqvae_dead_code_stop_before_end": 5, "rqvae_hidden_dims": [64], "fsq_hidden_dims": [64],
            "rqvae_latent_dim": 16, "fsq_lr": 3e-3, "collision_strategy": "append", "opq_pca_dim": 48,
            "opq_niter": 5}
    base.update(overrides)
    return load_config(TokenizerConfig, None, base)
