"""A decoder-only LM through `ptj train|eval|infer|ensemble|export`: the commands of T5, unchanged.

A tiny random decoder-only prefix LM over bytes on the smoke task, and the shipped
decoder_mini through its smoke run file (a few steps).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from prompt_tuning_jax import cli
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax.checkpoints import peft as peft_lib
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints import train_state as train_state_lib

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('restore_ptj_global_state')]

# runs/smoke.gin's byte-level model, as a 2-layer decoder-only prefix LM.
DECODER_ONLY_SMOKE = [
    '--gin_file=runs/smoke.gin', '--gin_file=methods/decoder_only_prompt_tuning.gin',
    '--gin.models.get_config.name=decoder_mini',
    '--gin.models.get_config.num_decoder_layers=2', '--gin.models.get_config.num_encoder_layers=0',
    '--gin.TRAIN_STEPS=20', '--gin.EVAL_PERIOD=20', '--gin.CHECKPOINT_PERIOD=10',
    '--gin.LOG_PERIOD=10', '--gin.NUM_EVAL_EXAMPLES=20', '--gin.EVAL_BATCH_SIZE=20',
    "--gin.LENGTH_BUCKETS='pow2'"]


def test_decoder_only_train_eval_infer_ensemble_export(tmp_path, capsys):
  model_dir = tmp_path / 'run'
  assert cli.main(['train', *DECODER_ONLY_SMOKE, f'--gin.MODEL_DIR={model_dir}']) == 0
  assert 'Done: step 20.' in capsys.readouterr().out
  prompt_file = train_state_lib.prompt_file(str(model_dir), 20, 'decoder/prompt/prompt/prompt')
  assert prompt_file.endswith('checkpoint_20/decoder.prompt.prompt.prompt')
  prompt = prompt_io.load_prompt(prompt_file)
  assert prompt.shape == (10, 64) and np.isfinite(prompt).all()
  train = [r for r in logging_utils.read_metrics(str(model_dir)) if r['split'] == 'train']
  assert train[-1]['loss'] < train[0]['loss']
  # Length buckets of the whole sequence (inputs + targets): more than one shape.
  assert sum(k.startswith('steps_inputs') for k in train[0]) > 1

  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}', '--gin.DECODER=beam',
                   '--gin.BEAM_SIZE=2']) == 0
  out = capsys.readouterr().out
  assert 'smoke_sentiment/accuracy' in out and 'rank_classification/accuracy' in out

  inputs = tmp_path / 'inputs.jsonl'
  inputs.write_text('{"inputs": "review: the soup was great", "prompt": "a"}\n'
                    '{"inputs": "review: the room was dirty", "prompt": "b"}\n')
  output = tmp_path / 'out.jsonl'
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--gin.INFER_INPUT_FILE={inputs}',
                   f'--gin.INFER_OUTPUT_FILE={output}',
                   '--gin.INFER_METHOD=rank_classification']) == 0
  single = [json.loads(line) for line in output.read_text().splitlines()]
  assert [p['prediction'] in ('-', '+') for p in single] == [True, True]
  # Mixed prompts: both rows with the run's prompt == the single-prompt predictions.
  mixed = tmp_path / 'mixed.jsonl'
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--prompt=a={prompt_file}',
                   f'--prompt=b={prompt_file}', f'--input={inputs}', f'--output={mixed}',
                   '--method=rank_classification']) == 0
  for one, many in zip(single, (json.loads(x) for x in mixed.read_text().splitlines())):
    assert one['prediction'] == many['prediction']
    np.testing.assert_allclose(one['score'], many['score'], atol=1e-4)
  assert cli.main(['ensemble', f'--gin.MODEL_DIR={model_dir}', '--method=rank_classification',
                   f'--prompt=x={prompt_file}', f'--prompt=y={prompt_file}']) == 0
  assert 'ensemble/average' in capsys.readouterr().out

  exported = tmp_path / 't5x'
  assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', '--format=t5x',
                   f'--output={exported}']) == 0
  flat = tree_lib.flatten(t5x_lib.load_t5x(str(exported)))
  np.testing.assert_array_equal(flat['decoder/prompt/prompt/prompt'], prompt)
  assert 'decoder/token_embedder/embedding' in flat and 'encoder' not in str(sorted(flat))
  capsys.readouterr()
  assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', '--format=peft',
                   f'--output={tmp_path / "peft"}']) == 1
  assert 'no Hugging Face model' in capsys.readouterr().err


def test_the_shipped_decoder_mini_trains_evals_infers_and_exports(tmp_path, capsys):
  """runs/smoke_decoder_mini.gin, cut to 4 steps: the shipped prefix LM read whole."""
  model_dir = tmp_path / 'shipped'
  assert cli.main(['train', '--gin_file=runs/smoke_decoder_mini.gin',
                   f'--gin.MODEL_DIR={model_dir}', '--gin.TRAIN_STEPS=4', '--gin.BATCH_SIZE=4',
                   '--gin.EVAL_PERIOD=4', '--gin.CHECKPOINT_PERIOD=4', '--gin.LOG_PERIOD=2',
                   '--gin.NUM_EVAL_EXAMPLES=10', '--gin.EVAL_BATCH_SIZE=10']) == 0
  assert 'Done: step 4.' in capsys.readouterr().out
  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}']) == 0
  assert 'rank_classification/accuracy' in capsys.readouterr().out
  inputs, output = tmp_path / 'inputs.jsonl', tmp_path / 'out.jsonl'
  inputs.write_text('{"inputs": "the soup was great"}\n')
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--gin.INFER_INPUT_FILE={inputs}',
                   f'--gin.INFER_OUTPUT_FILE={output}',
                   '--gin.INFER_METHOD=rank_classification']) == 0
  assert json.loads(output.read_text())['prediction'] in ('negative', 'positive')
  exported = tmp_path / 't5x'
  assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', '--format=t5x',
                   f'--output={exported}']) == 0
  flat = tree_lib.flatten(t5x_lib.load_t5x(str(exported)))
  assert flat['decoder/prompt/prompt/prompt'].shape == (50, 128)
  assert len(flat) == 85  # the shipped 84 parameters and the prompt


def test_a_causal_lm_with_a_start_prompt_exports_to_hugging_face_and_peft(tmp_path):
  """`ptj export --format hf|peft` of a causal LM whose prompt is at the very start."""
  model_dir = tmp_path / 'causal'
  assert cli.main(['train', *DECODER_ONLY_SMOKE, f'--gin.MODEL_DIR={model_dir}',
                   '--gin.TRAIN_STEPS=2', '--gin.EVAL_PERIOD=None',
                   '--gin.models.get_config.inputs_bidirectional_attention=False',
                   "--gin.methods.DecoderOnlyPromptTuning.placement='prefix'"]) == 0
  for export_format in ('hf', 'peft'):
    assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', f'--format={export_format}',
                     f'--output={tmp_path / export_format}']) == 0
  config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
  assert config['model_type'] == 'pix2struct_text_model' and config['num_layers'] == 2
  adapter = json.loads((tmp_path / 'peft' / 'adapter_config.json').read_text())
  assert adapter['task_type'] == 'FEATURE_EXTRACTION'
  np.testing.assert_array_equal(
      peft_lib.load_peft_prompt(str(tmp_path / 'peft')),
      prompt_io.load_prompt(train_state_lib.prompt_file(str(model_dir), 2,
                                                        'decoder/prompt/prompt/prompt')))
