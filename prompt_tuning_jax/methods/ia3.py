"""IA³ (Liu et al. 2022): learned rescaling of attention keys and values and of the MLP's
intermediate activations, initialised to ones (the frozen model exactly).

Where the original implementation's Flaxformer modules put them, with its parameter paths:
every attention's keys and values [b, k, heads, head_dim] times
`.../{attention,self_attention,encoder_decoder_attention}/{k_conv,v_conv}/ia3_scaling`
[heads, head_dim] (after the projection; scaling the whole cache in cached decoding is the same
as scaling each position before caching), and each MLP's product of activations
[b, L, mlp] times `.../mlp/intermediate_conv/ia3_scaling` [mlp]. PEFT's IA3 for T5 is the
same computation (`checkpoints.peft`): k and v scaled at their output, `wo` at its input.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import flax.linen as nn
import jax.numpy as jnp

from prompt_tuning_jax.methods.base import Method
from prompt_tuning_jax.methods.hooks import Hooks

SCALING = 'ia3_scaling'
KEY_SCALING, VALUE_SCALING, MLP_SCALING = 'k_conv', 'v_conv', 'intermediate_conv'


class IA3Scaling(nn.Module):
  """x times a learned scale over its last `ndim` axes, initialised to ones."""
  ndim: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = self.param(SCALING, nn.initializers.ones, x.shape[-self.ndim:], jnp.float32)
    return x * scale.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class IA3(Method):
  """Keys, values (every attention) and MLP activations (every layer) rescaled; only the
  scales train."""
  peft_type: ClassVar[Optional[str]] = 'IA3'

  def hooks(self) -> Hooks:
    return Hooks(keys_values=self._keys_values, mlp_hidden=self._mlp_hidden)

  def _keys_values(self, key, value, bias, *, site, inputs, decode):
    del site, inputs, decode
    return (IA3Scaling(2, name=KEY_SCALING)(key), IA3Scaling(2, name=VALUE_SCALING)(value),
            bias)

  def _mlp_hidden(self, hidden, *, site):
    del site
    return IA3Scaling(1, name=MLP_SCALING)(hidden)

  @property
  def parameter_rules(self) -> tuple[str, ...]:
    return (rf'.*/({KEY_SCALING}|{VALUE_SCALING}|{MLP_SCALING})/{SCALING}',)
