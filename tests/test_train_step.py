"""The train step: only the prompt trains, only its gradient is computed, the loss is T5X's."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util
from jax.extend import core as jcore

from conftest import small_config, toy_batch
from prompt_tuning_jax import optim
from prompt_tuning_jax import train_step
from prompt_tuning_jax.models import PromptedT5


def _setup(rules=optim.PROMPT_TUNING_RULES, model=None, batch=None):
  model = model or PromptedT5(small_config(), prompt_length=4)
  batch = batch or toy_batch(batch=4)
  params = model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'],
                      batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                      enable_dropout=False)['params']
  trainable, frozen = optim.partition(params, rules)
  tx = optim.partitioned_optimizer(params, optim.adafactor(), rules)
  return model, batch, params, trainable, frozen, tx


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for x in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(x, jcore.ClosedJaxpr):
        yield x.jaxpr
      elif isinstance(x, jcore.Jaxpr):
        yield x


def _count_dots(jaxpr) -> int:
  """dot_general equations in a jaxpr, nested ones (scan, pjit, custom_vjp) included."""
  return sum((eqn.primitive.name == 'dot_general') + sum(map(_count_dots, _subjaxprs(eqn)))
             for eqn in jaxpr.eqns)


def _step_jaxpr(rules):
  model, batch, params, trainable, frozen, tx = _setup(rules)
  state = train_step.init_train_state(trainable, frozen, tx)
  return jax.make_jaxpr(train_step.make_train_step(model, tx))(state, frozen, batch), params


def test_prompt_trains_and_frozen_weights_are_never_outputs_nor_differentiated():
  model, batch, params, trainable, frozen, tx = _setup()
  prompt0 = np.array(trainable['encoder']['prompt']['prompt']['prompt'])
  state = train_step.init_train_state(trainable, frozen, tx)
  step = jax.jit(train_step.make_train_step(model, tx), donate_argnums=(0,))
  # Frozen weights are never an output: the new state holds the trainable tree only, and every
  # output of the step together is a few prompt-sized arrays (the frozen tree is ~100x larger).
  out_state, out_metrics = jax.eval_shape(step, state, frozen, batch)
  assert jax.tree.structure(out_state.trainable) == jax.tree.structure(trainable)
  out_size = sum(x.size for x in jax.tree.leaves((out_state, out_metrics)))
  frozen_size = sum(x.size for x in jax.tree.leaves(frozen))
  assert out_size <= 3 * prompt0.size + 16 < frozen_size
  # Their gradient is never computed: the traced step (before any XLA dead-code elimination)
  # has no weight-gradient matmuls. Measured: forward 49 dot_generals, prompt-only step 100
  # (forward + activation gradients), model tuning 147 (+ one per weight matmul). A step that
  # differentiated the merged tree would trace 147 here.
  prompt_jaxpr, _ = _step_jaxpr(optim.PROMPT_TUNING_RULES)
  full_jaxpr, _ = _step_jaxpr(optim.MODEL_TUNING_RULES)
  n_kernels = sum(k.endswith('kernel') for k in _flat(params))  # 37
  prompt_dots, full_dots = _count_dots(prompt_jaxpr.jaxpr), _count_dots(full_jaxpr.jaxpr)
  assert full_dots - prompt_dots >= n_kernels, (prompt_dots, full_dots)
  # No output variable of the step is one of its frozen inputs passed through.
  frozen_vars = set(map(id, prompt_jaxpr.jaxpr.invars[len(jax.tree.leaves(state)):][
      :len(jax.tree.leaves(frozen))]))
  assert not frozen_vars & set(map(id, prompt_jaxpr.jaxpr.outvars))
  losses = []
  for _ in range(5):
    state, metrics = step(state, frozen, batch)
    losses.append(float(metrics['loss']))
  assert int(state.step) == 5
  assert not np.allclose(state.trainable['encoder']['prompt']['prompt']['prompt'], prompt0)
  assert losses[-1] < losses[0]
  # The optimiser state holds per-weight slots for the prompt only.
  state_leaves = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, 'ndim', 0) > 0]
  frozen_shapes = {v.shape for v in _flat(frozen).values()}
  assert state_leaves and all(x.shape not in frozen_shapes for x in state_leaves)
  assert sum(x.size for x in state_leaves) <= 2 * prompt0.size


def test_model_tuning_trains_everything_through_the_same_rules():
  model, batch, params, trainable, frozen, tx = _setup(optim.MODEL_TUNING_RULES)
  assert frozen == {}
  state = train_step.init_train_state(trainable, frozen, tx)
  state, _ = jax.jit(train_step.make_train_step(model, tx))(state, frozen, batch)
  # Every one of the 53 parameters moves (prompt, embeddings, kernels, norms, relpos biases).
  unchanged = [path for path, value in _flat(state.trainable).items()
               if np.array_equal(value, _flat(params)[path])]
  assert sorted(_flat(state.trainable)) == sorted(_flat(params))
  assert unchanged == []


def _step_flops(rules):
  model, batch, _, trainable, frozen, tx = _setup(
      rules, model=PromptedT5(small_config(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                                           vocab_size=256), prompt_length=8),
      batch=toy_batch(batch=4, inputs=32, targets=8, vocab=256))
  state = jax.eval_shape(lambda t, f: train_step.init_train_state(t, f, tx), trainable, frozen)
  compiled = jax.jit(train_step.make_train_step(model, tx)).lower(state, frozen, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost['flops']


def test_prompt_only_step_skips_weight_gradients():
  prompt_only, full = _step_flops(optim.PROMPT_TUNING_RULES), _step_flops(optim.MODEL_TUNING_RULES)
  print(f'compiled step FLOPs: prompt-only {prompt_only:.3e}, full {full:.3e}, '
        f'ratio {prompt_only / full:.3f} (no weight gradients: ~4/6)')
  # From the computation: the matmuls are ~all the FLOPs; a full step is forward (2 units),
  # activation gradients (2) and weight gradients (2); prompt-only drops the last: 4/6. The
  # non-matmul work (softmax, norms, loss, optimiser) moves both by a few percent.
  assert 0.64 < prompt_only / full < 0.70


def _plain_loss(model, params, batch, z_loss=1e-4, mean=False):
  """Cross-entropy + z_loss * log Z^2 summed over target tokens (/ their count if `mean`)."""
  logits = model.apply({'params': params}, batch['encoder_input_tokens'],
                       batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                       enable_dropout=False)  # float32, or float64 for a float64 model
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  one_hot = jax.nn.one_hot(batch['decoder_target_tokens'], logits.shape[-1], dtype=logits.dtype)
  per_token = -(log_p * one_hot).sum(-1) + z_loss * log_z ** 2
  mask = (batch['decoder_target_tokens'] > 0).astype(logits.dtype)
  total = (per_token * mask).sum()
  return total / mask.sum() if mean else total


def _expected_prompt_grad(model, params, batch, mean=False):
  def loss_of_prompt(prompt):
    encoder = params['encoder'] | {'prompt': {'prompt': {'prompt': prompt}}}
    return _plain_loss(model, params | {'encoder': encoder}, batch, mean=mean)
  return jax.value_and_grad(loss_of_prompt)(params['encoder']['prompt']['prompt']['prompt'])


def _sgd_step(model, batch, params, trainable, frozen, lr, **kwargs):
  """One step with SGD (update = -lr * gradient, so scale-sensitive, unlike Adafactor's first step)."""
  tx = optim.partitioned_optimizer(params, optax.sgd(lr))
  state = train_step.init_train_state(trainable, frozen, tx)
  state, metrics = jax.jit(train_step.make_train_step(model, tx, **kwargs))(state, frozen, batch)
  prompt0 = trainable['encoder']['prompt']['prompt']['prompt']
  return (prompt0 - state.trainable['encoder']['prompt']['prompt']['prompt']) / lr, metrics


def _setup_float64():
  """`_setup` with a float64 model and params: call under `jax.enable_x64(True)`."""
  model, batch, params, _, _, _ = _setup(model=PromptedT5(small_config(dtype=jnp.float64),
                                                          prompt_length=4))
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  trainable, frozen = optim.partition(params, optim.PROMPT_TUNING_RULES)
  return model, batch, params, trainable, frozen


def test_gradient_accumulation_matches_one_big_batch_and_independent_grad():
  """In float64: micro-batches sum the same terms in another order, ~1e-15 relative apart;
  halved or doubled gradients would be off by ~2 (|want| up to ~4)."""
  with jax.enable_x64(True):
    model, batch, params, trainable, frozen = _setup_float64()
    want_loss, want_grad = _expected_prompt_grad(model, params, batch)
    for k in (1, 2, 4):
      grad, metrics = _sgd_step(model, batch, params, trainable, frozen, 1.0,
                                accumulation_steps=k)
      assert grad.dtype == jnp.float64
      np.testing.assert_allclose(grad, want_grad, atol=1e-10, err_msg=f'accumulation_steps={k}')
      np.testing.assert_allclose(metrics['loss'], want_loss, rtol=1e-12)
      np.testing.assert_allclose(metrics['grad_norm'], np.linalg.norm(want_grad), rtol=1e-12)


def test_cross_entropy_with_z_loss_by_hand():
  logits = jnp.array([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]])
  targets = jnp.array([[1, 2]])
  weights = jnp.array([[1.0, 0.0]])
  loss, z = train_step.cross_entropy_with_z_loss(logits, targets, weights, z_loss=0.1)
  log_z = np.log(np.exp([1.0, 2.0, 0.5]).sum())
  np.testing.assert_allclose(loss[0, 0], log_z - 2.0 + 0.1 * log_z ** 2, rtol=1e-6)
  assert float(loss[0, 1]) == 0.0 and float(z[0, 1]) == 0.0


def test_mean_normalisation_divides_loss_and_gradient_by_target_tokens():
  """In float64 (as above): |want| up to ~0.3; a sum instead of a mean is ~10x off."""
  with jax.enable_x64(True):
    model, batch, params, trainable, frozen = _setup_float64()
    n_tokens = float((batch['decoder_target_tokens'] > 0).sum())
    for k in (1, 2):
      want_loss, want_grad = _expected_prompt_grad(model, params, batch, mean=True)
      grad, metrics = _sgd_step(model, batch, params, trainable, frozen, 1.0,
                                loss_normalization='mean', accumulation_steps=k)
      assert float(metrics['target_tokens']) == n_tokens
      np.testing.assert_allclose(grad, want_grad, atol=1e-11, err_msg=f'accumulation_steps={k}')
      np.testing.assert_allclose(metrics['loss'], want_loss, rtol=1e-12)
      np.testing.assert_allclose(metrics['grad_norm'], np.linalg.norm(want_grad), rtol=1e-12)
  model, batch, params, trainable, frozen, _ = _setup()
  tx = optim.partitioned_optimizer(params, optim.adafactor())
  with pytest.raises(ValueError, match='loss_normalization'):
    train_step.make_train_step(model, tx, loss_normalization='avg')
