"""Shared fixtures: tiny models and the location of ../shared."""
from __future__ import annotations

import functools
import logging
import os
import pathlib
import tempfile

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax import config
from prompt_tuning_jax.models import DecoderOnlyConfig, T5Config

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'

# One persistent XLA compilation cache for the test session (and subprocesses
# given PTJ_COMPILATION_CACHE_DIR): later compiles of the same programs are reads.
XLA_CACHE = os.path.join(tempfile.gettempdir(), 'ptj_test_xla_cache')
config.enable_compilation_cache(XLA_CACHE)
# XLA's own defaults in this process and every `ptj` it starts, whatever the CPU kind:
# `ptj`'s per-CPU defaults (cpu_flags.py) apply only when XLA_FLAGS is unset.
os.environ.setdefault('XLA_FLAGS', '')


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


def decoder_only_config(**overrides) -> DecoderOnlyConfig:
  """A tiny float32 decoder-only prefix LM (T5.1.1 blocks) with a small vocabulary, no dropout."""
  base = DecoderOnlyConfig(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                           num_decoder_layers=2, relative_attention_num_buckets=8,
                           relative_attention_max_distance=16, dropout_rate=0.0,
                           dtype=jnp.float32)
  return base.replace(**overrides)


def prefix_lm_batch(examples, length: int) -> dict:
  """seqio's unpacked PrefixLMFeatureConverter features of (inputs, targets) token lists."""
  out = {k: np.zeros((len(examples), length), np.int32) for k in (
      'decoder_target_tokens', 'decoder_input_tokens', 'decoder_loss_weights',
      'decoder_causal_attention')}
  for row, (inputs, targets) in enumerate(examples):
    sequence = list(inputs) + list(targets)
    out['decoder_target_tokens'][row, :len(sequence)] = sequence
    out['decoder_input_tokens'][row, 1:] = out['decoder_target_tokens'][row, :-1]
    out['decoder_loss_weights'][row, len(inputs):len(sequence)] = 1
    out['decoder_causal_attention'][row, :len(inputs) + 1] = 1
  return {k: jnp.asarray(v) for k, v in out.items()}


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


@functools.partial(jax.jit, static_argnames=('model',))
def _log_probs(model, params, inputs, decoder_inputs, valid):
  logits = model.apply({'params': params}, inputs, decoder_inputs, valid, enable_dropout=False)
  return jax.nn.log_softmax(logits, axis=-1)


def naive_greedy(model, params, encoder_input_tokens, max_decode_length, eos_id=1):
  """Greedy decoding without the KV cache: the whole model reruns on the growing prefix.

  Returns (tokens [b, max_decode_length], zero after the first EOS; summed log-probs).
  """
  inputs = jnp.asarray(encoder_input_tokens)
  batch = inputs.shape[0]
  tokens = np.zeros((batch, max_decode_length), np.int32)
  scores = np.zeros(batch, np.float32)
  done = np.zeros(batch, bool)
  valid = jnp.ones((batch, max_decode_length), jnp.int32)
  for i in range(max_decode_length):
    decoder_inputs = jnp.asarray(np.pad(tokens[:, :-1], ((0, 0), (1, 0))))
    log_probs = np.asarray(_log_probs(model, params, inputs, decoder_inputs, valid))[:, i]
    best = log_probs.argmax(-1)
    tokens[:, i] = np.where(done, 0, best)
    scores += np.where(done, 0.0, log_probs[np.arange(batch), best])
    done |= tokens[:, i] == eos_id
  return tokens, scores


@pytest.fixture
def hf_t5_float64(monkeypatch):
  """Hugging Face's T5 fully in float64 (with `.double()`): its T5LayerNorm computes the
  variance in float32 whatever the input's dtype; here it keeps the input's (same math)."""
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  modeling_t5 = pytest.importorskip('transformers.models.t5.modeling_t5',
                                    reason='transformers is a test extra')

  def forward(self, x):
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True)
                                          + self.variance_epsilon))
  monkeypatch.setattr(modeling_t5.T5LayerNorm, 'forward', forward)
