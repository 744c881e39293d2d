"""Remote paths (gs://, s3://, ...) fail fast instead of hanging without network access.

Without network or credentials the first access of a gs:// path waits for
ever. `check_reachable` makes that first access in a thread and gives up after
$PTJ_REMOTE_TIMEOUT_S seconds (default 60), with a message naming the setting,
the path and how to use a local copy. Local paths are not touched.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from prompt_tuning_jax.errors import UsageError

TIMEOUT_ENV = 'PTJ_REMOTE_TIMEOUT_S'
DEFAULT_TIMEOUT_S = 60.0


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


def _exists(path: str) -> bool:
  """The first access: TensorFlow's filesystems serve gs:// (as seqio reads vocabularies)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.exists(path)


def check_reachable(path: Optional[str], setting: str, *, must_exist: bool = True,
                    local_copy: Optional[str] = None) -> None:
  """Raises UsageError unless remote `path` answers within the timeout (and exists).

  `setting` names where the path comes from ('INITIAL_CHECKPOINT_PATH');
  `local_copy` says how to point it at a local copy (default: pass the local
  path as `setting`).
  """
  if path is None or not is_remote(path):
    return
  seconds = timeout_s()
  local_copy = local_copy or f'pass its local path as {setting}'
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
