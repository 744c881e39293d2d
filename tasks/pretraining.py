"""Pre-training objectives over local text, as seqio tasks (no labels are used).

- `pretrain_span_corruption`: T5's span corruption (noise density 0.15, mean
  span length 3): the input keeps the text with every noise span replaced by a
  sentinel (`<extra_id_0>`, `<extra_id_1>`, ... in order); the target lists each
  sentinel followed by the tokens it hid. Interleaving the two gives the text
  back.
- `pretrain_prefix_lm`: "LM adaptation" (the paper's §3.2): a random split
  point; the input is the prefix, the target the continuation.

The corpus is a list of text files (`pretraining_corpus.files`, or the
`PTJ_CORPUS` environment variable, comma-separated): `.txt`/`.txt.gz` with
one paragraph a line, or `FILE::FIELD` for the text of a task's train split
(see `vocab.read_text_lines`). Lines are cut into pieces of at most
`MAX_WORDS_PER_PIECE` words and shuffled with a fixed seed (the shared corpus
is grouped by source), tokenized, concatenated and cut into
chunks of a fixed number of tokens, so every example fills its feature
lengths and no padding is paid (no packing needed). `validation` is a fixed
held-out set of lines (`VALIDATION_LINES`), never used for training.

The vocabulary is the tasks' vocabulary (`vocab.get_vocabulary`, set by the
model's gin file); sentinels are its extra ids, `<extra_id_0>` being the
highest id.
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf

from .sources import TaskDataError
from .vocab import TASK_VOCABULARY
from .vocab import read_text_lines

SPAN_CORRUPTION_TASK = 'pretrain_span_corruption'
PREFIX_LM_TASK = 'pretrain_prefix_lm'
CORPUS_ENV = 'PTJ_CORPUS'
VALIDATION_LINES = 2000
# Longer lines are cut into pieces of at most this many words before the shuffle, so
# that one huge line (the shared corpus has an index of 187k words on one line)
# cannot fill hundreds of consecutive batches.
MAX_WORDS_PER_PIECE = 256
NOISE_DENSITY = 0.15
MEAN_NOISE_SPAN_LENGTH = 3.0


# ------------------------------------------------------------ the objectives (numpy)


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator
                        ) -> np.ndarray:
  """Lengths of `num_segments` non-empty segments that sum to `num_items`, at random."""
  cuts = np.sort(rng.choice(np.arange(1, num_items), num_segments - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


def noise_span_lengths(length: int, rng: np.random.Generator,
                       noise_density: float = NOISE_DENSITY,
                       mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(kept lengths, noise lengths): alternating spans, a kept one first, T5's counts.

  round(length * density) noise tokens in round(noise / mean span) spans, at
  least one token and one span of each kind.
  """
  num_noise = int(np.clip(round(length * noise_density), 1, length - 1))
  num_spans = int(np.clip(round(num_noise / mean_noise_span_length), 1,
                          min(num_noise, length - num_noise)))
  return (random_segmentation(length - num_noise, num_spans, rng),
          random_segmentation(num_noise, num_spans, rng))


