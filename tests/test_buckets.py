"""Length-bucketed batches (LENGTH_BUCKETS): shapes, grouping, determinism, unchanged math."""
from __future__ import annotations

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import small_config

from prompt_tuning_jax import data
from prompt_tuning_jax import inference
from prompt_tuning_jax import optim
from prompt_tuning_jax import train_step
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.models import PromptedT5
from prompt_tuning_jax.settings import DataSettings
from prompt_tuning_jax.tasks import smoke

LENGTHS = {'inputs': 64, 'targets': 12}
BATCH = 4
WINDOW = BATCH * data.WINDOW_BATCHES


def settings(buckets='pow2', seed=0, lengths=LENGTHS):
  return DataSettings(smoke.TASK_NAME, lengths, BATCH, seed=seed, module=None,
                      length_buckets=buckets)


def batches(n, buckets='pow2', start_step=0, seed=0):
  stream = data.train_batches(settings(buckets, seed), start_step=start_step)
  return list(itertools.islice(stream, n))


def rows(batch):
  """The examples of a batch as hashable rows (input and target tokens, padding dropped)."""
  return [(tuple(i[i > 0]), tuple(t[t > 0])) for i, t in
          zip(batch['encoder_input_tokens'], batch['decoder_target_tokens'])]


def test_pow2_buckets_end_at_the_feature_lengths():
  assert settings().length_buckets == {'inputs': (16, 32, 64), 'targets': (4, 8, 12)}
  big = settings(lengths={'inputs': 512, 'targets': 16}).length_buckets
  assert big == {'inputs': (16, 32, 64, 128, 256, 512), 'targets': (4, 8, 16)}
  assert settings(None).length_buckets is None
  assert settings('step16').length_buckets == {'inputs': (16, 32, 48, 64), 'targets': (4, 8, 12)}
  assert settings('step24').length_buckets['inputs'] == (24, 48, 64)
  # A feature not named keeps its one fixed length.
  assert settings({'inputs': [24, 64]}).length_buckets == {'inputs': (24, 64), 'targets': (12,)}


@pytest.mark.parametrize('buckets, message', [
    ({'inputs': (16, 32)}, r"LENGTH_BUCKETS\['inputs'\]=\(16, 32\) must end at "
                           r"TASK_FEATURE_LENGTHS\['inputs'\]=64.*would not fit"),
    ({'inputs': (16, 128)}, r'must end at .*would never be used'),
    ({'inputs': (32, 16, 64)}, r"LENGTH_BUCKETS\['inputs'\] must be in ascending order"),
    ({'inputs': (0, 64)}, r"LENGTH_BUCKETS\['inputs'\] must be positive integers"),
    ({'inputs': (-8, 64)}, r"LENGTH_BUCKETS\['inputs'\] must be positive integers"),
    ({'lengths': (64,)}, "LENGTH_BUCKETS must be None, 'pow2', 'step<N>'"),
    ('step0', "LENGTH_BUCKETS must be None, 'pow2', 'step<N>'"),
    ('powers', "LENGTH_BUCKETS must be None, 'pow2', 'step<N>'"),
])
def test_bad_bucket_lists_are_clear_errors(buckets, message):
  with pytest.raises(UsageError, match=message):
    settings(buckets)


def test_bucket_choice_and_cutting():
  assert [data.bucket_for(n, (16, 32, 64)) for n in (1, 16, 17, 33, 64)] == [16, 16, 32, 64, 64]
  tokens = np.zeros((2, 64), np.int32)
  tokens[0, :20], tokens[1, :5] = 7, 7
  targets = np.zeros((2, 12), np.int32)
  targets[:, :3] = 5
  batch = {'encoder_input_tokens': tokens, 'decoder_target_tokens': targets,
           'decoder_input_tokens': targets.copy(), 'decoder_loss_weights': targets > 0}
  cut = data.cut_to_buckets(batch, {'inputs': (16, 32, 64), 'targets': (4, 12)})
  assert cut['encoder_input_tokens'].shape == (2, 32)
  assert all(cut[k].shape == (2, 4) for k in data.DECODER_FEATURES)
  np.testing.assert_array_equal(cut['encoder_input_tokens'], tokens[:, :32])


def test_batches_are_cut_to_buckets_and_pad_less():
  fixed, bucketed = batches(64, None), batches(64)
  shapes = collections.Counter(b['encoder_input_tokens'].shape[1] for b in bucketed)
  assert set(shapes) <= {16, 32, 64} and len(shapes) >= 2, shapes
  for batch in bucketed:
    width = batch['encoder_input_tokens'].shape[1]
    longest = data.example_lengths(batch['encoder_input_tokens']).max()
    assert longest <= width and (width == 16 or longest > width // 2)  # the smallest bucket
    assert batch['decoder_target_tokens'].shape[1] == 4  # '+' or '-', and EOS
    assert batch[data.TRUNCATED].shape == (BATCH, 2)
  positions = lambda bs: sum(b['encoder_input_tokens'].size for b in bs)
  assert positions(bucketed) < 0.8 * positions(fixed)
  assert all(b['encoder_input_tokens'].shape[1] == 64 for b in fixed)


def test_each_window_holds_the_same_examples_as_the_unbucketed_stream():
  """Grouping only reorders within a window: every example exactly once per epoch."""
  n = 2 * data.WINDOW_BATCHES
  fixed, bucketed = batches(n, None), batches(n)
  for w in range(2):
    window = slice(w * data.WINDOW_BATCHES, (w + 1) * data.WINDOW_BATCHES)
    expected = collections.Counter(r for b in fixed[window] for r in rows(b))
    got = collections.Counter(r for b in bucketed[window] for r in rows(b))
    assert got == expected and sum(got.values()) == WINDOW
  # Inside a window the batches are groups of similar length, in shuffled order.
  first = bucketed[:data.WINDOW_BATCHES]
  maxima = [data.example_lengths(b['encoder_input_tokens']).max() for b in first]
  minima = [data.example_lengths(b['encoder_input_tokens']).min() for b in first]
  assert sorted(maxima) != maxima  # not one long ascending run
  spans = sorted(zip(minima, maxima))
  assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:]))


