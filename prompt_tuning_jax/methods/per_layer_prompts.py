"""Per-layer prompts (the original's `extended/train/per_layer.py`): besides the input
prompt, a learned prompt for every encoder layer (and, optionally, decoder layer), written
into the hidden states at the prompt positions before the layer.

Layer i's prompt is `encoder/layers_i/prompt/prompt/prompt` [P, emb] (the original's path).
The input prompt (`encoder/prompt/prompt/prompt`, placed as prompt tuning places it, suffix
included) provides the prompt positions; the `layer_input` hook gets their [b, L] mask.
'replace' overwrites the hidden states there with the layer's prompt (the input prompt then
only reserves the positions: layer 0 overwrites it, as in the original); 'add' adds the
layer's prompt to them (Qin & Eisner's deltas), which starts at zero, so that a new run
starts as prompt tuning. 'replace' starts its layer prompts uniform in [-0.5, 0.5], the
input prompt from PROMPT_INIT / PROMPT_FILE as prompt tuning's.

In a decoder, the hook needs prompt positions there: the encoder-decoder T5 has none (its
decoder gets `prompt=None`), so `decoder=True` stops the model's first trace with one line.
In cached decoding a decoder's prompt positions live in the cache: nothing is written.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional

import jax.numpy as jnp
from flax import linen as nn

from prompt_tuning_jax import optim
from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods.base import Method
from prompt_tuning_jax.methods.hooks import DECODER, Hooks
from prompt_tuning_jax.methods.prompt_tuning import PROMPT_PATH, PromptTuning
from prompt_tuning_jax.methods.visibility import Visibility

Array = jnp.ndarray


def replace_at(x: Array, rows: Array, at: Array) -> Array:
  """x [b, L, H] with `rows` [b, L, H] where `at` [b, L, 1]."""
  return jnp.where(at, rows, x)


def add_at(x: Array, rows: Array, at: Array) -> Array:
  """x [b, L, H] plus `rows` [b, L, H] where `at` [b, L, 1]; elsewhere x itself."""
  return jnp.where(at, x + rows, x)


# mode -> (the combination, the layer prompts' initialiser)
MODES: dict[str, tuple[Callable[[Array, Array, Array], Array], prompts_lib.Initializer]] = {
    'replace': (replace_at, prompts_lib.random_uniform()),
    'add': (add_at, nn.initializers.zeros),
}


class LayerPrompt(nn.Module):
  """A layer's [length, emb] prompt (its child `prompt`), combined into x at the prompt
  positions: the j-th prompt position of a row gets the prompt's row j."""
  length: int
  combine: Callable[[Array, Array, Array], Array]
  init: prompts_lib.Initializer

  @nn.compact
  def __call__(self, x: Array, prompt: Array, slots: Optional[Array] = None) -> Array:
    """x [b, L, H], prompt [b, L] bool (exactly `length` True per row) -> x [b, L, H].

    Packed rows give `slots` [b, L] (`MethodInputs.prompt_slots`): each example's prompt
    positions take the prompt's rows by their slot.
    """
    learned = prompts_lib.Prompt(self.length, self.init, name='prompt')(x.shape[-1])  # [P, H]
    row = jnp.cumsum(prompt, axis=1) - 1 if slots is None else slots
    row = jnp.clip(row, 0, self.length - 1)  # [b, L]
    rows = jnp.take(learned, row, axis=0).astype(x.dtype)  # [b, L, H]
    return self.combine(x, rows, prompt[:, :, None])


@dataclasses.dataclass(frozen=True)
class PerLayerPrompts(Method):
  """An input prompt as prompt tuning's, and a [length, emb] prompt per layer ('replace' or
  'add' at the prompt positions); every encoder layer, the decoder's too with `decoder`."""
  length: int = 100
  placement: str = 'prefix'
  visibility: Optional[Visibility] = None
  mode: str = 'replace'
  decoder: bool = False

  def __post_init__(self):
    PromptTuning(self.length, self.placement, self.visibility)  # Checks them.
    if self.mode not in MODES:
      raise UsageError(f'Unknown per-layer prompt mode {self.mode!r}; expected one of '
                       f'{tuple(MODES)}.')

  @property
  def input_prompt(self) -> PromptTuning:
    """Prompt tuning of the input prompt: the encoder input and mask hooks."""
    return PromptTuning(self.length, self.placement, self.visibility)

  def hooks(self) -> Hooks:
    return dataclasses.replace(self.input_prompt.hooks(), layer_input=self._layer_input)

  def _layer_input(self, x, *, site, prompt, inputs, decode):
    if site.stack == DECODER and not self.decoder:
      return x
    if prompt is None:
      raise UsageError(f'PerLayerPrompts(decoder=True): the {site.stack} of this model has no '
                       'prompt positions (the encoder-decoder T5 prompts its encoder only); '
                       'set per-layer decoder prompts off.')
    if decode:  # One new position per step: the prompt positions are in the cache.
      return x
    combine, init = MODES[self.mode]
    return LayerPrompt(self.length, combine, init, name='prompt')(x, prompt, inputs.prompt_slots)

  @property
  def parameter_rules(self) -> tuple[str, ...]:
    return optim.PROMPT_TUNING_RULES

  @property
  def prompt_rules(self) -> tuple[str, ...]:
    return (re.escape(PROMPT_PATH),)

  @property
  def added_positions(self) -> int:
    return self.length

  def exports(self, trainable: Mapping[str, Any]) -> dict[str, Any]:
    """The input prompt and every layer's, each named by its path with '.' for '/'."""
    return {path.replace('/', '.'): value for path, value in trainable.items()
            if self.owns(path)}
