"""A soft prompt on its own: a float32 [P, H] array in numpy's .npy format.

`load_prompt` also reads the original implementation's prompt files, which
are `np.save` output named after the parameter, without the suffix
(`numpy_checkpoints/checkpoint_1100/encoder.prompt.prompt.prompt`).
Paths may be local or `gs://bucket/...` (through TensorStore's GCS driver).
`load_prompt` also reads a PEFT prompt-tuning adapter directory (`peft.py`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from prompt_tuning_jax import prompts
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError
from prompt_tuning_jax.checkpoints.tree import check_prompt_array


def save_prompt(path: str, prompt: Any) -> None:
  """Writes `prompt` ([P, H], any float dtype) as a float32 .npy file.

  The file is written exactly at `path` (no suffix is added), atomically;
  missing local parent directories are created.
  """
  array = np.asarray(prompt)
  check_prompt_array(path, array)
  buffer = io.BytesIO()
  np.save(buffer, array.astype(np.float32), allow_pickle=False)
  tree_lib.write_bytes(path, buffer.getvalue())


def load_prompt(path: str, *,
                expected_shape: Sequence[int | None] | None = None
               ) -> np.ndarray:
  """Reads a prompt file as a float32 [P, H] array.

  Args:
    path: a .npy file, or an extension-less one from the original
      implementation; local or `gs://`. Or a local PEFT prompt-tuning adapter
      directory (or its `adapter_config.json`): see `load_peft_prompt`.
    expected_shape: (P, H) to check; None entries match any size.

  Raises:
    CheckpointError: the file is missing or not a .npy array, the array is
      not 2-D floats, or its shape differs from `expected_shape`; a directory
      that is not a PEFT prompt-tuning adapter.
  """
  from prompt_tuning_jax.checkpoints import peft  # local: peft imports this module
  if os.path.basename(path) == peft.ADAPTER_CONFIG_FILE:
    path = os.path.dirname(path) or '.'
  if not tree_lib.is_gcs(path) and os.path.isdir(path):
    if not peft.is_peft_adapter(path):
      raise CheckpointError(
          f'{path} is a directory without {peft.ADAPTER_CONFIG_FILE}: neither a prompt '
          'file nor a PEFT adapter')
    return peft.load_peft_prompt(path, expected_shape=expected_shape)
  data = tree_lib.read_bytes(path)
  try:
    array = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, EOFError) as e:
    raise CheckpointError(f'{path}: not a numpy .npy file: {e}') from e
  if not isinstance(array, np.ndarray):
    raise CheckpointError(f'{path}: holds several arrays, not one prompt')
  check_prompt_array(path, array, expected_shape)
  return array.astype(np.float32)


def prompt_initializer(path: str) -> prompts.Initializer:
  """The initialiser of a prompt saved in a file (a [P, H] .npy, the original's
  suffix-less files, or a PEFT adapter): `prompts.from_array` of `load_prompt`."""
  return prompts.from_array(load_prompt(path), source=path)
