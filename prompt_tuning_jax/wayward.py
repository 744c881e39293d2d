"""Wayward prompts (Khashabi et al., 2022): a prompt held near the embedding of a discrete text.

The training objective gains `weight * distance(prompt, text)`: the squared L2 distance
between each of the first n prompt rows and the embedding of the text's n-th piece, averaged
over those rows (the original implementation's `squared_l2_distance`, there with n equal to
the prompt length and weight 0.01 by default). Rows past the text are not held. The prompts
held are the method's (`Method.is_prompt`: prompt tuning's one, a multi-task run's shared
prompt, a per-layer run's input prompt), each with its own term; a method without one (model
tuning) is refused. The run builds the term and passes it to `train_step.make_train_step`.
Whether the trained prompt still "says" the text is read back by its nearest vocabulary
pieces (`analysis.neighbors.read_back`, `ptj neighbors --text`).

Settings: `WAYWARD_WEIGHT` and `WAYWARD_TEXT` (runs/prompt_finetune.gin); at weight 0 no
term is built and the train step is the plain one.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax import partitioning
from prompt_tuning_jax.errors import UsageError

Array = jnp.ndarray


def text_ids(vocabulary: Any, text: str, prompt_shapes: Mapping[str, tuple[int, ...]]
             ) -> list[int]:
  """The text's piece ids (no EOS), checked to fit each of the method's prompts
  ({path: shape}, `run_setup.Setup.prompt_shapes`)."""
  if not prompt_shapes:
    raise UsageError('WAYWARD_WEIGHT > 0 holds a prompt near a text, and this method has no '
                     'prompt (model tuning?): set WAYWARD_WEIGHT = 0.')
  ids = list(vocabulary.encode(text))
  if not ids:
    raise UsageError(f'WAYWARD_TEXT {text!r} encodes to no pieces.')
  for path, shape in prompt_shapes.items():
    if len(shape) != 2:
      raise UsageError(f'WAYWARD_WEIGHT > 0: the prompt {path} has shape {tuple(shape)}, not '
                       '[length, emb]; set WAYWARD_WEIGHT = 0 for this method.')
    if len(ids) > shape[0]:
      raise UsageError(f'WAYWARD_TEXT has {len(ids)} pieces, more than PROMPT_LENGTH='
                       f'{shape[0]}: lengthen the prompt to at least {len(ids)} (the '
                       'original sets it to the number of pieces).')
  return ids


def squared_distance(prompt: Array, target: Array) -> Array:
  """Mean over the target's n rows of |prompt[i] - target[i]|^2; prompt [P, H], target [n, H]."""
  difference = prompt[:target.shape[0]] - target  # [n, H]
  return jnp.sum(jnp.square(difference)) / target.shape[0]


def text_embedding(embedding: Array, ids: Sequence[int], mesh: jax.sharding.Mesh) -> np.ndarray:
  """embedding[ids] [n, H] float32 on the host (the table may be sharded over hosts)."""
  lookup = jax.jit(lambda table: jnp.take(table, jnp.asarray(ids), axis=0).astype(jnp.float32),
                   out_shardings=partitioning.replicated(mesh))
  return np.asarray(jax.device_get(lookup(embedding)))


def regularizer(target: np.ndarray, weight: float, paths: Sequence[str]
                ) -> Callable[[dict], Array]:
  """trainable params -> weight * the sum over `paths` ('/'-joined prompt parameters) of
  squared_distance(prompt, target [n, H])."""
  target = np.asarray(target, np.float32)

  def penalty(trainable: dict) -> Array:
    total = 0.0
    for path in paths:
      node = trainable
      for key in path.split('/'):
        node = node[key]
      total = total + squared_distance(node.astype(jnp.float32), target)
    return weight * total
  return penalty
