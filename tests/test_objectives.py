"""Losses over the label set (LOSS): each against numpy from the same label scores.

The numpy side computes each loss and its derivative with respect to the label
scores by hand; the gradient with respect to the prompt is then that derivative
through the Jacobian of the label scores. Compared in float64 (a float64 model
under `jax.enable_x64`), so the tolerances are float64 rounding.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import seqio
from conftest import small_config

from prompt_tuning_jax import data
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import objectives
from prompt_tuning_jax import optim
from prompt_tuning_jax import scoring
from prompt_tuning_jax import train_step
from prompt_tuning_jax.errors import DataError, UsageError
from prompt_tuning_jax.models import PromptedT5
from prompt_tuning_jax.settings import OptimizerSettings
from prompt_tuning_jax.tasks import smoke

LOSSES = {'sequence_cross_entropy': None, 'perceptron': 0.0, 'hinge': 1.0}  # name: margin


# ------------------------------------------------------------ numpy, by hand


def numpy_loss(name: str, scores: np.ndarray, gold: np.ndarray, valid: np.ndarray,
               margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(loss [b], d loss / d scores [b, labels]) of each example, in float64."""
  loss, grad = np.zeros(len(scores)), np.zeros(scores.shape)
  for i, (s, g, v) in enumerate(zip(scores.astype(np.float64), gold, valid)):
    labels = np.flatnonzero(v)
    if name == 'sequence_cross_entropy':
      p = np.exp(s[labels] - s[labels].max())
      p /= p.sum()
      loss[i] = -np.log(p[list(labels).index(g)])
      grad[i, labels] = p
      grad[i, g] -= 1.0
      continue
    others = [c for c in labels if c != g]
    if not others:
      continue
    rival = others[int(np.argmax(s[others]))]  # the first of tied rivals
    violation = (0.0 if name == 'perceptron' else margin) + s[rival] - s[g]
    if violation >= 0:  # At the boundary: value 0, gradient the update.
      loss[i] = violation
      grad[i, rival] += 1.0
      grad[i, g] -= 1.0
  return loss, grad


def jax_loss(name: str, margin: float = 1.0):
  return objectives.label_loss(name, margin)


# ------------------------------------------------------------ on scores: ties, margins


# Each row: scores, valid labels, gold. Three labels; the third is padding in rows 0-2
# (a two-label task), and its score 0 would win if it were not masked.
SCORES = np.array([
    [-1.0, -1.0, 0.0],   # gold tied with the other label
    [-3.0, -1.2, 0.0],   # gold first by 1.8: above the margin
    [-2.0, -1.6, 0.0],   # gold first by 0.4: below the margin
    [-0.5, -0.5, -2.0],  # two rivals tied above the gold
    [-2.5, -1.5, -0.5],  # gold first by exactly the margin
    [-0.7, -3.0, -0.9],  # gold second
])
VALID = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]], bool)
GOLD = np.array([0, 1, 1, 2, 2, 2])


@pytest.mark.parametrize('name', LOSSES)
def test_each_loss_and_its_gradient_on_scores_with_ties_and_three_labels(name):
  expected, expected_grad = numpy_loss(name, SCORES, GOLD, VALID)
  with jax.enable_x64(True):
    fn = jax_loss(name)
    loss = fn(jnp.asarray(SCORES), jnp.asarray(GOLD), jnp.asarray(VALID))
    grad = jax.grad(lambda s: fn(s, jnp.asarray(GOLD), jnp.asarray(VALID)).sum())(
        jnp.asarray(SCORES))
  np.testing.assert_allclose(loss, expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)
  assert not np.any(grad[:3, 2]), 'a padding label never gets a gradient'


