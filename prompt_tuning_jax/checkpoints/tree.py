"""Shared helpers: '/'-path trees, merging, local/GCS bytes (and `CheckpointError`, re-exported)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import safetensors.numpy

from prompt_tuning_jax import storage
from prompt_tuning_jax.errors import CheckpointError
from prompt_tuning_jax.storage import is_gcs, kvstore_spec  # noqa: F401  (readers use them)

# Parameters a checkpoint may lack; the model's initialiser provides them
# (the original implementation's `fallback_to_scratch`).
DEFAULT_FALLBACK_TO_INIT = r'.*prompt.*'


def flatten(tree: Mapping[str, Any],
            is_leaf: Callable[[Any], bool] | None = None) -> dict[str, Any]:
  """Flattens nested mappings into {'a/b/c': leaf}; empty mappings vanish."""
  flat = {}

  def visit(node: Any, prefix: str) -> None:
    if isinstance(node, Mapping) and not (is_leaf and is_leaf(node)):
      for key, child in node.items():
        visit(child, f'{prefix}/{key}' if prefix else str(key))
    else:
      flat[prefix] = node

  visit(tree, '')
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of `flatten`: {'a/b': x} -> {'a': {'b': x}}."""
  tree: dict[str, Any] = {}
  for path, leaf in flat.items():
    *parents, name = path.split('/')
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[name] = leaf
  return tree


def shape_str(shape: tuple[int, ...] | list[int]) -> str:
  return '[' + ', '.join(str(d) for d in shape) + ']'


def merge_params(init_params: Mapping[str, Any],
                 loaded_params: Mapping[str, Any],
                 *,
                 fallback_to_init: str | None = DEFAULT_FALLBACK_TO_INIT,
                 cast_to_init_dtype: bool = True) -> dict[str, Any]:
  """Combines loaded parameters with the model's initial ones.

  Every parameter comes from `loaded_params`, except those absent from it
  whose path fully matches `fallback_to_init`: these keep their initial value.

  Args:
    init_params: the model's parameter tree (e.g. `model.init(...)['params']`).
      Leaves need `.shape` and `.dtype`; `jax.ShapeDtypeStruct` leaves are
      fine wherever the checkpoint provides the value.
    loaded_params: the tree read from a checkpoint (`load_t5x`, `load_hf`).
    fallback_to_init: regex (`re.fullmatch` on the '/' path) of parameters
      that may be missing from the checkpoint; None allows none.
    cast_to_init_dtype: cast loaded arrays to the dtype of the initial leaf
      (e.g. bfloat16 checkpoints into float32 params).

  Returns:
    A nested dict with the structure of `init_params`: numpy arrays for
    loaded parameters, the initial leaves for the fallbacks.

  Raises:
    CheckpointError: listing every missing, unexpected or mis-shaped
      parameter, each with its path and the model's and checkpoint's shapes.
  """
  init_flat = flatten(init_params)
  loaded_flat = flatten(loaded_params)
  merged = {}
  problems = []
  for path, init_leaf in init_flat.items():
    expected = tuple(init_leaf.shape)
    if path not in loaded_flat:
      if fallback_to_init is not None and re.fullmatch(fallback_to_init, path):
        merged[path] = init_leaf
      else:
        problems.append(f'{path}: missing from the checkpoint '
                        f'(model expects {shape_str(expected)})')
      continue
    loaded = np.asarray(loaded_flat[path])
    if loaded.shape != expected:
      problems.append(f'{path}: model expects {shape_str(expected)}, '
                      f'checkpoint has {shape_str(loaded.shape)}')
      continue
    if cast_to_init_dtype and loaded.dtype != init_leaf.dtype:
      loaded = loaded.astype(init_leaf.dtype)
    merged[path] = loaded
  for path in sorted(loaded_flat.keys() - init_flat.keys()):
    problems.append(
        f'{path}: not in the model (checkpoint has '
        f'{shape_str(np.shape(loaded_flat[path]))})')
  if problems:
    raise CheckpointError(
        f'Checkpoint does not match the model ({len(problems)} problem'
        f'{"s" if len(problems) > 1 else ""}):\n  ' + '\n  '.join(problems))
  return unflatten(merged)


def new_local_directory(directory: str, writer: str) -> str:
  """`directory` (normalised) if a writer may create it: local, and absent or empty."""
  if is_gcs(directory):
    raise CheckpointError(f'{directory}: {writer} writes local directories only')
  directory = directory.rstrip('/') or '/'
  if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
    raise CheckpointError(
        f'{directory} already exists and is not an empty directory; {writer} '
        'overwrites nothing: choose a new directory')
  return directory


def write_weights_directory(directory: str, weights_file: str, weights: Mapping[str, np.ndarray],
                            config_file: str, config: Mapping[str, Any]) -> str:
  """Writes `weights` (safetensors, PyTorch metadata) and `config` (JSON) into `directory`.

  Both files go into a temporary sibling renamed at the end, so an interrupted write leaves
  no partial directory; the rename fails if `directory` appeared meanwhile, non-empty.
  """
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(directory)}.tmp')
  try:
    safetensors.numpy.save_file(dict(weights), os.path.join(staging, weights_file),
                                metadata={'format': 'pt'})
    with open(os.path.join(staging, config_file), 'w') as f:
      json.dump(config, f, indent=2, sort_keys=True)
      f.write('\n')
    os.chmod(staging, 0o755)
    os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return directory


def read_bytes(path: str) -> bytes:
  """Reads a whole local or `gs://` file."""
  try:
    data = storage.read(path)
  except OSError as e:
    raise CheckpointError(f'{path}: cannot read file: {e.strerror or e}') from e
  if data is None:
    raise CheckpointError(f'{path}: file does not exist' if is_gcs(path) else
                          f'{path}: cannot read file: No such file or directory')
  return data


def write_bytes(path: str, data: bytes) -> None:
  """Writes a local (via temp file + rename) or `gs://` file atomically."""
  try:
    storage.write(path, data)
  except OSError as e:
    if not is_gcs(path):
      raise
    raise CheckpointError(f'{path}: cannot write file: {e}') from e


def check_prompt_array(source: str, array: np.ndarray,
                       expected_shape: Sequence[int | None] | None = None) -> None:
  """Raises CheckpointError, naming `source`, unless `array` is a finite 2-D
  float [P, H] array of `expected_shape` (None entries match any size)."""
  if array.ndim != 2 or not _is_float(array.dtype):
    raise CheckpointError(
        f'{source}: a prompt is a 2-D float array [P, H], got '
        f'{shape_str(array.shape)} {array.dtype}')
  if expected_shape is not None and (
      len(expected_shape) != 2 or
      any(e is not None and e != a
          for e, a in zip(expected_shape, array.shape))):
    raise CheckpointError(
        f'{source}: expected prompt shape {shape_str(expected_shape)}'
        f', got {shape_str(array.shape)}')
  finite = np.isfinite(np.asarray(array, np.float32))
  if not finite.all():
    row, column = np.argwhere(~finite)[0]
    raise CheckpointError(
        f'{source}: the prompt holds {int((~finite).sum())} NaN/inf values, the first at row '
        f"{row}, column {column}: a diverged run? Use an earlier checkpoint's prompt.")


def _is_float(dtype: np.dtype) -> bool:
  return np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16
