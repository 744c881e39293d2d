"""Remote paths (gs://, s3://, ...) fail fast instead of hanging without network access.

Without network or credentials the first access of a gs:// path waits for
ever. `check_reachable` makes that first access in a thread and gives up after
$PTJ_REMOTE_TIMEOUT_S seconds (default 60), with a message naming the setting,
the path and how to use a local copy. Local paths are not touched.

The same number bounds the retries of the clients that read and write gs://
(`bound_retries`: TensorFlow's gfile, under orbax, seqio and TFDS; `retry_budget`:
TensorStore, under `storage` and the checkpoint readers), so a bucket that stops
answering in the middle of a run fails the run in about that time, with one line.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from prompt_tuning_jax.errors import UsageError

TIMEOUT_ENV = 'PTJ_REMOTE_TIMEOUT_S'
DEFAULT_TIMEOUT_S = 60.0
_RETRIES = 8  # of a failed gs:// request, backing off up to timeout_s() / _RETRIES each


def is_remote(path: str) -> bool:
  """Whether `path` names a remote filesystem (gs://, s3://, ...), not a local path."""
  return '://' in path


def timeout_s() -> float:
  """$PTJ_REMOTE_TIMEOUT_S, or the default."""
  value = os.environ.get(TIMEOUT_ENV, '')
  try:
    seconds = float(value) if value else DEFAULT_TIMEOUT_S
  except ValueError:
    raise UsageError(f'{TIMEOUT_ENV} must be a number of seconds, got {value!r}.') from None
  if seconds <= 0:
    raise UsageError(f'{TIMEOUT_ENV} must be positive, got {value!r}.')
  return seconds


def retry_budget() -> dict:
  """TensorStore's `gcs_request_retries`: backing off for about `timeout_s()` in all."""
  delay = timeout_s() / _RETRIES
  return {'max_retries': _RETRIES, 'initial_delay': f'{min(delay, 1.0):g}s',
          'max_delay': f'{delay:g}s'}


def bound_retries() -> None:
  """Bounds the retries of TensorFlow's GCS file system likewise (unless set already).

  TensorFlow reads these once, when it is imported: `prompt_tuning_jax/__init__.py` calls
  this first. A bad $PTJ_REMOTE_TIMEOUT_S is reported later, by the first probe.
  """
  try:
    delay_us = int(timeout_s() / _RETRIES * 1e6)
  except UsageError:
    return
  for name, value in (('GCS_RETRY_CONFIG_MAX_RETRIES', _RETRIES),
                      ('GCS_RETRY_CONFIG_INIT_DELAY_TIME_US', min(delay_us, 1_000_000)),
                      ('GCS_RETRY_CONFIG_MAX_DELAY_TIME_US', delay_us)):
    os.environ.setdefault(name, str(value))


def _exists(path: str) -> bool:
  """The first access: TensorFlow's filesystems serve gs:// (as seqio reads vocabularies)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.exists(path)


def check_reachable(path: Optional[str], setting: str, *, must_exist: bool = True,
                    local_copy: Optional[str] = None, output: bool = False) -> None:
  """Raises UsageError unless remote `path` answers within the timeout (and exists).

  `setting` names where the path comes from ('INITIAL_CHECKPOINT_PATH');
  `local_copy` says how to point it at a local copy (default: pass the local
  path as `setting`); `output`: the path is where the run writes (MODEL_DIR).
  """
  if path is None or not is_remote(path):
    return
  seconds = timeout_s()
  local_copy = local_copy or f'pass its local path as {setting}'
  if output:
    advice = (f'Check the network and the credentials of this machine (gsutil ls {path}), or '
              f'pass a local directory as {setting}; set {TIMEOUT_ENV} to wait longer.')
  else:
    advice = (f'Copy it to a local disk (e.g. gsutil -m cp -r {path} /data/) and {local_copy}, '
              f'or set {TIMEOUT_ENV} to wait longer.')
  outcome: dict[str, object] = {}

  def probe() -> None:
    try:
      outcome['exists'] = _exists(path)
    except Exception as e:  # pylint: disable=broad-except  (reported below, whatever it is)
      outcome['error'] = e

  thread = threading.Thread(target=probe, name=f'probe {path}', daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise UsageError(f'{setting} {path} could not be reached within {seconds:g} s: no network '
                     f'access or no credentials? {advice}')
  if 'error' in outcome:
    reason = str(outcome['error']).splitlines()[0] if str(outcome['error']) else ''
    raise UsageError(f'{setting} {path} cannot be read ({type(outcome["error"]).__name__}: '
                     f'{reason}). {advice}')
  if must_exist and not outcome['exists']:
    raise UsageError(f'{setting} {path} does not exist.')
