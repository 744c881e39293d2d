"""The input-side methods: multi-task prompts, per-layer prompts, attention visibility.

Each at its identity computes its base model exactly; each combination is the original's
math (against numpy written from the original's description); only the method's parameters
train and no frozen weight is differentiated; a run it cannot do stops in its setup.
"""
from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import small_config, toy_batch
from prompt_tuning_jax import masks, optim, run_setup, train_step
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.many_prompts import mixed
from prompt_tuning_jax.many_prompts.bank import PromptBank
from prompt_tuning_jax.methods import (PROMPT_PATH, AddTaskPrompt, ConcatTaskFeatures,
                                       ConcatTaskPrompt, MethodInputs, ModelTuning,
                                       MultiTaskPrompts, PerLayerPrompts, ProjectSharedPrompt,
                                       PromptTuning, Visibility)
from prompt_tuning_jax.methods.multitask_prompts import (SHARED_PATH, TASKS_PATH,
                                                         task_prompt_file)
from prompt_tuning_jax.models import T5
from prompt_tuning_jax.prompts import prompt_positions

TASKS = ('task_a', 'task_b', 'task_c')
FLOAT64_TOLERANCE = dict(rtol=1e-10, atol=1e-10)


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def _unflat(flat):
  return traverse_util.unflatten_dict(flat, sep='/')


def _args(batch):
  return batch['encoder_input_tokens'], batch['decoder_input_tokens'], batch['decoder_target_tokens']


def _batch(batch=3):
  return dict(toy_batch(batch=batch), task_index=jnp.array([2, 0, 1, 1][:batch], jnp.int32))


def _init(model, batch, seed=0):
  return model.init(jax.random.PRNGKey(seed), *_args(batch), enable_dropout=False)['params']


def _logits(model, params, batch, inputs=None):
  inputs = MethodInputs.from_batch(batch) if inputs is None else inputs
  return np.asarray(model.apply({'params': params}, *_args(batch), enable_dropout=False,
                                method_inputs=inputs))


def _randomised(params, paths, seed=3):
  """`params` with the parameters at `paths` drawn at random (away from their start)."""
  flat = dict(_flat(params))
  for i, path in enumerate(paths):
    flat[path] = jax.random.normal(jax.random.PRNGKey(seed + i), flat[path].shape,
                                   flat[path].dtype)
  return _unflat(flat)


# ------------------------------------------------------------------ multi-task prompts


def _task_row(combination, shared, row):
  """One task's prompt from the shared prompt and its flat row, as the original describes it."""
  length, width = shared.shape
  if isinstance(combination, AddTaskPrompt):
    return shared + row.reshape(length, width)
  if isinstance(combination, ConcatTaskPrompt):
    return np.concatenate([shared, row.reshape(-1, width)], axis=0)
  if isinstance(combination, ConcatTaskFeatures):
    return np.concatenate([shared, row.reshape(length, -1)], axis=1)
  emb = row.size // (width + 1)  # the kernel [H, H_s] row-major, then the bias [H]
  kernel, bias = row[:emb * width].reshape(emb, width), row[emb * width:]
  out = np.zeros((length, emb))
  for p, o in itertools.product(range(length), range(emb)):
    out[p, o] = sum(shared[p, i] * kernel[o, i] for i in range(width)) + bias[o]
  return out


COMBINATIONS = [AddTaskPrompt(), ConcatTaskPrompt(), ConcatTaskPrompt(task_length=2),
                ConcatTaskFeatures(), ConcatTaskFeatures(shared_features=12),
                ProjectSharedPrompt(), ProjectSharedPrompt(shared_features=5)]


def test_each_combination_is_the_originals_and_exports_every_tasks_prompt():
  rng = np.random.default_rng(0)
  for combination in COMBINATIONS:
    method = MultiTaskPrompts(3, tasks=TASKS, combination=combination)
    shared = rng.normal(size=(3, combination.shared_width(16)))
    table = rng.normal(size=(len(TASKS), combination.task_size(3, 16)))
    with jax.enable_x64(True):
      exported = method.exports({SHARED_PATH: shared, TASKS_PATH: table})
    assert sorted(exported) == sorted([SHARED_PATH.replace('/', '.'), TASKS_PATH.replace('/', '.')]
                                      + [task_prompt_file(t) for t in TASKS])
    for i, task in enumerate(TASKS):
      want = _task_row(combination, shared, table[i])
      assert want.shape == (method.added_positions, 16)
      np.testing.assert_allclose(exported[task_prompt_file(task)], want, **FLOAT64_TOLERANCE)


