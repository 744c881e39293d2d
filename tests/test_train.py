"""Tests for the train loop, resume, checkpoints and the early errors (tiny model, smoke task)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_config

from prompt_tuning_jax import config
from prompt_tuning_jax import distributed
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import optim
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import train
from prompt_tuning_jax import train_step
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError
from prompt_tuning_jax.data import UnknownTaskError
from prompt_tuning_jax.errors import DataError
from prompt_tuning_jax.errors import DivergedError, UsageError
from prompt_tuning_jax.methods import PromptTuning
from prompt_tuning_jax.models import PromptedT5
from prompt_tuning_jax.tasks import smoke

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')

PROMPT_LENGTH, EMB = 3, 16
# Compiling dominates these runs; identical programs are compiled once.


def model(**overrides):
  config = small_config(vocab_size=384, dropout_rate=0.1, **overrides)
  return PromptedT5(config, prompt_length=PROMPT_LENGTH)


def settings(model_dir, steps=2, *bindings, **changes):
  """The smoke run's settings (runs/smoke.gin) for a short run of the tiny `model()`."""
  run = config.configure('train', ['runs/smoke.gin'], [
      f'MODEL_DIR = {str(model_dir)!r}', f'TRAIN_STEPS = {steps}', 'SEED = 3',
      "TASK_FEATURE_LENGTHS = {'inputs': 64, 'targets': 4}", 'BATCH_SIZE = 4',
      'CHECKPOINT_PERIOD = 3', 'LOG_PERIOD = 2', 'EVAL_PERIOD = None', *bindings]).settings
  return dataclasses.replace(run, **{'model': model(), **changes})


def run(model_dir, steps, *bindings, **changes):
  return train.train(settings(model_dir, steps, *bindings, **changes))


def exported_prompt(model_dir, step):
  return prompt_io.load_prompt(train_state_lib.prompt_file(str(model_dir), step))


def test_resumed_run_ends_with_exactly_the_uninterrupted_prompt(tmp_path):
  straight = run(tmp_path / 'straight', 6)
  assert straight['final_step'] == 6
  run(tmp_path / 'resumed', 3)
  # A save that was killed mid-write leaves a temporary directory: ignored.
  os.makedirs(tmp_path / 'resumed' / 'checkpoints' / '5.orbax-checkpoint-tmp-17' / 'state')
  resumed = run(tmp_path / 'resumed', 6)
  assert resumed['start_step'] == 3 and resumed['final_step'] == 6
  a, b = exported_prompt(tmp_path / 'straight', 6), exported_prompt(tmp_path / 'resumed', 6)
  assert a.shape == (PROMPT_LENGTH, EMB) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)  # bit-identical, dropout included
  assert not np.array_equal(exported_prompt(tmp_path / 'resumed', 3), b)  # it did train

  records = logging_utils.read_metrics(str(tmp_path / 'straight'))
  assert [r['step'] for r in records] == [2, 4, 6]
  for r in records:
    assert r['split'] == 'train' and r['loss'] > 0 and 0 <= r['accuracy'] <= 1
    assert r['learning_rate'] == pytest.approx(0.3)
    assert r['examples_per_second'] > 0 and r['tokens_per_second'] > 0
    assert r['prompt_norm_ratio'] < train.DIVERGENCE_FACTOR  # A sound run: no warning.
  assert os.listdir(tmp_path / 'straight' / 'tensorboard' / 'train')
  assert straight['diverged_step'] is None
  # A finished run started again has nothing to do.
  assert run(tmp_path / 'straight', 6)['start_step'] == 6


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_step(tmp_path, caplog):
  run(tmp_path, 6)  # checkpoints 3 and 6
  expected = exported_prompt(tmp_path, 6)
  for data in (tmp_path / 'checkpoints' / '6' / 'state').glob('**/d/*'):
    data.write_bytes(data.read_bytes()[:10])  # cut short after the save
  resumed = run(tmp_path, 6)
  assert resumed['start_step'] == 3 and resumed['final_step'] == 6
  assert f"Checkpoint {tmp_path / 'checkpoints' / '6'} cannot be restored" in caplog.text
  assert 'using step 3, the newest intact one' in caplog.text
  assert (tmp_path / 'checkpoints' / '6.damaged' / 'state').is_dir()
  np.testing.assert_array_equal(exported_prompt(tmp_path, 6), expected)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  # From the 5th update on the learning rate is NaN: the prompt becomes NaN.
  lr = lambda step: jnp.where(step >= 4, jnp.nan, 0.3)
  run_settings = settings(tmp_path, 9)
  run_settings = dataclasses.replace(
      run_settings, optimizer=dataclasses.replace(run_settings.optimizer, learning_rate=lr))
  with pytest.raises(DivergedError, match='last good checkpoint is step 3'):
    train.train(run_settings)
  ckpt = train_state_lib.TrainStateCheckpointer(str(tmp_path), read_only=True)
  assert ckpt.latest_step() == 3
  assert np.isfinite(exported_prompt(tmp_path, 3)).all()


