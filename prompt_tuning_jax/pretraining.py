"""Starting points of pre-training: a randomly initialised model written as a T5X checkpoint.

`runs/pretrain.gin` trains from `INITIAL_CHECKPOINT_PATH`; this writes the
checkpoint a from-scratch run starts from when part of the model does not start
at random: the token embedding from word vectors (`tasks.word_vectors`), as
the shipped mini T5 does (docs/reproduction.md).
"""
from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from prompt_tuning_jax import models
from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.errors import CheckpointError


def initial_checkpoint(model: models.T5Config | str, output_path: str, *,
                       word_vectors: Optional[np.ndarray] = None, seed: int = 0) -> str:
  """Writes the random initial parameters of `model` (a config or a preset's name, T5 or
  decoder-only) as a T5X checkpoint; returns the path.

  With `word_vectors` ([pieces, emb_dim], pieces <= the model's vocabulary),
  the embedding rows of the pieces are those vectors rescaled to the random
  rows' RMS (1.0, T5's initialiser); all-zero rows (pieces the corpus never
  showed, such as EOS and the sentinels) and the padding rows keep their
  random values. `output_path` must not exist.
  """
  config = models.get_config(model) if isinstance(model, str) else model
  model = models.build(config)
  params = model.init(jax.random.PRNGKey(seed), **models.dummy_inputs(model),
                      enable_dropout=False)['params']
  params = jax.tree_util.tree_map(np.array, jax.device_get(params))
  if word_vectors is not None:
    flat = tree_lib.flatten(params)
    table = flat[models.embedding_path(flat)]
    vectors = np.asarray(word_vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != table.shape[1] or len(vectors) > len(table):
      raise CheckpointError(
          f"word vectors of shape {vectors.shape} do not fit the model's embedding "
          f'{table.shape} ([pieces <= {table.shape[0]}, {table.shape[1]}])')
    seen = np.abs(vectors).sum(axis=1) > 0
    if not seen.any():
      raise CheckpointError('the word vectors are all zero')
    scale = np.sqrt(np.mean(table ** 2) / np.mean(vectors[seen] ** 2))
    rows = np.flatnonzero(seen)
    table[rows] = vectors[rows] * scale
  return t5x_lib.save_t5x(params, output_path)
