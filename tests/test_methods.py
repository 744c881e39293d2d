"""The method design: prompt and model tuning unchanged by it, and each hook point of the T5.

`data/methods_baseline.npz` holds outputs of the code before methods existed (commit
fc5f044, `PromptedT5(prompt_length=...)` / `T5` with `prompts=` keywords): the tiny model's
parameters at PRNGKey(0), float64 logits (prefix and suffix prompts, per-example prompts,
plain T5), two float64 Adafactor steps with dropout of prompt tuning (the prompt) and of
model tuning (each parameter's sum and sum of squares), and float32 cached greedy decoding.
Float64 runs agree across CPUs to ~1e-15 per operation, so 1e-10 separates rounding from
any change of the computation. (Run on one machine in float32, every array was bit-identical.)

The hook points are shown with small methods defined here (not the issue's methods):
each plugs in at one point, at its identity leaves the logits exactly those of plain T5,
and puts its parameters where the hook's module is.
"""
from __future__ import annotations

import dataclasses
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import naive_greedy, small_config, toy_batch
from prompt_tuning_jax import decoding, optim, run_setup, train_step
from prompt_tuning_jax.checkpoints import save_t5x
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods import (PROMPT_PATH, Hooks, Method, MethodInputs, ModelTuning,
                                       PromptTuning)
from prompt_tuning_jax.models import PromptedT5, T5
from prompt_tuning_jax.prompts import prompt_positions

BASELINE = pathlib.Path(__file__).parent / 'data' / 'methods_baseline.npz'
FLOAT64_TOLERANCE = dict(rtol=1e-10, atol=1e-10)


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def _unflat(flat):
  return traverse_util.unflatten_dict(flat, sep='/')


@pytest.fixture(scope='module')
def baseline():
  with np.load(BASELINE) as data:
    return dict(data)


def _args(batch):
  return batch['encoder_input_tokens'], batch['decoder_input_tokens'], batch['decoder_target_tokens']


def _baseline_params(baseline):
  return _unflat({k.split(':', 1)[1]: v for k, v in baseline.items() if k.startswith('params:')})


def _logits(model, params, batch, **kwargs):
  return np.asarray(model.apply({'params': params}, *_args(batch), enable_dropout=False, **kwargs))


# ------------------------------------------------------------------ prompt and model tuning


def test_prompt_tuning_parameters_are_those_of_before(baseline):
  batch = toy_batch(batch=3, inputs=7, targets=4)
  params = _flat(PromptedT5(small_config(), prompt_length=3).init(
      jax.random.PRNGKey(0), *_args(batch), enable_dropout=False)['params'])
  expected = _flat(_baseline_params(baseline))
  assert sorted(params) == sorted(expected) and PROMPT_PATH in params
  for path, value in params.items():  # float32 initialisers: equal up to their rounding
    np.testing.assert_allclose(value, expected[path], rtol=1e-6, atol=1e-7, err_msg=path)


def test_logits_are_those_of_before(baseline):
  batch = toy_batch(batch=3, inputs=7, targets=4)
  params = _baseline_params(baseline)
  flat = _flat(params)
  with jax.enable_x64(True):
    cfg = small_config(dtype=jnp.float64)
    prefix = PromptedT5(cfg, prompt_length=3)
    np.testing.assert_allclose(_logits(prefix, params, batch), baseline['prompted_logits'],
                               **FLOAT64_TOLERANCE)
    suffix_params = _unflat({**flat, PROMPT_PATH: flat[PROMPT_PATH][:2]})
    np.testing.assert_allclose(
        _logits(PromptedT5(cfg, prompt_length=2, prompt_placement='suffix'), suffix_params,
                batch), baseline['suffix_logits'], **FLOAT64_TOLERANCE)
    mixed = MethodInputs(prompts=baseline['mixed_prompts'], prompt_mask=baseline['mixed_mask'])
    np.testing.assert_allclose(_logits(prefix, params, batch, method_inputs=mixed),
                               baseline['mixed_logits'], **FLOAT64_TOLERANCE)
    plain_params = _unflat({k: v for k, v in flat.items() if k != PROMPT_PATH})
    for plain in (T5(cfg), T5(cfg, method=ModelTuning())):
      np.testing.assert_allclose(_logits(plain, plain_params, batch), baseline['plain_logits'],
                                 **FLOAT64_TOLERANCE)