def span_corruption(tokens: np.ndarray, sentinel_ids: np.ndarray, rng: np.random.Generator,
                    noise_density: float = NOISE_DENSITY,
                    mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of T5's span corruption; sentinel i is `sentinel_ids[i]`."""
  tokens = np.asarray(tokens)
  kept, noise = noise_span_lengths(len(tokens), rng, noise_density, mean_noise_span_length)
  if len(kept) > len(sentinel_ids):
    raise ValueError(f'{len(kept)} noise spans but only {len(sentinel_ids)} sentinels.')
  inputs, targets, start = [], [], 0
  for i, (k, n) in enumerate(zip(kept, noise)):
    inputs += [tokens[start:start + k], sentinel_ids[i:i + 1]]
    targets += [sentinel_ids[i:i + 1], tokens[start + k:start + k + n]]
    start += k + n
  return np.concatenate(inputs), np.concatenate(targets)


def prefix_lm(tokens: np.ndarray, rng: np.random.Generator, max_inputs: int,
              max_targets: int) -> tuple[np.ndarray, np.ndarray]:
  """(prefix, continuation): a split point uniform in [1, min(len, max_inputs + 1) - 1].

  The continuation is cut to `max_targets` tokens.
  """
  tokens = np.asarray(tokens)
  split = int(rng.integers(1, min(len(tokens), max_inputs + 1)))
  return tokens[:split], tokens[split:split + max_targets]


def reconstruct(inputs: Sequence[int], targets: Sequence[int], sentinel_ids: Sequence[int]
                ) -> list[int]:
  """The text span corruption started from: each input sentinel replaced by its span."""
  sentinels = set(int(s) for s in sentinel_ids)
  spans, current = {}, None
  for t in targets:
    if int(t) in sentinels:
      current = int(t)
      spans[current] = []
    elif current is not None:
      spans[current].append(int(t))
  out = []
  for t in inputs:
    out.extend(spans.get(int(t), []) if int(t) in sentinels else [int(t)])
  return out


# ------------------------------------------------------------ lengths


def span_corruption_raw_length(inputs_length: int, noise_density: float = NOISE_DENSITY,
                               mean_noise_span_length: float = MEAN_NOISE_SPAN_LENGTH
                               ) -> tuple[int, int]:
  """(raw tokens per chunk, targets length): the longest chunk whose inputs + EOS fit."""
  def lengths(raw):
    noise = int(round(raw * noise_density))
    spans = max(1, int(round(noise / mean_noise_span_length)))
    return raw - noise + spans + 1, noise + spans + 1
  raw = inputs_length
  while lengths(raw + 1)[0] <= inputs_length:
    raw += 1
  return raw, lengths(raw)[1]


# ------------------------------------------------------------ the corpus


@gin.configurable
def pretraining_corpus(files: Optional[Sequence[str]] = None) -> list[str]:
  """The corpus files: the gin binding, else `$PTJ_CORPUS` (comma-separated)."""
  if files:
    return list(files)
  env = os.environ.get(CORPUS_ENV)
  if env:
    return [f for f in env.split(',') if f]
  raise TaskDataError(f'no pre-training corpus is set: bind pretraining_corpus.files or set '
                      f'{CORPUS_ENV} (text files, one paragraph a line).')


def split_long_line(line: str) -> list[str]:
  """A corpus line cut into pieces of at most MAX_WORDS_PER_PIECE words."""
  words = line.split(' ')
  if len(words) <= MAX_WORDS_PER_PIECE:
    return [line]
  return [' '.join(words[i:i + MAX_WORDS_PER_PIECE])
          for i in range(0, len(words), MAX_WORDS_PER_PIECE)]


@functools.lru_cache(maxsize=4)
def _shuffled_lines(files: tuple[str, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(train lines, validation lines): every file's lines, cut to pieces, shuffled with `seed`."""
  lines = np.array([piece for spec in files for line in read_text_lines(spec)
                    for piece in split_long_line(line)], dtype=object)
  order = np.random.RandomState(seed).permutation(len(lines))
  if len(lines) <= 2 * VALIDATION_LINES:
    held_out = max(1, len(lines) // 10)
  else:
    held_out = VALIDATION_LINES
  return lines[order[held_out:]], lines[order[:held_out]]


def _text_dataset(split: str, shuffle_files: bool = False, seed=None) -> tf.data.Dataset:
  del shuffle_files, seed  # Lines are shuffled once, with a fixed seed; seqio shuffles after.
  train, validation = _shuffled_lines(tuple(pretraining_corpus()))
  lines = {'train': train, 'validation': validation}[split]
  return tf.data.Dataset.from_tensor_slices({'text': [s.encode('utf-8') for s in lines]})


def _chunk_tokens(dataset: tf.data.Dataset, chunk_length: int) -> tf.data.Dataset:
  """Concatenates the tokenized lines and cuts them into `chunk_length`-token chunks."""
  tokens = dataset.map(lambda ex: ex['targets']).unbatch()
  return tokens.batch(chunk_length, drop_remainder=True).map(lambda t: {'targets': t})


def _numpy_objective(fn):
  """Runs `fn(tokens, rng) -> (inputs, targets)` per example with a seqio-provided seed."""
  @seqio.map_over_dataset(num_seeds=1)
  def apply(example, seed):
    def run(tokens, seed_value):
      rng = np.random.default_rng((np.asarray(seed_value).astype(np.int64) % 2**32).tolist())
      return tuple(np.asarray(x, np.int32) for x in fn(tokens, rng))
    inputs, targets = tf.numpy_function(run, [example['targets'], seed],
                                        [tf.int32, tf.int32], stateful=False)
    return {'inputs': tf.ensure_shape(inputs, [None]),
            'targets': tf.ensure_shape(targets, [None])}
  return apply


def _span_corruption_preprocessor(dataset, sequence_length, output_features):
  vocab = output_features['targets'].vocabulary
  raw, _ = span_corruption_raw_length(sequence_length['inputs'])
  sentinels = vocab.vocab_size - 1 - np.arange(vocab.extra_ids)
  dataset = _chunk_tokens(dataset, raw)
  return _numpy_objective(lambda t, rng: span_corruption(t, sentinels, rng))(dataset)


def _prefix_lm_preprocessor(dataset, sequence_length, output_features):
  del output_features
  max_inputs, max_targets = sequence_length['inputs'] - 1, sequence_length['targets'] - 1
  dataset = _chunk_tokens(dataset, max_inputs + max_targets)
  return _numpy_objective(lambda t, rng: prefix_lm(t, rng, max_inputs, max_targets))(dataset)


def _features() -> dict[str, seqio.Feature]:
  return {'inputs': seqio.Feature(TASK_VOCABULARY, add_eos=True),
          'targets': seqio.Feature(TASK_VOCABULARY, add_eos=True)}


def register() -> None:
  """Registers both objectives (once)."""
  objectives = {SPAN_CORRUPTION_TASK: _span_corruption_preprocessor,
                PREFIX_LM_TASK: _prefix_lm_preprocessor}
  for name, objective in objectives.items():
    if name in seqio.TaskRegistry.names():
      continue
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(_text_dataset, splits=('train', 'validation')),
        preprocessors=[
            functools.partial(seqio.preprocessors.rekey, key_map={'targets': 'text'}),
            seqio.preprocessors.tokenize,
            objective,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=_features(),
        metric_fns=[])


register()
