"""The smoke task: generated two-class "reviews" over a byte vocabulary.

Used by the README's first command and the end-to-end tests: it needs no
download (seqio's `ByteVocabulary`, text generated from word lists with a
fixed seed) and is small enough to train on two CPU cores in a minute.

Each input is a short review whose sentiment is carried by one or two
adjectives, e.g. `review: the soup was awful and the staff were rude` -> `-`
(negative) or `+` (positive). `smoke_sentiment_words` is the same reviews with
the labels `negative`/`positive` in the vocabulary the model file names (the
smoke task of a SentencePiece model such as t5_mini). Every split is generated
from its own seed, so the splits are disjoint in their random draws and
identical on every machine.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

from . import registry
from . import vocab

TASK_NAME = 'smoke_sentiment'
WORDS_TASK_NAME = 'smoke_sentiment_words'
WORD_LABELS = ('negative', 'positive')
# One byte each: a frozen model with random weights can learn to emit a one-token
# label through the prompt within a few hundred steps; longer words it cannot.
LABELS = ('-', '+')
SPLIT_SIZES = {'train': 2000, 'validation': 200, 'test': 200}
_SPLIT_SEEDS = {'train': 1, 'validation': 2, 'test': 3}

VOCABULARY = seqio.ByteVocabulary()

_SUBJECTS = ('the soup', 'the film', 'the hotel', 'the book', 'the service', 'the pasta',
             'the room', 'the show', 'the coffee', 'the game', 'the trip', 'the class')
_STAFF = ('the staff were', 'the actors were', 'the hosts were', 'the people were',
          'the music was', 'the view was')
_GOOD = ('great', 'lovely', 'superb', 'tasty', 'fun', 'nice', 'kind', 'bright', 'calm', 'good')
_BAD = ('awful', 'boring', 'bland', 'rude', 'dull', 'poor', 'cold', 'dirty', 'noisy', 'bad')


def generate(split: str, labels: Sequence[str] = LABELS) -> list[dict[str, str]]:
  """The examples of `split`: dicts with `inputs` and `targets` text."""
  if split not in SPLIT_SIZES:
    raise ValueError(f'The smoke task has splits {sorted(SPLIT_SIZES)}, not {split!r}.')
  rng = np.random.RandomState(_SPLIT_SEEDS[split])
  examples = []
  for _ in range(SPLIT_SIZES[split]):
    label = int(rng.randint(2))
    words = _GOOD if label else _BAD
    text = f'{_SUBJECTS[rng.randint(len(_SUBJECTS))]} was {words[rng.randint(len(words))]}'
    if rng.rand() < 0.5:
      text += f' and {_STAFF[rng.randint(len(_STAFF))]} {words[rng.randint(len(words))]}'
    examples.append({'inputs': f'review: {text}', 'targets': labels[label]})
  return examples


def _dataset(split: str, shuffle_files: bool = False, seed=None, *,
             labels: Sequence[str] = LABELS) -> tf.data.Dataset:
  del shuffle_files, seed  # One in-memory "file"; the task pipeline shuffles.
  examples = generate(split, labels)
  return tf.data.Dataset.from_tensor_slices({
      'inputs': [ex['inputs'] for ex in examples],
      'targets': [ex['targets'] for ex in examples],
  })


def accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Exact-match accuracy in percent (T5's convention)."""
  correct = sum(t == p for t, p in zip(targets, predictions))
  return {'accuracy': 100.0 * correct / max(len(targets), 1)}


def _decode_text(text, example=None, is_target=False) -> str:
  del example, is_target
  return text.decode('utf-8') if isinstance(text, bytes) else text


def register(name: str = TASK_NAME, labels: Sequence[str] = LABELS,
             vocabulary: seqio.Vocabulary = VOCABULARY) -> None:
  """Registers a smoke task with seqio (once per name)."""
  if name in seqio.TaskRegistry.names():
    return
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(
          functools.partial(_dataset, labels=tuple(labels)), splits=tuple(SPLIT_SIZES),
          num_input_examples=dict(SPLIT_SIZES)),
      preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features={
          'inputs': seqio.Feature(vocabulary, add_eos=True),
          'targets': seqio.Feature(vocabulary, add_eos=True),
      },
      postprocess_fn=_decode_text,
      metric_fns=[accuracy])
  registry.record_task(registry.TaskInfo(name, tuple(labels), _decode_text, None, False))


register()
# The same reviews with word labels, in the vocabulary the model file names
# (`get_vocabulary`): the smoke task of a pre-trained model such as t5_mini.
register(WORDS_TASK_NAME, WORD_LABELS, vocab.TASK_VOCABULARY)