def test_train_steps_with_dropout_are_those_of_before(baseline):
  batch = toy_batch(batch=3, inputs=7, targets=4)
  params = _baseline_params(baseline)
  plain_params = _unflat({k: v for k, v in _flat(params).items() if k != PROMPT_PATH})
  with jax.enable_x64(True):
    cfg = small_config(dtype=jnp.float64, dropout_rate=0.1)
    for name, model, start in (('prompt_step', PromptedT5(cfg, prompt_length=3), params),
                               ('model_step', T5(cfg), plain_params)):
      rules = model.method.trainable_rules
      trainable, frozen = optim.partition(start, rules)
      tx = optim.partitioned_optimizer(start, optim.adafactor(), rules)
      state = train_step.init_train_state(trainable, frozen, tx)
      step = jax.jit(train_step.make_train_step(model, tx, dropout_rng=jax.random.PRNGKey(2)))
      for _ in range(2):
        state, metrics = step(state, frozen, batch)
      np.testing.assert_allclose(metrics['loss'], baseline[f'{name}_loss'], **FLOAT64_TOLERANCE)
      for path, value in _flat(state.trainable).items():
        value = np.asarray(value, np.float64)
        got = value if name == 'prompt_step' else [value.sum(), np.square(value).sum()]
        np.testing.assert_allclose(got, baseline[f'{name}:{path}'], err_msg=path,
                                   **FLOAT64_TOLERANCE)


def test_cached_greedy_decoding_is_that_of_before(baseline):
  batch = toy_batch(batch=3, inputs=7, targets=4)
  tokens, scores = decoding.greedy_decode(
      PromptedT5(small_config(), prompt_length=3), _baseline_params(baseline),
      batch['encoder_input_tokens'], max_decode_length=5)
  np.testing.assert_array_equal(tokens, baseline['greedy_tokens'])
  # float32 log-probabilities summed over 5 steps
  np.testing.assert_allclose(scores, baseline['greedy_scores'], rtol=0, atol=1e-5)


def test_prompt_and_model_tuning_answer_for_themselves():
  prompt = PromptTuning(5)
  assert prompt.trainable_rules == optim.PROMPT_TUNING_RULES and prompt.owns(PROMPT_PATH)
  assert prompt.is_prompt(PROMPT_PATH) and not prompt.is_prompt('encoder/prompt/other')
  assert prompt.prompt_file == 'encoder.prompt.prompt.prompt' and prompt.added_positions == 5
  assert list(prompt.exports({PROMPT_PATH: 1, 'decoder/x': 2})) == [prompt.prompt_file]
  model = ModelTuning()
  assert model.trainable_rules == optim.MODEL_TUNING_RULES and not model.owns('encoder/x')
  assert model.exports({'encoder/x': 1}) == {} and model.prompt_file is None
  assert T5(small_config()).method == model  # plain T5 is model tuning
  with pytest.raises(UsageError, match='PROMPT_LENGTH must be a positive'):
    PromptTuning(0)
  with pytest.raises(UsageError, match="placement 'middle'"):
    PromptTuning(2, 'middle')


# ------------------------------------------------------------------ the hook points


class _Scale(nn.Module):
  """A learned elementwise scale over the trailing `ndim` axes, initialised to ones."""
  ndim: int = 1

  @nn.compact
  def __call__(self, x):
    return x * self.param('scale', nn.initializers.ones, x.shape[-self.ndim:], jnp.float32)