def test_a_huge_learning_rate_diverges_before_any_checkpoint(tmp_path):
  with pytest.raises(DivergedError, match=r'became nan at step \d+: training stopped and nothing '
                                          r'after it was saved; no checkpoint was saved\.'):
    run(tmp_path, 3, 'LEARNING_RATE = 1e39')
  assert not os.path.exists(tmp_path / 'checkpoints')  # Not even an empty directory.


def test_a_run_that_fails_before_its_first_step_leaves_no_checkpoints_directory(
    tmp_path, monkeypatch):
  monkeypatch.setattr(train.data_lib, 'train_batches', lambda *args, **kwargs: iter(()))
  with pytest.raises(DataError, match="'train' split of 'smoke_sentiment' has no examples"):
    run(tmp_path, 2)
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_prompt_rows_far_beyond_the_embedding_are_reported_and_can_stop_the_run(tmp_path,
                                                                                caplog):
  """LEARNING_RATE=1e9: the loss stays finite, the prompt's rows grow ~1e9x: a warning with
  the numbers, the ratio in the metrics, a warning in the summary; or, asked, a stop."""
  result = run(tmp_path / 'warned', 2, 'LEARNING_RATE = 1e9')
  assert result['diverged_step'] == 2
  assert 'The prompt diverged by step 2: its longest row has norm' in caplog.text
  assert "the token embedding's longest row" in caplog.text
  (record,) = logging_utils.read_metrics(str(tmp_path / 'warned'))
  assert record['prompt_norm_ratio'] > train.DIVERGENCE_FACTOR
  assert any('WARNING:     the prompt diverged by step 2' in line
             for line in train.summary_lines(result))
  with pytest.raises(DivergedError, match=r'The prompt diverged by step 2: .*training stopped '
                                          r'\(STOP_ON_DIVERGENCE\) and nothing after it was '
                                          r'saved; no checkpoint was saved\. Lower LEARNING_RATE'):
    run(tmp_path / 'stopped', 2, 'LEARNING_RATE = 1e9', 'STOP_ON_DIVERGENCE = True')
  assert not os.path.exists(tmp_path / 'stopped' / 'checkpoints')


def test_metrics_hold_one_record_per_step_after_a_resume(tmp_path):
  """Killed after logging step 4 but before saving it: the resumed run logs step 4 again,
  and the earlier record of step 4 is gone."""
  run(tmp_path, 4)  # Logs 2 and 4; checkpoints 3 and 4.
  for path in (tmp_path / 'checkpoints' / '4', train_state_lib.numpy_checkpoint_dir(
      str(tmp_path), 4)):
    shutil.rmtree(path)
  with open(tmp_path / logging_utils.METRICS_FILE, 'a') as f:
    f.write('{"step": 4, "split": "tra')  # A line cut short by the kill.
  assert run(tmp_path, 5)['start_step'] == 3
  assert [r['step'] for r in logging_utils.read_metrics(str(tmp_path))] == [2, 4, 5]


@pytest.mark.parametrize('bindings, changes, error, message', [
    (["MIXTURE_OR_TASK_NAME = 'smoke_sentimant'"], {}, UnknownTaskError, 'Did you mean'),
    ([], dict(model=PromptedT5(small_config(vocab_size=64), prompt_length=3)), UsageError,
     'more than the 64 rows'),
    (["INITIAL_CHECKPOINT_PATH = '/no/such/checkpoint'"], {}, CheckpointError, 'does not exist'),
    (["TASK_FEATURE_LENGTHS = {'inputs': 8}"], {}, UsageError,
     "exactly 'inputs' and 'targets'"),
    (['ACCUMULATION_STEPS = 3'], {}, UsageError, 'ACCUMULATION_STEPS=3'),
])
def test_user_errors_are_clear(tmp_path, bindings, changes, error, message):
  with pytest.raises(error, match=message):
    run(tmp_path, 2, *bindings, **changes)
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_prompt_file_of_the_wrong_shape_is_refused(tmp_path):
  path = str(tmp_path / 'prompt.npy')
  prompt_io.save_prompt(path, np.zeros((PROMPT_LENGTH, EMB + 1), np.float32))
  with pytest.raises(CheckpointError, match=r'\(PROMPT_LENGTH, emb dim\) = \(3, 16\)'):
    run(tmp_path / 'run', 2, f'PROMPT_FILE = {path!r}')


