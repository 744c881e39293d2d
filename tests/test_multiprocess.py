"""Two processes on localhost (jax.distributed over gloo) against one: the same run.

Each run is `python -m prompt_tuning_jax.<command>` started as N processes with
the coordinator variables (`distributed.py`), each seeing D fake CPU devices:
2 processes x 2 devices and 1 process x 4 devices form the same (data=4,
model=1) mesh. The smoke task and its random tiny model; the runs of one wave
start together.

Equal, not bit-identical: the gradient and loss sums over the 4 devices run
through gloo's all-reduce across processes but through XLA's in-process one
on a single process, and the two add the same numbers in another order
(float32 rounding, ~1e-7 relative per step). The data, the rows each device
holds and everything else are the same, so the runs agree to ~1e-5 after 6
steps; per-process data (before issue 13) differed from step 1 on by 0.3% in
the loss and up to 0.85 in the prompt.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, XLA_CACHE

from prompt_tuning_jax import logging_utils
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import train_state as train_state_lib

pytestmark = pytest.mark.slow

SMOKE = ('--gin_file=runs/smoke.gin', '--gin.BATCH_SIZE=8', '--gin.LOG_PERIOD=1',
         '--gin.CHECKPOINT_PERIOD=3', '--gin.EVAL_PERIOD=6', '--gin.NUM_EVAL_EXAMPLES=16',
         '--gin.INFER_NUM_EXAMPLES=12', "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 4}",
         # Every process must form the same bucket for each step.
         "--gin.LENGTH_BUCKETS='pow2'")
LOSS_RTOL, PROMPT_ATOL = 1e-5, 1e-4  # Summation order of the all-reduce (module docstring).


class Workers:
  """One `ptj` command running as `processes` processes of `devices` CPU devices each."""

  def __init__(self, command: str, model_dir, processes: int, devices: int, *flags: str,
               env: dict | None = None):
    self.logs = [f'{model_dir}.{command}.{time.monotonic_ns()}.p{i}.log' for i in range(processes)]
    port = _free_port()
    self.procs = []
    for i, log in enumerate(self.logs):
      worker_env = dict(os.environ, PTJ_COMPILATION_CACHE_DIR=XLA_CACHE, **(env or {}),
                        XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
      if processes > 1:
        worker_env.update(JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
                          JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
      with open(log, 'w') as out:
        self.procs.append(subprocess.Popen(
            [sys.executable, '-m', f'prompt_tuning_jax.{command}', *SMOKE,
             f'--gin.MODEL_DIR={str(model_dir)!r}', *flags],
            cwd=REPO, env=worker_env, stdout=out, stderr=subprocess.STDOUT))

  def log(self, i: int = 0) -> str:
    with open(self.logs[i]) as f:
      return f.read()

  def wait(self, timeout: float = 600) -> None:
    """Waits for every process and fails with their logs unless all exit 0."""
    codes = [p.wait(timeout=timeout) for p in self.procs]
    assert codes == [0] * len(codes), '\n'.join(
        f'--- process {i} exited {c}:\n{self.log(i)[-3000:]}' for i, c in enumerate(codes))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _train_records(model_dir) -> list[dict]:
  return [r for r in logging_utils.read_metrics(str(model_dir)) if r['split'] == 'train']


def _prompt_path(model_dir, step: int) -> str:
  return train_state_lib.prompt_file(str(model_dir), step)


def _prompt(model_dir, step: int) -> np.ndarray:
  return prompt_io.load_prompt(_prompt_path(model_dir, step))


def _read_jsonl(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The runs of the first tests, in two waves of concurrent runs.

  one: 1 process x 4 devices, 6 steps. two: 2 x 2, 6 steps. elastic: 3 steps on
  2 x 2, then 3 more on 1 x 4. Then `ptj infer` on one (1 process) and two (2),
  and a dry run on 2 x 2.
  """
  root = tmp_path_factory.mktemp('multiprocess')
  dirs = {name: root / name for name in ('one', 'two', 'elastic')}
  first = [Workers('train', dirs['one'], 1, 4, '--gin.TRAIN_STEPS=6'),
           Workers('train', dirs['two'], 2, 2, '--gin.TRAIN_STEPS=6'),
           Workers('train', dirs['elastic'], 2, 2, '--gin.TRAIN_STEPS=3')]
  for workers in first:
    workers.wait()
  resumed = Workers('train', dirs['elastic'], 1, 4, '--gin.TRAIN_STEPS=6')
  infer = {'one': Workers('infer', dirs['one'], 1, 4), 'two': Workers('infer', dirs['two'], 2, 2)}
  plan = Workers('train', root / 'plan', 2, 2, '--dry_run')
  for workers in (resumed, *infer.values(), plan):
    workers.wait()
  return {'dirs': dirs, 'two': first[1], 'resumed': resumed, 'plan': plan}


def test_two_processes_train_the_prompt_of_one(runs):
  one, two = runs['dirs']['one'], runs['dirs']['two']
  losses = [[r['loss'] for r in _train_records(d)] for d in (one, two)]
  assert len(losses[0]) == 6
  np.testing.assert_allclose(losses[1], losses[0], rtol=LOSS_RTOL)
  diff = np.abs(_prompt(two, 6) - _prompt(one, 6)).max()
  assert diff < PROMPT_ATOL, diff
  assert not np.allclose(_prompt(one, 6), _prompt(one, 3), atol=PROMPT_ATOL)  # it trained
  evals = [[r for r in logging_utils.read_metrics(str(d)) if r['split'].startswith('eval/')]
           for d in (one, two)]
  assert len(evals[0]) == 1 and evals[1] == evals[0]


