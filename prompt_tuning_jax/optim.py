"""Which parameters train and with which optimiser.

Parameters are split by regex rules over their '/'-joined paths into a
trainable and a frozen partition. The optimiser is an `optax.multi_transform`
over the whole tree with `optax.set_to_zero()` for frozen leaves, so its state
holds nothing for them (the step that applies it: `train_step.py`). Model
tuning (the paper's baseline) is the rule `.*`. `adafactor` is the paper's
optimiser; `inverse_sqrt_schedule` is T5's pre-training learning rate.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

Array = jnp.ndarray
Params = dict
PyTree = Any

PROMPT_TUNING_RULES = (r'.*prompt.*',)
MODEL_TUNING_RULES = (r'.*',)
TRAINABLE, FROZEN = 'trainable', 'frozen'


# ------------------------------------------------------------ partitioning


def _flat(params: Params) -> dict[str, Any]:
  return traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')


def is_trainable(path: str, rules: Sequence[str]) -> bool:
  return any(re.fullmatch(rule, path) for rule in rules)


def param_labels(params: Params, rules: Sequence[str] = PROMPT_TUNING_RULES) -> Params:
  """Tree of 'trainable' / 'frozen' labels, the shape of `params`."""
  labels = {k: TRAINABLE if is_trainable(k, rules) else FROZEN for k in _flat(params)}
  return traverse_util.unflatten_dict(labels, sep='/')


def partition(params: Params, rules: Sequence[str] = PROMPT_TUNING_RULES) -> tuple[Params, Params]:
  """Splits params into (trainable, frozen) nested dicts with disjoint leaves."""
  flat = _flat(params)
  trainable = {k: v for k, v in flat.items() if is_trainable(k, rules)}
  if not trainable:
    raise ValueError(f'No parameter matches the trainable rules {list(rules)}.')
  frozen = {k: v for k, v in flat.items() if k not in trainable}
  return (traverse_util.unflatten_dict(trainable, sep='/'),
          traverse_util.unflatten_dict(frozen, sep='/'))


def merge(trainable: Params, frozen: Params) -> Params:
  """Inverse of `partition`."""
  flat = _flat(frozen)
  flat.update(_flat(trainable))
  return traverse_util.unflatten_dict(flat, sep='/')


# ------------------------------------------------------------ optimiser


def adafactor(learning_rate: float | optax.Schedule = 0.3, decay_rate: float = 0.8,
              weight_decay_rate: Optional[float] = 1e-5, clipping_threshold: float = 1.0,
              multiply_by_parameter_scale: bool = False) -> optax.GradientTransformation:
  """The paper's / T5X prompt-tuning recipe: Adafactor, constant lr 0.3.

  decay_rate 0.8, no parameter scaling, weight decay 1e-5 (optax applies it
  scaled by the learning rate), update clipping 1.0.
  """
  return optax.adafactor(learning_rate=learning_rate, decay_rate=decay_rate,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         clipping_threshold=clipping_threshold,
                         weight_decay_rate=weight_decay_rate)


def partitioned_optimizer(params: Params, tx: optax.GradientTransformation,
                          rules: Sequence[str] = PROMPT_TUNING_RULES
                          ) -> optax.GradientTransformation:
  """`tx` on trainable leaves, `set_to_zero` (no state) on frozen ones."""
  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()},
                               param_labels(params, rules))


def inverse_sqrt_schedule(base_learning_rate: float = 1.0,
                          warmup_steps: int = 10_000) -> optax.Schedule:
  """T5's pre-training rate: base / sqrt(max(step, warmup_steps)) (T5X's 'constant * rsqrt_decay').

  Constant (0.01 with the defaults) for the first `warmup_steps`, then decaying.
  """
  def schedule(step):
    return base_learning_rate * jax.lax.rsqrt(
        jnp.maximum(step, warmup_steps).astype(jnp.float32))
  return schedule