class _Add(nn.Module):
  """A learned [width] vector added everywhere, initialised to zeros."""

  @nn.compact
  def __call__(self, x):
    return x + self.param('delta', nn.initializers.zeros, (x.shape[-1],), jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Rescaling(Method):
  """Keys, values and MLP activations rescaled where Flaxformer's k_conv/v_conv and
  intermediate_conv are (the IA3 shape of things)."""

  def hooks(self):
    return Hooks(keys_values=self._keys_values, mlp_hidden=self._mlp_hidden)

  def _keys_values(self, key, value, bias, *, site, inputs, decode):
    del site, inputs, decode
    return _Scale(2, name='k_conv')(key), _Scale(2, name='v_conv')(value), bias

  def _mlp_hidden(self, hidden, *, site):
    del site
    return _Scale(name='intermediate_conv')(hidden)

  @property
  def parameter_rules(self):
    return (r'.*/(k_conv|v_conv|intermediate_conv)/scale',)


@dataclasses.dataclass(frozen=True)
class _LayerShift(Method):
  """A learned vector added to every layer's input (the per-layer prompt's point)."""

  def hooks(self):
    return Hooks(layer_input=self._layer_input)

  def _layer_input(self, x, *, site, prompt, inputs, decode):
    del prompt, inputs, decode
    assert site.block == 'layer'
    return _Add(name='shift')(x)

  @property
  def parameter_rules(self):
    return (r'.*/shift/delta',)


class _Prefix(nn.Module):
  """`length` learned [heads, head_dim] key and value rows, visible to every query."""
  length: int

  @nn.compact
  def __call__(self, key, value, bias):
    b, _, h, d = key.shape
    init = nn.initializers.normal(1.0)
    rows = [jnp.broadcast_to(self.param(name, init, (self.length, h, d), jnp.float32),
                             (b, self.length, h, d)).astype(key.dtype)
            for name in ('key', 'value')]
    bias = jnp.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(self.length, 0)])  # visible: bias 0
    return (jnp.concatenate([rows[0], key], axis=1), jnp.concatenate([rows[1], value], axis=1),
            bias)


@dataclasses.dataclass(frozen=True)
class _KeyValuePrefix(Method):
  """Learned key/value rows before every attention's keys (the prefix-tuning point)."""
  length: int = 2

  def hooks(self):
    return Hooks(keys_values=self._keys_values)

  def _keys_values(self, key, value, bias, *, site, inputs, decode):
    del site, inputs, decode
    return _Prefix(self.length, name='prefix')(key, value, bias)

  @property
  def parameter_rules(self):
    return (r'.*/prefix/(key|value)',)


@dataclasses.dataclass(frozen=True)
class _TaskShift(Method):
  """Each example's task selects a learned vector added to the embedded input, and every
  decoder layer's input (per-example method inputs reaching the encoder and the decoder)."""
  num_tasks: int = 2

  def hooks(self):
    return Hooks(encoder_input=self._encoder_input, layer_input=self._layer_input)

  def _shift(self, x, task_index):
    table = _TaskTable(self.num_tasks, name='task_shift')(x.shape[-1])
    return x + jnp.take(table, task_index, axis=0)[:, None, :]

  def _encoder_input(self, embedded, valid, *, inputs):
    return self._shift(embedded, inputs.task_index), valid, jnp.zeros_like(valid)

  def _layer_input(self, x, *, site, prompt, inputs, decode):
    del prompt, decode
    return self._shift(x, inputs.task_index) if site.stack == 'decoder' else x

  @property
  def parameter_rules(self):
    return (r'.*/task_shift/table',)


class _TaskTable(nn.Module):
  num_tasks: int

  @nn.compact
  def __call__(self, width):
    return self.param('table', nn.initializers.zeros, (self.num_tasks, width), jnp.float32)


def _plain_and(method, batch):
  """(T5 with `method`, its params: plain T5's at PRNGKey(0) plus the method's, plain T5's)."""
  cfg = small_config()
  plain = T5(cfg).init(jax.random.PRNGKey(0), *_args(batch), enable_dropout=False)['params']
  model = T5(cfg, method=method)
  params = _flat(model.init(jax.random.PRNGKey(1), *_args(batch), enable_dropout=False,
                            method_inputs=MethodInputs.from_batch(batch))['params'])
  own = {k: v for k, v in params.items() if method.owns(k)}
  assert own and sorted(params) == sorted(_flat(plain).keys() | own.keys())
  return model, _unflat({**_flat(plain), **own}), plain