@pytest.mark.parametrize('combination', [AddTaskPrompt(), ConcatTaskPrompt(task_length=2),
                                         ProjectSharedPrompt(shared_features=5)], ids=repr)
def test_each_examples_task_selects_its_combined_prompt(combination):
  """Paths and shapes are the original's; example i's logits are those of prompt tuning with
  its task's exported prompt (float64), and of a mixed batch of those exported prompts."""
  method = MultiTaskPrompts(3, tasks=TASKS, combination=combination)
  batch = _batch()
  with jax.enable_x64(True):
    cfg = small_config(dtype=jnp.float64)
    model = T5(cfg, method=method)
    params = _randomised(_init(model, batch), [SHARED_PATH, TASKS_PATH])
    flat = _flat(params)
    own = {k: v.shape for k, v in flat.items() if method.owns(k)}
    width = combination.shared_width(16)
    assert own == {SHARED_PATH: (3, width), TASKS_PATH: (3, combination.task_size(3, 16))}
    logits = _logits(model, params, batch)
    frozen = {k: v for k, v in flat.items() if not method.owns(k)}
    length = method.added_positions
    plain = T5(cfg, method=PromptTuning(length))
    for row, task in enumerate(np.asarray(batch['task_index'])):
      prompt = np.asarray(method.task_prompts(flat)[TASKS[task]], np.float64)
      alone = _logits(plain, _unflat({**frozen, PROMPT_PATH: prompt}), batch)
      np.testing.assert_allclose(logits[row], alone[row], **FLOAT64_TOLERANCE)
    bank = PromptBank.from_arrays({t: method.task_prompts(flat)[t] for t in TASKS})
    names = [TASKS[t] for t in np.asarray(batch['task_index'])]
    from_bank = _logits(model, params, batch, mixed.gather_prompts(model, bank, names))
    np.testing.assert_allclose(from_bank, logits, rtol=1e-6, atol=1e-6)  # the bank is float32


def test_add_with_zero_task_prompts_is_prompt_tuning_with_the_shared_prompt_exactly():
  method = MultiTaskPrompts(4, tasks=TASKS)
  batch = _batch()
  model = T5(small_config(), method=method)
  params = _init(model, batch)
  flat = _flat(params)
  assert np.all(flat[TASKS_PATH] == 0)  # where a run starts
  base = {k: v for k, v in flat.items() if not method.owns(k)}
  base[PROMPT_PATH] = flat[SHARED_PATH]
  want = _logits(T5(small_config(), method=PromptTuning(4)), _unflat(base), batch)
  np.testing.assert_array_equal(_logits(model, params, batch), want)
  moved = _unflat({**flat, TASKS_PATH: flat[TASKS_PATH].at[1].set(0.5)})
  changed = np.abs(_logits(model, moved, batch) - want).max((1, 2)) > 0
  np.testing.assert_array_equal(changed, np.asarray(batch['task_index']) == 1)


def test_projection_starts_as_the_identity_of_the_shared_prompt():
  method = MultiTaskPrompts(3, tasks=TASKS, combination=ProjectSharedPrompt())
  flat = _flat(_init(T5(small_config(), method=method), _batch()))
  for prompt in method.task_prompts(flat).values():
    np.testing.assert_allclose(prompt, flat[SHARED_PATH], rtol=1e-6, atol=1e-6)


