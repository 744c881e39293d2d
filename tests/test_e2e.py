"""End to end through `ptj`: train -> checkpoint -> kill -> resume -> eval -> infer.

On the smoke task (random tiny byte-level model), and on SuperGLUE RTE read
from ../shared/data with the real tiny T5X checkpoint and T5 vocabulary.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import XLA_CACHE, shared_path

from prompt_tuning_jax import cli
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import train_state as train_state_lib

# ~1-2 min; .ci/run runs the whole suite, these included.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('restore_ptj_global_state')]


def records(model_dir, split):
  return [r for r in logging_utils.read_metrics(str(model_dir)) if r['split'] == split]


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def start_and_kill_after_first_checkpoint(args, model_dir, cwd):
  """Runs `python -m prompt_tuning_jax.train` and SIGKILLs it once a checkpoint is complete."""
  env = dict(os.environ, PTJ_COMPILATION_CACHE_DIR=XLA_CACHE)
  proc = subprocess.Popen([sys.executable, '-m', 'prompt_tuning_jax.train', *args], cwd=cwd,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  first = os.path.join(model_dir, 'checkpoints', '10')
  deadline = time.time() + 300
  while not os.path.isdir(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  alive = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  output = proc.communicate()[0]
  assert alive, f'the run ended before it could be killed:\n{output[-3000:]}'
  assert os.path.isdir(first), output[-3000:]


# Length-bucketed (smoke.gin's default is one shape): resume, eval and infer by bucket.
SMOKE = ['--gin_file=runs/smoke.gin', '--gin.CHECKPOINT_PERIOD=10', '--gin.LOG_PERIOD=10',
         '--gin.EVAL_PERIOD=20', '--gin.NUM_EVAL_EXAMPLES=40', '--gin.EVAL_BATCH_SIZE=20',
         "--gin.LENGTH_BUCKETS='pow2'"]


def test_smoke_train_kill_resume_eval_infer(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  args = SMOKE + [f'--gin.MODEL_DIR={model_dir}']
  # Killed long before its 1000 steps; the same command (shorter) resumes it.
  start_and_kill_after_first_checkpoint(args + ['--gin.TRAIN_STEPS=1000'], str(model_dir),
                                        str(tmp_path))
  killed_at = train_state_lib.TrainStateCheckpointer(str(model_dir), read_only=True).latest_step()
  assert killed_at is not None and killed_at >= 10

  assert cli.main(['train', *args, '--gin.TRAIN_STEPS=40']) == 0
  out = capsys.readouterr().out
  assert 'Done: step 40.' in out and 'prompt file:' in out
  for name in ('config.gin', 'metrics.jsonl', 'checkpoints/40',
               'numpy_checkpoints/checkpoint_40/encoder.prompt.prompt.prompt'):
    assert os.path.exists(model_dir / name), name
  prompt = prompt_io.load_prompt(train_state_lib.prompt_file(str(model_dir), 40))
  assert prompt.shape == (10, 64) and np.isfinite(prompt).all()
  # Killed and resumed == never interrupted, bit for bit (evals off: they change no weight).
  straight = tmp_path / 'straight'
  assert cli.main(['train', *SMOKE, f'--gin.MODEL_DIR={straight}', '--gin.TRAIN_STEPS=40',
                   '--gin.EVAL_PERIOD=None']) == 0
  np.testing.assert_array_equal(
      prompt, prompt_io.load_prompt(train_state_lib.prompt_file(str(straight), 40)))
  capsys.readouterr()
  train = records(model_dir, 'train')
  assert train[-1]['step'] == 40 and {r['step'] for r in train} >= {30, 40}
  for r in train:
    assert r['loss'] > 0 and 0 <= r['accuracy'] <= 1 and r['tokens_per_second'] > 0
  evals = records(model_dir, 'eval/smoke_sentiment')
  assert [r['step'] for r in evals][-2:] == [20, 40]
  for r in evals:
    assert 0 <= r['accuracy'] <= 100 and 0 <= r['rank_classification/accuracy'] <= 100
  assert os.path.exists(model_dir / 'best_checkpoint.json')

  # The run's config is refused with another batch size.
  assert cli.main(['train', *args, '--gin.BATCH_SIZE=8']) == 1
  assert 'different configuration' in capsys.readouterr().err

  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}', '--gin.DECODER=beam',
                   '--gin.BEAM_SIZE=2']) == 0
  assert 'smoke_sentiment/accuracy' in capsys.readouterr().out
  assert records(model_dir, 'eval/smoke_sentiment')[-1]['step'] == 40
  assert 'eval step 40 | smoke_sentiment' in (model_dir / 'eval' / 'summary.txt').read_text()

  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', '--gin.INFER_SPLIT=test',
                   '--gin.INFER_NUM_EXAMPLES=30']) == 0
  predictions = read_jsonl(model_dir / 'inference' / 'smoke_sentiment_test_step40.jsonl')
  assert len(predictions) == 30 and [p['index'] for p in predictions] == list(range(30))
  for p in predictions:
    assert p['input'].startswith('review: ') and p['target'] in ('-', '+')
    assert isinstance(p['prediction'], str) and p['score'] <= 0

  # The exported prompt file alone (no training run) reproduces the run's eval.
  from_file = tmp_path / 'from_file'
  assert cli.main(['eval', *SMOKE, f'--gin.MODEL_DIR={from_file}',
                   f'--gin.PROMPT_FILE={train_state_lib.prompt_file(str(model_dir), 40)}']) == 0
  (again,) = records(from_file, 'eval/smoke_sentiment')
  assert again['accuracy'] == evals[-1]['accuracy']
  assert again['rank_classification/accuracy'] == evals[-1]['rank_classification/accuracy']

  inputs = tmp_path / 'inputs.jsonl'
  inputs.write_text('{"inputs": "review: the soup was great", "id": "a"}\n'
                    '{"inputs": "review: the room was dirty", "id": "b"}\n')
  output = tmp_path / 'out.jsonl'
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--gin.INFER_INPUT_FILE={inputs}',
                   f'--gin.INFER_OUTPUT_FILE={output}',
                   '--gin.INFER_METHOD=rank_classification']) == 0
  predictions = read_jsonl(output)
  assert [p['id'] for p in predictions] == ['a', 'b']
  for p in predictions:
    assert p['prediction'] in ('-', '+') and set(p['label_scores']) == {'-', '+'}
    assert p['score'] == max(p['label_scores'].values())


def test_real_task_from_shared_data(tmp_path, capsys):
  checkpoint = shared_path('checkpoints', 't5x_t5_1_1_tiny', 'checkpoint_3')
  vocab = shared_path('vocab', 't5', 'spiece.model')
  superglue = shared_path('data', 'super_glue')
  model_dir = tmp_path / 'rte'
  common = [f'--gin.MODEL_DIR={model_dir}', f'--gin.get_vocabulary.path={vocab}',
            f'--gin.local_data_dirs.superglue={superglue}']
  args = ['--gin_file=models/t5_1_1_tiny.gin', '--gin_file=runs/prompt_finetune.gin', *common,
          f'--gin.INITIAL_CHECKPOINT_PATH={checkpoint}',
          '--gin.MIXTURE_OR_TASK_NAME=super_glue_rte_v102',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 96, 'targets': 8}", '--gin.BATCH_SIZE=4',
          '--gin.TRAIN_STEPS=6', '--gin.PROMPT_LENGTH=5', '--gin.LOG_PERIOD=3',
          '--gin.CHECKPOINT_PERIOD=3', '--gin.EVAL_PERIOD=6', '--gin.NUM_EVAL_EXAMPLES=16',
          '--gin.EVAL_BATCH_SIZE=8']
  assert cli.main(['train', *args]) == 0
  capsys.readouterr()
  prompt = prompt_io.load_prompt(train_state_lib.prompt_file(str(model_dir), 6))
  assert prompt.shape == (5, 4)
  train = records(model_dir, 'train')
  assert [r['step'] for r in train] == [3, 6]
  assert train[-1]['truncated_inputs'] > 0  # RTE premises are longer than 96 pieces
  (evals,) = records(model_dir, 'eval/super_glue_rte_v102')
  assert 0 <= evals['accuracy'] <= 100 and 0 <= evals['rank_classification/accuracy'] <= 100

  assert cli.main(['eval', *common]) == 0
  assert 'super_glue_rte_v102/rank_classification/accuracy' in capsys.readouterr().out
  assert cli.main(['infer', *common, '--gin.INFER_NUM_EXAMPLES=5']) == 0
  predictions = read_jsonl(model_dir / 'inference' / 'super_glue_rte_v102_validation_step6.jsonl')
  assert len(predictions) == 5
  assert all(p['input'].startswith('rte ') and 'target' in p for p in predictions)
