"""A soft prompt on its own: a float32 [P, H] array in numpy's .npy format.

`load_prompt` also reads the original implementation's prompt files, which
are `np.save` output named after the parameter, without the suffix
(`numpy_checkpoints/checkpoint_1100/encoder.prompt.prompt.prompt`).
Paths may be local or `gs://bucket/...` (through TensorStore's GCS driver).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError


def save_prompt(path: str, prompt: Any) -> None:
  """Writes `prompt` ([P, H], any float dtype) as a float32 .npy file.

  The file is written exactly at `path` (no suffix is added), atomically;
  missing local parent directories are created.
  """
  array = np.asarray(prompt)
  if array.ndim != 2 or not _is_float(array.dtype):
    raise CheckpointError(
        f'{path}: a prompt is a 2-D float array [P, H], got '
        f'{tree_lib.shape_str(array.shape)} {array.dtype}')
  buffer = io.BytesIO()
  np.save(buffer, array.astype(np.float32), allow_pickle=False)
  tree_lib.write_bytes(path, buffer.getvalue())


def load_prompt(path: str, *,
                expected_shape: Sequence[int | None] | None = None
               ) -> np.ndarray:
  """Reads a prompt file as a float32 [P, H] array.

  Args:
    path: a .npy file, or an extension-less one from the original
      implementation; local or `gs://`.
    expected_shape: (P, H) to check; None entries match any size.

  Raises:
    CheckpointError: the file is missing or not a .npy array, the array is
      not 2-D floats, or its shape differs from `expected_shape`.
  """
  data = tree_lib.read_bytes(path)
  try:
    array = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, EOFError) as e:
    raise CheckpointError(f'{path}: not a numpy .npy file: {e}') from e
  if not isinstance(array, np.ndarray):
    raise CheckpointError(f'{path}: holds several arrays, not one prompt')
  if array.ndim != 2 or not _is_float(array.dtype):
    raise CheckpointError(
        f'{path}: a prompt is a 2-D float array [P, H], got '
        f'{tree_lib.shape_str(array.shape)} {array.dtype}')
  if expected_shape is not None and (
      len(expected_shape) != 2 or
      any(e is not None and e != a
          for e, a in zip(expected_shape, array.shape))):
    raise CheckpointError(
        f'{path}: expected prompt shape {tree_lib.shape_str(expected_shape)}'
        f', got {tree_lib.shape_str(array.shape)}')
  return array.astype(np.float32)


def _is_float(dtype: np.dtype) -> bool:
  return np.issubdtype(dtype, np.floating) or dtype == ml_dtypes.bfloat16
