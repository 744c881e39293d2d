"""Claiming MODEL_DIR for a training run: checked writable, then held by one writer.

`check_writable` fails at once, before anything heavy loads, when MODEL_DIR
is a file or cannot be created or written. `WriterLock` holds
MODEL_DIR/train.lock while `ptj train` runs: the file names the host and PID
of the run that holds it, so a second run on the same MODEL_DIR is refused
with their names. A lock left by a process that died (SIGKILL, a crash) on
the same host is taken over with a warning; one left by a process on another
host cannot be checked, and the message says to delete it if that run is
gone. On gs:// the lock is an object created only if absent (GCS's
`ifGenerationMatch=0`: of two runs starting at once, one creates it), through
`storage`; other remote schemes are not locked.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from typing import Any, Optional

from prompt_tuning_jax import storage
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.remote import is_remote

logger = logging.getLogger('prompt_tuning_jax')

LOCK_FILE = 'train.lock'


def check_writable(model_dir: str) -> None:
  """Creates MODEL_DIR (local) if needed and checks a file can be written in it."""
  if storage.is_gcs(model_dir):
    probe = os.path.join(model_dir, '.write_test')
    try:
      storage.write(probe, b'')
      storage.delete(probe)
    except OSError as e:
      raise UsageError(f'MODEL_DIR {model_dir} cannot be written ({e}): does the bucket exist, '
                       'and may this machine write it? Choose another MODEL_DIR.') from e
    return
  if is_remote(model_dir):
    return
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise UsageError(f'MODEL_DIR {model_dir} is a file, not a directory: choose another '
                     'MODEL_DIR.')
  try:
    os.makedirs(model_dir, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=model_dir, prefix='.write_test')
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise UsageError(f'MODEL_DIR {model_dir} cannot be written: {e.strerror} '
                     f'({e.filename}). Choose another MODEL_DIR or fix its permissions.') from e


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True


class WriterLock:
  """MODEL_DIR/train.lock, held while the context runs (local and gs:// MODEL_DIRs)."""

  def __init__(self, model_dir: str, *, enabled: bool = True):
    """`enabled`: False in every process but the first (multi-host: one lock per run)."""
    self.path = os.path.join(model_dir, LOCK_FILE)
    locked = storage.is_gcs(model_dir) or not is_remote(model_dir)
    self.enabled = enabled and locked
    self.owner = {'host': socket.gethostname(), 'pid': os.getpid(),
                  'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')}
    if enabled and not locked:
      logger.info('MODEL_DIR %s is remote: it is not locked; make sure no other run writes it.',
                  model_dir)

  def __enter__(self) -> WriterLock:
    if not self.enabled:
      return self
    if self._create():
      return self
    try:
      other = self._read(self.path)
    except OSError as e:
      raise UsageError(f'MODEL_DIR {os.path.dirname(self.path)}: cannot read the lock '
                       f'{self.path} ({e}).') from e
    if other['host'] != self.owner['host'] or _alive(other['pid']):
      raise UsageError(
          f"MODEL_DIR {os.path.dirname(self.path)} is in use by another ptj train: process "
          f"{other['pid']} on {other['host']}, started {other.get('started')}. Wait for it "
          f'to end or use another MODEL_DIR; if that run is gone, delete {self.path}.')
    # Stale: its process is dead. Locally it is moved aside first, so that of two runs taking
    # it over at once only one finds the stale lock under the moved name; on gs:// it is
    # deleted only while it is still that lock (by generation), then re-created.
    if storage.is_gcs(self.path):
      try:
        raw = storage.read(self.path)
        taken = (raw is not None and json.loads(raw) == other
                 and storage.delete(self.path, only_if=raw) and self._create())
      except OSError as e:
        raise UsageError(f'MODEL_DIR {os.path.dirname(self.path)}: cannot take over the '
                         f'lock {self.path} ({e}).') from e
    else:
      aside = f'{self.path}.stale.{os.getpid()}'
      try:
        os.rename(self.path, aside)
      except FileNotFoundError:
        aside = None
      taken = aside is not None and self._read(aside) == other and self._create()
      if taken:
        os.remove(aside)
    if not taken:
      raise UsageError(f'MODEL_DIR {os.path.dirname(self.path)}: another ptj train took over '
                       f'the lock {self.path} at the same time.')
    logger.warning('Took over the lock %s left by process %d on %s (started %s), which is '
                   'no longer running.', self.path, other['pid'], other['host'],
                   other.get('started'))
    return self

  def __exit__(self, *exc_info) -> None:
    if not self.enabled:
      return
    try:
      if self._read(self.path, missing_ok=True) == self.owner:
        storage.delete(self.path)
    except OSError as e:  # A bucket that stopped answering: the run's own error says so.
      logger.warning('Could not remove the lock %s (%s); the next ptj train on %s takes it '
                     'over.', self.path, e, self.owner['host'])

  def _create(self) -> bool:
    """Writes the lock file with its content in one step; False if it exists."""
    try:
      return storage.create(self.path, json.dumps(self.owner).encode())
    except OSError as e:
      raise UsageError(f'MODEL_DIR {os.path.dirname(self.path)}: cannot write the lock '
                       f'{self.path} ({e}).') from e

  @staticmethod
  def _read(path: str, missing_ok: bool = False) -> Optional[dict[str, Any]]:
    data = storage.read(path)  # OSError: the caller says what it was doing.
    try:
      owner = json.loads(data) if data is not None else None
    except ValueError as e:
      owner = str(e)
    if data is None:
      if missing_ok:
        return None
      raise UsageError(f'{path} vanished while being read: another ptj train is starting '
                       'in the same MODEL_DIR.') from None
    if not (isinstance(owner, dict) and isinstance(owner.get('host'), str)
            and isinstance(owner.get('pid'), int)):
      raise UsageError(f'{path} is not a lock written by ptj train: delete it if no run '
                       'uses this MODEL_DIR.')
    return owner
