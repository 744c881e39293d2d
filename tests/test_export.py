"""`ptj export`: a training run's checkpoint as a T5X checkpoint, a Hugging Face T5, a PEFT adapter.

One 2-step smoke run of a tiny model (module fixture, through `ptj train`),
checkpoints at steps 1 and 2; each format is exported at step 1 through
`ptj export` and read back with the project's readers.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from prompt_tuning_jax import cli
from prompt_tuning_jax import config
from prompt_tuning_jax import run_setup
from prompt_tuning_jax.checkpoints import hf as hf_lib
from prompt_tuning_jax.checkpoints import peft as peft_lib
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.checkpoints import train_state
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.models import PROMPT_PATH

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')

TINY_MODEL = ['--gin.models.get_config.emb_dim=16', '--gin.models.get_config.head_dim=4',
              '--gin.models.get_config.mlp_dim=32', '--gin.PROMPT_LENGTH=3']


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('export_run'))
  assert cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}',
                   '--gin.TRAIN_STEPS=2', '--gin.CHECKPOINT_PERIOD=1', '--gin.BATCH_SIZE=4',
                   '--gin.EVAL_PERIOD=None',
                   "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
                   *TINY_MODEL]) == 0
  return model_dir


def initial_params(model_dir):
  """The run's starting parameters (frozen weights: random, from the seed)."""
  run = config.configure('eval', [], [f'MODEL_DIR = {model_dir!r}']).settings
  return tree_lib.flatten(run_setup.build_params(run_setup.setup(run)))


def export(model_dir, output, export_format, *flags):
  return cli.main(['export', f'--gin.MODEL_DIR={model_dir}', '--format', export_format,
                   '--output', str(output), *flags])


def step_prompts(model_dir):
  prompts = {s: prompt_io.load_prompt(train_state.prompt_file(model_dir, s)) for s in (1, 2)}
  assert not np.array_equal(prompts[1], prompts[2])
  return prompts


def test_t5x_export_is_the_frozen_model_with_the_step_prompt(run_dir, tmp_path):
  assert export(run_dir, tmp_path / 't5x', 't5x', '--gin.CHECKPOINT_STEP=1') == 0
  loaded = tree_lib.flatten(t5x_lib.load_t5x(str(tmp_path / 't5x')))
  expected = initial_params(run_dir)
  expected[PROMPT_PATH] = step_prompts(run_dir)[1]
  assert loaded.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(loaded[path], value, err_msg=path)


def test_hf_export_is_the_frozen_model(run_dir, tmp_path):
  assert export(run_dir, tmp_path / 'hf', 'hf') == 0
  loaded = tree_lib.flatten(hf_lib.load_hf(str(tmp_path / 'hf'))[0])
  expected = initial_params(run_dir)
  del expected[PROMPT_PATH]
  assert loaded.keys() == expected.keys()
  for path, value in expected.items():
    np.testing.assert_array_equal(loaded[path], value, err_msg=path)


def test_peft_export_is_the_prompt_of_the_step(run_dir, tmp_path):
  prompts = step_prompts(run_dir)
  for step_flag, step in [('1', 1), ('latest', 2)]:
    output = tmp_path / f'peft_{step_flag}'
    assert export(run_dir, output, 'peft', f'--gin.CHECKPOINT_STEP={step_flag}',
                  '--base_model', '/models/hf') == 0
    np.testing.assert_array_equal(peft_lib.load_peft_prompt(str(output)), prompts[step])
    with open(output / 'adapter_config.json') as f:
      adapter = json.load(f)
    assert adapter['base_model_name_or_path'] == '/models/hf'
    assert (adapter['num_virtual_tokens'], adapter['token_dim']) == (3, 16)


def test_a_missing_run_an_existing_output_or_step_is_a_clear_error(run_dir, tmp_path, capsys):
  assert export(tmp_path / 'no_run', tmp_path / 'out', 'peft') == 1
  assert 'holds no training run' in capsys.readouterr().err
  os.makedirs(tmp_path / 'out')
  assert export(run_dir, tmp_path / 'out', 'peft') == 1
  assert 'already exists' in capsys.readouterr().err
  assert export(run_dir, tmp_path / 'out2', 'peft', '--gin.CHECKPOINT_STEP=7') == 1
  assert 'No checkpoint of step 7' in capsys.readouterr().err
  assert not os.path.exists(tmp_path / 'out2')
