"""Prompt recycling (`transfer/recycling.py`, `ptj recycle`): known maps, the same model, errors."""
from __future__ import annotations

import numpy as np
import pytest

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import cli
from prompt_tuning_jax import pretrained
from prompt_tuning_jax.analysis import neighbors
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.transfer import recycling

VOCAB = pretrained.path('t5_mini/spiece.model')
LM_ADAPTED = pretrained.path('t5_mini/lm_adapted')
SPAN = pretrained.path('t5_mini/span_corruption')


@pytest.fixture(scope='module')
def pieces():
  return neighbors.PieceVocabulary(VOCAB)


def synthetic(rows=600, source_dim=16, target_dim=24, seed=0):
  """A source table, a known linear map and the target table it makes, float64."""
  rng = np.random.default_rng(seed)
  source = rng.standard_normal((rows, source_dim))
  projection = rng.standard_normal((source_dim, target_dim))
  return source, projection, source @ projection


def test_linear_recycler_recovers_a_known_map_exactly():
  source, projection, target = synthetic()
  fitted = recycling.LinearRecycler().fit(source, target)
  # A consistent, well-conditioned float64 system: exact to float64 rounding (~1e-15 of
  # the entries' size; 1e-10 leaves room for the condition number).
  np.testing.assert_allclose(fitted.projection, projection, rtol=0, atol=1e-10)
  prompt = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
  fitted = recycling.fit(source, target, np.arange(600))
  assert not fitted.identical_tables and fitted.words == 600
  assert fitted.r_squared == pytest.approx(1.0, abs=1e-12)
  # The map applied in float64, the prompt written in float32: one rounding.
  np.testing.assert_array_max_ulp(fitted(prompt), (prompt @ projection).astype(np.float32), 1)


def test_network_recycler_learns_the_map():
  source, _, target = synthetic(rows=2000, source_dim=8, target_dim=8)

  def r_squared(fitted):
    return 1 - np.sum((fitted(source) - target) ** 2) / np.sum((target - target.mean(0)) ** 2)
  early = recycling.NetworkRecycler(epochs=2).fit(source, target)
  trained = recycling.NetworkRecycler().fit(source, target)  # the original's 25 epochs
  assert r_squared(early) < 0.2 < 0.8 < r_squared(trained)
  again = recycling.NetworkRecycler().fit(source, target)
  np.testing.assert_array_equal(trained(source[:3]), again(source[:3]))  # seeded
  assert trained(source[:3]).shape == (3, 8) and trained(source[:3]).dtype == np.float32


def test_a_prompt_recycled_to_the_same_model_is_unchanged(pieces):
  table = neighbors.load_t5x_embedding(LM_ADAPTED)
  prompt = np.random.default_rng(0).standard_normal((7, table.shape[1])).astype(np.float32)
  ids = recycling.word_ids(pieces)
  fitted = recycling.fit(table, table, ids)
  assert fitted.identical_tables
  np.testing.assert_array_equal(fitted(prompt), prompt)
  # The least-squares map itself is the identity there (float64: to ~1e-12).
  fitted = recycling.LinearRecycler().fit(table[ids], table[ids])
  np.testing.assert_allclose(fitted.projection, np.eye(table.shape[1]), rtol=0, atol=1e-9)


def test_word_pieces_of_the_shipped_vocabulary(pieces):
  ids = recycling.word_ids(pieces)
  words = [pieces.piece(int(i)) for i in ids]
  assert all(w.startswith(neighbors.WORD_BOUNDARY) and w[1:].isalpha() and w[1:].islower()
             for w in words)
  assert list(ids) == sorted(ids) and len(ids) == len(set(ids.tolist()))
  everything = recycling.word_ids(pieces, num_words=10 ** 6, word_offset=0)
  assert list(ids) == list(everything[1000:5000])  # the 1,000 most frequent skipped


def test_ptj_recycle_writes_the_mapped_prompt(tmp_path, capsys, pieces):
  rng = np.random.default_rng(0)
  source = rng.standard_normal((len(pieces), 8)).astype(np.float32)
  projection = rng.standard_normal((8, 6))
  target = (source.astype(np.float64) @ projection).astype(np.float32)
  for name, table in (('source', source), ('target', target)):
    checkpoints.save_t5x({'token_embedder': {'embedding': table}}, str(tmp_path / name))
  prompt = rng.standard_normal((4, 8)).astype(np.float32)
  checkpoints.save_prompt(str(tmp_path / 'prompt.npy'), prompt)
  out = tmp_path / 'recycled.npy'
  assert cli.main(['recycle', '--prompt', str(tmp_path / 'prompt.npy'),
                   '--source_checkpoint', str(tmp_path / 'source'),
                   '--target_checkpoint', str(tmp_path / 'target'), '--vocab', VOCAB,
                   '--output', str(out)]) == 0
  assert 'v2v-lin fitted on 3749 word pieces (R^2 1.000)' in capsys.readouterr().out
  # The target rows were rounded to float32: the fit recovers the map to that precision.
  np.testing.assert_allclose(checkpoints.load_prompt(str(out)), prompt @ projection,
                             rtol=1e-5, atol=1e-5)


def test_ptj_recycle_between_the_shipped_checkpoints_is_the_identity(tmp_path, capsys):
  prompt = np.random.default_rng(0).standard_normal((3, 128)).astype(np.float32)
  checkpoints.save_prompt(str(tmp_path / 'p.npy'), prompt)
  assert cli.main(['recycle', '--prompt', str(tmp_path / 'p.npy'), '--source_checkpoint', SPAN,
                   '--target_checkpoint', LM_ADAPTED, '--vocab', VOCAB,
                   '--output', str(tmp_path / 'out.npy')]) == 0
  assert 'embedding tables are identical' in capsys.readouterr().out
  np.testing.assert_array_equal(checkpoints.load_prompt(str(tmp_path / 'out.npy')), prompt)


def test_a_vocabulary_mismatch_stops_with_one_line(tmp_path, capsys):
  checkpoints.save_prompt(str(tmp_path / 'p.npy'), np.zeros((3, 128), np.float32))
  status = cli.main(['recycle', '--prompt', str(tmp_path / 'p.npy'), '--source_checkpoint', SPAN,
                     '--target_checkpoint', LM_ADAPTED, '--source_vocab', VOCAB,
                     '--target_vocab', 'byte', '--output', str(tmp_path / 'out.npy')])
  err = capsys.readouterr().err
  assert status == 1 and not (tmp_path / 'out.npy').exists()
  first = err.splitlines()[0]
  assert first.startswith('ptj recycle: error: The source vocabulary ')
  assert 'differ (8100 vs 259 ids)' in first and 'same vocabulary' in first
  assert 'Traceback' not in err


def test_errors_before_anything_is_fitted(pieces):
  table = np.zeros((len(pieces), 8), np.float32)
  with pytest.raises(UsageError, match='widths differ'):
    recycling.fit(table, table + 1, np.arange(100))(np.zeros((2, 4), np.float32))
  with pytest.raises(UsageError, match='cannot determine a map'):
    recycling.fit(table, table + 1, np.arange(8))
  with pytest.raises(UsageError, match="the target model's vocabulary"):
    recycling.check_table(np.zeros((300, 8)), pieces, 'target')
