"""Whole files on a local disk or in Cloud Storage (gs://): the project's own reads and writes.

Local paths go through the OS; a write goes to a temporary file renamed into place.
gs:// paths go through TensorStore's GCS key-value store: a write replaces the whole
object at once (never half-written), and `create` writes only if the object is absent
(GCS's `ifGenerationMatch=0` precondition: of two writers, one wins), which is what makes
`run_dir.WriterLock` work on a bucket. Failed requests are retried for about
$PTJ_REMOTE_TIMEOUT_S (`remote.retry_budget`), then raise OSError naming the path.

Orbax (checkpoints), seqio (vocabularies) and TFDS read and write gs:// themselves,
through TensorFlow's gfile; `remote.bound_retries` bounds those retries too.
"""
from __future__ import annotations

import os
import tempfile
from typing import Optional

import tensorstore as ts

from prompt_tuning_jax import remote

# TensorStore's generation of an absent key: a write conditioned on it creates only.
_ABSENT = b'\x02'


def is_gcs(path: str) -> bool:
  return path.startswith('gs://')


def kvstore_spec(path: str) -> dict:
  """TensorStore kvstore spec for a local path or `gs://bucket/path` (bounded retries)."""
  if not is_gcs(path):
    return {'driver': 'file', 'path': path}
  bucket, _, key = path[len('gs://'):].partition('/')
  if not bucket:
    raise OSError(f'{path}: no bucket in the gs:// path')
  return {'driver': 'gcs', 'bucket': bucket, 'path': key,
          'gcs_request_retries': remote.retry_budget()}


def _object(path: str) -> tuple[ts.KvStore, str]:
  """(the store of `path`'s bucket, the object's name)."""
  spec = kvstore_spec(path)
  key, spec['path'] = spec['path'], ''
  if not key or key.endswith('/'):
    raise OSError(f'{path}: not the path of a file')
  return ts.KvStore.open(spec).result(), key


def _failed(path: str, error: ValueError) -> OSError:
  reason = str(error).splitlines()[0].split(' [')[0] if str(error) else type(error).__name__
  return OSError(f'{path}: {reason}')  # e.g. 'NOT_FOUND: Not Found' (no such bucket)


def read(path: str) -> Optional[bytes]:
  """The whole file, or None when it does not exist."""
  if not is_gcs(path):
    try:
      with open(path, 'rb') as f:
        return f.read()
    except FileNotFoundError:
      return None
  store, key = _object(path)
  try:
    result = store.read(key).result()
  except ValueError as e:
    raise _failed(path, e) from e
  return bytes(result.value) if result.state == 'value' else None


def write(path: str, data: bytes) -> None:
  """Replaces the file with `data` at once; missing local parent directories are created."""
  if is_gcs(path):
    store, key = _object(path)
    try:
      store.write(key, data).result()
    except ValueError as e:
      raise _failed(path, e) from e
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def create(path: str, data: bytes) -> bool:
  """Writes `data` only if the file does not exist (atomically); False if it does."""
  if is_gcs(path):
    store, key = _object(path)
    try:
      generation = store.write(key, data, if_equal=_ABSENT).result().generation
    except ValueError as e:
      raise _failed(path, e) from e
    return bool(generation)  # TensorStore returns no generation when the condition failed.
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.link(tmp, path)  # Fails if `path` exists: the atomic test-and-set.
    return True
  except FileExistsError:
    return False
  finally:
    os.remove(tmp)


def delete(path: str, *, only_if: Optional[bytes] = None) -> bool:
  """Removes the file; with `only_if`, only while it holds exactly those bytes (on gs://
  atomically: conditioned on the generation read). True if it was removed."""
  if not is_gcs(path):
    if only_if is not None and read(path) != only_if:
      return False
    try:
      os.remove(path)
      return True
    except FileNotFoundError:
      return False
  store, key = _object(path)
  try:
    if only_if is None:
      store.write(key, None).result()
      return True
    current = store.read(key).result()
    if current.state != 'value' or bytes(current.value) != only_if:
      return False
    return bool(store.write(key, None, if_equal=current.stamp.generation).result().generation)
  except ValueError as e:
    raise _failed(path, e) from e


def append(path: str, data: bytes) -> None:
  """Adds `data` at the end of the file. On gs:// the object is rewritten whole: one
  writer at a time (MODEL_DIR's lock), and each version complete."""
  if is_gcs(path):
    write(path, (read(path) or b'') + data)
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'ab') as f:
    f.write(data)
