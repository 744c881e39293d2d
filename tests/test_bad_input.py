"""Bad input is refused with one clear line, before anything is written."""
import os

import numpy as np
import pytest

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import cli


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


@pytest.mark.parametrize('binding, message', [
    ('--gin.PROMPT_LENGTH=-3', 'PROMPT_LENGTH must be a positive number of prompt vectors, got -3'),
    ('--gin.PROMPT_LENGTH=0', 'PROMPT_LENGTH must be a positive number of prompt vectors, got 0'),
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