@pytest.mark.parametrize('bindings, message', [
    ([], 'Nothing to load: no checkpoint in'),
    (['CHECKPOINT_STEP = 7'], r'No checkpoint of step 7 \(CHECKPOINT_STEP\) in .*; kept steps: '
     r'\[3\]'),
    (["PROMPT_FILE = '{wrong_shape}'"], r'expected prompt shape \[3, 16\], got \[3, 17\]'),
])
@pytest.mark.parametrize('command', ['eval', 'infer'])
def test_eval_and_infer_check_the_checkpoint_step_and_prompt_file_before_reading_data(
    tmp_path, monkeypatch, command, bindings, message):
  from prompt_tuning_jax import eval as eval_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import evaluation, inference, infer  # pylint: disable=g-import-not-at-top
  read = []
  monkeypatch.setattr(evaluation, 'Evaluator', lambda *args, **kwargs: read.append('eval'))
  monkeypatch.setattr(inference, 'examples_from_task', lambda *a, **k: read.append('infer'))
  prompt_io.save_prompt(str(tmp_path / 'wrong.npy'), np.zeros((PROMPT_LENGTH, EMB + 1)))
  if bindings and 'CHECKPOINT_STEP' in bindings[0]:  # A run whose only checkpoint is step 3.
    trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((PROMPT_LENGTH, EMB))}}}}
    state = train_step.init_train_state(trainable, {}, optim.partitioned_optimizer(
        trainable, optim.adafactor()))._replace(step=jnp.asarray(3, jnp.int32))
    train_state_lib.TrainStateCheckpointer(str(tmp_path / 'run')).save(state, data_position={})
  run_settings = settings(tmp_path / 'run', 2, *[b.format(wrong_shape=tmp_path / 'wrong.npy')
                                                 for b in bindings])
  with pytest.raises(CheckpointError, match=message):
    {'eval': eval_lib.evaluate, 'infer': infer.infer}[command](run_settings)
  assert not read


def test_prompt_file_sets_the_initial_prompt(tmp_path):
  path = str(tmp_path / 'prompt.npy')
  prompt = np.arange(PROMPT_LENGTH * EMB, dtype=np.float32).reshape(PROMPT_LENGTH, EMB) / 100
  prompt_io.save_prompt(path, prompt)
  s = run_setup.setup(settings(tmp_path, 2, f'PROMPT_FILE = {path!r}'))
  params = run_setup.build_params(s)
  np.testing.assert_array_equal(params['encoder']['prompt']['prompt']['prompt'], prompt)


def test_class_label_init_uses_the_task_labels(tmp_path):
  s = run_setup.setup(settings(tmp_path, 2, "PROMPT_INIT = 'class_labels'"))
  params = run_setup.build_params(s)
  embedding = params['token_embedder']['embedding']
  prompt = params['encoder']['prompt']['prompt']['prompt']
  for row, label in enumerate(smoke.LABELS):
    ids = smoke.VOCABULARY.encode(label)
    np.testing.assert_allclose(prompt[row], embedding[ids].mean(0), rtol=1e-6)


def test_batch_size_must_divide_over_the_data_parallel_devices(tmp_path, monkeypatch):
  fake_mesh = types.SimpleNamespace(shape={'data': 2, 'model': 1})
  monkeypatch.setattr(run_setup.partitioning, 'make_mesh', lambda num_partitions: fake_mesh)
  with pytest.raises(UsageError, match='BATCH_SIZE=5 is not divisible by the 2 data-parallel'):
    run(tmp_path, 2, 'BATCH_SIZE = 5')


