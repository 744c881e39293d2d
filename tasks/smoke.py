"""The smoke task: generated two-class "reviews" over a byte vocabulary.

Used by the README's first command and the end-to-end tests: it needs no
download (seqio's `ByteVocabulary`, text generated from word lists with a
fixed seed) and is small enough to train on two CPU cores in a minute.

Each input is a short review whose sentiment is carried by one or two
adjectives, e.g. `review: the soup was awful and the staff were rude` -> `-`
(negative) or `+` (positive). `smoke_sentiment_words` is the same reviews with
the labels `negative`/`positive` in the vocabulary the model file names (the
smoke task of a SentencePiece model such as t5_mini).

`smoke_sentiment_mixture` mixes `smoke_sentiment` 1:1 with `smoke_sentiment_np`, the
same reviews labelled `n`/`p`: the inputs do not tell the two tasks apart, so only a
task-specific parameter (multi-task prompts) can answer both.

`smoke_sentiment_transfer` (the README's main run, on the shipped t5_mini) asks
what only a pre-trained model can answer: its validation and test reviews use
adjectives that no training review contains, so a prompt scores above chance
there only through what the frozen model knows about words. Random frozen
weights fit its training reviews and stay at chance (or below) on the held-out
words.

Every split is generated from its own seed, so the splits are disjoint in their
random draws and identical on every machine.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import seqio
import tensorflow as tf

from . import registry
from . import vocab

TASK_NAME = 'smoke_sentiment'
WORDS_TASK_NAME = 'smoke_sentiment_words'
TRANSFER_TASK_NAME = 'smoke_sentiment_transfer'
NP_TASK_NAME = 'smoke_sentiment_np'
MIXTURE_NAME = 'smoke_sentiment_mixture'
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
# The transfer task's adjectives (common in film reviews): training reviews use the first
# pair of lists, validation and test reviews only the second.
_TRAIN_BAD = ('lame', 'tedious', 'pointless', 'lousy', 'terrible', 'poor', 'bland', 'cheap',
              'dull', 'pathetic', 'flat', 'weak', 'awful', 'unfunny', 'ugly', 'dumb', 'boring')
_TRAIN_GOOD = ('excellent', 'warm', 'fascinating', 'entertaining', 'brilliant', 'moving',
               'lovely', 'perfect', 'clever', 'superb', 'impressive', 'great', 'enjoyable',
               'strong', 'solid', 'charming', 'fun', 'beautiful')
_HELD_OUT_BAD = ('tired', 'bad', 'mediocre', 'annoying', 'stupid', 'disappointing',
                 'predictable', 'silly', 'painful')
_HELD_OUT_GOOD = ('fresh', 'smart', 'delightful', 'funny', 'rich', 'wonderful', 'good',
                  'touching', 'remarkable', 'powerful')


def generate(split: str, labels: Sequence[str] = LABELS, *,
             held_out_words: bool = False) -> list[dict[str, Any]]:
  """The examples of `split`: dicts with `inputs` and `targets` text, and the raw `review`
  and `label` (class index).

  `held_out_words`: the transfer task's adjectives (validation and test never share
  one with training).
  """
  if split not in SPLIT_SIZES:
    raise ValueError(f'The smoke task has splits {sorted(SPLIT_SIZES)}, not {split!r}.')
  if not held_out_words:
    bad, good = _BAD, _GOOD
  elif split == 'train':
    bad, good = _TRAIN_BAD, _TRAIN_GOOD
  else:
    bad, good = _HELD_OUT_BAD, _HELD_OUT_GOOD
  rng = np.random.RandomState(_SPLIT_SEEDS[split])
  examples = []
  for _ in range(SPLIT_SIZES[split]):
    label = int(rng.randint(2))
    words = good if label else bad
    text = f'{_SUBJECTS[rng.randint(len(_SUBJECTS))]} was {words[rng.randint(len(words))]}'
    if rng.rand() < 0.5:
      text += f' and {_STAFF[rng.randint(len(_STAFF))]} {words[rng.randint(len(words))]}'
    examples.append({'inputs': f'review: {text}', 'targets': labels[label], 'review': text,
                     'label': label})
  return examples


def review_dataset(split: str, shuffle_files: bool = False, seed=None, *,
                   held_out_words: bool = False) -> tf.data.Dataset:
  """The reviews as raw fields {review, label (class index), idx}: what another task's
  format renders (`transfer.py` shows them to a model trained on SST-2)."""
  del shuffle_files, seed  # As `_dataset`.
  examples = generate(split, held_out_words=held_out_words)
  return tf.data.Dataset.from_tensor_slices({
      'review': [ex['review'] for ex in examples],
      'label': np.array([ex['label'] for ex in examples], np.int64),
      'idx': np.arange(len(examples), dtype=np.int32),
  })


def _dataset(split: str, shuffle_files: bool = False, seed=None, *,
             labels: Sequence[str] = LABELS, held_out_words: bool = False) -> tf.data.Dataset:
  del shuffle_files, seed  # One in-memory "file"; the task pipeline shuffles.
  examples = generate(split, labels, held_out_words=held_out_words)
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
             vocabulary: seqio.Vocabulary = VOCABULARY, *, held_out_words: bool = False) -> None:
  """Registers a smoke task with seqio (once per name)."""
  if name in seqio.TaskRegistry.names():
    return
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(
          functools.partial(_dataset, labels=tuple(labels), held_out_words=held_out_words),
          splits=tuple(SPLIT_SIZES),
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
register(TRANSFER_TASK_NAME, WORD_LABELS, vocab.TASK_VOCABULARY, held_out_words=True)
register(NP_TASK_NAME, ('n', 'p'))
if MIXTURE_NAME not in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.add(MIXTURE_NAME, [TASK_NAME, NP_TASK_NAME], default_rate=1.0)
