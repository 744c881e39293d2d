"""Shared fixtures: tiny models and the location of ../shared."""
from __future__ import annotations

import logging
import os
import pathlib
import tempfile

import gin
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax import config
from prompt_tuning_jax.models import T5Config

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'

# One persistent XLA compilation cache for the test session (and subprocesses
# given PTJ_COMPILATION_CACHE_DIR): later compiles of the same programs are reads.
XLA_CACHE = os.path.join(tempfile.gettempdir(), 'ptj_test_xla_cache')
config.enable_compilation_cache(XLA_CACHE)


@pytest.fixture
def restore_ptj_global_state():
  """`ptj` configures gin and the root logger for the process; undo it after a test."""
  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  yield
  gin.clear_config()
  root.handlers, root.level = handlers, level


def shared_path(*parts: str) -> pathlib.Path:
  """A path under ../shared, skipping the test when it is absent."""
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f'../shared is absent ({path} not found): real data/artefacts unavailable')
  return path


def small_config(**overrides) -> T5Config:
  """A tiny float32 T5.1.1-style config with a small vocabulary and no dropout."""
  base = T5Config(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                  num_encoder_layers=2, num_decoder_layers=2,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16,
                  dropout_rate=0.0, dtype=jnp.float32)
  return base.replace(**overrides)


def toy_batch(batch=2, inputs=7, targets=4, vocab=64, seed=0) -> dict:
  """Random tokens with trailing padding in every row but the first."""
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, vocab, (batch, inputs))
  tgt = rng.randint(2, vocab, (batch, targets))
  for i in range(1, batch):
    enc[i, inputs - i:] = 0
    tgt[i, targets - 1:] = 0
  dec_in = np.concatenate([np.zeros((batch, 1), int), tgt[:, :-1]], axis=1)
  return {'encoder_input_tokens': jnp.asarray(enc), 'decoder_input_tokens': jnp.asarray(dec_in),
          'decoder_target_tokens': jnp.asarray(tgt),
          'decoder_loss_weights': jnp.asarray(tgt > 0, jnp.float32)}
