"""The generator: a T5 encoder-decoder over semantic-ID tokens whose logits are restricted per level.

The decoder emits an item as its L level tokens (no eos: the length is fixed). At decoder position t
only level t's tokens are possible, so the logits of every other token are set to ``MASK_VALUE`` (a
large negative, not -inf, so softmax never yields NaN). Consequences:

- the training loss is the per-level softmax cross-entropy;
- HF ``generate(num_beams=B, prefix_allowed_tokens_fn=...)`` log-probs equal a log-softmax over level
  t's slice of ``lm_head`` only, which is what ``sidrec.decoding.constrained_beam_search`` computes.

The level of the next token is read from the last decoder input token (start token -> level 0, a
level-l token -> level l+1), so the restriction also holds with HF's KV cache, where only the newest
decoder token is passed to ``forward``.

Checkpoints are folders: ``config.json`` (the T5Config plus sidrec keys), ``model.safetensors`` and
``vocab.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model
from torch import nn
from torch.nn import functional as F
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput

from sidrec.seqmodel.vocab import EOS_TOKEN_ID, PAD_TOKEN_ID, SemanticIdVocab
from sidrec.utils import atomic_dir, load_safetensors_into, read_json
from sidrec.utils.io import safetensors_os_errors

logger = logging.getLogger(__name__)

__all__ = ["GENERATOR_FORMAT_VERSION", "MASK_VALUE", "SemanticIdGenerator", "build_t5_config"]

GENERATOR_FORMAT_VERSION = 1
MASK_VALUE = -1e9  # clipped to the dtype's range; exp(MASK_VALUE - max) == 0 exactly in fp32/bf16/fp16
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def build_t5_config(
    *,
    vocab: SemanticIdVocab,
    d_model: int = 128,
    num_layers: int = 4,
    num_decoder_layers: int = 4,
    num_heads: int = 6,
    d_kv: int = 64,
    d_ff: int = 1024,
    dropout_rate: float = 0.1,
    feed_forward_proj: str = "relu",
    relative_attention_num_buckets: int = 32,
    relative_attention_max_distance: int = 128,
    max_items: int = 20,
    config_class: type[T5Config] = T5Config,
    **family_fields: Any,
) -> T5Config:
    """A T5Config for ``vocab`` (defaults: the TIGER paper's sizes) with the sidrec keys attached.

    ``max_items`` (history window used in training) is stored so inference encodes histories the same way.
    ``config_class`` / ``family_fields``: a family's own config class (a ``T5Config`` subclass) and its fields.
    """
    return config_class(
        vocab_size=vocab.vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_decoder_layers,
        num_heads=num_heads,
        dropout_rate=dropout_rate,
        feed_forward_proj=feed_forward_proj,
        relative_attention_num_buckets=relative_attention_num_buckets,
        relative_attention_max_distance=relative_attention_max_distance,
        pad_token_id=PAD_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        decoder_start_token_id=PAD_TOKEN_ID,
        sidrec_format_version=GENERATOR_FORMAT_VERSION,
        level_sizes=list(vocab.level_sizes),
        num_user_buckets=vocab.num_user_buckets,
        max_items=max_items,
        **family_fields,
    )


def _vocab_from_config(config: T5Config) -> SemanticIdVocab:
    sizes = getattr(config, "level_sizes", None)
    if sizes is None:
        raise ValueError(
            "this T5Config has no 'level_sizes': build it with sidrec.seqmodel.build_t5_config(vocab=...)"
        )
    vocab = SemanticIdVocab(level_sizes=sizes, num_user_buckets=getattr(config, "num_user_buckets", 0))
    if vocab.vocab_size != config.vocab_size:
        raise ValueError(f"config.vocab_size={config.vocab_size} but its level_sizes imply {vocab.vocab_size}")
    return vocab



def save_generator_folder(model: nn.Module, directory: str | os.PathLike) -> None:
    """Every generator family's checkpoint: ``config.json``, ``model.safetensors`` (tied weights once) and
    ``vocab.json``, written into a temporary folder and swapped in (``atomic_dir``)."""
    with atomic_dir(directory) as tmp:
        model.config.to_json_file(str(Path(tmp) / CONFIG_FILE))
        with safetensors_os_errors(Path(directory) / WEIGHTS_FILE):
            save_model(model, str(Path(tmp) / WEIGHTS_FILE))
        model.vocab.save(tmp)

class SemanticIdGenerator(T5ForConditionalGeneration):
    """T5ForConditionalGeneration whose decoder logits at position t cover only level t's tokens.

    Build with ``SemanticIdGenerator(build_t5_config(vocab=vocab, ...))``; the vocab is rebuilt from the
    config and available as ``model.vocab`` (``model.vocab.level_offsets`` is what the fast decoder needs).
    """

    family = "tiger"

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self.vocab = _vocab_from_config(config)
        # the beam comes from the generator's decoding settings (``DecodingSettings.apply_to``, called by the
        # loaders and the trainer); a bare model searches greedily unless ``num_beams`` is passed
        self.generation_config = self.default_generation_config(num_beams=1)
        self.max_items = int(getattr(config, "max_items", 20))
        self._level_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ generation defaults
    def default_generation_config(self, *, num_beams: int) -> GenerationConfig:
        """Beam search, never sampling, exactly L new tokens, summed log-probs as scores."""
        return GenerationConfig(
            do_sample=False,
            num_beams=num_beams,
            num_return_sequences=1,
            max_new_tokens=self.vocab.num_levels,
            min_new_tokens=self.vocab.num_levels,
            length_penalty=0.0,
            decoder_start_token_id=PAD_TOKEN_ID,
            pad_token_id=PAD_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
            bos_token_id=None,
        )

    # ------------------------------------------------------------------ inputs
    def history_inputs(
        self, histories: Sequence[Sequence[int]], *, item_codes: np.ndarray | None = None,
        user_ids: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder inputs ``(B, S)`` for item-index histories: their level tokens (``encode_histories``).

        ``item_codes (N, L)`` is the tokenizer's table; ``user_ids`` are used iff the vocab has user buckets.
        """
        from sidrec.seqmodel.inputs import encode_histories

        if item_codes is None:
            raise ValueError("the tiger family encodes histories as codes: pass item_codes=tokenizer.codes")
        users = list(user_ids) if self.vocab.num_user_buckets else None
        if self.vocab.num_user_buckets and user_ids is None:
            raise ValueError("this generator uses user tokens; pass user_ids (one per history)")
        return encode_histories(self.vocab, item_codes, histories, user_ids=users, max_items=self.max_items)

    # ------------------------------------------------------------------ level restriction
    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``next_level (V,)`` and ``allowed (L+1, V)`` on ``device`` (built once per device)."""
        tables = self._level_tables.get(device)
        if tables is None:
            levels = torch.as_tensor(self.vocab.token_levels())  # (V,) -1 for non-code tokens
            next_level = torch.where(levels >= 0, levels + 1, torch.full_like(levels, self.vocab.num_levels))
            next_level[PAD_TOKEN_ID] = 0  # the decoder start token
            allowed = torch.zeros(self.vocab.num_levels + 1, self.vocab.vocab_size, dtype=torch.bool)
            for t in range(self.vocab.num_levels):
                allowed[t, slice(*self.vocab.level_range(t))] = True
            allowed[self.vocab.num_levels, EOS_TOKEN_ID] = True  # past the last level only eos
            tables = (next_level.to(device), allowed.to(device))
            self._level_tables[device] = tables
        return tables

    def restrict_logits(self, logits: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        """Fill every token that is not of the next level with ``MASK_VALUE``.

        Args:
            logits: ``(B, T, V)`` decoder logits.
            decoder_input_ids: ``(B, T)`` decoder inputs that produced them (start token first, or with a
                KV cache only the newest tokens).
        """
        next_level, allowed = self._tables(logits.device)
        mask = allowed[next_level[decoder_input_ids]]  # (B, T, V)
        fill = max(MASK_VALUE, torch.finfo(logits.dtype).min / 2)
        return logits.masked_fill(~mask, fill)

    def forward(  # noqa: D417 - same arguments as T5ForConditionalGeneration.forward
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput:
        """T5 forward with level-restricted logits; ``labels (B, L)`` are an item's level tokens."""
        if kwargs.get("decoder_inputs_embeds") is not None:
            raise ValueError("SemanticIdGenerator needs decoder_input_ids (the level restriction reads them)")
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass labels (B, L) for training or decoder_input_ids for scoring")
            decoder_input_ids = self._shift_right(labels)
        out = super().forward(
            input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, **kwargs
        )
        out.logits = self.restrict_logits(out.logits, decoder_input_ids)  # (B, T, V)
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:  # type: ignore[override]
        """Write ``config.json``, ``model.safetensors`` and ``vocab.json`` to a folder (atomically)."""
        save_generator_folder(self, save_directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *_: Any, **__: Any) -> SemanticIdGenerator:  # type: ignore[override]
        """Load a folder written by :meth:`save_pretrained` (CPU, eval mode)."""
        folder = Path(directory)
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, "vocab.json") if not (folder / f).is_file()]
        if missing:
            raise ValueError(
                f"{folder} is not a sidrec generator folder (missing {', '.join(missing)}); "
                "train one with `python -m sidrec.train.generator --run RUN`"
            )
        retrain = "retrain it (`sidrec train --run RUN --overwrite`) or restore the folder"
        raw = read_json(folder / CONFIG_FILE, fix=retrain)
        if not isinstance(raw, dict):
            raise ValueError(f"{folder / CONFIG_FILE} is not a generator config (a JSON object); {retrain}")
        version = raw.get("sidrec_format_version")
        if version != GENERATOR_FORMAT_VERSION:
            raise ValueError(
                f"{folder}: generator format {version!r}, this sidrec reads {GENERATOR_FORMAT_VERSION}; "
                "retrain it with this version of sidrec"
            )
        family = raw.get("sidrec_family", "tiger")
        if family != cls.family:
            raise ValueError(
                f"{folder} holds a {family!r}-family generator, not {cls.family!r}; load it with "
                "sidrec.seqmodel.load_generator(folder), which picks the class from config.json"
            )
        try:
            config = cls.config_class.from_dict(raw)
            model = cls(config)
        except Exception as e:  # transformers' config validators raise their own types (not ValueError)
            raise ValueError(f"{folder / CONFIG_FILE} does not describe a valid generator ({e}); {retrain}") from e
        if SemanticIdVocab.load(folder) != model.vocab:
            raise ValueError(f"{folder}: vocab.json disagrees with config.json (level_sizes / user buckets)")
        missing_keys, unexpected = load_safetensors_into(model, folder / WEIGHTS_FILE, strict=False, fix=retrain)
        if unexpected or [k for k in missing_keys if not is_tied_to_shared(model, k)]:
            raise ValueError(
                f"{folder}/{WEIGHTS_FILE} does not match config.json (missing {missing_keys}, unexpected "
                f"{unexpected}); the folder mixes files from different models"
            )
        return model.eval()


def is_tied_to_shared(model: torch.nn.Module, key: str) -> bool:
    """Whether parameter ``key`` shares storage with ``shared.weight`` (saved once in safetensors)."""
    param = model.get_parameter(key) if "." in key else None
    return param is not None and param.data_ptr() == model.shared.weight.data_ptr()
