"""Prompt initialisers (under jax.jit) and their errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_path
from prompt_tuning_jax import prompts
from prompt_tuning_jax.checkpoints import prompt_io

H = 8


@pytest.fixture(scope='module')
def table():
  return jax.random.normal(jax.random.PRNGKey(3), (300, H))


def _jit_init(init, shape, seed=0):
  return jax.jit(functools.partial(init, shape=shape))(jax.random.PRNGKey(seed))


def test_random_uniform_range_shape_dtype():
  x = _jit_init(prompts.random_uniform(), (100, H))
  assert x.shape == (100, H) and x.dtype == jnp.float32
  assert float(x.min()) >= -0.5 and float(x.max()) < 0.5 and float(x.min()) < -0.4
  y = _jit_init(prompts.random_uniform(low=0.0), (100, H))  # the original code's [0, 0.5)
  assert float(y.min()) >= 0.0 and float(y.max()) < 0.5
  assert float(y.min()) < 0.05 and float(y.max()) > 0.45  # fills [0, 0.5), not a sub-range


def test_sampled_vocab_rows_come_from_the_top_n(table):
  x = np.asarray(_jit_init(prompts.sampled_vocab(table, population_size=20), (10, H)))
  ids = [int(np.flatnonzero((np.asarray(table) == row).all(1))[0]) for row in x]
  assert all(i < 20 for i in ids)
  assert len(set(ids)) == 10  # without replacement while the prompt fits the population
  more = np.asarray(_jit_init(prompts.sampled_vocab(table, population_size=4), (9, H)))
  assert len({row.tobytes() for row in more}) <= 4


def test_class_labels_rows_are_mean_label_embeddings(table):
  labels = [[5], [7, 9, 11]]
  x = np.asarray(_jit_init(prompts.class_labels(table, labels, prompts.random_uniform()), (6, H)))
  np.testing.assert_allclose(x[0], table[5], rtol=1e-6)
  np.testing.assert_allclose(x[1], (table[7] + table[9] + table[11]) / 3, rtol=1e-6, atol=1e-6)
  assert np.abs(x[2:]).max() <= 0.5  # the rest from the fallback
  with pytest.raises(ValueError, match='3 class labels do not fit a prompt of length 2'):
    prompts.class_labels(table, [[1], [2], [3]])(jax.random.PRNGKey(0), (2, H))
  with pytest.raises(ValueError, match='no tokens'):
    prompts.class_labels(table, [[1], []])


def test_class_labels_with_the_real_t5_vocabulary():
  import seqio
  vocab = seqio.SentencePieceVocabulary(str(shared_path('vocab', 't5', 'spiece.model')))
  table = jax.random.normal(jax.random.PRNGKey(0), (32128, H))
  words = ['positive', 'negative', 'not_entailment']
  ids = prompts.label_token_ids_from_words(vocab, words)
  assert all(1 not in piece_ids for piece_ids in ids)  # encoded without EOS
  assert len(ids[2]) > 1  # a multi-piece label is averaged
  x = np.asarray(_jit_init(prompts.class_labels(table, ids), (100, H)))
  for row, piece_ids in zip(x, ids):
    np.testing.assert_allclose(row, np.asarray(table)[piece_ids].mean(0), rtol=1e-5, atol=1e-6)
  # Fallback rows default to sampled vocabulary: copies of rows among the top 5000.
  top = np.asarray(table)[:5000]
  assert all((top == row).all(1).any() for row in x[3:])


def test_from_text_tiles_and_truncates(table):
  x = np.asarray(_jit_init(prompts.from_text(table, [4, 5, 6]), (7, H)))
  np.testing.assert_array_equal(x, np.asarray(table)[[4, 5, 6, 4, 5, 6, 4]])
  y = np.asarray(_jit_init(prompts.from_text(table, [4, 5, 6]), (2, H)))
  np.testing.assert_array_equal(y, np.asarray(table)[[4, 5]])


def test_from_file_and_shape_errors(tmp_path, table):
  path = tmp_path / 'p.npy'
  want = np.random.RandomState(0).randn(4, H).astype(np.float32)
  np.save(path, want)
  np.testing.assert_array_equal(_jit_init(prompt_io.prompt_initializer(str(path)), (4, H)), want)
  with pytest.raises(ValueError, match=r'\(4, 8\).*\(5, 8\)'):
    prompt_io.prompt_initializer(str(path))(jax.random.PRNGKey(0), (5, H))
  with pytest.raises(ValueError, match='width'):
    prompts.sampled_vocab(table)(jax.random.PRNGKey(0), (4, H + 1))


def test_released_prompts_are_100_by_768():
  from prompt_tuning_jax import checkpoints
  for name in ('sst2', 'rte', 'mrpc'):
    p = checkpoints.load_prompt(str(shared_path('prompts', 'original_release', f'{name}.npy')))
    assert p.shape == (100, 768) and p.dtype == np.float32