def test_keys_values_and_mlp_hooks_at_their_identity_are_plain_t5():
  batch = toy_batch()
  model, params, plain = _plain_and(_Rescaling(), batch)
  own = sorted(k for k in _flat(params) if model.method.owns(k))
  assert 'encoder/layers_1/attention/k_conv/scale' in own
  assert 'decoder/layers_0/self_attention/v_conv/scale' in own
  assert 'decoder/layers_1/encoder_decoder_attention/k_conv/scale' in own
  assert 'encoder/layers_0/mlp/intermediate_conv/scale' in own
  assert len(own) == 2 * 6 + 4  # k and v of 6 attentions, one scale per MLP
  np.testing.assert_array_equal(_logits(model, params, batch), _logits(T5(small_config()), plain,
                                                                      batch))
  scaled = _unflat({**_flat(params), own[0]: 2 * _flat(params)[own[0]]})
  assert not np.allclose(_logits(model, scaled, batch), _logits(model, params, batch))


def test_layer_input_hook_at_zero_is_plain_t5_and_each_layer_has_its_own():
  batch = toy_batch()
  model, params, plain = _plain_and(_LayerShift(), batch)
  own = sorted(k for k in _flat(params) if model.method.owns(k))
  assert own == [f'{stack}/layers_{i}/shift/delta' for stack in ('decoder', 'encoder')
                 for i in range(2)]
  np.testing.assert_array_equal(_logits(model, params, batch), _logits(T5(small_config()), plain,
                                                                      batch))
  moved = _unflat({**_flat(params), 'encoder/layers_1/shift/delta': jnp.ones(16)})
  assert not np.allclose(_logits(model, moved, batch), _logits(model, params, batch))


def test_key_value_prefix_decodes_with_the_cache_as_without():
  """The keys_values hook sees the whole cache each step: a prefix is added, never cached."""
  batch = toy_batch(batch=3)
  model, params, _ = _plain_and(_KeyValuePrefix(2), batch)
  assert 'decoder/layers_0/self_attention/prefix/key' in _flat(params)
  tokens, scores = decoding.greedy_decode(model, params, batch['encoder_input_tokens'],
                                          max_decode_length=4)
  want_tokens, want_scores = naive_greedy(model, params, batch['encoder_input_tokens'], 4)
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)  # float32, 4 steps


def test_method_inputs_reach_encoder_and_decoder_from_a_batch_and_in_decoding():
  batch = dict(toy_batch(batch=4), task_index=jnp.array([0, 1, 1, 0], jnp.int32))
  assert MethodInputs.from_batch(batch) == MethodInputs(task_index=batch['task_index'])
  model, params, _ = _plain_and(_TaskShift(2), batch)
  table = 'encoder/task_shift/table'
  assert table in _flat(params) and 'decoder/layers_1/task_shift/table' in _flat(params)
  base = np.asarray(train_step.batch_logits(model, params, batch))
  moved = _unflat({**_flat(params), table: jnp.zeros((2, 16)).at[1].set(1.0)})
  changed = np.abs(np.asarray(train_step.batch_logits(model, moved, batch)) - base).max((1, 2))
  assert np.all((changed > 0) == (np.asarray(batch['task_index']) == 1))
  # Cached decoding carries them to every decoder step, beam search to every beam.
  decoder_table = 'decoder/layers_0/task_shift/table'
  moved = _unflat({**_flat(params), decoder_table: jnp.zeros((2, 16)).at[1].set(3.0)})
  inputs = MethodInputs(task_index=batch['task_index'])
  greedy = decoding.greedy_decode(model, moved, batch['encoder_input_tokens'],
                                  max_decode_length=3, method_inputs=inputs)
  beam = decoding.beam_search(model, moved, batch['encoder_input_tokens'], beam_size=1,
                              alpha=0.0, max_decode_length=3, method_inputs=inputs)
  np.testing.assert_array_equal(greedy[0], beam[0])
  two_beams = decoding.beam_search(model, moved, batch['encoder_input_tokens'], beam_size=2,
                                   max_decode_length=3, method_inputs=inputs)
  assert two_beams[0].shape == (4, 3)


