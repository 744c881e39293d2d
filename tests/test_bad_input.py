"""Bad input is refused with one clear line, before anything is written."""
import errno
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from conftest import shared_path

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import cli
from prompt_tuning_jax import config
from prompt_tuning_jax import optim
from prompt_tuning_jax import pretrained
from prompt_tuning_jax import train_step
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.errors import CheckpointError


def test_non_finite_prompt_files_are_refused_with_the_first_bad_row(tmp_path):
  prompt = np.zeros((6, 4), np.float32)
  prompt[2, 1] = np.inf
  prompt[4, 0] = np.nan
  np.save(tmp_path / 'bad.npy', prompt)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'bad.npy: the prompt holds 2 NaN/inf values, the first at row 2, '
                           r'column 1'):
    checkpoints.load_prompt(str(tmp_path / 'bad.npy'))
  with pytest.raises(checkpoints.CheckpointError, match='NaN/inf'):
    checkpoints.save_prompt(str(tmp_path / 'out.npy'), prompt)
  assert not (tmp_path / 'out.npy').exists()


def test_nan_prompt_file_stops_eval(tmp_path, capsys, restore_ptj_global_state):
  del restore_ptj_global_state
  prompt = np.zeros((10, 64), np.float32)
  prompt[3, 5] = np.nan
  np.save(tmp_path / 'nan.npy', prompt)
  rc = cli.main(['eval', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path / "run"}',
                 f'--gin.PROMPT_FILE={tmp_path / "nan.npy"}'])
  err = capsys.readouterr().err
  assert rc == 1 and 'row 3, column 5' in err and 'Traceback' not in err


def test_misspelled_macro_is_refused_with_a_suggestion(tmp_path, capsys,
                                                       restore_ptj_global_state):
  del restore_ptj_global_state
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}',
                 '--gin.LERNING_RATE=0.1'])
  err = capsys.readouterr().err
  assert rc == 1
  assert 'no gin file defines the macro LERNING_RATE. Did you mean LEARNING_RATE?' in err
  assert not os.listdir(tmp_path)  # nothing written


def test_misspelled_macro_in_a_gin_file_is_refused_as_on_the_command_line(
    tmp_path, capsys, restore_ptj_global_state):
  del restore_ptj_global_state
  (tmp_path / 'my.gin').write_text('# my settings\nLERNING_RATE = 0.001\n')
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin_file={tmp_path / "my.gin"}',
                 f'--gin.MODEL_DIR={tmp_path / "run"}'])
  err = capsys.readouterr().err
  assert rc == 1 and 'Traceback' not in err
  assert (f'{tmp_path / "my.gin"}:2: LERNING_RATE: no gin file of the project defines the macro '
          'LERNING_RATE and no binding uses it. Did you mean LEARNING_RATE?') in err
  assert not (tmp_path / 'run').exists()
  # A macro of the user's own that a binding uses is no typo.
  (tmp_path / 'own.gin').write_text('MY_RATE = 0.01\nLEARNING_RATE = %MY_RATE\n')
  run = config.configure('train', ['runs/smoke.gin', str(tmp_path / 'own.gin')],
                         [f"MODEL_DIR = '{tmp_path / 'run'}'"]).settings
  assert run.optimizer.learning_rate == 0.01


@pytest.mark.parametrize('binding, message', [
    ('--gin.models.get_config.emb_dmi=8',
     "models.get_config.emb_dmi: T5Config has no field 'emb_dmi'. Did you mean emb_dim?"),
    ('--gin.models.get_config.name=t5_1_1_bse',
     "Unknown model preset 't5_1_1_bse' (models.get_config.name). Did you mean t5_1_1_base,"),
])
def test_misspelled_model_setting_is_one_line(tmp_path, capsys, restore_ptj_global_state,
                                              binding, message):
  del restore_ptj_global_state
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}', binding])
  err = capsys.readouterr().err
  assert rc == 1 and message in err and 'Traceback' not in err
  assert len(err.strip().splitlines()) <= 5  # The error and its PTJ_DEBUG hint; was ~90 lines.


@pytest.mark.parametrize('binding, message', [
    ('--gin.PROMPT_LENGTH=-3', 'PROMPT_LENGTH must be a positive number of prompt vectors, got -3'),
    ('--gin.PROMPT_LENGTH=0', 'PROMPT_LENGTH must be a positive number of prompt vectors, got 0'),
    ('--gin.PROMPT_LENGTH=1', "PROMPT_INIT=class_labels: the 2 class labels ['-', '+'] do not fit "
     'PROMPT_LENGTH=1'),
    ("--gin.TASK_FEATURE_LENGTHS={'inputs': 1, 'targets': 4}",
     "TASK_FEATURE_LENGTHS['inputs']=1: at least 2"),
])
def test_lengths_are_checked_before_anything_runs(tmp_path, capsys, restore_ptj_global_state,
                                                  binding, message):
  del restore_ptj_global_state
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}', binding])
  err = capsys.readouterr().err
  assert rc == 1 and message in err and 'Traceback' not in err
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------ data files


@pytest.fixture
def cb_dir(tmp_path, monkeypatch):
  """A SuperGLUE directory (PTJ_SUPERGLUE_DIR) holding a copy of CB."""
  shutil.copytree(shared_path('data', 'super_glue', 'CB'), tmp_path / 'super_glue' / 'CB')
  monkeypatch.setenv('PTJ_SUPERGLUE_DIR', str(tmp_path / 'super_glue'))
  return tmp_path / 'super_glue' / 'CB'


