"""Tests for `ptj`: argument parsing, gin configuration, MODEL_DIR config checks, clear errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from prompt_tuning_jax import cli

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')


def smoke_config(model_dir, *bindings, command='train'):
  _, parsed = cli.split_bindings([f'--gin.MODEL_DIR={model_dir}', *bindings])
  return cli.configure(command, ['runs/smoke.gin'], parsed, [])


@pytest.mark.parametrize('argv', [['--help'], ['train', '--help'], ['eval', '--help'],
                                  ['infer', '--help']])
def test_help_lists_the_gin_macros(argv, tmp_path):
  out = subprocess.run([sys.executable, '-m', 'prompt_tuning_jax.cli', *argv], cwd=tmp_path,
                       capture_output=True, text=True, check=True).stdout
  for name in ('MODEL_DIR', 'TRAIN_STEPS', 'BATCH_SIZE', 'MIXTURE_OR_TASK_NAME',
               'MIXTURE_OR_TASK_MODULE', 'TASK_FEATURE_LENGTHS', 'INITIAL_CHECKPOINT_PATH',
               'PROMPT_LENGTH', 'CLASS_LABELS', 'PROMPT_FILE', 'EVAL_PERIOD'):
    assert name in out


def test_bindings_are_split_and_bare_strings_quoted():
  rest, bindings = cli.split_bindings(
      ['train', '--gin.MODEL_DIR=/tmp/x y', '--gin_file=a.gin', '--gin.BATCH_SIZE', '16',
       "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 2}", "--gin.NAME='quoted'",
       '--gin.MODEL=@models.T5()', '--gin.PROMPT_FILE=None'])
  assert rest == ['train', '--gin_file=a.gin']
  assert bindings == ["MODEL_DIR = '/tmp/x y'", 'BATCH_SIZE = 16',
                      "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 2}", "NAME = 'quoted'",
                      'MODEL = @models.T5()', 'PROMPT_FILE = None']


def test_smoke_config_parses_from_the_installed_gin_dir(tmp_path):
  text = smoke_config(tmp_path, '--gin.TRAIN_STEPS=7')
  statements = cli.config_statements(text)
  assert statements['MODEL_DIR'] == repr(str(tmp_path))
  assert statements['TRAIN_STEPS'] == '7'
  assert statements['MIXTURE_OR_TASK_NAME'] == "'smoke_sentiment'"
  assert statements['INITIAL_CHECKPOINT_PATH'] == 'None'


def test_every_run_file_parses_with_every_model_file():
  from prompt_tuning_jax import config  # pylint: disable=g-import-not-at-top
  gin_dir = config.gin_dir()
  models = sorted(os.listdir(os.path.join(gin_dir, 'models')))
  runs = ['prompt_finetune.gin', 'model_finetune.gin', 'eval.gin', 'infer.gin']
  assert {'t5_1_1_small.gin', 't5_1_1_xxl.gin', 't5_1_0_base.gin', 'mt5_base.gin',
          't5_1_1_tiny.gin'} <= set(models)
  for run in runs:
    for model in models:
      _, bindings = cli.split_bindings(['--gin.MODEL_DIR=/tmp/m', '--gin.MIXTURE_OR_TASK_NAME=t'])
      cli.configure('train', [f'models/{model}', f'runs/{run}'], bindings, [])
  for prompt in sorted(os.listdir(os.path.join(gin_dir, 'prompts'))):
    cli.configure('train', ['models/t5_1_1_base.gin', 'runs/prompt_finetune.gin',
                            f'prompts/{prompt}'],
                  ["MODEL_DIR = '/m'", "MIXTURE_OR_TASK_NAME = 't'", "PROMPT_FILE = '/p.npy'"], [])


@pytest.mark.parametrize('files, bindings, message', [
    (['runs/smoke.gin'], [], 'MODEL_DIR is not set'),
    (['runs/prompt_finetune.gin'], ["MODEL_DIR = '/m'", "MIXTURE_OR_TASK_NAME = 't'"],
     'No model size'),
    (['models/t5_1_1_base.gin'], ["MODEL_DIR = '/m'", "MIXTURE_OR_TASK_NAME = 't'"],
     'No run file'),
    (['runs/no_such.gin'], [], "gin file 'runs/no_such.gin' not found"),
])
def test_configuration_mistakes_are_reported(files, bindings, message):
  with pytest.raises(cli.UsageError, match=message):
    cli.configure('train', files, bindings, [])


def test_eval_without_files_reads_the_runs_config(tmp_path):
  text = smoke_config(tmp_path, '--gin.BATCH_SIZE=8')
  with pytest.raises(cli.UsageError, match='MODEL_DIR holds no training run'):
    cli.configure('eval', [], [f"MODEL_DIR = '{tmp_path}'"], [])
  (tmp_path / 'config.gin').write_text(text)
  text_eval = cli.configure('eval', [], [f"MODEL_DIR = '{tmp_path}'", 'EVAL_SPLIT = "test"'], [])
  statements = cli.config_statements(text_eval)
  assert statements['BATCH_SIZE'] == '8' and statements['EVAL_SPLIT'] == "'test'"
  with pytest.raises(cli.UsageError, match='needs --gin.MODEL_DIR'):
    cli.configure('infer', [], [], [])


def test_model_dir_with_another_config_is_refused_unless_overridden(tmp_path):
  saved = smoke_config(tmp_path)
  (tmp_path / 'config.gin').write_text(saved)
  # Run length and eval settings may change on resume.
  cli.check_model_dir(str(tmp_path), smoke_config(tmp_path, '--gin.TRAIN_STEPS=900',
                                                  '--gin.EVAL_PERIOD=50'), override=False)
  changed = smoke_config(tmp_path, '--gin.BATCH_SIZE=8', '--gin.PROMPT_LENGTH=4')
  with pytest.raises(cli.UsageError) as e:
    cli.check_model_dir(str(tmp_path), changed, override=False)
  assert 'BATCH_SIZE: 16 -> 8' in str(e.value) and 'PROMPT_LENGTH: 10 -> 4' in str(e.value)
  assert '--override_model_dir_config' in str(e.value)
  cli.check_model_dir(str(tmp_path), changed, override=True)


def test_user_errors_print_a_message_not_a_traceback(tmp_path, capsys):
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                 '--gin.MIXTURE_OR_TASK_NAME=smoke_sentimnt'])
  err = capsys.readouterr().err
  assert rc == 1
  assert "Unknown task or mixture 'smoke_sentimnt'" in err and 'smoke_sentiment' in err
  assert 'Traceback' not in err
  assert not os.path.exists(tmp_path / 'config.gin')  # a failed start records nothing


def test_print_config(tmp_path, capsys):
  assert cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                   '--print_config']) == 0
  assert 'TRAIN_STEPS = 300' in capsys.readouterr().out


def test_dry_run_plans_without_allocating(capsys):
  from prompt_tuning_jax import cli
  status = cli.main(['train', '--gin_file=models/t5_1_1_xl.gin', '--gin_file=runs/prompt_finetune.gin',
                     '--gin.MIXTURE_OR_TASK_NAME=super_glue_rte_v102', '--gin.MODEL_DIR=/tmp/unused',
                     '--dry_run', '--topology=8xA100-80GB'])
  out = capsys.readouterr().out
  assert status == 0, out
  assert 'encoder/prompt/prompt/prompt' in out and 'Verdict: FITS' in out


def test_analysis_subcommands_are_dispatched(capsys):
  from prompt_tuning_jax import cli
  with pytest.raises(SystemExit) as e:
    cli.main(['neighbors', '--help'])
  assert e.value.code == 0
  assert '--prompt' in capsys.readouterr().out


def test_infer_with_prompts_is_mixed_task_inference(monkeypatch):
  from prompt_tuning_jax import cli
  from prompt_tuning_jax.analysis import commands
  seen = []
  monkeypatch.setattr(commands, 'infer_mixed_main', lambda argv: seen.append(argv) or 0)
  assert cli.main(['infer', '--prompt', 'a=a.npy', '--input', 'x.jsonl']) == 0
  assert seen == [['--prompt', 'a=a.npy', '--input', 'x.jsonl']]
