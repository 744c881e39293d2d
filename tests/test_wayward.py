"""Wayward prompts (`wayward.py`): the regulariser in the step, weight 0 = plain, the read-back."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from conftest import small_config, toy_batch
from prompt_tuning_jax import config
from prompt_tuning_jax import optim
from prompt_tuning_jax import pretrained
from prompt_tuning_jax import settings as settings_lib
from prompt_tuning_jax import train
from prompt_tuning_jax import train_step
from prompt_tuning_jax import wayward
from prompt_tuning_jax.analysis import neighbors
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.models import PromptedT5

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')

PROMPT = ('encoder', 'prompt', 'prompt', 'prompt')


def _prompt(tree):
  for key in PROMPT:
    tree = tree[key]
  return np.asarray(tree)


def test_the_regularized_step_adds_the_penalty_and_its_gradient():
  """SGD makes the step linear in the gradient: the update differs by lr x the penalty's."""
  model = PromptedT5(small_config(), prompt_length=4)
  batch = toy_batch(batch=4)
  params = model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'],
                      batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                      enable_dropout=False)['params']
  trainable, frozen = optim.partition(params, optim.PROMPT_TUNING_RULES)
  lr, weight = 0.1, 0.5
  tx = optim.partitioned_optimizer(params, optax.sgd(lr), optim.PROMPT_TUNING_RULES)
  target = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)  # 3 of 4 rows

  def step(regularizer):
    state = train_step.init_train_state(trainable, frozen, tx)
    fn = jax.jit(train_step.make_train_step(model, tx, regularizer=regularizer))
    new_state, metrics = fn(state, frozen, batch)
    return _prompt(new_state.trainable), jax.device_get(metrics)

  plain, plain_metrics = step(None)
  held, held_metrics = step(wayward.regularizer(target, weight, ('/'.join(PROMPT),)))
  prompt = _prompt(trainable)
  difference = prompt[:3] - target
  assert held_metrics['loss'] == plain_metrics['loss']  # the objective's loss, unchanged
  assert held_metrics['regularizer'] == pytest.approx(
      weight * np.sum(difference ** 2) / 3, rel=1e-6)
  assert 'regularizer' not in plain_metrics
  penalty_grad = np.zeros_like(prompt)
  penalty_grad[:3] = weight * 2 * difference / 3
  # float32: a few roundings of values of order 1.
  np.testing.assert_allclose(held, plain - lr * penalty_grad, rtol=0, atol=1e-6)
  assert not np.allclose(held[:3], plain[:3]) and np.array_equal(held[3], plain[3])


def _settings(model_dir, *bindings):
  """The smoke run (runs/smoke.gin) for 3 steps of a tiny model with a 3-row prompt."""
  run = config.configure('train', ['runs/smoke.gin'], [
      f'MODEL_DIR = {str(model_dir)!r}', 'TRAIN_STEPS = 3', 'SEED = 3', 'BATCH_SIZE = 4',
      "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 4}", 'PROMPT_LENGTH = 3',
      'EVAL_PERIOD = None', 'LOG_PERIOD = 3', *bindings]).settings
  model = PromptedT5(small_config(vocab_size=384), prompt_length=3)
  return dataclasses.replace(run, model=model)


def test_weight_zero_is_plain_prompt_tuning_bit_for_bit(tmp_path):
  def trained(name, *bindings):
    train.train(_settings(tmp_path / name, *bindings))
    return prompt_io.load_prompt(train_state_lib.prompt_file(str(tmp_path / name), 3))
  plain = trained('plain')
  zero = trained('zero', "WAYWARD_TEXT = 'ok!'", 'WAYWARD_WEIGHT = 0.0')
  np.testing.assert_array_equal(zero, plain)
  held = trained('held', "WAYWARD_TEXT = 'ok!'", 'WAYWARD_WEIGHT = 100.0')
  assert not np.array_equal(held, plain)
  # Nearer the embedded text than the plain prompt: the frozen table of the runs (random
  # weights, seed 3) is rebuilt as `ptj train` builds it.
  from prompt_tuning_jax import run_setup  # pylint: disable=import-outside-toplevel
  s = run_setup.setup(_settings(tmp_path / 'held'))
  table = np.asarray(run_setup.load_frozen(s)['token_embedder']['embedding'])
  ids = wayward.text_ids(s.vocabularies['inputs'], 'ok!', s.prompt_shapes)
  distance = lambda p: float(wayward.squared_distance(p, table[ids]))  # noqa: E731
  assert distance(held) < distance(plain)
  assert 'regularizer' in open(tmp_path / 'held' / 'metrics.jsonl').read()


