"""Tiny random level-restricted T5 models for the decoding tests (no training, no downloads).

``LevelRestrictedT5`` mirrors the generator's contract (logits at decoder position t restricted to level
t's token range, decoder start = pad = 0) using only transformers, so the decoding tests exercise both
plain T5 variants (tied/untied scaling, relu/gated-gelu) and, in test_decoding.py, the real generator.
"""

from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

PAD, EOS = 0, 1


def level_offsets(level_sizes: list[int]) -> list[int]:
    """Token id of code 0 at each level for the layout pad, eos, level 0 codes, level 1 codes, ..."""
    offsets, start = [], 2
    for size in level_sizes:
        offsets.append(start)
        start += size
    return offsets


class LevelRestrictedT5(T5ForConditionalGeneration):
    """T5 whose logits at decoder position t are -1e9 outside level t's token range."""

    def __init__(self, config: T5Config, level_sizes: list[int]) -> None:
        super().__init__(config)
        offsets = level_offsets(level_sizes)
        allowed = torch.zeros(len(level_sizes), config.vocab_size, dtype=torch.bool)
        for t, (off, size) in enumerate(zip(offsets, level_sizes, strict=True)):
            allowed[t, off : off + size] = True
        self.register_buffer("level_allowed", allowed, persistent=False)

    def forward(self, *args, **kwargs):  # noqa: D401 - thin wrapper
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if cache is not None else 0
        out = super().forward(*args, **kwargs)
        steps = out.logits.shape[1]
        positions = (past + torch.arange(steps)).clamp(max=self.level_allowed.shape[0] - 1)
        mask = self.level_allowed[positions]  # (T, V)
        out.logits = out.logits.masked_fill(~mask[None], -1e9)
        return out


def make_model(
    level_sizes: list[int],
    *,
    seed: int,
    num_user_tokens: int = 4,
    tied: bool = True,
    ff: str = "relu",
    weight_std: float = 0.5,
) -> LevelRestrictedT5:
    """A random 2+2-layer T5 (d_model 32, 4 heads of 8) with spread-out logits (few near-ties)."""
    torch.manual_seed(seed)
    vocab = 2 + sum(level_sizes) + num_user_tokens
    kwargs = {} if tied else {"tie_word_embeddings": False}
    config = T5Config(
        vocab_size=vocab,
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        dropout_rate=0.0,
        feed_forward_proj=ff,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        **kwargs,
    )
    model = LevelRestrictedT5(config, level_sizes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, weight_std)
        model.lm_head.weight.normal_(0.0, 6 * weight_std)  # peaked level distributions: few near-ties
    return model.eval()


def random_inputs(
    batch: int, vocab: int, *, seed: int, max_len: int = 9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random encoder ids (B, S) with right padding of random lengths >= 2."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch, max_len), generator=gen)
    lengths = torch.randint(2, max_len + 1, (batch,), generator=gen)
    mask = (torch.arange(max_len)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def test_stand_in_restricts_each_position_to_its_level() -> None:
    sizes = [3, 4, 2]
    model = make_model(sizes, seed=0)
    ids, mask = random_inputs(2, model.config.vocab_size, seed=0)
    offsets = level_offsets(sizes)
    decoder_ids = torch.tensor([[PAD, offsets[0], offsets[1]]] * 2)
    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits  # (2, 3, V)
    for t, (off, size) in enumerate(zip(offsets, sizes, strict=True)):
        inside = logits[:, t, off : off + size]
        assert (inside > -1e8).all()
        assert (logits[:, t, :off] <= -1e9).all() and (logits[:, t, off + size :] <= -1e9).all()
