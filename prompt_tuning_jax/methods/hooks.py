"""Where a method plugs into the T5 (`models/t5.py`), and the per-example inputs it may read.

A method's `hooks()` is a `Hooks`: functions the T5 calls at five fixed points. Each is None
by default, and a None hook is not called at all, so plain T5 and every method leave the
points they do not use exactly as T5X computes them.

A hook runs inside the module that calls it: a flax module it creates there is that module's
child, and its `name=` extends that module's path. `Hooks.keys_values` creating
`IA3Scaling(name='k_conv')` inside `encoder/layers_0/attention` owns
`encoder/layers_0/attention/k_conv/...`, the path Flaxformer's `k_conv` has.

  hook            called in                         maps
  encoder_input   encoder                           embedded [b, t, H], valid [b, t]
                                                    -> EncoderInput: x [b, L, H], valid [b, L],
                                                       prompt [b, L] (True at prompt positions)
  encoder_mask    encoder                           valid [b, L], prompt [b, L]
                                                    -> self-attention mask [b, 1, L, L]
  layer_input     encoder/layers_i, decoder/layers_i x [b, L, H] -> x, before the layer
  keys_values     each attention (`site.block`)     key, value [b, k, heads, head_dim] and the
                                                    bias [b|1, h|1, q, k] -> the three, with k
                                                    free to grow (a prefix adds visible columns)
  mlp_hidden      each layer's mlp                  hidden [b, L, mlp] (the product of the
                                                    activations, before dropout and `wo`) -> hidden

A decoder-only LM (`models/decoder_only.py`) has one point of its own, `decoder_prompt`: an
unbound module (parent=None) its decoder adopts as `prompt` when it is set up (so its
parameters are `decoder/prompt/...`), mapping (embedded [b, T, H], valid [b, T],
bidirectional [b, T] or None, the prefix's length [b], prompts, prompt_mask, right_align)
to (combined [b, S, H], valid, bidirectional, out_index [b, T]): `prompts.PromptSequence`.
The decoder calls it on every sequence it embeds, a cache prefill included.

`keys_values` sees the keys and values attended: in cached decoding, the whole cache (which
holds the sequence's own positions only), so a prefix is added on every step and never cached.
The bias it gets already spans the `Method.prefix_length(site.block)` key positions a prefix
adds before the sequence (always visible, relative positions counted from them).
In the decoder, `prompt` is None (no prompt positions there yet).

A module that hooks of several layers share (prefix tuning's prefix generators) cannot be
created inside one of them: `Hooks.shared` makes it, once, as the T5's child `shared_name`
(its parameter paths start there), and every hook is then called with it as `shared=`.

`MethodInputs` are the per-example inputs a method may read: the one way they reach the model
(`T5.__call__`, `encode`, `decode`: `method_inputs=`). Field names equal the batch features
that carry them (`data.TASK_INDEX` is 'task_index'), so `MethodInputs.from_batch` reads a
training batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax.numpy as jnp

Array = jnp.ndarray

ENCODER, DECODER = 'encoder', 'decoder'
# `Site.block` of the attentions: the module names that fix their parameter paths.
ATTENTION, SELF_ATTENTION = 'attention', 'self_attention'
CROSS_ATTENTION = 'encoder_decoder_attention'
ATTENTION_BLOCKS = (ATTENTION, SELF_ATTENTION, CROSS_ATTENTION)
MLP = 'mlp'


class MethodInputs(NamedTuple):
  """Per-example inputs of a method (a pytree: None fields are absent)."""
  # [b, P, H] prompts replacing the learned one, one per example (mixed-task batches).
  prompts: Optional[Array] = None
  # [b, P] bool, False at the padding of prompts shorter than P.
  prompt_mask: Optional[Array] = None
  # [b] int32: each example's task in its mixture (`data.task_index_of`); in packed rows
  # [b, L], the task of the example at each encoder position.
  task_index: Optional[Array] = None
  # [b, L] int32, packed rows only (`data.pack_batch`): j at the j-th position of an example's
  # prompt, -1 elsewhere. The encoder keeps the row's length and fills these positions.
  prompt_slots: Optional[Array] = None

  @classmethod
  def from_batch(cls, batch: Mapping[str, Array]) -> 'MethodInputs':
    """The fields a batch carries (a training batch: its task index)."""
    return cls(**{name: batch[name] for name in cls._fields if name in batch})


class EncoderInput(NamedTuple):
  """What the encoder runs on: the combined sequence and which positions are what."""
  x: Array  # [b, L, H]
  valid: Array  # [b, L] bool, False at padding
  prompt: Array  # [b, L] bool, True at prompt positions


class Site(NamedTuple):
  """Where a hook is called: 'encoder' | 'decoder', the layer, and the block's module name."""
  stack: str
  layer: int
  block: str


# The T5's hook points, in the order a forward pass meets them.
T5_POINTS = ('encoder_input', 'encoder_mask', 'layer_input', 'keys_values', 'mlp_hidden')


@dataclasses.dataclass(frozen=True)
class Hooks:
  """The functions a method adds to the T5; None: that point is plain T5 (see the module doc)."""
  # (embedded, valid, *, inputs: MethodInputs) -> EncoderInput
  encoder_input: Optional[Callable[..., EncoderInput]] = None
  # (valid, prompt) -> mask [b, 1, L, L]
  encoder_mask: Optional[Callable[[Array, Array], Array]] = None
  # (x, *, site, prompt: [b, L] bool or None, inputs, decode) -> x
  layer_input: Optional[Callable[..., Array]] = None
  # (key, value, bias, *, site, inputs, decode) -> (key, value, bias)
  keys_values: Optional[Callable[..., tuple[Array, Array, Array]]] = None
  # (hidden, *, site) -> hidden
  mlp_hidden: Optional[Callable[..., Array]] = None
  # (T5 config) -> flax module, created once as the T5's child `shared_name`; None: none.
  shared: Optional[Callable[[Any], Any]] = None
  shared_name: Optional[str] = None
  # () -> an unbound module inserted into a decoder-only LM's sequence (see the module doc)
  decoder_prompt: Optional[Callable[[], Any]] = None

  def t5_points(self) -> tuple[str, ...]:
    """The names of the T5 points this method uses (a decoder-only LM has none of them)."""
    return tuple(name for name in T5_POINTS if getattr(self, name) is not None)

  def bind(self, shared) -> 'Hooks':
    """These hooks, each called with `shared=shared` (the T5's instance of `self.shared`)."""
    return dataclasses.replace(self, **{
        point: functools.partial(getattr(self, point), shared=shared)
        for point in self.t5_points()})


NO_HOOKS = Hooks()
