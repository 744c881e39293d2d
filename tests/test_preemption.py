"""SIGTERM/SIGINT stop `ptj train` after a saved step; the resumed run ends bit-identical."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO, XLA_CACHE

from prompt_tuning_jax import cli
from prompt_tuning_jax import preemption
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import train_state as train_state_lib

STEPS = 30


def train_args(model_dir) -> list[str]:
  return ['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}',
          f'--gin.TRAIN_STEPS={STEPS}', '--gin.BATCH_SIZE=4', '--gin.PROMPT_LENGTH=3',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", '--gin.EVAL_PERIOD=None',
          '--gin.CHECKPOINT_PERIOD=1000', '--gin.LOG_PERIOD=1', '--gin.DROPOUT_RATE=0.1']


def subprocess_env() -> dict[str, str]:
  return {**os.environ, 'PTJ_COMPILATION_CACHE_DIR': XLA_CACHE, 'JAX_PLATFORMS': 'cpu'}


def test_sigterm_saves_the_step_and_the_resumed_run_is_bit_identical(
    tmp_path, capsys, restore_ptj_global_state):
  del restore_ptj_global_state
  stopped_dir, straight_dir = tmp_path / 'stopped', tmp_path / 'straight'
  proc = subprocess.Popen([sys.executable, '-m', 'prompt_tuning_jax.cli',
                           *train_args(stopped_dir)], cwd=REPO, env=subprocess_env(),
                          stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:  # The log: signal once training is under way.
    lines.append(line)
    if f'step 2/{STEPS}' in line:
      proc.send_signal(signal.SIGTERM)
      break
  err = ''.join(lines) + proc.stderr.read()
  assert proc.wait(timeout=300) == 128 + signal.SIGTERM, err
  last = [line for line in err.splitlines() if line.startswith('ptj train:')][-1]
  assert last.startswith('ptj train: stopped by SIGTERM after step '), err
  step = int(last.split('after step ')[1].split(':')[0])
  assert 2 <= step < STEPS
  ckpt = train_state_lib.TrainStateCheckpointer(str(stopped_dir), read_only=True)
  assert ckpt.all_steps() == [step]  # CHECKPOINT_PERIOD is far: saved because of the signal
  assert str(stopped_dir / 'checkpoints' / str(step)) in last
  assert train_state_lib.prompt_file(str(stopped_dir), step) in last
  assert os.path.exists(train_state_lib.prompt_file(str(stopped_dir), step))
  assert 'Traceback' not in err

  assert cli.main(train_args(stopped_dir)) == 0
  assert f'Resuming from step {step}.' in capsys.readouterr().err
  assert cli.main(train_args(straight_dir)) == 0
  resumed, straight = (prompt_io.load_prompt(train_state_lib.prompt_file(str(d), STEPS))
                       for d in (stopped_dir, straight_dir))
  np.testing.assert_array_equal(resumed, straight)  # bit-identical, dropout included


def test_a_second_signal_exits_at_once():
  script = textwrap.dedent("""
      import os, signal, sys, time
      from prompt_tuning_jax import preemption
      with preemption.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        print('requested', stop.requested(), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
      print('not reached')
  """)
  done = subprocess.run([sys.executable, '-c', script], cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 128 + signal.SIGTERM, done.stderr
  assert done.stdout.split() == ['requested', str(int(signal.SIGINT))]
  assert 'SIGTERM again: exiting now without saving.' in done.stderr


def test_processes_agree_to_stop_when_any_one_got_a_signal(monkeypatch):
  stop = preemption.StopSignals()  # This process got nothing; another one got SIGTERM.
  gathered = []
  monkeypatch.setattr(preemption.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(preemption.multihost_utils, 'process_allgather',
                      lambda flag: gathered.append(int(flag)) or np.array([int(flag), 15]))
  assert stop.requested() == signal.SIGTERM and gathered == [0]


def test_signals_are_restored_after_the_run():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopSignals():
    assert signal.getsignal(signal.SIGTERM) is not before
  assert signal.getsignal(signal.SIGTERM) is before


@pytest.fixture(autouse=True)
def _no_leftover_handlers():
  # Compared with the handler found at the start: a background shell starts pytest with
  # SIGINT ignored, not at Python's default_int_handler.
  before = signal.getsignal(signal.SIGINT)
  yield
  assert signal.getsignal(signal.SIGINT) is before
