"""Tests for prompt_tuning_jax.data: seqio -> fixed-shape, deterministic, resumable batches."""
from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import seqio

from prompt_tuning_jax import data
from prompt_tuning_jax import evaluation
from prompt_tuning_jax import inference
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.settings import DataSettings, EvalSettings
from prompt_tuning_jax.tasks import smoke

LENGTHS = {'inputs': 64, 'targets': 12}


def batches(n, start_step=0, lengths=LENGTHS, batch_size=4, seed=0):
  settings = DataSettings(smoke.TASK_NAME, lengths, batch_size, seed=seed, module=None)
  return list(itertools.islice(data.train_batches(settings, start_step=start_step), n))


def test_batches_have_fixed_shapes_and_t5x_features():
  batch = batches(1)[0]
  assert set(batch) == {*data.MODEL_FEATURES, data.TRUNCATED, data.TASK_INDEX}
  assert batch['encoder_input_tokens'].shape == (4, 64)
  np.testing.assert_array_equal(batch[data.TASK_INDEX], np.zeros(4, np.int32))  # one task
  for key in ('decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights'):
    assert batch[key].shape == (4, 12) and batch[key].dtype == np.int32
  assert batch[data.TRUNCATED].shape == (4, 2)
  # Decoder inputs are the targets shifted right (BOS = 0); weights mark real targets.
  np.testing.assert_array_equal(batch['decoder_input_tokens'][:, 1:],
                                batch['decoder_target_tokens'][:, :-1])
  np.testing.assert_array_equal(batch['decoder_loss_weights'],
                                batch['decoder_target_tokens'] > 0)
  vocab = smoke.VOCABULARY
  assert {vocab.decode(row.tolist()) for row in batch['decoder_target_tokens']} <= set(smoke.LABELS)


def test_same_seed_same_batches_other_seed_other_order():
  first, again, other = batches(3), batches(3), batches(3, seed=1)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not all(np.array_equal(a['encoder_input_tokens'], b['encoder_input_tokens'])
                 for a, b in zip(first, other))


def test_start_step_skips_exactly_the_batches_already_seen():
  straight = batches(5)
  resumed = batches(2, start_step=3)
  for a, b in zip(straight[3:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_repeats_past_one_epoch():
  # 2000 training examples / 500 per batch: the 5th batch comes from the second pass.
  assert len(batches(5, batch_size=500)) == 5


def test_truncation_is_flagged_and_keeps_eos():
  short = {'inputs': 16, 'targets': 1}
  batch = batches(1, lengths=short, batch_size=8)[0]
  counter = data.TruncationCounter(short)
  popped = counter.pop(batch)
  assert data.TRUNCATED not in popped
  # Every smoke input is longer than 16 bytes; every label (1 byte + EOS) than 1.
  assert counter.metrics() == {'truncated_inputs': 8.0, 'truncated_targets': 8.0}
  assert (popped['encoder_input_tokens'][:, -1] == 1).all()  # EOS kept at the end
  assert (popped['decoder_target_tokens'][:, -1] == 1).all()


def test_nothing_flagged_when_examples_fit():
  counter = data.TruncationCounter(LENGTHS)
  for batch in batches(3):
    counter.pop(batch)
  assert counter.examples == 12 and counter.metrics()['truncated_inputs'] == 0


def test_unknown_task_suggests_close_names():
  with pytest.raises(data.UnknownTaskError, match='Did you mean: smoke_sentiment'):
    data.get_mixture_or_task('smoke_sentimnt')


def test_lengths_are_checked():
  with pytest.raises(UsageError, match="TASK_FEATURE_LENGTHS must have exactly 'inputs' and"):
    DataSettings(smoke.TASK_NAME, {'inputs': 8}, 4, seed=0, module=None)


def test_missing_task_module_is_a_clear_error():
  with pytest.raises(UsageError, match="task module 'no_such_tasks_module'"):
    data.import_task_modules('no_such_tasks_module')


def test_label_words_come_from_the_task_registry_or_class_labels():
  assert data.label_words(smoke.TASK_NAME) == list(smoke.LABELS)
  assert data.label_words(smoke.TASK_NAME, ['bad', 'good']) == ['bad', 'good']
  assert data.label_words('not_a_task') is None


def test_eval_and_infer_count_the_examples_they_truncate(caplog):
  lengths = {'inputs': 40, 'targets': 1}
  untrimmed = list(seqio.get_mixture_or_task(smoke.TASK_NAME).get_dataset(
      None, split='validation', shuffle=False, num_epochs=1).take(20).as_numpy_iterator())
  long_inputs = sum(len(ex['inputs']) > 40 for ex in untrimmed)
  long_targets = sum(len(ex['targets']) > 1 for ex in untrimmed)
  assert 0 < long_inputs < 20 and long_targets > 0
  assert data.split_counts(smoke.TASK_NAME, 'validation', lengths, 20) == {
      'examples': 20, 'truncated_inputs': long_inputs, 'truncated_targets': long_targets}

  examples, truncated = inference.examples_from_task(smoke.TASK_NAME, 'validation', lengths, 20)
  assert truncated == long_inputs and len(examples) == 20
  assert all(len(ex.tokens) <= 40 and ex.tokens[-1] == 1 for ex in examples)  # EOS kept

  settings = EvalSettings('validation', ('decode',), 'greedy', 1, 4, 20, None)
  with caplog.at_level(logging.WARNING):
    evaluation.Evaluator(None, smoke.TASK_NAME, lengths, settings)
  assert (f'Of the 20 validation examples evaluated, {long_inputs} inputs and {long_targets} '
          'targets are longer than TASK_FEATURE_LENGTHS') in caplog.text


MIXTURE = 'test_task_index_mixture'


def _mixture() -> str:
  """Two smoke tasks told apart by their label words' first letter, mixed 1:1."""
  for name, labels in (('test_task_index_a', ('a-', 'a+')), ('test_task_index_b', ('b-', 'b+'))):
    smoke.register(name, labels)
  if MIXTURE not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add(MIXTURE, ['test_task_index_a', 'test_task_index_b'],
                              default_rate=1.0)
  return MIXTURE


def test_every_training_example_carries_its_tasks_index():
  name = _mixture()
  assert data.task_index_of(name) == {'test_task_index_a': 0, 'test_task_index_b': 1}
  settings = DataSettings(name, LENGTHS, 8, seed=0, module=None, length_buckets='pow2')
  seen = []
  for batch in itertools.islice(data.train_batches(settings), 6):
    assert batch[data.TASK_INDEX].shape == (8,) and batch[data.TASK_INDEX].dtype == np.int32
    for index, target in zip(batch[data.TASK_INDEX], batch['decoder_target_tokens']):
      assert smoke.VOCABULARY.decode(target.tolist())[0] == 'ab'[index]
      seen.append(int(index))
  assert set(seen) == {0, 1}


def test_tagging_keeps_seqios_mixture_order():
  """The tagged mixture holds the examples seqio's own `get_dataset` gives, in its order."""
  provider = seqio.get_mixture_or_task(_mixture())
  kwargs = dict(split='train', shuffle=True, seed=3, num_epochs=None, trim_output_features=False)
  ours = data._tagged_dataset(provider, None, **kwargs).take(48).as_numpy_iterator()
  theirs = provider.get_dataset(None, **kwargs).take(48).as_numpy_iterator()
  for a, b in zip(ours, theirs, strict=True):
    for key in ('inputs', 'targets'):
      np.testing.assert_array_equal(a[key], b[key])