def cb_train(model_dir, *bindings) -> list[str]:
  """`ptj train` of the tiny byte model on CB, read with the shipped mini vocabulary."""
  return ['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}',
          '--gin.MIXTURE_OR_TASK_NAME=super_glue_cb_v102',
          '--gin.models.get_config.vocab_size=8192',
          f"--gin.get_vocabulary.path={pretrained.path('t5_mini/spiece.model')}",
          '--gin.TRAIN_STEPS=1', '--gin.BATCH_SIZE=2', '--gin.PROMPT_LENGTH=3',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", '--gin.EVAL_PERIOD=None',
          *bindings]


def test_an_empty_train_file_is_named_and_the_corrected_rerun_starts(
    cb_dir, tmp_path, capsys, restore_ptj_global_state):
  del restore_ptj_global_state
  (cb_dir / 'train.jsonl').write_text('')
  rc = cli.main(cb_train(tmp_path / 'run'))
  err = capsys.readouterr().err
  assert rc == 1 and 'Traceback' not in err
  assert (f"The 'train' split of 'super_glue_cb_v102' has no examples (read from "
          f"{cb_dir / 'train.jsonl'}: empty?)") in err
  assert not (tmp_path / 'run' / 'config.gin').exists()  # the run never started
  # Corrected (another task): not refused as "a run with a different configuration".
  assert cli.main(cb_train(tmp_path / 'run', '--gin.MIXTURE_OR_TASK_NAME=smoke_sentiment')) == 0


def test_an_empty_validation_file_is_named_before_training(cb_dir, tmp_path, capsys,
                                                           restore_ptj_global_state):
  del restore_ptj_global_state
  (cb_dir / 'val.jsonl').write_text('\n')
  rc = cli.main(cb_train(tmp_path / 'run', '--gin.EVAL_PERIOD=1'))
  err = capsys.readouterr().err
  assert rc == 1 and 'Traceback' not in err and 'Compiled' not in err
  assert (f"The 'validation' split of 'super_glue_cb_v102' has no examples (read from "
          f"{cb_dir / 'val.jsonl'}: empty?)") in err


def test_invalid_utf8_in_a_data_file_names_file_and_line(cb_dir, tmp_path, capsys,
                                                         restore_ptj_global_state):
  del restore_ptj_global_state
  lines = (cb_dir / 'train.jsonl').read_bytes().split(b'\n')
  lines[4] = lines[4].replace(b'"', b'"\xff', 1)
  (cb_dir / 'train.jsonl').write_bytes(b'\n'.join(lines))
  rc = cli.main(cb_train(tmp_path / 'run'))
  err = capsys.readouterr().err
  assert rc == 1 and 'Traceback' not in err
  assert f"{cb_dir / 'train.jsonl'}:5: not UTF-8 text (byte 0xff at column 3)" in err


# ------------------------------------------------------------ checkpoints


@pytest.mark.parametrize('files, message', [
    ({'pytorch_model.bin': b'pickle', 'config.json': b'{}'},
     'no model.safetensors or model.safetensors.index.json (only safetensors are read; convert '
     'pickled pytorch_model.bin first)'),
    ({'model.safetensors': None}, 'model.safetensors: not a readable safetensors file'),
])
def test_unreadable_hugging_face_checkpoints_are_named(tmp_path, capsys,
                                                       restore_ptj_global_state, files, message):
  del restore_ptj_global_state
  hf_dir = tmp_path / 'hf'
  hf_dir.mkdir()
  for name, content in files.items():
    if content is None:  # a download cut short
      safetensors.numpy.save_file({'shared.weight': np.zeros((64, 8), np.float32)},
                                  str(hf_dir / name))
      content = (hf_dir / name).read_bytes()[:200]
    (hf_dir / name).write_bytes(content)
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path / "run"}',
                 f'--gin.INITIAL_CHECKPOINT_PATH={hf_dir}'])
  err = capsys.readouterr().err
  assert rc == 1 and message in err and 'Traceback' not in err
  assert str(hf_dir) in err


def test_disk_full_at_the_first_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((2, 4))}}}}
  tx = optim.partitioned_optimizer(trainable, optim.adafactor())
  state = train_step.init_train_state(trainable, {}, tx)
  ckpt = train_state_lib.TrainStateCheckpointer(str(tmp_path))

  def full_disk(step, **kwargs):  # What a full disk leaves: orbax's temporary directory.
    del kwargs
    # As orbax's own save does first: let its start-up removal of old temporary directories
    # finish, so that it does not race with the files written here.
    ckpt._manager._maybe_await_cleanup_tmp_directory()  # pylint: disable=protected-access
    os.makedirs(tmp_path / 'checkpoints' / f'{step}.orbax-checkpoint-tmp' / 'state')
    os.makedirs(tmp_path / 'numpy_checkpoints' / f'checkpoint_{step}')
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(ckpt._manager, 'save', full_disk)  # pylint: disable=protected-access
  with pytest.raises(CheckpointError) as error:
    ckpt.save(state, data_position={})
  assert str(error.value) == (
      f'Cannot write the checkpoint of step 0 in {tmp_path}: No space left on device. Training '
      'stopped; no checkpoint was saved. Free space (or fix the permissions) and run the same '
      'command to resume.')
  assert os.listdir(tmp_path / 'checkpoints') == [] and ckpt.all_steps() == []
  assert os.listdir(tmp_path / 'numpy_checkpoints') == []