def test_perceptron_is_zero_once_gold_ranks_first_the_hinge_only_by_its_margin():
  with jax.enable_x64(True):
    perceptron = np.asarray(jax_loss('perceptron')(SCORES, GOLD, VALID))
    hinge = np.asarray(jax_loss('hinge', 1.0)(SCORES, GOLD, VALID))
  # Gold first by 1.8 / 0.4 / exactly 1.0 (rows 1, 2, 4): the perceptron is zero for all.
  np.testing.assert_array_equal(perceptron[[1, 2, 4]], 0.0)
  np.testing.assert_allclose(hinge[[1, 2, 4]], [0.0, 0.6, 0.0], atol=1e-12)
  # A tie (row 0) is no win: the value is 0, the gradient the perceptron's update.
  assert perceptron[0] == 0.0 and hinge[0] == pytest.approx(1.0)
  np.testing.assert_allclose(perceptron[[3, 5]], [1.5, 0.2], atol=1e-12)
  np.testing.assert_allclose(hinge[[3, 5]], [2.5, 1.2], atol=1e-12)
  # A task with one label has no rival: nothing to rank.
  one = np.asarray(jax_loss('hinge')(np.array([[-2.0, 0.0]]), np.array([0]),
                                     np.array([[True, False]])))
  assert one.tolist() == [0.0]
  correct = objectives.rank_correct(jnp.asarray(SCORES), jnp.asarray(GOLD), jnp.asarray(VALID))
  assert np.asarray(correct).tolist() == [True, True, True, False, True, False]


# ------------------------------------------------------------ through the model


def _tables():
  """Two tasks: two labels of 2 tokens with EOS, three labels of up to 3 tokens."""
  tokens = np.zeros((2, 3, 3), np.int32)
  tokens[0, :2, :2] = [[5, 1], [9, 1]]
  tokens[1] = [[7, 8, 1], [11, 1, 0], [13, 4, 1]]
  valid = np.array([[1, 1, 0], [1, 1, 1]], bool)
  return tokens, valid


def _batch(tokens, task, gold):
  """Four examples; each target is its gold label's tokens (as the data pipeline gives)."""
  rng = np.random.RandomState(0)
  inputs = rng.randint(2, 64, (len(task), 6))
  inputs[1, 4:] = inputs[3, 3:] = 0
  targets = np.zeros((len(task), 4), np.int32)
  for i, (t, g) in enumerate(zip(task, gold)):
    label = tokens[t, g][tokens[t, g] > 0]
    targets[i, :len(label)] = label
  return {'encoder_input_tokens': inputs.astype(np.int32), 'decoder_target_tokens': targets,
          'decoder_input_tokens': np.pad(targets[:, :-1], ((0, 0), (1, 0))),
          'decoder_loss_weights': (targets > 0).astype(np.int32),
          data.TASK_INDEX: np.asarray(task, np.int32),
          objectives.LABEL_INDEX: np.asarray(gold, np.int32)}


@pytest.fixture(scope='module')
def float64_model():
  with jax.enable_x64(True):
    model = PromptedT5(small_config(dtype=jnp.float64), prompt_length=3)
    tokens, valid = _tables()
    batch = _batch(tokens, task=[0, 1, 1, 0], gold=[1, 2, 0, 0])
    dummy = jnp.ones((1, 1), jnp.int32)
    params = jax.jit(lambda rng: model.init(rng, dummy, dummy, dummy, enable_dropout=False))(
        jax.random.PRNGKey(0))['params']
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    yield model, params, batch, tokens, valid


def test_label_scores_are_each_labels_own_teacher_forced_score(float64_model):
  """One packed row per example == scoring each (example, label) in its own decoder row."""
  model, params, batch, tokens, valid = float64_model
  with jax.enable_x64(True):
    labels = tokens[batch[data.TASK_INDEX]]  # [b, 3, 3]
    packed = jax.jit(train_step.label_scores, static_argnums=0)(model, params, batch,
                                                                 jnp.asarray(labels))
    alone = scoring.jit_score_targets(model, params,
                                  np.repeat(batch['encoder_input_tokens'], 3, axis=0),
                                  labels.reshape(-1, 3)).reshape(-1, 3)
  assert packed.dtype == jnp.float64
  real = valid[batch[data.TASK_INDEX]]
  np.testing.assert_allclose(np.asarray(packed)[real], np.asarray(alone)[real], rtol=1e-12)
  assert np.all(np.asarray(packed)[~real] == 0.0)  # padding labels: masked by the losses
  assert np.ptp(np.asarray(packed)[real]) > 1.0