def test_multi_task_prompts_refuse_a_task_they_lack_and_bad_settings():
  method = MultiTaskPrompts(3, tasks=['task_a', 'task_b'])
  assert method.tasks == ('task_a', 'task_b')  # a gin list, kept as a tuple
  method.check(['task_b'])
  assert method.task_index(['task_b']) == {'task_b': 1}
  with pytest.raises(UsageError, match=r"the task\(s\) \['task_z'\] are not among the "
                     r"multi-task prompt's tasks \['task_a', 'task_b'\] \(PROMPT_TASKS\)"):
    method.check(['task_a', 'task_z'])
  for bad, message in ((dict(tasks=()), 'PROMPT_TASKS must name'),
                       (dict(tasks=('a', 'a')), 'names a task twice'),
                       (dict(tasks=('a',), combination='add'), 'combination must be one of')):
    with pytest.raises(UsageError, match=message):
      MultiTaskPrompts(3, **bad)
  with pytest.raises(UsageError, match='task_length must be a positive'):
    ConcatTaskPrompt(task_length=0)
  model = T5(small_config(), method=MultiTaskPrompts(3, tasks=('a',), combination=
                                                     ConcatTaskFeatures(shared_features=16)))
  with pytest.raises(UsageError, match=r'shared_features must be in \[1, 15\] for emb_dim=16'):
    _init(model, _batch())
  params = _init(T5(small_config(), method=method), _batch())
  with pytest.raises(UsageError, match='needs method_inputs=MethodInputs\\(task_index=...\\)'):
    _logits(T5(small_config(), method=method), params, toy_batch())


# ------------------------------------------------------------------ per-layer prompts


@pytest.mark.parametrize('placement', ['prefix', 'suffix'])
def test_per_layer_prompts_in_add_mode_at_zero_are_prompt_tuning_exactly(placement):
  method = PerLayerPrompts(3, placement, mode='add')
  batch = toy_batch(batch=3)
  model = T5(small_config(), method=method)
  params = _flat(_init(model, batch))
  layers = sorted(k for k in params if method.owns(k) and k != PROMPT_PATH)
  assert layers == [f'encoder/layers_{i}/prompt/prompt/prompt' for i in range(2)]
  assert all(np.all(params[k] == 0) for k in layers)
  base = _unflat({k: v for k, v in params.items() if k not in layers})
  want = _logits(T5(small_config(), method=PromptTuning(3, placement)), base, batch)
  np.testing.assert_array_equal(_logits(model, _unflat(params), batch), want)


@pytest.mark.parametrize('mode, placement', [('replace', 'prefix'), ('replace', 'suffix'),
                                             ('add', 'suffix')])
def test_each_layer_prompt_is_written_at_the_prompt_positions_before_its_layer(mode, placement):
  """Layer 1's input: layer 0's output, with layer 1's prompt rows replacing it (or added
  to it) at the prompt positions, the j-th of each row getting prompt row j."""
  method = PerLayerPrompts(3, placement, mode=mode)
  batch = toy_batch(batch=3)
  model = T5(small_config(), method=method)
  layer_prompt = 'encoder/layers_1/prompt/prompt/prompt'
  params = _randomised(_init(model, batch), [layer_prompt])
  _, state = model.apply({'params': params}, *_args(batch), enable_dropout=False,
                         capture_intermediates=True, mutable=['intermediates'])
  seen = state['intermediates']['encoder']
  before = np.asarray(seen['layers_0']['__call__'][0])  # [b, L, H]
  after = np.asarray(seen['layers_1']['prompt']['__call__'][0])
  at = np.asarray(prompt_positions(batch['encoder_input_tokens'] > 0, 3, placement))
  rows = np.asarray(_flat(params)[layer_prompt])
  want = before.copy()
  for b in range(3):
    want[b, at[b]] = rows if mode == 'replace' else before[b, at[b]] + rows
  np.testing.assert_array_equal(after, want)
  # 'replace' overwrites the input prompt at layer 0: it no longer matters (as the original).
  moved = _randomised(params, [PROMPT_PATH], seed=7)
  same = np.array_equal(_logits(model, moved, batch), _logits(model, params, batch))
  assert same == (mode == 'replace')


def test_per_layer_prompts_refuse_decoder_prompts_on_an_encoder_decoder():
  with pytest.raises(UsageError, match="Unknown per-layer prompt mode 'sum'"):
    PerLayerPrompts(3, mode='sum')
  with pytest.raises(UsageError, match='the decoder of this model has no prompt positions'):
    _init(T5(small_config(), method=PerLayerPrompts(3, decoder=True)), toy_batch())
  model = T5(small_config(), method=PerLayerPrompts(3))
  bank = PromptBank.from_arrays({'a': np.zeros((3, 16), np.float32)})
  with pytest.raises(UsageError, match='PerLayerPrompts is not one prompt before the input'):
    mixed.gather_prompts(model, bank, ['a'])


# ------------------------------------------------------------------ attention visibility


