"""Multi-task and per-layer prompts (with attention visibility) end to end through `ptj`:
train -> eval -> infer -> export, on the smoke run's random tiny byte-level T5, and a task's
exported multi-task prompt through `ptj eval|infer` as a plain prompt file and in a bank."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from prompt_tuning_jax import cli
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.tasks import smoke

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('restore_ptj_global_state')]

TASKS = (smoke.TASK_NAME, smoke.NP_TASK_NAME)
# Four steps, no eval while training: the machinery, not a measurement.
SHORT = ['--gin_file=runs/smoke.gin', '--gin.TRAIN_STEPS=4', '--gin.CHECKPOINT_PERIOD=4',
         '--gin.LOG_PERIOD=2', '--gin.EVAL_PERIOD=None', '--gin.BATCH_SIZE=8',
         '--gin.NUM_EVAL_EXAMPLES=8', '--gin.EVAL_BATCH_SIZE=8', '--gin.PROMPT_LENGTH=4',
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 4}"]
MULTI_TASK = ['--gin_file=methods/multi_task_prompts.gin',
              f'--gin.MIXTURE_OR_TASK_NAME={smoke.MIXTURE_NAME}', f'--gin.PROMPT_TASKS={TASKS}',
              '--gin.PROMPT_COMBINATION=@methods.ConcatTaskPrompt()']


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def eval_records(model_dir, task):
  return [r for r in logging_utils.read_metrics(str(model_dir)) if r['split'] == f'eval/{task}']


def test_multi_task_prompts_train_eval_infer_export(tmp_path, capsys):
  model_dir = tmp_path / 'multi'
  assert cli.main(['train', *SHORT, *MULTI_TASK, f'--gin.MODEL_DIR={model_dir}']) == 0
  exports = model_dir / 'numpy_checkpoints' / 'checkpoint_4'
  files = {task: str(exports / f'encoder.prompt.prompt.prompt.{task}') for task in TASKS}
  for path in files.values():
    assert prompt_io.load_prompt(path).shape == (8, 64)  # shared 4 + task 4 rows
  assert (exports / 'encoder.prompt.prompt.task_prompts.embedding').exists()
  # A task outside the prompt's: one line, before anything loads.
  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}', '--gin.MIXTURE_OR_TASK_NAME='
                   f'{smoke.WORDS_TASK_NAME}']) == 1
  assert ("['smoke_sentiment_words'] are not among the multi-task prompt's tasks"
          in capsys.readouterr().err)

  # Evaluated task by task, each with its own prompt.
  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}']) == 0
  multi = {task: eval_records(model_dir, task)[-1] for task in TASKS}
  # The same as prompt tuning with the task's exported prompt.
  for task in TASKS:
    plain_dir = tmp_path / f'plain_{task}'
    assert cli.main(['eval', *SHORT, f'--gin.MODEL_DIR={plain_dir}', '--gin.PROMPT_LENGTH=8',
                     f'--gin.MIXTURE_OR_TASK_NAME={task}', f'--gin.PROMPT_FILE={files[task]}']) == 0
    (plain,) = eval_records(plain_dir, task)
    for metric in ('accuracy', 'rank_classification/accuracy'):
      assert plain[metric] == multi[task][metric], (task, metric)

  # infer: each line names its task; the same scores as the plain prompt file, and as a
  # mixed batch of the exported prompts.
  inputs = tmp_path / 'inputs.jsonl'
  lines = [{'inputs': 'review: the soup was great', 'task': TASKS[1]},
           {'inputs': 'review: the room was dirty', 'task': TASKS[0]},
           {'inputs': 'review: the film was dull', 'task': TASKS[1]}]
  inputs.write_text(''.join(json.dumps(line) + '\n' for line in lines))
  out = tmp_path / 'multi.jsonl'
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--input={inputs}',
                   f'--output={out}']) == 0
  predicted = read_jsonl(out)
  assert [p['task'] for p in predicted] == [line['task'] for line in lines]
  for i, line in enumerate(lines):
    alone = tmp_path / f'alone_{i}.jsonl'
    single = tmp_path / f'single_{i}.jsonl'
    single.write_text(json.dumps({'inputs': line['inputs']}) + '\n')
    assert cli.main(['infer', *SHORT, f'--gin.MODEL_DIR={tmp_path / "plain"}',
                     '--gin.PROMPT_LENGTH=8', f'--gin.MIXTURE_OR_TASK_NAME={line["task"]}',
                     f'--gin.PROMPT_FILE={files[line["task"]]}', f'--input={single}',
                     f'--output={alone}']) == 0
    (want,) = read_jsonl(alone)
    assert want['prediction'] == predicted[i]['prediction']
    np.testing.assert_allclose(want['score'], predicted[i]['score'], rtol=1e-5)
  bank = tmp_path / 'bank.jsonl'
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--input={inputs}',
                   f'--output={bank}', *[f'--prompt={t}={files[t]}' for t in TASKS]]) == 0
  for got, want in zip(read_jsonl(bank), predicted):
    assert got['prediction'] == want['prediction']
    np.testing.assert_allclose(got['score'], want['score'], rtol=1e-5)
  capsys.readouterr()
  nameless = tmp_path / 'nameless.jsonl'
  nameless.write_text(json.dumps({'inputs': 'review: the soup was great'}) + '\n')
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--input={nameless}']) == 1
  assert f'{nameless}:1: names no "task"' in capsys.readouterr().err

  for export_format in ('t5x', 'hf'):
    assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', f'--format={export_format}',
                     f'--output={tmp_path / export_format}']) == 0
  assert os.path.exists(tmp_path / 't5x' / 'checkpoint')
  assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', '--format=peft',
                   f'--output={tmp_path / "peft"}']) == 1
  assert 'no PEFT adapter form' in capsys.readouterr().err


def test_per_layer_prompts_with_visibility_train_eval_infer_export(tmp_path, capsys):
  model_dir = tmp_path / 'per_layer'
  args = [*SHORT, '--gin_file=methods/per_layer_prompts.gin',
          '--gin_file=methods/prompt_visibility.gin', '--gin.PROMPT_TO_INPUT=False',
          f'--gin.MODEL_DIR={model_dir}']
  assert cli.main(['train', *args]) == 0
  exports = model_dir / 'numpy_checkpoints' / 'checkpoint_4'
  for name in ['encoder.prompt.prompt.prompt'] + [
      f'encoder.layers_{i}.prompt.prompt.prompt' for i in range(2)]:
    assert prompt_io.load_prompt(str(exports / name)).shape == (4, 64), name
  assert cli.main(['train', *args, '--gin.PER_LAYER_MODE=add']) == 1  # another method
  assert "mode='replace'" in capsys.readouterr().err
  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}']) == 0
  (evals,) = eval_records(model_dir, smoke.TASK_NAME)
  assert 0 <= evals['rank_classification/accuracy'] <= 100
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', '--gin.INFER_SPLIT=test',
                   '--gin.INFER_NUM_EXAMPLES=5']) == 0
  assert len(read_jsonl(model_dir / 'inference' / 'smoke_sentiment_test_step4.jsonl')) == 5
  assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', '--format=t5x',
                   f'--output={tmp_path / "t5x"}']) == 0
  capsys.readouterr()
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--input={tmp_path / "none"}',
                   f'--prompt=a={exports / "encoder.prompt.prompt.prompt"}']) == 1
  assert 'PerLayerPrompts is not one prompt before the input' in capsys.readouterr().err
