"""Partition rules and optimisers: which parameters train, and with what."""
from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import traverse_util

from conftest import small_config, toy_batch
from prompt_tuning_jax import optim
from prompt_tuning_jax.models import PromptedT5


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def test_partition_rules():
  batch = toy_batch(batch=4)
  params = PromptedT5(small_config(), prompt_length=4).init(
      jax.random.PRNGKey(0), batch['encoder_input_tokens'], batch['decoder_input_tokens'],
      batch['decoder_target_tokens'], enable_dropout=False)['params']
  trainable, frozen = optim.partition(params, optim.PROMPT_TUNING_RULES)
  assert list(_flat(trainable)) == ['encoder/prompt/prompt/prompt']
  assert len(_flat(frozen)) == len(_flat(params)) - 1
  np.testing.assert_array_equal(_flat(optim.merge(trainable, frozen))['token_embedder/embedding'],
                                params['token_embedder']['embedding'])
  with pytest.raises(ValueError, match='No parameter matches'):
    optim.partition(params, (r'nothing',))


def test_inverse_sqrt_schedule_is_t5s_pretraining_rate():
  schedule = optim.inverse_sqrt_schedule()
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 5_000, 10_000, 40_000)],
                             [0.01, 0.01, 0.01, 0.005], rtol=1e-6)
  # Adafactor (the paper's, or T5's pre-training) takes it as its learning rate.
  tx = optim.adafactor(learning_rate=schedule)
  params = {'w': np.ones((2, 3), np.float32)}
  updates, _ = tx.update(params, tx.init(params), params)
  assert np.all(np.isfinite(updates['w']))
  assert isinstance(tx, optax.GradientTransformation)
