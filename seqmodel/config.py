"""The generator families' model fields, declared once, and the item family's typed model config.

Two kinds of config meet here:

- **Field groups** (flat dataclasses with ``FIELD_RULES``): what a user sets in a preset or on the command
  line to shape a model. ``T5Shape`` (every family built on T5 blocks), ``ItemInputs`` (the item-level
  families' input vectors), ``DenseHeadFields`` (the ``item`` family's dense head) and ``ParallelHeads``
  (the ``parallel`` family's digit heads). The training config
  (``sidrec.train.generator_config.GeneratorTrainConfig``) inherits them, so a preset stays flat and a model
  hyperparameter is declared in one place: add it to its group here and to the model that reads it.
- **Model configs** (HF ``PretrainedConfig`` subclasses, saved as ``config.json``): what a checkpoint needs to
  rebuild itself. ``ItemGeneratorConfig`` is a ``T5Config`` with the item family's typed fields; checkpoints
  written before it (a plain ``T5Config`` with the same keys as loose attributes) load into it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import T5Config

from sidrec.utils.config import Choice, Range, Rule

__all__ = ["DenseHeadFields", "ItemGeneratorConfig", "ItemInputs", "ParallelHeads", "T5Shape", "t5_activations"]


def t5_activations() -> list[str]:
    """What T5Config accepts as ``feed_forward_proj``: an activation ``ACT`` or ``gated-ACT``."""
    from transformers.activations import ACT2FN

    plain = sorted(a for a in ACT2FN if "-" not in a)
    return ["relu", "gated-gelu", *(a for a in plain if a != "relu"), *(f"gated-{a}" for a in plain if a != "gelu")]


@dataclass
class T5Shape:
    """Sizes of the T5 blocks every generator family is built from.

    d_model: width of every hidden state; num_layers / num_decoder_layers: encoder / decoder blocks
    (families without a decoder ignore the latter); num_heads x d_kv: attention heads and their width;
    d_ff: feed-forward width; dropout: dropout rate everywhere; feed_forward_proj: T5's activation
    (``relu``, ``gated-gelu``, ...); max_items: history items the model reads (the encoder's window).
    """

    d_model: int = 128
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    feed_forward_proj: str = "relu"
    max_items: int = 20

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "d_model": Range(1), "num_layers": Range(1), "num_decoder_layers": Range(1), "num_heads": Range(1),
        "d_kv": Range(1), "d_ff": Range(1), "dropout": Range(0, 1, hi_open=True),
        "feed_forward_proj": Choice(provider=t5_activations), "max_items": Range(1),
    }

    def t5_kwargs(self) -> dict[str, Any]:
        """The ``build_t5_config`` keywords these fields stand for."""
        return {"d_model": self.d_model, "num_layers": self.num_layers, "num_decoder_layers": self.num_decoder_layers,
                "num_heads": self.num_heads, "d_kv": self.d_kv, "d_ff": self.d_ff, "dropout_rate": self.dropout,
                "feed_forward_proj": self.feed_forward_proj, "max_items": self.max_items}


@dataclass
class ItemInputs:
    """How the item-level families (``item``, ``parallel``) build one input vector per history item.

    text_input: add a projection of the tokenizer's frozen text embedding. id_min_count: items with at least
    this many training interactions get a learned ID embedding (0 = none; every other item, and items added
    later, is represented by its codes and text alone). id_dropout: training-time chance of hiding an
    item's ID vector, so codes and text carry rare items too. input_dropout: dropout on each history item's
    input vector before the first block (SASRec's and RPG's embedding dropout), on top of ``dropout``, which
    T5 applies everywhere (attention, feed-forward, residuals): it regularises the item tables, which over-fit
    first (measured on the parallel preset: see ``configs/generator/parallel.yaml``).
    """

    text_input: bool = True
    id_min_count: int = 1
    id_dropout: float = 0.0
    input_dropout: float = 0.0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {"id_min_count": Range(0), "id_dropout": Range(0, 1, hi_open=True),
                                              "input_dropout": Range(0, 1, hi_open=True)}


@dataclass
class DenseHeadFields:
    """The ``item`` family's dense head (``sidrec.seqmodel.item_model``).

    dense_head: train a dense head (user state . item vector, full softmax); dense_weight: its loss weight.
    distill_weight: the decoder also learns the dense head's distribution over each level's codes given the
    true prefix (self-distillation).
    """

    dense_head: bool = True
    dense_weight: float = 1.0
    distill_weight: float = 0.0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {"dense_weight": Range(0), "distill_weight": Range(0)}


@dataclass
class ParallelHeads:
    """The ``parallel`` family's digit input and output heads (``sidrec.seqmodel.parallel_model``; RPG-style).

    digit_input_scale: an item's code part is ``scale * sqrt(d_model) * mean`` of its digit embeddings; the
    mean of M independent vectors is about sqrt(M) smaller than one of them, so 0 means sqrt(M) (the size
    of their sum). head: how a digit's logits come from the user state: ``tied`` (a per-digit projection,
    then dot products with that digit's input embeddings), ``untied`` (own output embeddings) or ``cosine``
    (tied, cosine similarity over ``head_temperature``). item_loss_weight: weight of a second loss next to
    the per-digit cross-entropy: the softmax over the whole training catalog of the items' scores (the sum
    of their digits' logits, the score exact ranking sorts by), SASRec's full-softmax objective with items
    made of digits (0 = RPG's per-digit loss alone); item_negatives: score the target against this many
    items drawn uniformly from the training catalog at each step instead of all of them (0 = all; a
    sampled softmax, much cheaper for large catalogs).
    """

    digit_input_scale: float = 0.0
    head: str = "tied"
    head_temperature: float = 0.07
    item_loss_weight: float = 0.0
    item_negatives: int = 0

    HEADS: ClassVar[tuple[str, ...]] = ("tied", "untied", "cosine")
    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "digit_input_scale": Range(0), "head": Choice(HEADS),
        "head_temperature": Range(0, lo_open=True), "item_loss_weight": Range(0),
        "item_negatives": Range(0),
    }


class ItemGeneratorConfig(T5Config):
    """``config.json`` of an ``item``-family generator: a T5Config plus its item table and heads.

    num_items: rows of the item table (catalog size N, grown by ``add_items``); text_dim: width of the
    frozen text embeddings (0 = no text input); num_id_rows: items with a learned ID embedding (0 = none);
    id_dropout, input_dropout: as ``ItemInputs``; dense_head, dense_loss_weight, distill_weight: as
    ``DenseHeadFields`` (``dense_weight`` there).
    """

    sidrec_family: str = "item"
    num_items: int = 0
    text_dim: int = 0
    num_id_rows: int = 0
    id_dropout: float = 0.0
    input_dropout: float = 0.0
    dense_head: bool = True
    dense_loss_weight: float = 1.0
    distill_weight: float = 0.0