def test_train_step_loss_and_prompt_gradient_equal_numpy_from_the_label_scores(float64_model):
  """Each loss, and the hinge again in 2 micro-batches (gradient accumulation) averaged over
  the examples (loss_normalization 'mean')."""
  model, params, batch, tokens, valid = float64_model
  task, gold = batch[data.TASK_INDEX], batch[objectives.LABEL_INDEX]
  with jax.enable_x64(True):
    prompt = params['encoder']['prompt']['prompt']['prompt']

    def scores_of(p):
      tree = jax.tree.map(lambda x: x, params)
      tree['encoder']['prompt']['prompt']['prompt'] = p
      return train_step.label_scores(model, tree, batch, jnp.asarray(tokens[task]))

    scores = np.asarray(jax.jit(scores_of)(prompt))
    jacobian = np.asarray(jax.jit(jax.jacrev(scores_of))(prompt))  # [b, labels, P, emb]
    # SGD at rate 1 makes the update the negative gradient.
    tx = optim.partitioned_optimizer(params, optax.sgd(1.0), optim.PROMPT_TUNING_RULES)
    trainable, frozen = optim.partition(params, optim.PROMPT_TUNING_RULES)
    for name, steps, normalization in [*((name, 1, 'sum') for name in LOSSES),
                                       ('hinge', 2, 'mean')]:
      expected, d_scores = numpy_loss(name, scores, gold, valid[task])
      expected_grad = np.einsum('bc,bcph->ph', d_scores, jacobian)
      if normalization == 'mean':
        expected, expected_grad = expected / 4, expected_grad / 4
      objective = objectives.LabelObjective(jax_loss(name), tokens, valid)
      step = jax.jit(train_step.make_train_step(model, tx, label_objective=objective,
                                                accumulation_steps=steps,
                                                loss_normalization=normalization))
      state, metrics = step(train_step.init_train_state(trainable, frozen, tx), frozen, batch)
      grad = np.asarray(prompt - state.trainable['encoder']['prompt']['prompt']['prompt'])
      np.testing.assert_allclose(float(metrics['loss']), expected.sum(), rtol=1e-10)
      np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-12)
      assert np.abs(expected_grad).max() > 1e-3, name  # the gold is not first everywhere
      correct = objectives.rank_correct(scores, gold, valid[task])
      assert float(metrics['rank_accuracy']) == float(np.mean(correct)) == 0.25
      assert float(metrics['examples']) == 4.0 and 'accuracy' not in metrics


# ------------------------------------------------------------ the data side


MIXTURE = 'test_label_losses_mixture'


def _mixture() -> str:
  """A two-label smoke task and a three-label one with multi-token words, mixed 1:1."""
  smoke.register('test_label_losses_two', ('-', '+'))
  smoke.register('test_label_losses_three', ('bad', 'good', 'so-so'))
  if MIXTURE not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(MIXTURE, ['test_label_losses_two', 'test_label_losses_three'],
                              default_rate=1.0)
  return MIXTURE


def test_gold_labels_of_a_mixture_with_different_label_counts_and_bucketed_targets():
  sets = objectives.label_sets(_mixture(), 'hinge')
  assert sets.task_names == tuple(data.task_index_of(MIXTURE))  # by TASK_INDEX
  three = sets.task_names.index('test_label_losses_three')
  assert sets.tokens.shape == (2, 3, 6)  # 'so-so' + EOS
  assert sets.valid[three].all() and sets.valid[1 - three].tolist() == [True, True, False]
  settings = data.DataSettings(MIXTURE, {'inputs': 64, 'targets': 8}, 8, seed=0, module=None,
                               length_buckets='pow2')
  seen, widths = set(), set()
  for batch in itertools.islice(data.train_batches(settings), 40):
    widths.add(batch['decoder_target_tokens'].shape[1])
    gold = sets.gold(batch)
    for task, label, target in zip(batch[data.TASK_INDEX], gold, batch['decoder_target_tokens']):
      assert smoke.VOCABULARY.decode(target.tolist()) == sets.words[task][label]
      seen.add((int(task), int(label)))
  assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}
  assert min(widths) < sets.tokens.shape[2] < max(widths)  # targets cut to 4 and to 8


