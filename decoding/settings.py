"""``DecodingSettings``: how a trained generator ranks the catalog, in one typed file beside its weights.

Validation chooses these values (the dense weight, the popularity correction) and records the beam it
validated with; decoding, evaluation, the API and the server read them from ``generator/decoding.json``.
Their defaults live here and nowhere else. A checkpoint written before this file existed kept the same
values as loose attributes of its ``config.json``; ``DecodingSettings.load`` reads those once, with a
deprecation note in the log, so old folders keep ranking the way they were tuned.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_BEAM_SIZE", "DECODING_FILE", "DecodingSettings"]

DECODING_FILE = "decoding.json"
DEFAULT_BEAM_SIZE = 20  # TIGER's beam; a checkpoint validated with another one records it
FORMAT_VERSION = 1
#: the attributes older checkpoints kept on their T5 config, and the setting each one became
LEGACY_CONFIG_KEYS = {"beam_size": "beam_size", "hybrid_weight": "dense_weight",
                      "hybrid_weight_plain": "dense_weight_plain", "prior_weight": "prior_weight"}


@dataclass(frozen=True)
class DecodingSettings:
    """How a generator ranks items at inference (chosen on VALID after training; see the module docstring).

    Attributes:
        beam_size: candidates kept per level by the trie-constrained beam search (beam families); the beam
            the dense weight was chosen with. Ignored by families that score the whole catalog exactly.
        dense_weight: weight of the dense score next to the generation log-probability
            (``logp + dense_weight * dense``; 0 = generation only).
        dense_weight_plain: the dense weight chosen without the popularity correction (the evaluation's
            "uncorrected" ablation); None = the same as ``dense_weight``.
        prior_weight: popularity correction of the beam search (``sidrec.decoding.CodePrior``; 0 = off).
        dense_candidates: this many items with the best dense scores over the whole catalog join the beam's
            candidates, each scored exactly like them (its generation log-probability by teacher forcing, the
            correction, the dense score): what a beam that loses the target misses (0 = the beam's only).
        new_candidates: this many items the generator never saw in training (added later, or a cold split's),
            the best by dense score, join the candidates the same way: a beam never proposes an item nobody
            has bought, so without them new items are recommendable only in principle (0 = off).
    """

    beam_size: int = DEFAULT_BEAM_SIZE
    dense_weight: float = 0.0
    dense_weight_plain: float | None = None
    prior_weight: float = 0.0
    dense_candidates: int = 0
    new_candidates: int = 0

    _legacy_noted: ClassVar[set[str]] = set()

    def __post_init__(self) -> None:
        if int(self.beam_size) < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.dense_weight < 0 or (self.dense_weight_plain is not None and self.dense_weight_plain < 0):
            raise ValueError(f"dense weights must be >= 0, got {self.dense_weight}, {self.dense_weight_plain}")
        if not 0.0 <= self.prior_weight <= 1.0:
            raise ValueError(f"prior_weight must be in [0, 1], got {self.prior_weight}")
        if int(self.dense_candidates) < 0 or int(self.new_candidates) < 0:
            raise ValueError(f"dense_candidates and new_candidates must be >= 0, got {self.dense_candidates}, "
                             f"{self.new_candidates}")

    @property
    def plain_weight(self) -> float:
        """The dense weight to use when the popularity correction is off."""
        return self.dense_weight if self.dense_weight_plain is None else self.dense_weight_plain

    def replace(self, **changes: Any) -> DecodingSettings:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def apply_to(self, model: Any) -> Any:
        """Make HF ``generate`` on ``model`` use this beam (its ``generation_config.num_beams``); returns it.

        Loaders and the trainer call this, so a checkpoint never carries two different beams."""
        generation = getattr(model, "generation_config", None)
        if generation is not None:
            generation.num_beams = int(self.beam_size)
        return model

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``folder/decoding.json`` (atomic)."""
        from sidrec.utils import atomic_write_json

        atomic_write_json(Path(folder) / DECODING_FILE, self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, where: str) -> DecodingSettings:
        version = raw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"{where}: decoding settings format {version!r}, this sidrec reads {FORMAT_VERSION}; "
                             "upgrade sidrec or retrain the generator")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known - {"format_version"})
        if unknown:
            raise ValueError(f"{where}: unknown decoding settings {unknown}; known: {sorted(known)}")
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad decoding settings ({e}); retrain the generator or fix the file") from e

    @classmethod
    def load(cls, folder: str | os.PathLike, *, legacy_config: Any = None) -> DecodingSettings:
        """``folder/decoding.json``; without it, the values an older checkpoint kept in ``legacy_config``
        (its model config, read once with a deprecation note), else the defaults."""
        from sidrec.utils import read_json

        path = Path(folder) / DECODING_FILE
        if path.is_file():
            raw = read_json(path, fix="retrain the generator (`sidrec train --run RUN --overwrite`) or restore it")
            if not isinstance(raw, dict):
                raise ValueError(f"{path} is not a JSON object of decoding settings; retrain or restore it")
            return cls.from_dict(raw, where=str(path))
        return cls.from_legacy_config(legacy_config, where=str(folder))

    @classmethod
    def from_legacy_config(cls, config: Any, *, where: str) -> DecodingSettings:
        """The settings an older checkpoint stored as attributes of its model config (None: defaults)."""
        values = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        old_keys = [old for old in LEGACY_CONFIG_KEYS if values.get(old) is not None]
        found = {LEGACY_CONFIG_KEYS[old]: values[old] for old in old_keys}
        if found and where not in cls._legacy_noted:
            cls._legacy_noted.add(where)
            logger.info("%s: decoding settings read from config.json (%s), as written by an older sidrec; "
                        "save the generator again to write %s", where, ", ".join(old_keys), DECODING_FILE)
        return cls(**found)