@dataclasses.dataclass(frozen=True)
class _PromptMask(PromptTuning):
  """Prompt tuning with an encoder mask: the default one, or prompts that see only themselves
  (the original's visibility without prompt->input or prompt->prompt)."""
  prompt_sees_itself_only: bool = False

  def hooks(self):
    return dataclasses.replace(super().hooks(), encoder_mask=self._mask)

  def _mask(self, valid, prompt):
    sees = valid[:, :, None] & valid[:, None, :]  # [b, L, L]
    if self.prompt_sees_itself_only:
      itself = jnp.eye(valid.shape[1], dtype=bool)[None]
      sees = jnp.where(prompt[:, :, None], itself & valid[:, None, :], sees)
    return sees[:, None].astype(jnp.float32)


@pytest.mark.parametrize('placement', ['prefix', 'suffix'])
def test_encoder_mask_hook_decides_what_attends_what(placement):
  cfg, batch = small_config(), toy_batch()
  prompted = PromptedT5(cfg, prompt_length=2, prompt_placement=placement)
  params = prompted.init(jax.random.PRNGKey(0), *_args(batch), enable_dropout=False)['params']

  def encoded(model):
    return np.asarray(model.apply({'params': params}, batch['encoder_input_tokens'],
                                  method=model.encode)[0])

  want = encoded(prompted)
  np.testing.assert_array_equal(encoded(T5(cfg, method=_PromptMask(2, placement))), want)
  alone = encoded(T5(cfg, method=_PromptMask(2, placement, prompt_sees_itself_only=True)))
  prompt = np.asarray(prompt_positions(batch['encoder_input_tokens'] > 0, 2, placement))
  assert not np.allclose(alone[prompt], want[prompt])  # the prompt rows see less


def test_only_the_methods_parameters_train():
  batch = toy_batch()
  model, params, _ = _plain_and(_Rescaling(), batch)
  rules = model.method.trainable_rules
  trainable, frozen = optim.partition(params, rules)
  assert sorted(_flat(trainable)) == sorted(k for k in _flat(params) if model.method.owns(k))
  tx = optim.partitioned_optimizer(params, optim.adafactor(), rules)
  state = train_step.init_train_state(trainable, frozen, tx)
  state, _ = jax.jit(train_step.make_train_step(model, tx))(state, frozen, batch)
  assert any(not np.array_equal(v, _flat(trainable)[k]) for k, v in _flat(state.trainable).items())


# ------------------------------------------------------------------ a run asks the method


@pytest.mark.usefixtures('restore_ptj_global_state')
def test_a_run_starts_a_methods_parameters_the_checkpoint_lacks_from_their_modules(tmp_path):
  from prompt_tuning_jax import config
  checkpoint = str(tmp_path / 'plain')
  cfg = small_config(vocab_size=384)
  batch = toy_batch(vocab=384)
  plain = T5(cfg).init(jax.random.PRNGKey(5), *_args(batch), enable_dropout=False)['params']
  save_t5x(plain, checkpoint)
  run = config.configure('train', ['runs/smoke.gin'], [
      f"MODEL_DIR = '{tmp_path / 'run'}'", f"INITIAL_CHECKPOINT_PATH = '{checkpoint}'"]).settings
  run = dataclasses.replace(run, model=T5(cfg, method=_Rescaling()))
  assert run.trainable_rules == _Rescaling().parameter_rules  # TRAINABLE_RULES = None
  params = _flat(run_setup.build_params(run_setup.setup(run)))
  for path, value in _flat(plain).items():
    np.testing.assert_array_equal(params[path], value)
  own = [k for k in params if run.model.method.owns(k)]
  assert len(own) == 16 and all(np.all(params[k] == 1.0) for k in own)


@pytest.mark.usefixtures('restore_ptj_global_state')
def test_a_method_refuses_a_run_in_the_setup(tmp_path):
  from prompt_tuning_jax import config

  @dataclasses.dataclass(frozen=True)
  class SingleTask(PromptTuning):
    def check(self, task_names):
      if task_names != ['one_task']:
        raise UsageError(f'SingleTask trains one task, not {task_names}.')

  run = config.configure('train', ['runs/smoke.gin'], [f"MODEL_DIR = '{tmp_path}'"]).settings
  run = dataclasses.replace(run, model=T5(run.model.config, method=SingleTask(2)))
  with pytest.raises(UsageError, match=r"SingleTask trains one task, not \['smoke_sentiment'\]"):
    run_setup.setup(run)
