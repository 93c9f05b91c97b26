"""The tokenizer's flat config: one dataclass for every method, filled by ``sidrec.utils.load_config``.

Fields that only one method reads are prefixed with that method's name (``rqvae_*``, ``kmeans_*``,
``fsq_*``); the shared ones (levels, codebook size, seed, collisions, embeddings) apply to all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sidrec.utils.config import Choice, Range, Rule, Text

COLLISION_STRATEGIES = ("append", "reassign")


def _quantizer_names() -> list[str]:
    from sidrec.tokenizer.base import QUANTIZERS

    return sorted(QUANTIZERS)


@dataclass
class TokenizerConfig:
    """Settings for ``sidrec.train.tokenizer`` (see ``configs/tokenizer/*.yaml`` for presets)."""

    # which quantizer: a name registered in sidrec.tokenizer.base (rqvae, rqkmeans, fsq, opq)
    method: str = "rqvae"
    # semantic levels before the collision level (TIGER: 3). Fixed by default: every level is one more
    # decoder step per item and 20 more encoder tokens per history, so a large catalog gets a larger
    # codebook instead (below). For opq: the number of independent digits (RPG: 32), which a parallel
    # generator predicts all at once.
    num_levels: int = 3
    # codes per level for rqvae / rqkmeans. null (the default) = sized to the catalog: the smallest power
    # of two >= 256 whose code space codebook_size ** num_levels holds at least 100 IDs per item (at most
    # 1% of the IDs used), i.e. with 3 levels 256 up to 167,772 items (TIGER's 3 x 256 on Beauty's 12,101),
    # 512 up to 1,342,177 and 1024 up to 10,737,418; a catalog under 256 items gets the largest power of two
    # not above its size (k-means needs a point per code). opq: 256 codes per digit (the same for catalogs under
    # 256 items); more digits, not wider ones, grow its code space. An explicit size (or fsq's fsq_levels **
    # fsq_dims_per_token) whose code space is smaller gets a warning with the unique share and the largest
    # collision group after the fit (see sidrec.tokenizer.sizing).
    codebook_size: int | None = None
    seed: int = 0
    # torch CPU threads for the quantizer fit (0 = torch's default; embedding always uses the default).
    # 1 makes the fit reproducible bit for bit: with 2 threads the same seed gave different codes from run
    # to run on Beauty (threaded float sums); RQ-VAE on Beauty: 35 s on 1 thread, 24-26 s on 2 (idle).
    torch_threads: int = 1

    # embeddings: a sentence-transformers name or local path; the MiniLM names use the offline package
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_batch_size: int = 128

    # collisions: "append" = TIGER's extra level 0..n-1 for items sharing all codes; "reassign" = first
    # move colliding items to their next-best free code at the last semantic level (LC-Rec style), then
    # append the extra level for whatever still collides. Default reassign: on Beauty it lifts
    # unique_before_collision from 0.94 to 0.999 (RQ-VAE) and 0.74 to 0.998 (RQ-KMeans)
    collision_strategy: str = "reassign"
    # candidates tried per colliding item by "reassign" (nearest last-level codes)
    reassign_candidates: int = 8
    # size of the collision level = max(largest observed group, this minimum); the headroom lets
    # assign() place cold-start items that land in an existing group
    collision_min_size: int = 8
    # "reassign" then balances every group still larger than this: its members (index order, the first
    # stays) move to the nearest of their 256 nearest last-level codes holding the fewest items, while
    # that makes their group smaller. Off for Beauty (no group that large); at 1M clustered items it takes
    # the largest group from ~570 to 16, this cap (measured; reconstruction cosine 0.69 -> 0.57 there).
    # A larger final group is logged as a warning.
    max_collision_group: int = 16

    # rq-kmeans (also used for rq-vae codebook init)
    kmeans_niter: int = 25
    # k-means trains each level on a seeded sample of this many rows per code (all rows when the catalog
    # is smaller: Beauty's 12,101 items < 128 x 256); encoding then runs in chunks, so the fit's memory is
    # about the embedding matrix plus a fixed amount. null = every row (the pre-sampling behaviour).
    # Measured at 1M x 384, 512 codes: 128 per code trains in 22 s, 256 (faiss's default) in 46 s, with the
    # same quality (reconstruction cosine 0.694 vs 0.695, unique share 0.06% vs 0.07% before collisions).
    kmeans_points_per_centroid: int | None = 128

    # rq-vae (TIGER): MLP encoder 384 -> hidden -> latent, residual codebooks, mirrored decoder
    rqvae_hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    rqvae_latent_dim: int = 32
    rqvae_beta: float = 0.25
    rqvae_epochs: int = 40
    rqvae_batch_size: int = 1024
    rqvae_lr: float = 1e-3
    rqvae_weight_decay: float = 1e-4
    # check code usage on the whole catalog after epoch 1 and every N epochs, re-seed unused codes from
    # residuals (the latents move fast early on and would otherwise leave most codes empty)
    rqvae_dead_code_every: int = 2
    # no dead-code reset in the last N epochs, so re-seeded codes settle before the final encode
    rqvae_dead_code_stop_before_end: int = 5

    # fsq (RecGPT): project to num_levels * fsq_dims_per_token dims, bound with tanh, round each dim to
    # fsq_levels values; one token = fsq_dims_per_token dims -> fsq_levels ** fsq_dims_per_token codes
    fsq_levels: int = 4
    fsq_dims_per_token: int = 4
    fsq_hidden_dims: list[int] = field(default_factory=lambda: [512, 256])
    fsq_epochs: int = 40
    fsq_batch_size: int = 1024
    fsq_lr: float = 3e-3

    # opq (RPG): centre, PCA to opq_pca_dim dimensions (0 = keep the embedding's width), whitened when
    # opq_whiten (every direction weighs the same in the digits' distances), rotate by faiss OPQMatrix
    # (opq_niter alternations; opq_rotation false = plain PQ), then num_levels sub-quantizers of
    # opq_pca_dim / num_levels dimensions (k-means, kmeans_niter iterations, on kmeans_points_per_centroid
    # rows per code). The width must be a multiple of num_levels.
    opq_pca_dim: int = 128
    opq_whiten: bool = True
    opq_rotation: bool = True
    opq_niter: int = 20

    # collaborative signal in the codes (any method): cf_from names a trained ID model in the run folder
    # whose item vectors are concatenated with the text embedding before quantizing ("baselines/sasrec",
    # after `sidrec sasrec`; "" = text only). Each block is standardized; cf_weight scales the collaborative
    # one (1 = the same total variance as the text block). Items without a collaborative vector (new, or
    # never in training) get one predicted from their text by a ridge map (penalty cf_ridge) fitted on the
    # others, so new items still need only text (sidrec.tokenizer.features).
    cf_from: str = ""
    cf_weight: float = 1.0
    cf_ridge: float = 10.0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "method": Choice(provider=_quantizer_names), "num_levels": Range(1, 64),
        "codebook_size": Range(2, null=True),  # null: sized to the catalog (sidrec.tokenizer.sizing)
        "seed": Range(0), "torch_threads": Range(0), "embedding_model": Text(), "embedding_batch_size": Range(1),
        "collision_strategy": Choice(COLLISION_STRATEGIES), "reassign_candidates": Range(1),
        "collision_min_size": Range(1), "max_collision_group": Range(1), "kmeans_niter": Range(1),
        "kmeans_points_per_centroid": Range(1, null=True),  # null: k-means trains on every row
        "rqvae_hidden_dims": Range(1),
        "rqvae_latent_dim": Range(1), "rqvae_beta": Range(0), "rqvae_epochs": Range(1), "rqvae_batch_size": Range(1),
        "rqvae_lr": Range(0, lo_open=True), "rqvae_weight_decay": Range(0), "rqvae_dead_code_every": Range(1),
        "rqvae_dead_code_stop_before_end": Range(0), "fsq_levels": Range(2), "fsq_dims_per_token": Range(1),
        "fsq_hidden_dims": Range(1), "fsq_epochs": Range(1), "fsq_batch_size": Range(1),
        "fsq_lr": Range(0, lo_open=True), "opq_pca_dim": Range(0), "opq_niter": Range(1),
        "cf_from": Choice(("", "baselines/sasrec")), "cf_weight": Range(0), "cf_ridge": Range(0),
    }

    def validate(self) -> None:
        """Raise ``ValueError`` for settings that cannot work, naming the fix (per-field ranges: ``FIELD_RULES``)."""
        from sidrec.tokenizer.base import QUANTIZERS

        if self.method not in QUANTIZERS:
            raise ValueError(f"unknown tokenizer method {self.method!r}; use one of {sorted(QUANTIZERS)}")
        if self.collision_strategy not in COLLISION_STRATEGIES:
            raise ValueError(f"collision_strategy {self.collision_strategy!r} is not one of {COLLISION_STRATEGIES}")
        for name in ("num_levels", "collision_min_size", "reassign_candidates", "kmeans_niter", "max_collision_group",
                     "rqvae_latent_dim", "rqvae_epochs", "rqvae_batch_size", "fsq_dims_per_token", "fsq_epochs",
                     "fsq_batch_size", "embedding_batch_size", "rqvae_dead_code_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.codebook_size is not None and self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 (or null to size it to the catalog), got {self.codebook_size}")
        if self.kmeans_points_per_centroid is not None and self.kmeans_points_per_centroid < 1:
            raise ValueError(f"kmeans_points_per_centroid must be >= 1 (or null for every row), "
                             f"got {self.kmeans_points_per_centroid}")
        if self.fsq_levels < 2:
            raise ValueError(f"fsq_levels must be >= 2, got {self.fsq_levels}")
        if self.fsq_levels ** self.fsq_dims_per_token > 1 << 20:
            raise ValueError("fsq_levels ** fsq_dims_per_token exceeds 2^20 codes per token; lower either")
