"""MODEL_DIR is checked writable before anything loads, and has one writer at a time."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO

from prompt_tuning_jax import cli
from prompt_tuning_jax import run_dir
from prompt_tuning_jax.errors import UsageError

HOLD = ('import sys, time\n'
        'from prompt_tuning_jax import run_dir\n'
        'with run_dir.WriterLock(sys.argv[1]):\n'
        '  print("held", flush=True)\n'
        '  time.sleep(120)\n')


def holder(model_dir) -> subprocess.Popen:
  """A process that holds MODEL_DIR's lock until killed."""
  os.makedirs(model_dir, exist_ok=True)
  proc = subprocess.Popen([sys.executable, '-c', HOLD, str(model_dir)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def test_a_second_train_on_the_same_model_dir_is_refused_naming_the_other(
    tmp_path, capsys, restore_ptj_global_state):
  del restore_ptj_global_state
  proc = holder(tmp_path)
  try:
    rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}'])
  finally:
    proc.kill()
    proc.wait()
  err = capsys.readouterr().err
  assert rc == 1 and 'Traceback' not in err
  assert (f'MODEL_DIR {tmp_path} is in use by another ptj train: process {proc.pid} on '
          f'{socket.gethostname()}') in err
  assert sorted(os.listdir(tmp_path)) == [run_dir.LOCK_FILE]  # nothing else written


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path, caplog):
  proc = holder(tmp_path)
  proc.send_signal(signal.SIGKILL)  # Dies holding the lock: the file stays.
  proc.wait()
  lock = tmp_path / run_dir.LOCK_FILE
  assert json.loads(lock.read_text())['pid'] == proc.pid
  with caplog.at_level(logging.WARNING, 'prompt_tuning_jax'):
    with run_dir.WriterLock(str(tmp_path)):
      assert json.loads(lock.read_text())['pid'] == os.getpid()
  assert f'left by process {proc.pid}' in caplog.text and 'no longer running' in caplog.text
  assert not os.listdir(tmp_path)  # released, and nothing left aside


def test_a_lock_of_another_host_is_refused_and_kept(tmp_path):
  lock = tmp_path / run_dir.LOCK_FILE
  lock.write_text(json.dumps({'host': 'tpu-worker-7', 'pid': 4242, 'started': 'then'}))
  with pytest.raises(UsageError,
                     match=f'process 4242 on tpu-worker-7, started then.*delete {lock}'):
    with run_dir.WriterLock(str(tmp_path)):
      pass
  assert lock.exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
  with pytest.raises(RuntimeError):
    with run_dir.WriterLock(str(tmp_path)):
      raise RuntimeError('boom')
  assert not os.listdir(tmp_path)


def test_remote_model_dirs_other_than_gcs_are_not_locked(tmp_path):
  with run_dir.WriterLock('s3://bucket/run'):  # gs:// ones are: tests/test_gcs.py
    pass


@pytest.mark.parametrize('under, message', [
    ('', 'is a file, not a directory'),
    ('run', 'cannot be written: Not a directory'),
])
def test_model_dir_that_cannot_be_a_directory_is_refused_before_anything_loads(
    tmp_path, capsys, restore_ptj_global_state, under, message):
  del restore_ptj_global_state
  (tmp_path / 'f').write_text('a file')
  model_dir = tmp_path / 'f' / under if under else tmp_path / 'f'
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}'])
  err = capsys.readouterr().err
  assert rc == 1 and message in err and 'Traceback' not in err
  assert 'Compiled' not in err and 'RANDOMLY' not in err  # nothing loaded


def test_model_dir_without_write_permission_is_refused(tmp_path, monkeypatch):
  def denied(dir, prefix):
    raise PermissionError(13, 'Permission denied', os.path.join(dir, prefix))
  monkeypatch.setattr(run_dir.tempfile, 'mkstemp', denied)
  with pytest.raises(UsageError, match='cannot be written: Permission denied'):
    run_dir.check_writable(str(tmp_path))