def _reference_mask(valid, prompt, to_input, to_prompt):
  """What each query sees, query by query (the original's rules)."""
  b, length = valid.shape
  out = np.zeros((b, 1, length, length), np.float32)
  for i, q, k in itertools.product(range(b), range(length), range(length)):
    if not (valid[i, q] and valid[i, k]):
      continue
    if not prompt[i, q]:
      sees = True  # inputs see everything: inputs and prompt
    elif not prompt[i, k]:
      sees = to_input
    else:
      sees = {'all': True, 'causal': k <= q, 'self': k == q}[to_prompt]
    out[i, 0, q, k] = sees
  return out


@pytest.mark.parametrize('to_input, to_prompt',
                         list(itertools.product([True, False], masks.PROMPT_TO_PROMPT)))
def test_prompt_attention_mask_is_the_originals(to_input, to_prompt):
  tokens = np.asarray(toy_batch(batch=3, inputs=5)['encoder_input_tokens'])
  for placement in ('prefix', 'suffix'):
    valid = np.concatenate([np.ones((3, 2), bool), tokens > 0], axis=1)
    if placement == 'suffix':  # [input, prompt, padding]
      valid = np.sort(valid, axis=1)[:, ::-1]
    prompt = np.asarray(prompt_positions(tokens > 0, 2, placement))
    got = masks.prompt_attention_mask(jnp.asarray(valid), jnp.asarray(prompt),
                                      prompt_to_input=to_input, prompt_to_prompt=to_prompt)
    np.testing.assert_array_equal(got, _reference_mask(valid, prompt, to_input, to_prompt))
  full = masks.prompt_attention_mask(jnp.asarray(valid), jnp.asarray(prompt))
  np.testing.assert_array_equal(full, masks.make_attention_mask(valid, valid))


def _encoded(model, params, tokens):
  return np.asarray(model.apply({'params': params}, tokens, method=model.encode,
                                method_inputs=MethodInputs(
                                    task_index=jnp.zeros(tokens.shape[:1], jnp.int32)))[0])


@pytest.mark.parametrize('method', [PromptTuning(3, 'suffix'), PerLayerPrompts(3, mode='add'),
                                    MultiTaskPrompts(3, tasks=TASKS)], ids=lambda m: type(m).__name__)
def test_visibility_decides_what_every_prompt_method_attends(method):
  batch = toy_batch(batch=3)
  tokens = batch['encoder_input_tokens']
  other = jnp.where(tokens > 0, (tokens + 5) % 60 + 2, 0)  # other words, the same lengths
  params = _init(T5(small_config(), method=method), _batch())
  plain = _encoded(T5(small_config(), method=method), params, tokens)
  full = dataclasses.replace(method, visibility=Visibility())
  np.testing.assert_array_equal(_encoded(T5(small_config(), method=full), params, tokens), plain)
  at = np.asarray(prompt_positions(tokens > 0, 3, method.placement))
  blind = T5(small_config(), method=dataclasses.replace(
      method, visibility=Visibility(prompt_to_input=False, prompt_to_prompt='self')))
  a, b = _encoded(blind, params, tokens), _encoded(blind, params, other)
  # Prompt positions see neither the input nor each other: the input words never reach them.
  assert not np.allclose(a[~at], b[~at])
  np.testing.assert_allclose(a[at], b[at], rtol=0, atol=1e-6)  # float32: the same values
  assert not np.allclose(a[at], plain[at])


def test_causal_prompt_positions_do_not_see_later_prompt_rows():
  method = PromptTuning(4, visibility=Visibility(prompt_to_input=False, prompt_to_prompt='causal'))
  batch = toy_batch(batch=2)
  model = T5(small_config(), method=method)
  params = _init(model, batch)
  later = _unflat({**_flat(params), PROMPT_PATH: _flat(params)[PROMPT_PATH].at[2:].add(1.0)})
  a, b = (_encoded(model, p, batch['encoder_input_tokens']) for p in (params, later))
  np.testing.assert_array_equal(a[:, :2], b[:, :2])
  assert not np.allclose(a[:, 2:4], b[:, 2:4])
  with pytest.raises(UsageError, match='PROMPT_TO_PROMPT must be one of'):
    Visibility(prompt_to_prompt='none')


# ------------------------------------------------------------------ training


