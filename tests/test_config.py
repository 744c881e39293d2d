"""The configuration layer: one source for every setting, settings checked when built,
resume compared by configured values, and gin/ tasks/ found without shadowing anything."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import zipfile

import optax
import pytest
from conftest import REPO

from prompt_tuning_jax import config
from prompt_tuning_jax import optim
from prompt_tuning_jax import settings
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.models import T5

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')


def configure(model_dir, *bindings, files=('runs/smoke.gin',)):
  return config.configure('train', list(files), [f'MODEL_DIR = {str(model_dir)!r}', *bindings])


def run_block_and_wiring() -> tuple[str, str]:
  with open(os.path.join(config.gin_dir(), config.RUN_FILE)) as f:
    return tuple(f.read().split('# ---')[1:3])


def documented_macros() -> list[str]:
  return re.findall(r'^(?:# )?([A-Z][A-Z0-9_]*) = .* # ', run_block_and_wiring()[0], re.M)


def test_every_wired_macro_is_documented_once_in_the_run_block():
  wiring = run_block_and_wiring()[1]
  for name in re.findall(r"^include '(methods/.*)'$", wiring, re.M):  # the default method's
    with open(os.path.join(config.gin_dir(), name)) as f:
      wiring += f.read()
  documented = documented_macros()
  assert len(documented) == len(set(documented))
  used = set(re.findall(r'%([A-Z][A-Z0-9_]*)', wiring))
  assert used - {'MODEL'} == set(documented)
  help_text = config.macro_help()
  for name in documented:
    assert re.search(rf'^  {name} ', help_text, re.M), name


def test_optimizer_and_learning_rate_schedule_are_injectable(tmp_path):
  run = configure(tmp_path, 'OPTIMIZER = @optax.adamw',
                  'LEARNING_RATE = @optim.inverse_sqrt_schedule()',
                  'optim.inverse_sqrt_schedule.warmup_steps = 100').settings
  assert run.optimizer.optimizer.__wrapped__ is optax.adamw  # gin's wrapper of it
  assert float(run.optimizer.learning_rate(400)) == pytest.approx(0.05)
  assert isinstance(run.optimizer.optimizer(learning_rate=run.optimizer.learning_rate),
                    optax.GradientTransformation)


def test_model_finetune_trains_every_weight_of_plain_t5(tmp_path):
  run = configure(tmp_path, "MIXTURE_OR_TASK_NAME = 't'",
                  files=('models/t5_1_1_small.gin', 'runs/model_finetune.gin')).settings
  assert type(run.model) is T5
  assert run.trainable_rules == optim.MODEL_TUNING_RULES
  assert run.optimizer.learning_rate == 0.001


def test_resume_compares_values_not_text(tmp_path):
  configure(tmp_path).save(str(tmp_path))
  # The same values written otherwise: no difference.
  config.check_model_dir(configure(tmp_path, 'TASK_FEATURE_LENGTHS = {"targets": 12, '
                                   '"inputs": 64}', 'LEARNING_RATE = 0.30'), override=False)
  scheduled = configure(tmp_path, 'LEARNING_RATE = @optim.inverse_sqrt_schedule()')
  with pytest.raises(UsageError, match=r'LEARNING_RATE: 0.3 -> @optim.inverse_sqrt_schedule\(\)'):
    config.check_model_dir(scheduled, override=False)
  scheduled.save(str(tmp_path))
  # A schedule's own parameters are values too; the vocabulary is compared as well.
  with pytest.raises(UsageError) as e:
    config.check_model_dir(configure(
        tmp_path, 'LEARNING_RATE = @optim.inverse_sqrt_schedule()',
        'optim.inverse_sqrt_schedule.warmup_steps = 100', "get_vocabulary.path = '/v.model'"),
                           override=False)
  assert 'optim.inverse_sqrt_schedule.warmup_steps: (unset) -> 100' in str(e.value)
  assert "get_vocabulary.path: (unset) -> '/v.model'" in str(e.value)


def test_a_run_saved_before_methods_resumes_when_its_values_are_the_same(tmp_path):
  """config.gin as `ptj train --gin_file=runs/smoke.gin` wrote it before gin/methods/ (commit
  fc5f044): MODEL = @models.PromptedT5(), TRAINABLE_RULES = ('.*prompt.*',), no METHOD."""
  saved = (REPO / 'tests' / 'data' / 'config_before_methods.gin').read_text()
  assert 'MODEL = @models.PromptedT5()' in saved and '\nMETHOD =' not in saved
  (tmp_path / 'config.gin').write_text(saved)
  config.check_model_dir(configure(tmp_path), override=False)  # the same run, spelt anew
  with pytest.raises(UsageError) as e:
    config.check_model_dir(configure(tmp_path, 'PROMPT_LENGTH = 12', 'DROPOUT_RATE = 0.1',
                                     "TRAINABLE_RULES = ('.*',)"), override=False)
  assert "model.method: PromptTuning(length=10, placement='prefix'" in str(e.value)
  assert '-> PromptTuning(length=12' in str(e.value)
  assert 'PROMPT_LENGTH: 10 -> 12' in str(e.value)
  assert 'PROMPT_VISIBILITY' not in str(e.value)  # A macro added since changes nothing.
  assert 'model.config.dropout_rate: 0.0 -> 0.1' in str(e.value)
  assert "trainable rules: ('.*prompt.*',) -> ('.*',)" in str(e.value)


@pytest.mark.parametrize('make, message', [
    (lambda: settings.PromptSettings('from_text', None, None), 'needs the text'),
    (lambda: settings.PromptSettings('class_labels', None, 'positive'), 'CLASS_LABELS must'),
    (lambda: settings.OptimizerSettings(optim.adafactor, 0.3, ('(',), 1), 'TRAINABLE_RULES'),
    (lambda: settings.OptimizerSettings(optim.adafactor, -1.0, ('.*',), 1), 'LEARNING_RATE'),
    (lambda: settings.CheckpointSettings(100, 0, 'latest'), 'KEEP_CHECKPOINTS'),
    (lambda: settings.CheckpointSettings(100, 3, 'last'), 'CHECKPOINT_STEP'),
    (lambda: settings.EvalSettings('validation', ('decode', 'score'), 'greedy', 4, 32, None,
                                   'accuracy'), 'Unknown eval method'),
    (lambda: settings.InferSettings(None, 'test', None, 'beam', None), 'INFER_METHOD'),
])
def test_settings_are_checked_when_built(make, message):
  with pytest.raises(UsageError, match=message):
    make()


def test_gin_and_tasks_dirs_do_not_shadow_installed_packages(tmp_path):
  assert not os.path.exists(REPO / 'gin' / '__init__.py')
  # The checkout's root first on sys.path, as with `python -m` from it: `gin` is still
  # gin-config, and the tasks are imported as prompt_tuning_jax.tasks only.
  code = ('import sys; sys.path.insert(0, sys.argv[1]); import gin, prompt_tuning_jax.config as c; '
          'import prompt_tuning_jax.tasks as t; '
          'print(gin.__file__, hasattr(gin, "parse_config"), c.gin_dir(), t.__file__, '
          '"tasks" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code, str(REPO)], cwd=tmp_path,
                       capture_output=True, text=True, check=True).stdout.split()
  assert not out[0].startswith(str(REPO / 'gin')) and out[1] == 'True'
  assert os.path.isfile(os.path.join(out[2], config.RUN_FILE))
  assert out[3] == str(REPO / 'tasks' / '__init__.py') and out[4] == 'False'


@pytest.mark.slow
def test_installed_package_finds_gin_files_and_tasks_through_importlib_resources(tmp_path):
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                  '-q', '-w', str(tmp_path / 'wheel'), str(REPO)], check=True)
  (wheel,) = glob.glob(str(tmp_path / 'wheel' / '*.whl'))
  names = zipfile.ZipFile(wheel).namelist()
  assert 'prompt_tuning_jax/gin/runs/prompt_finetune.gin' in names
  assert 'prompt_tuning_jax/gin/methods/prompt_tuning.gin' in names
  packages = [path.relative_to(REPO).as_posix()
              for path in (REPO / 'prompt_tuning_jax').rglob('__init__.py')]
  assert set(packages) <= set(names)  # every subpackage is installed (pyproject's list)
  assert 'prompt_tuning_jax/tasks/__init__.py' in names
  assert not [n for n in names if n.startswith(('gin/', 'tasks/'))]  # nothing top-level
  zipfile.ZipFile(wheel).extractall(tmp_path / 'site')
  code = ('import prompt_tuning_jax.config as c; print(c.gin_dir()); '
          'print(c.macro_help().count("\\n  "))')
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                       text=True, check=True,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path / 'site'))).stdout.split()
  assert out[0] == str(tmp_path / 'site' / 'prompt_tuning_jax' / 'gin')
  assert int(out[1]) == len(documented_macros())


def test_cpu_flag_defaults_only_for_measured_kinds_and_never_over_the_users():
  from prompt_tuning_jax import cpu_flags  # pylint: disable=g-import-not-at-top
  env = {}
  assert cpu_flags.apply_defaults(env, vendor='AuthenticAMD') == (
      '--xla_cpu_experimental_ynn_fusion_type=')
  assert env['XLA_FLAGS'] == '--xla_cpu_experimental_ynn_fusion_type='
  env = {}
  assert cpu_flags.apply_defaults(env, vendor='GenuineIntel') is None and env == {}
  env = {'XLA_FLAGS': ''}  # the user's choice, even empty, is kept
  assert cpu_flags.apply_defaults(env, vendor='AuthenticAMD') is None
  assert env == {'XLA_FLAGS': ''}


def test_cpu_vendor_reads_cpuinfo(tmp_path):
  from prompt_tuning_jax import cpu_flags  # pylint: disable=g-import-not-at-top
  info = tmp_path / 'cpuinfo'
  info.write_text('processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n')
  assert cpu_flags.cpu_vendor(str(info)) == 'GenuineIntel'
  assert cpu_flags.cpu_vendor(str(tmp_path / 'missing')) is None
