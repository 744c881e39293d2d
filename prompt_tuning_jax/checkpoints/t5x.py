"""Reads T5X checkpoints in the legacy format of the released T5 models.

A checkpoint directory (e.g. `.../t5_1_1_lm100k_base/checkpoint_1100000`)
holds a msgpack file `checkpoint`, written with `flax.serialization`:

  {'version': int,
   'optimizer': {'target': <parameters>, 'state': <optimiser state>}}

(version 0 has no 'optimizer' level). Each leaf is either an inline array or,
for arrays T5X wrote with TensorStore, a TensorStore spec dict such as

  {'driver': 'zarr',
   'kvstore': {'driver': 'gfile', 'path': 'target.encoder.layers_0.mlp.wo.kernel'},
   'metadata': {'shape': [8, 4], 'dtype': '<f4', 'chunks': ..., 'compressor': ...}}

whose path is relative to the checkpoint directory. The kvstore driver is the
one the writer used ('file', 'gfile' or 'gcs'; older specs keep the path at
the top level), so it is re-resolved against where the checkpoint is now: a
local directory ('file' driver) or `gs://bucket/dir` ('gcs' driver, bucket
from the path).
"""

from __future__ import annotations

import os
import posixpath
import shutil
from typing import Any

import numpy as np
import tensorstore as ts
from flax import serialization

from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError

CHECKPOINT_FILE = 'checkpoint'
_KVSTORE_DRIVERS = ('file', 'gfile', 'gcs')


def load_t5x(path: str, *, include_optimizer_state: bool = False
            ) -> dict[str, Any]:
  """Reads a legacy T5X checkpoint.

  Args:
    path: the checkpoint directory (holding `checkpoint`) or the `checkpoint`
      file itself; local or `gs://bucket/...`.
    include_optimizer_state: also read the optimiser state.

  Returns:
    The parameter tree (nested dicts of numpy arrays, T5X paths such as
    `encoder/layers_0/attention/query/kernel`), arrays in the dtype stored
    (float32 or bfloat16 for the released models; cast with `merge_params`).
    With `include_optimizer_state`, `{'target': params, 'state': ...}`.

  Raises:
    CheckpointError: the file is missing or unreadable, or arrays are missing,
      unreadable or not of the shape the checkpoint declares (all listed).
  """
  ckpt_dir, state = read_state_specs(path)
  return _read_arrays(state if include_optimizer_state else state['target'], ckpt_dir)


def read_state_specs(path: str) -> tuple[str, dict[str, Any]]:
  """Reads only the msgpack file: (checkpoint dir, {'target': ..., 'state': ...}).

  Leaves are inline arrays or stored TensorStore specs (`is_ts_spec`); nothing
  is read from the zarr arrays, so sharded readers can pick their slices.
  """
  ckpt_dir, ckpt_file = _locate(path)
  data = tree_lib.read_bytes(ckpt_file)
  try:
    contents = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types.
    raise CheckpointError(
        f'{ckpt_file}: not a T5X msgpack checkpoint: {e}') from e
  if not isinstance(contents, dict):
    raise CheckpointError(f'{ckpt_file}: not a T5X msgpack checkpoint')
  # Since version 1 the train state is under 'optimizer'.
  state = contents.get('optimizer') if contents.get('version', 0) else contents
  if not isinstance(state, dict) or 'target' not in state:
    raise CheckpointError(
        f'{ckpt_file}: no parameters (`optimizer/target`) in the checkpoint; '
        f'top-level keys: {sorted(contents)}')
  return ckpt_dir, state


def _locate(path: str) -> tuple[str, str]:
  """Returns (checkpoint dir, msgpack file) for a dir or file path."""
  path = path.rstrip('/')
  if tree_lib.is_gcs(path):
    is_file = posixpath.basename(path) == CHECKPOINT_FILE
  else:
    if not os.path.exists(path):
      raise CheckpointError(f'{path}: no such checkpoint directory or file')
    is_file = not os.path.isdir(path)
  if is_file:
    return posixpath.dirname(path), path
  return path, posixpath.join(path, CHECKPOINT_FILE)


def is_ts_spec(node: Any) -> bool:
  return isinstance(node, dict) and 'driver' in node and 'kvstore' in node


def resolve_spec(spec: dict[str, Any], ckpt_dir: str) -> dict[str, Any]:
  """Makes a stored (relative) TensorStore spec absolute under `ckpt_dir`.

  Only the driver and the location are kept: TensorStore reads the array's
  metadata from the store itself, and `_read_arrays` compares its shape with
  the stored spec's. Missing chunks are an error, never fill values.
  """
  kvstore = spec['kvstore']
  if kvstore.get('driver') not in _KVSTORE_DRIVERS:
    raise CheckpointError(
        f'unsupported TensorStore kvstore driver {kvstore.get("driver")!r}; '
        f'expected one of {_KVSTORE_DRIVERS}')
  # tensorstore>=0.1.14 writes kvstore.path; older versions a top-level path.
  relative = '/'.join(
      p.strip('/') for p in (kvstore.get('path'), spec.get('path')) if p)
  return {
      'driver': spec['driver'],
      'kvstore': tree_lib.kvstore_spec(posixpath.join(ckpt_dir, relative)),
      'fill_missing_data_reads': False,
  }