def _weight_gradient_dots(model, batch, rules):
  params = _init(model, batch)
  trainable, frozen = optim.partition(params, rules)
  tx = optim.partitioned_optimizer(params, optim.adafactor(), rules)
  state = train_step.init_train_state(trainable, frozen, tx)
  jaxpr = jax.make_jaxpr(train_step.make_train_step(model, tx))(state, frozen, batch)
  return sum(eqn.primitive.name == 'dot_general' for eqn in _all_eqns(jaxpr.jaxpr))


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from _all_eqns(inner)


@pytest.mark.parametrize('method', [
    PerLayerPrompts(3, 'suffix', mode='add'), MultiTaskPrompts(3, tasks=TASKS),
    MultiTaskPrompts(2, tasks=TASKS, combination=ProjectSharedPrompt(),
                     visibility=Visibility(False, 'causal'))], ids=lambda m: type(m).__name__)
def test_only_the_methods_parameters_train_and_no_frozen_weight_is_differentiated(method):
  batch = _batch(batch=4)
  model = T5(small_config(), method=method)
  params = _init(model, batch)
  rules = method.trainable_rules
  trainable, frozen = optim.partition(params, rules)
  assert sorted(_flat(trainable)) == sorted(k for k in _flat(params) if method.owns(k))
  tx = optim.partitioned_optimizer(params, optim.adafactor(), rules)
  state = train_step.init_train_state(trainable, frozen, tx)
  step = jax.jit(train_step.make_train_step(model, tx))
  for _ in range(2):
    state, _ = step(state, frozen, batch)
  moved = [k for k, v in _flat(state.trainable).items() if not np.array_equal(
      v, _flat(trainable)[k])]
  # (In 'replace' mode layer 0 overwrites the input prompt: it gets no gradient, and moves by
  # Adafactor's weight decay only.)
  assert set(moved) >= {k for k in _flat(trainable) if k != PROMPT_PATH}
  # The traced step has no weight-gradient matmul: model tuning's has one per frozen kernel.
  n_kernels = sum(k.endswith('kernel') for k in _flat(frozen))
  full = _weight_gradient_dots(T5(small_config(), method=method), batch,
                               optim.MODEL_TUNING_RULES)
  assert full - _weight_gradient_dots(model, batch, rules) >= n_kernels


@pytest.mark.usefixtures('restore_ptj_global_state')
def test_the_gin_files_build_each_method_and_a_run_outside_its_tasks_stops_in_setup(tmp_path):
  from prompt_tuning_jax import config
  smoke = ['runs/smoke.gin']
  base = [f"MODEL_DIR = '{tmp_path}'"]
  run = config.configure('train', smoke + ['methods/per_layer_prompts.gin',
                                           'methods/prompt_visibility.gin'],
                         base + ["PER_LAYER_MODE = 'add'", 'PROMPT_TO_INPUT = False']).settings
  assert run.model.method == PerLayerPrompts(10, mode='add', visibility=Visibility(
      prompt_to_input=False, prompt_to_prompt='causal'))
  with pytest.raises(UsageError, match='PROMPT_TASKS is not set'):
    config.configure('train', smoke + ['methods/multi_task_prompts.gin'], base)
  run = config.configure('train', smoke + ['methods/multi_task_prompts.gin'], base + [
      "PROMPT_TASKS = ('smoke_sentiment_np', 'smoke_sentiment')",
      'PROMPT_COMBINATION = @methods.ConcatTaskPrompt()',
      'methods.ConcatTaskPrompt.task_length = 2']).settings
  assert run.model.method == MultiTaskPrompts(10, tasks=('smoke_sentiment_np', 'smoke_sentiment'),
                                              combination=ConcatTaskPrompt(2))
  assert run.trainable_rules == optim.PROMPT_TUNING_RULES
  s = run_setup.setup(run)
  assert s.task_index == {'smoke_sentiment': 1}  # the prompt's row, not the run's order
  assert sorted(s.prompt_shapes) == [SHARED_PATH]
  outside = dataclasses.replace(run, model=T5(run.model.config, method=MultiTaskPrompts(
      10, tasks=('smoke_sentiment_np',))))
  with pytest.raises(UsageError, match=r"\['smoke_sentiment'\] are not among"):
    run_setup.setup(outside)
  assert run_setup.setup(dataclasses.replace(run, model=T5(run.model.config))).task_index == {
      'smoke_sentiment': 0}
  assert ModelTuning().task_index(['a']) is None