def test_wayward_settings_and_text_errors():
  base = (optim.adafactor, 0.3, ('.*prompt.*',), 1)
  with pytest.raises(UsageError, match='needs the text the prompt is held near'):
    settings_lib.OptimizerSettings(*base, wayward_weight=0.1)
  with pytest.raises(UsageError, match='WAYWARD_WEIGHT must be a number >= 0'):
    settings_lib.OptimizerSettings(*base, wayward_weight=-1.0, wayward_text='x')
  with pytest.raises(UsageError, match='WAYWARD_TEXT must be a text'):
    settings_lib.OptimizerSettings(*base, wayward_text='  ')
  vocab = neighbors.SeqioPieces(__import__('seqio').ByteVocabulary())
  prompt = '/'.join(PROMPT)
  assert wayward.text_ids(vocab, 'ok', {prompt: (3, 16)}) == vocab.encode('ok')
  with pytest.raises(UsageError, match='4 pieces, more than PROMPT_LENGTH=3'):
    wayward.text_ids(vocab, 'long', {prompt: (3, 16)})
  with pytest.raises(UsageError, match='this method has no prompt'):
    wayward.text_ids(vocab, 'ok', {})  # model tuning's prompt_shapes
  with pytest.raises(UsageError, match=r'has shape \(2, 3, 16\), not \[length, emb\]'):
    wayward.text_ids(vocab, 'ok', {prompt: (3, 16), 'encoder/task_prompts': (2, 3, 16)})


def test_the_regularizer_holds_each_of_the_methods_prompts():
  """A multi-task run's shared prompt and prompt tuning's: one term per prompt, summed."""
  rng = np.random.default_rng(0)
  a, b, target = (rng.standard_normal(shape).astype(np.float32)
                  for shape in ((4, 8), (5, 8), (2, 8)))
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': a, 'shared_prompt': b}}}}
  paths = ('encoder/prompt/prompt/prompt', 'encoder/prompt/prompt/shared_prompt')
  want = [0.5 * np.sum((p[:2] - target) ** 2) / 2 for p in (a, b)]
  assert float(wayward.regularizer(target, 0.5, paths[:1])(trainable)) == pytest.approx(
      want[0], rel=1e-6)
  assert float(wayward.regularizer(target, 0.5, paths)(trainable)) == pytest.approx(
      sum(want), rel=1e-6)


def test_read_back_of_a_prompt_near_a_text():
  vocab = neighbors.PieceVocabulary(pretrained.path('t5_mini/spiece.model'))
  table = neighbors.load_t5x_embedding(pretrained.path('t5_mini/lm_adapted'))
  text = 'classify the review as positive or negative'
  ids = vocab.encode(text)
  rng = np.random.default_rng(0)
  prompt = np.concatenate([table[ids], rng.standard_normal((3, table.shape[1]))])
  report = neighbors.analyze(prompt, table, vocabulary=vocab, text=text, top_k=3)
  assert report.read_back == {'pieces': len(ids), 'top1_accuracy': 1.0, 'topk_accuracy': 1.0,
                              'text': text}
  moved = prompt.copy()
  moved[:4] = rng.standard_normal((4, table.shape[1]))  # four rows say something else
  back = neighbors.read_back(neighbors.analyze(moved, table, vocabulary=vocab, top_k=3).ids,
                             ids, vocab)
  assert back['top1_accuracy'] == pytest.approx(1 - 4 / len(ids))
  assert back['text'].endswith('positive or negative')


def test_the_wayward_gin_file_starts_from_the_text_and_holds_it():
  text = 'Classify these reviews by sentiment .'
  run = config.configure('train', ['runs/smoke_pretrained.gin', 'prompts/wayward.gin'], [
      'MODEL_DIR = "/tmp/wayward"', f'WAYWARD_TEXT = {text!r}', 'PROMPT_LENGTH = 9']).settings
  assert (run.prompt.init, run.prompt.text) == ('from_text', text)
  assert (run.optimizer.wayward_weight, run.optimizer.wayward_text) == (0.01, text)
  with pytest.raises(UsageError, match='WAYWARD_TEXT is not set'):
    config.configure('train', ['runs/smoke_pretrained.gin', 'prompts/wayward.gin'],
                     ['MODEL_DIR = "/tmp/wayward"'])
