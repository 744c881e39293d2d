"""Remote paths fail fast, without network: the first access is a probe with a timeout."""
from __future__ import annotations

import os
import time

import pytest

from prompt_tuning_jax import cli
from prompt_tuning_jax import remote
from prompt_tuning_jax.errors import UsageError


@pytest.fixture
def unreachable(monkeypatch):
  """A filesystem that never answers (as gs:// without network), and a 0.3 s timeout."""
  probed = []

  def hang(path):
    probed.append(path)
    time.sleep(60)
  monkeypatch.setattr(remote, '_exists', hang)
  monkeypatch.setenv(remote.TIMEOUT_ENV, '0.3')
  return probed


def test_an_unreachable_path_fails_after_the_timeout(unreachable):
  tick = time.time()
  with pytest.raises(UsageError) as error:
    remote.check_reachable('gs://bucket/ckpt', 'INITIAL_CHECKPOINT_PATH')
  assert time.time() - tick < 10
  assert str(error.value).startswith(
      'INITIAL_CHECKPOINT_PATH gs://bucket/ckpt could not be reached within 0.3 s: no network '
      'access or no credentials? Copy it to a local disk (e.g. gsutil -m cp -r gs://bucket/ckpt '
      '/data/) and pass its local path as INITIAL_CHECKPOINT_PATH')
  assert unreachable == ['gs://bucket/ckpt']


def test_local_paths_are_not_probed(unreachable):
  remote.check_reachable('/no/such/dir', 'MODEL_DIR')
  remote.check_reachable(None, 'PROMPT_FILE')
  assert not unreachable


@pytest.mark.parametrize('answer, message', [
    (False, 'PROMPT_FILE gs://b/p.npy does not exist.'),
    (OSError('permission denied'), 'PROMPT_FILE gs://b/p.npy cannot be read (OSError: '
                                   'permission denied). Copy it to a local disk'),
])
def test_a_reachable_path_that_is_missing_or_unreadable(monkeypatch, answer, message):
  def probe(path):
    if isinstance(answer, Exception):
      raise answer
    return answer
  monkeypatch.setattr(remote, '_exists', probe)
  with pytest.raises(UsageError) as error:
    remote.check_reachable('gs://b/p.npy', 'PROMPT_FILE')
  assert str(error.value).startswith(message)


def test_a_directory_to_be_created_may_be_missing(monkeypatch):
  monkeypatch.setattr(remote, '_exists', lambda path: False)
  remote.check_reachable('gs://b/new_run', 'MODEL_DIR', must_exist=False)


def test_a_bad_timeout_is_refused(monkeypatch):
  monkeypatch.setenv(remote.TIMEOUT_ENV, 'soon')
  with pytest.raises(UsageError, match='PTJ_REMOTE_TIMEOUT_S must be a number of seconds'):
    remote.timeout_s()


@pytest.mark.parametrize('bindings, message', [
    (['--gin.INITIAL_CHECKPOINT_PATH=gs://bucket/t5x/checkpoint_1000'],
     'INITIAL_CHECKPOINT_PATH gs://bucket/t5x/checkpoint_1000 could not be reached within 0.3 s'),
    (['--gin.MIXTURE_OR_TASK_NAME=super_glue_cb_v102'],
     "The 'inputs' vocabulary gs://t5-data/vocabs/cc_all.32000/sentencepiece.model could not be "
     'reached within 0.3 s'),
])
def test_ptj_train_says_what_could_not_be_reached(tmp_path, capsys, monkeypatch,
                                                  restore_ptj_global_state, unreachable,
                                                  bindings, message):
  del restore_ptj_global_state, unreachable
  monkeypatch.delenv('PTJ_VOCAB', raising=False)  # the default vocabulary is on gs://
  rc = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={tmp_path}', *bindings])
  err = capsys.readouterr().err
  assert rc == 1 and message in err and 'Traceback' not in err
  assert not os.listdir(tmp_path)
