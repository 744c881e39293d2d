"""The loss and the train step: what one step of a run computes.

`cross_entropy_with_z_loss` is T5X's token loss (cross-entropy + z-loss), the
default; with an `objectives.LabelObjective` the step minimises a loss over
each example's label set instead (`label_scores`). `make_train_step`
builds `train_step(state, frozen, batch) -> (state, metrics)`: it
differentiates with respect to the trainable partition only (`optim.partition`)
and never writes the frozen one, so XLA computes no weight gradients for
frozen kernels (see `tests/test_train_step.py` for the FLOPs). Gradient
accumulation splits the batch into micro-batches inside the step. `batch_logits` is the
one call of the model on a training batch (its method inputs included).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from prompt_tuning_jax import objectives
from prompt_tuning_jax import models
from prompt_tuning_jax import optim
from prompt_tuning_jax import scoring
from prompt_tuning_jax.data import TASK_INDEX
from prompt_tuning_jax.methods import MethodInputs

Array = jnp.ndarray
Params = dict
SEGMENT_IDS = ('encoder_segment_ids', 'decoder_segment_ids')


def _flat(tree: Params) -> dict:
  return traverse_util.flatten_dict(tree, sep='/')


def cross_entropy_with_z_loss(logits: Array, targets: Array, weights: Array,
                              z_loss: float = 1e-4) -> tuple[Array, Array]:
  """T5X's token loss: CE + z_loss * logsumexp(logits)^2, per token, weighted.

  logits [b, d, vocab] float32, targets [b, d] int, weights [b, d].
  Returns (loss per token [b, d], z-loss part per token [b, d]).
  """
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  log_z = jax.nn.logsumexp(logits, axis=-1)  # [b, d]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  z = z_loss * jnp.square(log_z)
  return (log_z - target_logit + z) * weights, z * weights


def batch_logits(model, params: Params, batch: dict, rng: Optional[jax.Array] = None) -> Array:
  """Teacher-forced logits [b, d, vocab] of a training batch; dropout runs when `rng` is given.

  The batch's method inputs (`MethodInputs.from_batch`: its task index) go to the model
  with it; a loss that calls `model.encode` / `model.decode` itself passes the same.
  Segment ids, when the batch has them, keep packed examples apart (`data.pack_batch`).
  """
  segments = {k: batch[k] for k in SEGMENT_IDS if k in batch}
  return model.apply(
      {'params': params}, **models.model_inputs(model, batch), enable_dropout=rng is not None,
      method_inputs=MethodInputs.from_batch(batch),
      rngs=None if rng is None else {'dropout': rng}, **segments)


def label_scores(model, params: Params, batch: dict, label_token_ids: Array,
                 rng: Optional[jax.Array] = None) -> Array:
  """Summed log-likelihoods [b, labels] of each example's labels [b, labels, d] (with EOS).

  One encoder pass per example and one decoder row holding all its labels
  (`scoring.pack_labels`, as rank classification), through `batch_logits`.
  """
  rows = scoring.pack_labels(label_token_ids)
  logits = batch_logits(model, params, {**batch, **rows}, rng)
  return scoring.packed_label_scores(logits, rows['decoder_target_tokens'],
                                     label_token_ids.shape[1])


class TrainState(NamedTuple):
  """What a prompt-tuning run owns and checkpoints; frozen weights live outside."""
  step: Array
  trainable: Params
  opt_state: optax.OptState


def init_train_state(trainable: Params, frozen: Params,
                     tx: optax.GradientTransformation) -> TrainState:
  """`tx` is a `partitioned_optimizer`; it is initialised over the whole tree."""
  return TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(optim.merge(trainable, frozen)))


def make_train_step(model, tx: optax.GradientTransformation, *, z_loss: float = 1e-4,
                    loss_normalization: str = 'sum', accumulation_steps: int = 1,
                    dropout_rng: Optional[jax.Array] = None,
                    learning_rate_fn: Optional[Callable[[Array], Array]] = None,
                    label_objective: Optional[objectives.LabelObjective] = None,
                    regularizer: Optional[Callable[[Params], Array]] = None
                    ) -> Callable[[TrainState, Params, dict], tuple[TrainState, dict]]:
  """Builds `train_step(state, frozen, batch) -> (state, metrics)` (not jitted).

  `batch` holds T5X's feature-converter outputs of the model (its
  `FEATURE_CONVERTER_CLS`): the features `__call__` takes (`INPUT_FEATURES`),
  decoder_target_tokens and decoder_loss_weights.
  `loss_normalization` is 'sum' (T5X: summed over target tokens) or 'mean'
  (per target token). With `accumulation_steps` > 1 the batch is split into
  that many micro-batches whose gradients are summed (then normalised once).
  Dropout runs when `dropout_rng` is given (folded with the step).
  With `label_objective` the loss is over each example's label set instead: the
  batch also holds `task_index` and `label_index` [b] (`objectives.LabelSets.gold`),
  the loss is summed (or averaged) over examples, and the metrics report the
  rank accuracy on the batch (`rank_accuracy`, `examples`) instead of the tokens'.
  `regularizer(trainable) -> scalar` (e.g. `wayward.regularizer`) is added once per step to
  the normalised loss, its gradient to the gradients; its value is `metrics['regularizer']`
  and `metrics['loss']` stays the objective's. None: the plain step.
  """
  if loss_normalization not in ('sum', 'mean'):
    raise ValueError(f"loss_normalization must be 'sum' or 'mean', got {loss_normalization!r}")

  def token_loss(trainable, frozen, batch, rng):
    logits = batch_logits(model, optim.merge(trainable, frozen), batch, rng)
    weights = batch.get('decoder_loss_weights', batch['decoder_target_tokens'] > 0)
    weights = weights.astype(jnp.float32)
    loss, z = cross_entropy_with_z_loss(logits, batch['decoder_target_tokens'], weights, z_loss)
    correct = (jnp.argmax(logits, -1) == batch['decoder_target_tokens']) * weights
    stats = {'z_loss': z.sum(), 'correct': correct.sum(), 'tokens': weights.sum()}
    return loss.sum(), stats

  def label_set_loss(trainable, frozen, batch, rng):
    task, gold = batch[TASK_INDEX], batch[objectives.LABEL_INDEX]
    valid = jnp.asarray(label_objective.valid)[task]  # [b, labels]
    scores = label_scores(model, optim.merge(trainable, frozen), batch,
                          jnp.asarray(label_objective.tokens)[task], rng)  # [b, labels]
    loss = label_objective.loss(scores, gold, valid)
    correct = objectives.rank_correct(scores, gold, valid)
    stats = {'correct': correct.sum().astype(jnp.float32),
             'examples': jnp.asarray(gold.shape[0], jnp.float32)}
    return loss.sum(), stats

  micro_loss = token_loss if label_objective is None else label_set_loss
  count = 'tokens' if label_objective is None else 'examples'  # what the loss is summed over
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
        (micro_loss_sum, micro_stats), micro_grads = grad_fn(state.trainable, frozen, mb, r)
        return jax.tree.map(jnp.add, carry, (micro_loss_sum, micro_stats, micro_grads)), None

      stat_keys = ('z_loss', 'correct', 'tokens') if label_objective is None else (
          'correct', 'examples')
      zeros = (jnp.zeros(()), {k: jnp.zeros(()) for k in stat_keys},
               jax.tree.map(jnp.zeros_like, state.trainable))
      (loss, stats, grads), _ = jax.lax.scan(
          body, zeros, (jnp.arange(accumulation_steps), micro))
    if loss_normalization == 'mean':
      denom = jnp.maximum(stats[count], 1.0)
      loss, grads = loss / denom, jax.tree.map(lambda g: g / denom, grads)
      if 'z_loss' in stats:
        stats = dict(stats, z_loss=stats['z_loss'] / denom)
    if regularizer is not None:
      penalty, penalty_grads = jax.value_and_grad(regularizer)(state.trainable)
      grads = jax.tree.map(jnp.add, grads, penalty_grads)

    # Frozen leaves get zero "gradients" that set_to_zero discards; XLA drops them.
    full_grads = optim.merge(grads, jax.tree.map(jnp.zeros_like, frozen))
    updates, opt_state = tx.update(full_grads, state.opt_state,
                                   optim.merge(state.trainable, frozen))
    trainable_updates = {k: v for k, v in _flat(updates).items() if k in _flat(grads)}
    new_trainable = optax.apply_updates(
        state.trainable, traverse_util.unflatten_dict(trainable_updates, sep='/'))
    if label_objective is None:
      metrics = {'loss': loss, 'z_loss': stats['z_loss'],
                 'accuracy': stats['correct'] / jnp.maximum(stats['tokens'], 1.0),
                 'target_tokens': stats['tokens']}
    else:
      metrics = {'loss': loss, 'rank_accuracy': stats['correct'] / stats['examples'],
                 'examples': stats['examples']}
    # Norm over the trainable partition only: a norm over every parameter
    # would make XLA compute the frozen weights' gradients after all.
    metrics['grad_norm'] = optax.tree.norm(grads)
    if regularizer is not None:
      metrics['regularizer'] = penalty
    if learning_rate_fn is not None:
      metrics['learning_rate'] = learning_rate_fn(state.step)
    return TrainState(state.step + 1, new_trainable, opt_state), metrics

  return train_step
