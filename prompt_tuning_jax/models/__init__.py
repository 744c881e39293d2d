"""T5, the T5X-style decoder-only LM, and their prompted versions (T5X parameter trees)."""
from __future__ import annotations

import jax.numpy as jnp

from prompt_tuning_jax.models import decoder_only
from prompt_tuning_jax.models import t5
from prompt_tuning_jax.models.decoder_only import DecoderOnly, DecoderOnlyConfig
from prompt_tuning_jax.models.prompted import (DECODER_ONLY_PROMPT_PATH, PROMPT_PATH,
                                               PromptedDecoderOnly, PromptedT5)
from prompt_tuning_jax.models.t5 import T5, T5Config

PRESETS: dict[str, T5Config] = {**t5.PRESETS, **decoder_only.PRESETS}
# The token embedding [vocab, emb]: T5's (shared by its stacks), a decoder-only LM's.
EMBEDDING_PATHS = ('token_embedder/embedding', 'decoder/token_embedder/embedding')


def get_config(name: str, **overrides) -> T5Config:
  """The named preset (T5 or decoder-only), optionally with fields replaced."""
  if name not in PRESETS:
    raise ValueError(f'Unknown model config {name!r}; known: {", ".join(sorted(PRESETS))}')
  return PRESETS[name].replace(**overrides)


def build(config: T5Config, method=None):
  """The model of `config`'s architecture (T5 or DecoderOnly) with `method` (None: model
  tuning, the paper's baseline)."""
  cls = DecoderOnly if isinstance(config, DecoderOnlyConfig) else T5
  return cls(config) if method is None else cls(config, method=method)


def embedding_path(paths) -> str:
  """Which of EMBEDDING_PATHS is among `paths` (a flat parameter tree's keys)."""
  found = next((p for p in EMBEDDING_PATHS if p in paths), None)
  if found is None:
    raise KeyError(f'No token embedding ({" or ".join(EMBEDDING_PATHS)}) in the parameters.')
  return found


def model_inputs(model, batch) -> dict:
  """The features of `batch` that `model.__call__` takes (its INPUT_FEATURES present)."""
  return {key: batch[key] for key in model.INPUT_FEATURES if key in batch}


def dummy_inputs(model) -> dict:
  """One-token inputs for `model.init` (shapes are all it needs)."""
  return {key: jnp.ones((1, 1), jnp.int32) for key in model.INPUT_FEATURES}


__all__ = ['DECODER_ONLY_PROMPT_PATH', 'DecoderOnly', 'DecoderOnlyConfig', 'EMBEDDING_PATHS',
           'PRESETS', 'PROMPT_PATH', 'PromptedDecoderOnly', 'PromptedT5', 'T5', 'T5Config',
           'build', 'dummy_inputs', 'embedding_path', 'get_config', 'model_inputs']