def test_label_tables_follow_the_methods_task_index():
  """A method with task-specific parameters numbers the tasks its own way (multi-task
  prompts: by PROMPT_TASKS); each table sits at its task's TASK_INDEX, other rows empty."""
  index = {'test_label_losses_three': 0, 'test_label_losses_two': 2}
  sets = objectives.label_sets(_mixture(), 'hinge', task_index=index)
  assert sets.task_names == ('test_label_losses_three', '', 'test_label_losses_two')
  assert sets.valid.tolist() == [[True] * 3, [False] * 3, [True, True, False]]
  vocab = smoke.VOCABULARY
  target = np.zeros((2, 8), np.int32)
  for row, word in zip(target, ('so-so', '+')):
    tokens = vocab.encode(word) + [1]
    row[:len(tokens)] = tokens
  batch = {'decoder_target_tokens': target, data.TASK_INDEX: np.array([0, 2], np.int32)}
  assert sets.gold(batch).tolist() == [2, 1]


def test_a_target_that_is_no_label_and_a_task_without_labels_are_clear_errors():
  sets = objectives.label_sets(_mixture(), 'perceptron')
  vocab = smoke.VOCABULARY
  target = np.array([vocab.encode('good') + [1, 0, 0, 0]], np.int32)
  two = sets.task_names.index('test_label_losses_two')
  batch = {'decoder_target_tokens': target, data.TASK_INDEX: np.array([two], np.int32)}
  with pytest.raises(DataError, match=r"An example of 'test_label_losses_two' has the target "
                     r"'good' .* none of its label words \['-', '\+'\]"):
    sets.gold(batch)
  batch[data.TASK_INDEX] = np.array([1 - two], np.int32)
  assert sets.gold(batch).tolist() == [1]
  with pytest.raises(UsageError, match="LOSS='hinge' scores each task's label words, and "
                     "'pretrain_span_corruption' has none"):
    objectives.label_sets('pretrain_span_corruption', 'hinge')
  # CLASS_LABELS give every task its labels.
  assert objectives.label_sets(smoke.TASK_NAME, 'hinge', ('bad', 'good')).words == (
      ('bad', 'good'),)


def test_loss_settings_are_checked():
  kwargs = dict(optimizer=optim.adafactor, learning_rate=0.1, trainable_rules=('.*',),
                accumulation_steps=1)
  assert OptimizerSettings(**kwargs).loss == 'token_cross_entropy'
  with pytest.raises(UsageError, match="Unknown LOSS 'hing'; expected one of"):
    OptimizerSettings(**kwargs, loss='hing')
  with pytest.raises(UsageError, match='HINGE_MARGIN must be a positive number, got 0'):
    OptimizerSettings(**kwargs, loss='hinge', hinge_margin=0)


# ------------------------------------------------------------ in a run


def test_a_run_over_tasks_of_two_and_three_labels_logs_rank_accuracy_and_norms(
    tmp_path, restore_ptj_global_state):
  """Mixed label counts, length buckets, 2 micro-batches and dropout, end to end."""
  from test_train import run  # pylint: disable=g-import-not-at-top
  result = run(tmp_path, 4, f'MIXTURE_OR_TASK_NAME = {_mixture()!r}', "LOSS = 'hinge'",
               'ACCUMULATION_STEPS = 2', "LENGTH_BUCKETS = {'targets': (4, 8)}",
               "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 8}")
  assert result['final_step'] == 4
  records = [r for r in logging_utils.read_metrics(str(tmp_path)) if r['split'] == 'train']
  assert [r['step'] for r in records] == [2, 4]
  for r in records:
    assert 'accuracy' not in r and 'z_loss' not in r and 0 <= r['rank_accuracy'] <= 1
    assert r['loss'] >= 0 and r['prompt_norm'] > 0 and r['embedding_norm'] > 0
  line = logging_utils.format_train_line(4, 4, records[-1], None)
  assert ' | rank acc ' in line and ' | prompt norm ' in line and ' | acc ' not in line