def test_checkpointer_keeps_latest_and_best_and_exports_the_prompt(tmp_path):
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((2, 4))}}}}
  frozen = {'decoder': {'w': jnp.zeros((4,))}}
  tx = optim.partitioned_optimizer(optim.merge(trainable, frozen), optim.adafactor())
  state = train_step.init_train_state(trainable, frozen, tx)
  ckpt = train_state_lib.TrainStateCheckpointer(str(tmp_path), keep=2, best_metric='accuracy',
                                                exports=PromptTuning().exports)
  for step, accuracy in zip(range(1, 6), [10.0, 90.0, 20.0, 30.0, 40.0]):
    state = state._replace(step=jnp.asarray(step, jnp.int32))
    ckpt.save(state, data_position={'step': step}, metrics={'accuracy': accuracy})
  assert ckpt.all_steps() == [2, 4, 5] and ckpt.best_step() == 2
  restored, meta = ckpt.restore(jax.eval_shape(lambda: state))
  assert int(restored.step) == 5 and meta['metrics'] == {'accuracy': 40.0}
  trainable_only, step = ckpt.restore_trainable(2)
  assert step == 2 and 'decoder' not in trainable_only  # frozen weights are never written
  np.testing.assert_array_equal(exported_prompt(tmp_path, 5), np.ones((2, 4), np.float32))
  assert sorted(os.listdir(tmp_path / 'numpy_checkpoints')) == [
      f'checkpoint_{s}' for s in range(1, 6)]


def test_only_process_0_exports_the_prompt_and_the_topology_is_recorded(tmp_path, monkeypatch):
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((2, 4))}}}}
  tx = optim.partitioned_optimizer(trainable, optim.adafactor())
  state = train_step.init_train_state(trainable, {}, tx)
  monkeypatch.setattr(distributed, 'is_primary', lambda: False)
  ckpt = train_state_lib.TrainStateCheckpointer(str(tmp_path), exports=PromptTuning().exports)
  topology = {'processes': 2, 'devices': 4, 'mesh': {'data': 4, 'model': 1}}
  ckpt.save(state, data_position={'step': 0}, topology=topology)
  assert not os.path.exists(tmp_path / 'numpy_checkpoints')
  assert ckpt.meta(0)['topology'] == topology


def test_train_log_line_and_metrics_writer(tmp_path):
  line = logging_utils.format_train_line(
      120, 300, {'loss': 2.31, 'accuracy': 0.41, 'learning_rate': 0.3,
                 'examples_per_second': 85.2, 'tokens_per_second': 10900.0}, 62)
  assert line == 'step 120/300 | loss 2.31 | acc 0.410 | lr 0.3 | 85.2 ex/s | 10.9k tok/s | eta 0:01:02'
  writer = logging_utils.MetricsWriter(str(tmp_path))
  writer.write(5, 'eval/smoke_sentiment', {'accuracy': 50.0})
  writer.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    assert json.loads(f.read()) == {'step': 5, 'split': 'eval/smoke_sentiment', 'accuracy': 50.0}
  assert os.listdir(tmp_path / 'tensorboard' / 'eval')


def test_model_tuning_trains_every_weight_and_reloads(tmp_path):
  from prompt_tuning_jax.models import T5  # pylint: disable=g-import-not-at-top
  t5 = T5(small_config(vocab_size=384))
  model_tuning = settings(tmp_path, 2, "TRAINABLE_RULES = ('.*',)", 'CHECKPOINT_PERIOD = 2',
                          'LEARNING_RATE = 1e-3', model=t5)
  assert model_tuning.trainable_rules == optim.MODEL_TUNING_RULES
  result = train.train(model_tuning)
  assert result['final_step'] == 2 and result['prompt_file'] is None
  assert not os.path.exists(tmp_path / 'numpy_checkpoints' / 'checkpoint_2')
  s = run_setup.setup(model_tuning)
  initial = run_setup.build_params(s)
  trained, step = run_setup.trained_params(s)
  assert step == 2
  before = initial['encoder']['layers_0']['mlp']['wo']['kernel']
  after = np.asarray(trained['encoder']['layers_0']['mlp']['wo']['kernel'])
  assert before.shape == after.shape and not np.array_equal(before, after)


def test_data_changes_compares_with_the_record_as_json_returns_it():
  now = {'split': 'train', 'seed': 0, 'length_buckets': (16, 32)}
  saved = json.loads(json.dumps(now))  # What the checkpoint's record reads back as.
  assert train.data_changes(saved, now) == {}
  assert train.data_changes({**saved, 'seed': 1}, now) == {'seed': (1, 0)}
  assert train.data_changes({**saved, 'length_buckets': [16, 64]}, now) == {
      'length_buckets': ([16, 64], (16, 32))}