def test_resume_on_another_number_of_processes_continues_the_same_run(runs):
  one, elastic = runs['dirs']['one'], runs['dirs']['elastic']
  np.testing.assert_allclose([r['loss'] for r in _train_records(elastic)],
                             [r['loss'] for r in _train_records(one)], rtol=LOSS_RTOL)
  diff = np.abs(_prompt(elastic, 6) - _prompt(one, 6)).max()
  assert diff < PROMPT_ATOL, diff
  log = runs['resumed'].log()
  assert 'Resuming from step 3.' in log
  assert ('the checkpoint was written by 2 process(es), 4 devices, mesh data=4 x model=1, '
          'this run has 1 process(es), 4 devices') in log


def test_files_are_written_once_and_in_order(runs):
  two = runs['dirs']['two']
  records = logging_utils.read_metrics(str(two))
  keys = [(r['step'], r['split']) for r in records]
  assert keys == [(s, 'train') for s in range(1, 7)] + [(6, 'eval/smoke_sentiment')]
  assert os.path.isfile(two / 'config.gin') and os.path.isfile(_prompt_path(two, 6))
  with open(two / train_state_lib.BEST_CHECKPOINT_FILE) as f:
    assert json.load(f)['step'] == 6
  # Both processes log; only process 0 writes.
  assert 'step 6/6' in runs['two'].log(1)
  one_out, two_out = (_read_jsonl(two.parent / d / 'inference' / 'smoke_sentiment_validation_step6'
                                  '.jsonl') for d in ('one', 'two'))
  assert [r['index'] for r in two_out] == list(range(12))
  assert [(r['input'], r['prediction']) for r in two_out] == \
      [(r['input'], r['prediction']) for r in one_out]


def test_dry_run_plans_for_the_devices_of_every_host(runs):
  text = runs['plan'].log(0)
  assert 'Topology 4xcpu: 4 devices' in text and '(2 host(s)); mesh data=4 model=1' in text
  assert ('Per host (2 host(s) of 2 devices): ' in text and
          'each host reads every global batch (8 examples) and feeds 4 rows of it.' in text)
  assert 'Per host' not in runs['plan'].log(1)  # the report is printed once


def _complete_steps(model_dir) -> list[int]:
  directory = model_dir / train_state_lib.CHECKPOINT_SUBDIR
  names = os.listdir(directory) if directory.is_dir() else []
  return sorted(int(n) for n in names if n.isdigit())


def test_a_killed_process_stops_the_other_and_a_restart_resumes(tmp_path):
  model_dir = tmp_path / 'killed'
  # Killed between the checkpoints of steps 50 and 100: most likely in a train step.
  run = Workers('train', model_dir, 2, 2, '--gin.TRAIN_STEPS=100000', '--gin.EVAL_PERIOD=None',
                '--gin.CHECKPOINT_PERIOD=50', env={'PTJ_HEARTBEAT_TIMEOUT_SECONDS': '10'})
  deadline = time.time() + 300
  while not _complete_steps(model_dir) and time.time() < deadline:
    assert run.procs[0].poll() is None, run.log(0)
    time.sleep(0.2)
  assert _complete_steps(model_dir), run.log(0)
  run.procs[1].send_signal(signal.SIGKILL)
  killed = time.time()
  code = run.procs[0].wait(timeout=120)
  waited = time.time() - killed
  log = run.log(0)
  assert code != 0 and waited < 60, (code, waited, log[-3000:])
  print(f'the survivor exited with {code} {waited:.1f}s after the kill')
  # Ours when a collective fails (the connection is reset), JAX's when the coordinator
  # stops the process first; gloo itself may abort the process when the kill cut one of its
  # messages ("Received data size doesn't match"), seen once in a checkpoint's barrier.
  assert any(m in log for m in ('Most likely another process died', 'another task died',
                                'Received data size')), log[-3000:]

  latest = _complete_steps(model_dir)[-1]
  restart = Workers('train', model_dir, 2, 2, f'--gin.TRAIN_STEPS={latest + 2}',
                    '--gin.EVAL_PERIOD=None')
  restart.wait()
  assert f'Resuming from step {latest}.' in restart.log(0)
  assert _complete_steps(model_dir)[-1] == latest + 2


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
  """Preemption reaches one host first: every host saves the same step and stops."""
  model_dir = tmp_path / 'stopped'
  run = Workers('train', model_dir, 2, 2, '--gin.TRAIN_STEPS=100000', '--gin.EVAL_PERIOD=None',
                '--gin.CHECKPOINT_PERIOD=100000')
  deadline = time.time() + 300
  while not os.path.exists(model_dir / 'metrics.jsonl') and time.time() < deadline:
    assert run.procs[0].poll() is None, run.log(0)
    time.sleep(0.2)
  run.procs[1].send_signal(signal.SIGTERM)  # process 0 gets nothing
  codes = [p.wait(timeout=120) for p in run.procs]
  assert codes == [128 + signal.SIGTERM] * 2, (codes, run.log(0)[-2000:], run.log(1)[-2000:])
  steps = _complete_steps(model_dir)
  assert len(steps) == 1, steps  # the stop step only (the period is never reached)
  for i in range(2):
    assert f'stopped by SIGTERM after step {steps[0]}:' in run.log(i), run.log(i)[-2000:]
  assert os.path.isfile(_prompt_path(model_dir, steps[0]))