def test_model_tuning_with_a_label_loss_has_no_prompt_norm(tmp_path, restore_ptj_global_state):
  from test_train import run  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import T5  # pylint: disable=g-import-not-at-top
  run(tmp_path, 2, "TRAINABLE_RULES = ('.*',)", "LOSS = 'sequence_cross_entropy'",
      'LEARNING_RATE = 1e-3', model=T5(small_config(vocab_size=384)))
  record = logging_utils.read_metrics(str(tmp_path))[-1]
  assert record['step'] == 2 and 'rank_accuracy' in record
  assert 'prompt_norm' not in record and 'embedding_norm' not in record


def test_multi_task_prompts_with_a_label_loss(tmp_path, restore_ptj_global_state):
  """Each example's labels come from its task's table by the method's task index (here
  PROMPT_TASKS in the reverse of the mixture's order), and both prompts train."""
  from test_train import run  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.methods import MultiTaskPrompts  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import T5  # pylint: disable=g-import-not-at-top
  tasks = tuple(reversed(data.task_index_of(_mixture())))
  method = MultiTaskPrompts(3, tasks=tasks)
  result = run(tmp_path, 2, f'MIXTURE_OR_TASK_NAME = {_mixture()!r}', "LOSS = 'perceptron'",
               "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 8}",
               model=T5(small_config(vocab_size=384), method=method))
  assert result['final_step'] == 2
  record = logging_utils.read_metrics(str(tmp_path))[-1]
  assert 0 <= record['rank_accuracy'] <= 1 and record['prompt_norm'] > 0


def _mesh_steps() -> dict:
  """One hinge step on one device and on a 2 x 2 (data x model) mesh of 4 CPU devices."""
  from prompt_tuning_jax import partitioning  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import run_setup  # pylint: disable=g-import-not-at-top
  model = PromptedT5(small_config(), prompt_length=3)
  tokens, valid = _tables()
  batch = _batch(tokens, task=[0, 1, 1, 0], gold=[1, 2, 0, 0])
  dummy = jnp.ones((1, 1), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), dummy, dummy, dummy, enable_dropout=False)['params']
  tx = optim.partitioned_optimizer(params, optax.adam(0.1), optim.PROMPT_TUNING_RULES)
  trainable, frozen = optim.partition(params, optim.PROMPT_TUNING_RULES)
  step = jax.jit(train_step.make_train_step(
      model, tx, label_objective=objectives.LabelObjective(jax_loss('hinge'), tokens, valid)))
  out = {}
  for name, mesh in (('one', None), ('mesh', partitioning.make_mesh(2))):
    t, f, b = trainable, frozen, batch
    if mesh is not None:
      t, f = run_setup.on_devices(t, mesh), run_setup.on_devices(f, mesh)
      b = partitioning.global_batch(b, mesh)
    state, metrics = step(train_step.init_train_state(t, f, tx), f, b)
    out[name] = {'loss': float(metrics['loss']),
                 'prompt': np.asarray(state.trainable['encoder']['prompt']['prompt']['prompt'])
                 .tolist()}
  return out


@pytest.mark.slow  # a subprocess with 4 CPU devices: two compilations
def test_a_label_loss_step_on_a_mesh_equals_one_device(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, __file__, str(tmp_path / 'out.json')], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(tmp_path / 'out.json') as f:
    out = json.load(f)
  assert out['one']['loss'] > 0
  # The mesh sums the batch and the model-parallel matmuls in another order: float32 ulps.
  np.testing.assert_allclose(out['mesh']['loss'], out['one']['loss'], rtol=1e-5)
  np.testing.assert_allclose(out['mesh']['prompt'], out['one']['prompt'], rtol=0, atol=1e-5)


if __name__ == '__main__':
  assert jax.device_count() == 4
  with open(sys.argv[1], 'w') as f:
    json.dump(_mesh_steps(), f)