def _read_arrays(tree: dict[str, Any], ckpt_dir: str) -> dict[str, Any]:
  """Replaces every TensorStore spec in `tree` by the array it points to."""
  flat = tree_lib.flatten(tree, is_leaf=is_ts_spec)
  specs = {p: leaf for p, leaf in flat.items() if is_ts_spec(leaf)}
  problems = []
  opened = {}
  for param, spec in specs.items():
    try:
      opened[param] = ts.open(resolve_spec(spec, ckpt_dir), open=True)
    except (CheckpointError, ValueError) as e:
      problems.append(f'{param}: {e}')
  reads = {}
  for param, future in opened.items():
    try:
      store = future.result()
    except ValueError as e:
      problems.append(f'{param}: cannot open zarr array '
                      f'{zarr_location(specs[param], ckpt_dir)}: {e}')
      continue
    problem = store_problem(param, specs[param], store, ckpt_dir)
    if problem:
      problems.append(problem)
      continue
    reads[param] = store.read()
  for param, future in reads.items():
    try:
      flat[param] = future.result()
    except ValueError as e:
      problems.append(f'{param}: cannot read zarr array '
                      f'{zarr_location(specs[param], ckpt_dir)}: {e}')
  if problems:
    raise CheckpointError(
        f'{ckpt_dir}: {len(problems)} array(s) could not be read:\n  '
        + '\n  '.join(problems))
  return tree_lib.unflatten(flat)


def zarr_location(spec: dict[str, Any], ckpt_dir: str) -> str:
  kvstore = resolve_spec(spec, ckpt_dir)['kvstore']
  if kvstore['driver'] == 'gcs':
    return f'gs://{kvstore["bucket"]}/{kvstore["path"]}'
  return kvstore['path']


def store_problem(param: str, spec: dict[str, Any], store: ts.TensorStore,
                  ckpt_dir: str) -> str | None:
  """Why an opened zarr array does not match its stored spec (None if it does)."""
  declared = spec.get('metadata', {}).get('shape')
  if declared is not None and tuple(declared) != tuple(store.shape):
    return (f'{param}: checkpoint declares shape {tree_lib.shape_str(declared)}, '
            f'zarr array {zarr_location(spec, ckpt_dir)} has '
            f'{tree_lib.shape_str(store.shape)}')
  if store.dtype.numpy_dtype == np.uint16:
    return (f'{param}: zarr array {zarr_location(spec, ckpt_dir)} is stored as uint16 '
            f'(an old encoding of bfloat16 that T5X no longer reads either)')
  return None


# ------------------------------------------------------------------ writing

T5X_CHECKPOINT_VERSION = 3
_ZARR_COMPRESSOR = {'id': 'gzip', 'level': 1}


def save_t5x(params: dict[str, Any], path: str, *, step: int = 0,
             dtype: str | np.dtype | None = None) -> str:
  """Writes `params` as a legacy T5X checkpoint directory that `load_t5x` reads.

  The layout of the released checkpoints: `path/checkpoint` (msgpack,
  `{'version', 'optimizer': {'target': <TensorStore specs>, 'state': {'step',
  'param_states'}}}`) and one zarr array per parameter, `target.<dotted
  path>`, gzip-compressed, one chunk each. No optimiser state is written
  (`param_states` is empty), as for a checkpoint exported for inference.
  `dtype` (e.g. 'bfloat16') casts every array; by default each keeps its
  own. `path` must not exist: nothing is overwritten. Local or gs://.
  """
  path = path.rstrip('/')
  if not tree_lib.is_gcs(path) and os.path.exists(path):
    raise CheckpointError(f'{path} already exists; save_t5x writes a new directory only.')
  flat = {p: np.asarray(v) for p, v in tree_lib.flatten(params).items()}
  if dtype is not None:
    flat = {p: v.astype(dtype) for p, v in flat.items()}
  tmp = path if tree_lib.is_gcs(path) else path + '.tmp'
  if tmp != path and os.path.exists(tmp):
    shutil.rmtree(tmp)  # Left by an interrupted save.
  specs = {}
  writes = []
  for param, value in flat.items():
    name = 'target.' + param.replace('/', '.')
    spec = {'driver': 'zarr',
            'kvstore': {'driver': 'file', 'path': name},
            'metadata': {'shape': list(value.shape), 'chunks': list(value.shape) or [1],
                         'dtype': _zarr_dtype(value.dtype), 'compressor': _ZARR_COMPRESSOR}}
    store = ts.open({**spec, 'kvstore': tree_lib.kvstore_spec(posixpath.join(tmp, name))},
                    create=True, delete_existing=True).result()
    writes.append(store.write(value))
    specs[param] = spec
  for write in writes:
    write.result()
  contents = {'version': T5X_CHECKPOINT_VERSION,
              'optimizer': {'target': tree_lib.unflatten(specs),
                            'state': {'step': np.int32(step), 'param_states': {}}}}
  tree_lib.write_bytes(posixpath.join(tmp, CHECKPOINT_FILE), serialization.msgpack_serialize(
      contents))
  if tmp != path:
    os.replace(tmp, path)
  return path


def _zarr_dtype(dtype: np.dtype) -> str:
  return 'bfloat16' if dtype.name == 'bfloat16' else np.dtype(dtype).str
