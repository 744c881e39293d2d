"""Tests for `ptj`: commands, gin configuration, MODEL_DIR config checks, errors vs bugs."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from prompt_tuning_jax import cli
from prompt_tuning_jax import config
from prompt_tuning_jax import infer
from prompt_tuning_jax import pretrained
from prompt_tuning_jax import run_setup
from prompt_tuning_jax.errors import UsageError

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')


def smoke_config(model_dir, *bindings, command='train', run_file='runs/smoke.gin'):
  _, parsed = config.split_bindings([f'--gin.MODEL_DIR={model_dir}', *bindings])
  return config.configure(command, [run_file], parsed, [])


def test_help_lists_the_gin_macros(tmp_path, capsys):
  names = ('MODEL_DIR', 'TRAIN_STEPS', 'BATCH_SIZE', 'MIXTURE_OR_TASK_NAME',
           'MIXTURE_OR_TASK_MODULE', 'TASK_FEATURE_LENGTHS', 'INITIAL_CHECKPOINT_PATH',
           'PROMPT_LENGTH', 'CLASS_LABELS', 'PROMPT_FILE', 'EVAL_PERIOD', 'OPTIMIZER')
  out = subprocess.run([sys.executable, '-m', 'prompt_tuning_jax.cli', '--help'], cwd=tmp_path,
                       capture_output=True, text=True, check=True).stdout
  assert all(name in out for name in names)
  for command in ('train', 'eval', 'infer', 'export'):
    with pytest.raises(SystemExit) as e:
      cli.main([command, '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in names) and f'ptj {command}' in out


def test_bindings_are_split_and_bare_strings_quoted():
  rest, bindings = config.split_bindings(
      ['train', '--gin.MODEL_DIR=/tmp/x y', '--gin_file=a.gin', '--gin.BATCH_SIZE', '16',
       "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 2}", "--gin.NAME='quoted'",
       '--gin.MODEL=@models.T5()', '--gin.PROMPT_FILE=None'])
  assert rest == ['train', '--gin_file=a.gin']
  assert bindings == ["MODEL_DIR = '/tmp/x y'", 'BATCH_SIZE = 16',
                      "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 2}", "NAME = 'quoted'",
                      'MODEL = @models.T5()', 'PROMPT_FILE = None']


def test_smoke_config_parses_from_the_installed_gin_dir(tmp_path):
  run = smoke_config(tmp_path, '--gin.TRAIN_STEPS=7').settings
  assert run.model_dir == str(tmp_path)
  assert run.train_steps == 7
  assert run.data.mixture_or_task_name == 'smoke_sentiment'
  assert run.initial_checkpoint_path is None


def test_the_main_run_prompt_tunes_the_shipped_model_on_held_out_words(tmp_path):
  run = smoke_config(tmp_path, '--gin.TRAIN_STEPS=40',
                     run_file='runs/smoke_pretrained.gin').settings
  assert run.data.mixture_or_task_name == 'smoke_sentiment_transfer'
  assert run.initial_checkpoint_path == pretrained.path('t5_mini/lm_adapted')
  assert os.path.isdir(run.initial_checkpoint_path)
  schedule = run.optimizer.learning_rate  # 0.3 decaying linearly to 0 over TRAIN_STEPS
  assert [float(schedule(step)) for step in (0, 20, 40)] == pytest.approx([0.3, 0.15, 0.0])


def test_every_run_file_parses_with_every_model_file():
  gin_dir = config.gin_dir()
  models = sorted(os.listdir(os.path.join(gin_dir, 'models')))
  runs = ['prompt_finetune.gin', 'model_finetune.gin', 'eval.gin', 'infer.gin']
  assert {'t5_1_1_small.gin', 't5_1_1_xxl.gin', 't5_1_0_base.gin', 'mt5_base.gin',
          't5_1_1_tiny.gin'} <= set(models)
  for run in runs:
    for model in models:
      _, bindings = config.split_bindings(['--gin.MODEL_DIR=/tmp/m',
                                           '--gin.MIXTURE_OR_TASK_NAME=t'])
      # A decoder-only LM takes its prompt through its own method file (README).
      method = (['methods/decoder_only_prompt_tuning.gin']
                if model.startswith('decoder') and run != 'model_finetune.gin' else [])
      config.configure('train', [f'models/{model}', f'runs/{run}', *method], bindings, [])
  for prompt in sorted(os.listdir(os.path.join(gin_dir, 'prompts'))):
    config.configure('train', ['models/t5_1_1_base.gin', 'runs/prompt_finetune.gin',
                               f'prompts/{prompt}'],
                     ["MODEL_DIR = '/m'", "MIXTURE_OR_TASK_NAME = 't'", "PROMPT_FILE = '/p.npy'",
                      "WAYWARD_TEXT = 'a text'"], [])


@pytest.mark.parametrize('files, bindings, message', [
    (['runs/smoke.gin'], [], 'MODEL_DIR is not set'),
    (['runs/prompt_finetune.gin'], ["MODEL_DIR = '/m'", "MIXTURE_OR_TASK_NAME = 't'"],
     'No model size'),
    (['models/t5_1_1_base.gin'], ["MODEL_DIR = '/m'", "MIXTURE_OR_TASK_NAME = 't'"],
     'No run file'),
    (['runs/no_such.gin'], [], "gin file 'runs/no_such.gin' not found"),
    (['runs/smoke.gin', 'prompts/from_file.gin'], ["MODEL_DIR = '/m'"], 'PROMPT_FILE is not set'),
    (['runs/smoke.gin'], ["MODEL_DIR = '/m'", "DECODER = 'bem'"], "Unknown DECODER 'bem'"),
    (['runs/smoke.gin'], ["MODEL_DIR = '/m'", 'BATCH_SIZE = 0'], 'BATCH_SIZE must be a '
     'positive integer'),
])
def test_configuration_mistakes_are_reported(files, bindings, message):
  with pytest.raises(UsageError, match=message):
    config.configure('train', files, bindings, [])


def test_eval_without_files_reads_the_runs_config(tmp_path):
  configuration = smoke_config(tmp_path, '--gin.BATCH_SIZE=8')
  with pytest.raises(UsageError, match='MODEL_DIR holds no training run'):
    config.configure('eval', [], [f"MODEL_DIR = '{tmp_path}'"], [])
  configuration.save(str(tmp_path))
  run = config.configure('eval', [], [f"MODEL_DIR = '{tmp_path}'", 'EVAL_SPLIT = "test"'],
                         []).settings
  assert run.data.batch_size == 8 and run.evaluation.split == 'test'
  with pytest.raises(UsageError, match='needs --gin.MODEL_DIR'):
    config.configure('infer', [], [], [])


def test_eval_of_a_prompt_transfer_run_reads_its_checkpoints_not_its_starting_prompt(tmp_path):
  """A run started from PROMPT_FILE keeps it in config.gin; eval must not read that file."""
  smoke_config(tmp_path, "--gin.PROMPT_FILE='/source/prompt.npy'").save(str(tmp_path))
  for command in ('eval', 'infer'):
    run = config.configure(command, [], [f"MODEL_DIR = '{tmp_path}'"], []).settings
    assert run.prompt.file is None
  given = config.configure('eval', [], [f"MODEL_DIR = '{tmp_path}'",
                                        "PROMPT_FILE = '/other.npy'"], []).settings
  assert given.prompt.file == '/other.npy'


def test_model_dir_with_another_config_is_refused_unless_overridden(tmp_path):
  smoke_config(tmp_path).save(str(tmp_path))
  # Run length, eval settings and the mesh may change on resume (tests/test_train_mesh.py).
  config.check_model_dir(smoke_config(tmp_path, '--gin.TRAIN_STEPS=900', '--gin.EVAL_PERIOD=50',
                                      '--gin.NUM_PARTITIONS=2'), override=False)
  changed = smoke_config(tmp_path, '--gin.BATCH_SIZE=8', '--gin.PROMPT_LENGTH=4')
  with pytest.raises(UsageError) as e:
    config.check_model_dir(changed, override=False)
  assert 'BATCH_SIZE: 16 -> 8' in str(e.value) and 'PROMPT_LENGTH: 10 -> 4' in str(e.value)
  assert '--override_model_dir_config' in str(e.value)
  config.check_model_dir(changed, override=True)


def test_user_errors_print_a_message_not_a_traceback(tmp_path, capsys):
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                 '--gin.MIXTURE_OR_TASK_NAME=smoke_sentimnt'])
  err = capsys.readouterr().err
  assert rc == 1
  assert "Unknown task or mixture 'smoke_sentimnt'" in err and 'smoke_sentiment' in err
  assert 'Traceback' not in err
  assert not os.path.exists(tmp_path / 'config.gin')  # a failed start records nothing


def test_a_bad_macro_value_is_one_line_before_the_checkpoint_is_read(tmp_path, capsys,
                                                                     monkeypatch):
  def must_not_run(*args, **kwargs):
    raise AssertionError('the run started despite a bad setting')
  monkeypatch.setattr(run_setup, 'setup', must_not_run)
  monkeypatch.setattr(run_setup, 'load_frozen', must_not_run)
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                 '--gin.PROMPT_INIT=clas_labels', '--gin.INITIAL_CHECKPOINT_PATH=/no/such/ckpt'])
  err = capsys.readouterr().err
  assert rc == 1
  lines = err.strip().splitlines()
  assert lines[0] == ("ptj train: error: Unknown PROMPT_INIT 'clas_labels'; expected one of "
                      "('random_uniform', 'sampled_vocab', 'class_labels', 'from_text').")
  assert lines[1:] == ['(set PTJ_DEBUG=1 for the traceback)']


def test_an_internal_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
  def buggy(*args, **kwargs):
    raise TypeError('an internal bug')
  monkeypatch.setattr(run_setup, 'setup', buggy)
  with pytest.raises(TypeError, match='an internal bug'):
    cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}'])
  assert 'error:' not in capsys.readouterr().err


def test_print_config(tmp_path, capsys):
  assert cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                   '--print_config']) == 0
  assert 'TRAIN_STEPS = 300' in capsys.readouterr().out


def test_dry_run_plans_without_allocating(capsys):
  status = cli.main(['train', '--gin_file=models/t5_1_1_xl.gin',
                     '--gin_file=runs/prompt_finetune.gin',
                     '--gin.MIXTURE_OR_TASK_NAME=super_glue_rte_v102',
                     '--gin.MODEL_DIR=/tmp/unused', '--dry_run', '--topology=8xA100-80GB'])
  out = capsys.readouterr().out
  assert status == 0, out
  assert 'encoder/prompt/prompt/prompt' in out and 'Verdict: FITS' in out


def test_dry_run_plans_the_model_the_gin_files_configure(tmp_path, capsys):
  """runs/smoke.gin configures the byte-level tiny model: its parameters are planned."""
  model = smoke_config(tmp_path).settings.model
  dummy = jnp.ones((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, dummy, dummy,
                                             enable_dropout=False))['params']
  expected = sum(x.size for x in jax.tree.leaves(shapes))
  assert expected < 300_000  # not T5.1.1-small's 77M
  assert cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                   '--dry_run']) == 0
  out = capsys.readouterr().out
  assert 'Dry run: T5 (emb 64, 2+2 layers, vocab 384)' in out
  assert f'Parameters: {expected:,} ({10 * 64:,} trainable)' in out


def test_analysis_subcommands_are_dispatched(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(['neighbors', '--help'])
  assert e.value.code == 0
  assert '--prompt' in capsys.readouterr().out
  assert cli.main(['no_such_command']) == 2
  assert "unknown command 'no_such_command'" in capsys.readouterr().err


@pytest.mark.parametrize('command', ['infer', 'infer_mixed'])
def test_infer_with_prompts_is_mixed_task_inference(command, tmp_path, monkeypatch, capsys):
  seen = []
  monkeypatch.setattr(infer, 'infer', lambda run, **kwargs: seen.append((run, kwargs)) or 'x')
  assert cli.main([command, '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                   '--prompt', 'a=a.npy', '--input', 'x.jsonl']) == 0
  ((run, kwargs),) = seen
  assert kwargs['prompt_files'] == {'a': 'a.npy'} and run.inference.input_file == 'x.jsonl'
  assert 'Predictions: x' in capsys.readouterr().out
