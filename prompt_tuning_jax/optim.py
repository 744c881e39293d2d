"""Which parameters train, how, and the jitted train step.

Parameters are split by regex rules over their '/'-joined paths into a
trainable and a frozen partition. The optimiser is an `optax.multi_transform`
over the whole tree with `optax.set_to_zero()` for frozen leaves, so its state
holds nothing for them. The train step differentiates with respect to the
trainable partition only and never writes the frozen one: XLA computes no
weight gradients for frozen kernels (see `tests/test_optim.py` for the FLOPs).
Model tuning (the paper's baseline) is the rule `.*`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional, Sequence

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


def inverse_sqrt_schedule(warmup_steps: int = 10_000, scale: float = 1.0) -> optax.Schedule:
  """T5's pre-training rate: scale / sqrt(max(step, warmup_steps)).

  Constant (scale / sqrt(warmup_steps), 0.01 by default) for the first
  `warmup_steps` steps, then decaying as 1/sqrt(step).
  """
  return lambda step: scale * jax.lax.rsqrt(jnp.maximum(step, warmup_steps).astype(jnp.float32))


def partitioned_optimizer(params: Params, tx: optax.GradientTransformation,
                          rules: Sequence[str] = PROMPT_TUNING_RULES) -> optax.GradientTransformation:
  """`tx` on trainable leaves, `set_to_zero` (no state) on frozen ones."""
  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()},
                               param_labels(params, rules))


# ------------------------------------------------------------ loss


def cross_entropy_with_z_loss(logits: Array, targets: Array, weights: Array,
                              z_loss: float = 1e-4) -> tuple[Array, Array]:
  """T5X's token loss: CE + z_loss * logsumexp(logits)^2, per token, weighted.

  logits [b, d, vocab] float32, targets [b, d] int, weights [b, d].
  Returns (loss per token [b, d], z-loss part per token [b, d]).
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [b, d]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  z = z_loss * jnp.square(log_z)
  return (log_z - target_logit + z) * weights, z * weights


# ------------------------------------------------------------ train step


class TrainState(NamedTuple):
  """What a prompt-tuning run owns and checkpoints; frozen weights live outside."""
  step: Array
  trainable: Params
  opt_state: optax.OptState


def init_train_state(trainable: Params, frozen: Params, tx: optax.GradientTransformation) -> TrainState:
  """`tx` is a `partitioned_optimizer`; it is initialised over the whole tree."""
  return TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(merge(trainable, frozen)))


def make_train_step(model, tx: optax.GradientTransformation, *, z_loss: float = 1e-4,
                    loss_normalization: str = 'sum', accumulation_steps: int = 1,
                    dropout_rng: Optional[jax.Array] = None,
                    learning_rate_fn: Optional[Callable[[Array], Array]] = None
                    ) -> Callable[[TrainState, Params, dict], tuple[TrainState, dict]]:
  """Builds `train_step(state, frozen, batch) -> (state, metrics)` (not jitted).

  `batch` holds T5X's feature-converter outputs: encoder_input_tokens,
  decoder_input_tokens, decoder_target_tokens, decoder_loss_weights.
  `loss_normalization` is 'sum' (T5X: summed over target tokens) or 'mean'
  (per target token). With `accumulation_steps` > 1 the batch is split into
  that many micro-batches whose gradients are summed (then normalised once).
  Dropout runs when `dropout_rng` is given (folded with the step).
  """
  if loss_normalization not in ('sum', 'mean'):
    raise ValueError(f"loss_normalization must be 'sum' or 'mean', got {loss_normalization!r}")

  def micro_loss(trainable, frozen, batch, rng):
    logits = model.apply(
        {'params': merge(trainable, frozen)}, batch['encoder_input_tokens'],
        batch['decoder_input_tokens'], batch['decoder_target_tokens'],
        enable_dropout=rng is not None, rngs=None if rng is None else {'dropout': rng})
    weights = batch.get('decoder_loss_weights', batch['decoder_target_tokens'] > 0)
    weights = weights.astype(jnp.float32)
    loss, z = cross_entropy_with_z_loss(logits, batch['decoder_target_tokens'], weights, z_loss)
    correct = (jnp.argmax(logits, -1) == batch['decoder_target_tokens']) * weights
    stats = {'z_loss': z.sum(), 'correct': correct.sum(), 'tokens': weights.sum()}
    return loss.sum(), stats

  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

  def train_step(state: TrainState, frozen: Params, batch: dict):
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, state.step)
    if accumulation_steps == 1:
      (loss, stats), grads = grad_fn(state.trainable, frozen, batch, rng)
    else:
      micro = jax.tree.map(
          lambda x: x.reshape((accumulation_steps, -1) + x.shape[1:]), batch)

      def body(carry, xs):
        i, mb = xs
        r = None if rng is None else jax.random.fold_in(rng, i)
        (l, s), g = grad_fn(state.trainable, frozen, mb, r)
        return jax.tree.map(jnp.add, carry, (l, s, g)), None

      zeros = (jnp.zeros(()), {k: jnp.zeros(()) for k in ('z_loss', 'correct', 'tokens')},
               jax.tree.map(jnp.zeros_like, state.trainable))
      (loss, stats, grads), _ = jax.lax.scan(
          body, zeros, (jnp.arange(accumulation_steps), micro))
    if loss_normalization == 'mean':
      denom = jnp.maximum(stats['tokens'], 1.0)
      loss, grads = loss / denom, jax.tree.map(lambda g: g / denom, grads)
      stats = dict(stats, z_loss=stats['z_loss'] / denom)

    # Frozen leaves get zero "gradients" that set_to_zero discards; XLA drops them.
    full_grads = merge(grads, jax.tree.map(jnp.zeros_like, frozen))
    updates, opt_state = tx.update(full_grads, state.opt_state, merge(state.trainable, frozen))
    trainable_updates = {k: v for k, v in _flat(updates).items() if k in _flat(grads)}
    new_trainable = optax.apply_updates(
        state.trainable, traverse_util.unflatten_dict(trainable_updates, sep='/'))
    metrics = {
        'loss': loss,
        'z_loss': stats['z_loss'],
        'accuracy': stats['correct'] / jnp.maximum(stats['tokens'], 1.0),
        'target_tokens': stats['tokens'],
        # Norm over the trainable partition only: a norm over every parameter
        # would make XLA compute the frozen weights' gradients after all.
        'grad_norm': optax.tree.norm(grads),
    }
    if learning_rate_fn is not None:
      metrics['learning_rate'] = learning_rate_fn(state.step)
    return TrainState(state.step + 1, new_trainable, opt_state), metrics

  return train_step