def test_bucketed_batches_are_deterministic_and_resume_exactly():
  n = data.WINDOW_BATCHES + 5
  straight, again = batches(n), batches(n)
  for a, b in zip(straight, again):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  for start in (3, data.WINDOW_BATCHES, data.WINDOW_BATCHES + 2):  # inside / across windows
    resumed = batches(n - start, start_step=start)
    for a, b in zip(straight[start:], resumed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  other = batches(4, seed=1)
  assert not all(np.array_equal(a['encoder_input_tokens'], b['encoder_input_tokens'])
                 for a, b in zip(straight, other))


def test_per_example_loss_and_update_are_the_same_fixed_and_bucketed():
  """Padding does not change the math: same examples, fixed 64 vs cut to their bucket.

  Compared in float64 (a float64 model under `jax.enable_x64`), where the two shapes agree
  to ~1e-13 relative: in float32 the two shapes' kernels sum in other orders, and with the
  large weights below the grad norm has differed by 2e-4 relative on AMD Zen 4 (1e-5
  elsewhere). A padded position that leaked into the math would move the results by far
  more than the 1e-9 allowed here.
  """
  model = PromptedT5(small_config(vocab_size=smoke.VOCABULARY.vocab_size, dtype=jnp.float64),
                     prompt_length=3)
  cut = next(b for b in batches(8) if b['encoder_input_tokens'].shape[1] < 64)
  cut = {k: v for k, v in cut.items() if k in data.MODEL_FEATURES}
  fixed = {k: np.pad(v, [(0, 0), (0, LENGTHS['inputs' if k == 'encoder_input_tokens' else
                                             'targets'] - v.shape[1])]) for k, v in cut.items()}
  with jax.enable_x64(True):
    params = model.init(jax.random.PRNGKey(0), fixed['encoder_input_tokens'],
                        fixed['decoder_input_tokens'], fixed['decoder_target_tokens'])['params']
    # Larger than flax's initialisers, so that every position matters to the loss.
    params = jax.tree.map(lambda x: x.astype(jnp.float64) * 4.0, params)

    @jax.jit
    def per_example_loss(batch):
      logits = model.apply({'params': params}, batch['encoder_input_tokens'],
                           batch['decoder_input_tokens'], batch['decoder_target_tokens'])
      assert logits.dtype == jnp.float64
      loss, _ = train_step.cross_entropy_with_z_loss(
          logits, batch['decoder_target_tokens'],
          batch['decoder_loss_weights'].astype(jnp.float64))
      return loss.sum(-1)

    loss_fixed, loss_cut = per_example_loss(fixed), per_example_loss(cut)
    assert float(loss_fixed.min()) > 0.1
    np.testing.assert_allclose(loss_cut, loss_fixed, rtol=1e-9)

    tx = optim.partitioned_optimizer(params, optax.adam(0.1), ('.*prompt.*',))
    trainable, frozen = optim.partition(params, ('.*prompt.*',))
    step = jax.jit(train_step.make_train_step(model, tx))
    results = [step(train_step.init_train_state(trainable, frozen, tx), frozen, b)
               for b in (fixed, cut)]
  (state_fixed, m_fixed), (state_cut, m_cut) = results
  assert m_fixed['grad_norm'].dtype == np.float64 and float(m_fixed['grad_norm']) > 1.0
  np.testing.assert_allclose(m_cut['loss'], m_fixed['loss'], rtol=1e-9)
  np.testing.assert_allclose(m_cut['grad_norm'], m_fixed['grad_norm'], rtol=1e-9)
  for a, b in zip(jax.tree.leaves(state_cut.trainable), jax.tree.leaves(state_fixed.trainable)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_inference_batches_by_length_and_keeps_every_example_once():
  examples = [inference.Example(str(i), [5] * n + [1], {}) for i, n in
              enumerate([29, 3, 19, 9, 60, 2, 25])]
  out = list(inference.padded_batches(examples, 3, 64, buckets=(16, 32, 64)))
  seen = np.concatenate([r for r, _ in out])
  assert seen.tolist() == [5, 1, 3, 2, 6, 0, 4]  # shortest first
  assert [t.shape for _, t in out] == [(3, 16), (3, 32), (3, 64)]
  for rows_, tokens in out:
    for row, i in enumerate(rows_):
      assert tokens[row, :len(examples[i].tokens)].tolist() == examples[i].tokens
  fixed = list(inference.padded_batches(examples, 3, 64))
  assert [r.tolist() for r, _ in fixed] == [[0, 1, 2], [3, 4, 5], [6]]
  assert all(t.shape == (3, 64) for _, t in fixed)
