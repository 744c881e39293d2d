"""tf.data steps of the tasks: python formats applied to tf examples, and the
example expansions of ReCoRD, WSC and rank classification.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from . import formats

# Fields kept from the raw example next to `inputs` and `targets`.
PASSTHROUGH = ('idx', 'label', 'answers')


def flatten(ex: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested fields as 'outer/inner' keys, e.g. {'idx': {'question': 3}} ->
  {'idx/question': 3}."""
  flat = {}
  for key, value in ex.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, f'{name}/'))
    else:
      flat[name] = value
  return flat


def to_python(value: Any) -> Any:
  """A numpy value of a tf example as python: str, int, float or list of str."""
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, np.ndarray) and value.ndim == 1:
    return [to_python(item) for item in value.tolist()]
  if isinstance(value, (np.ndarray, np.generic)):
    return value.item()
  return value


def text_to_text(dataset: tf.data.Dataset, *,
                 format_fn: Callable[[dict[str, Any]], formats.Formatted]
                 ) -> tf.data.Dataset:
  """Adds `inputs` and `targets` made by the python `format_fn`.

  Keeps the `PASSTHROUGH` fields (nested ones flattened, e.g. `idx/query`),
  which the postprocessors and metrics read.
  """

  def format_strings(keys, *values):
    ex = {key: to_python(value) for key, value in zip(keys, values)}
    formatted = format_fn(ex)
    return (np.array(formatted['inputs'].encode('utf-8'), dtype=object),
            np.array(formatted['targets'].encode('utf-8'), dtype=object))

  def apply(ex):
    flat = flatten(ex)
    keys = sorted(flat)
    inputs, targets = tf.numpy_function(
        lambda *values: format_strings(keys, *values),
        [flat[key] for key in keys], [tf.string, tf.string], stateful=False)
    inputs.set_shape([])
    targets.set_shape([])
    kept = {key: value for key, value in flat.items()
            if key.split('/')[0] in PASSTHROUGH}
    return {'inputs': inputs, 'targets': targets, **kept}

  return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def _repeat_fields(ex: Mapping[str, tf.Tensor], n) -> dict[str, tf.Tensor]:
  """Every field of `ex` stacked `n` times along a new first axis."""
  return {key: tf.repeat(value[tf.newaxis], n, axis=0)
          for key, value in ex.items()}


def one_example_per_answer(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD: one example per gold answer (target = that answer), as in T5.

  An example without answers (test) stays once, with target '<unk>'.
  """

  def expand(ex):
    answers = ex['answers']
    targets = tf.cond(tf.size(answers) > 0, lambda: answers,
                      lambda: tf.constant([formats.UNLABELED]))
    copies = _repeat_fields(ex, tf.size(targets))
    copies['targets'] = targets
    return tf.data.Dataset.from_tensor_slices(copies)

  return dataset.flat_map(expand)


def keep_correct_referents(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """WSC simple training: only examples whose candidate is the referent."""
  return dataset.filter(lambda ex: tf.equal(ex['label'], 1))


def rank_candidates(dataset: tf.data.Dataset, *,
                    label_words: Sequence[str]) -> tf.data.Dataset:
  """Rank classification: one example per label word (target = that word).

  Adds `rank_candidate` (the word's class index); the scoring metric picks
  the best-scored candidate of each example.
  """
  words = tf.constant(list(label_words))
  count = len(label_words)

  def expand(ex):
    copies = _repeat_fields(ex, count)
    copies['targets'] = words
    copies['rank_candidate'] = tf.range(count, dtype=tf.int32)
    return tf.data.Dataset.from_tensor_slices(copies)

  return dataset.flat_map(expand)
