"""Predictions as jsonl, for a task split or for a jsonl file of raw inputs.

Each output line holds `index`, `input` (text), `prediction` (text) and
`score`: the summed log-probability of the decoded tokens ('decode'), or of
the chosen label ('rank_classification', which also writes `label_scores`).
Task examples also carry `target`; lines of an input file keep their other
fields.

An input file has one JSON object per line with the model input text under
`inputs` (or `input`), already in the task's text format (e.g.
`"sst2 sentence: a gripping film"`); it is tokenized with the task's input
vocabulary, EOS appended, and cut to the input feature length (counted).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import decoding
from prompt_tuning_jax import scoring

logger = logging.getLogger(__name__)

INPUT_KEYS = ('inputs', 'input')


def read_input_file(path: str) -> list[dict[str, Any]]:
  """Records of a jsonl file; each must have a string `inputs` (or `input`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'INFER_INPUT_FILE {path!r} does not exist.')
  records = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{number}: not valid JSON: {e}') from e
      if not isinstance(record, dict) or not any(
          isinstance(record.get(k), str) for k in INPUT_KEYS):
        raise ValueError(f'{path}:{number}: expected an object with a string "inputs" field.')
      records.append(record)
  return records


def examples_from_records(records: Sequence[Mapping[str, Any]], vocabulary: seqio.Vocabulary,
                          input_length: int) -> tuple[list[dict[str, Any]], int]:
  """Tokenized examples (+EOS, cut to `input_length`) and how many were cut."""
  examples, truncated = [], 0
  for record in records:
    text = next(record[k] for k in INPUT_KEYS if isinstance(record.get(k), str))
    tokens = list(vocabulary.encode(text)) + [vocabulary.eos_id]
    if len(tokens) > input_length:
      truncated += 1
      tokens = tokens[:input_length - 1] + [vocabulary.eos_id]
    extra = {k: v for k, v in record.items() if k not in INPUT_KEYS}
    examples.append({'input': text, 'tokens': tokens, 'extra': extra})
  return examples, truncated


def examples_from_task(task_name: str, split: str, lengths: Mapping[str, int],
                       num_examples: Optional[int] = None) -> list[dict[str, Any]]:
  """The split's examples in order, with their text (trimmed as seqio trims)."""
  task = data_lib.get_mixture_or_task(task_name)
  ds = task.get_dataset(dict(lengths), split=split, shuffle=False, num_epochs=1)
  if num_examples:
    ds = ds.take(num_examples)
  examples = []
  for ex in ds.as_numpy_iterator():
    vocab = task.output_features['inputs'].vocabulary
    text = ex.get('inputs_pretokenized')
    text = text.decode('utf-8') if text is not None else vocab.decode(ex['inputs'].tolist())
    target = ex.get('targets_pretokenized')
    examples.append({'input': text, 'tokens': ex['inputs'].tolist(),
                     'extra': {} if target is None else {'target': target.decode('utf-8')}})
  return examples


def _padded(examples: Sequence[dict[str, Any]], batch_size: int, length: int
            ) -> Iterator[tuple[int, np.ndarray]]:
  for start in range(0, len(examples), batch_size):
    tokens = np.zeros((batch_size, length), np.int32)
    chunk = examples[start:start + batch_size]
    for row, ex in enumerate(chunk):
      tokens[row, :len(ex['tokens'])] = ex['tokens']
    yield start, tokens


def predict(model, params, examples: Sequence[dict[str, Any]], vocabulary: seqio.Vocabulary, *,
            input_length: int, max_decode_length: int, batch_size: int,
            method: str = 'decode', decoder: str = 'greedy', beam_size: int = 4,
            alpha: float = 0.6, label_words: Optional[Sequence[str]] = None
            ) -> list[dict[str, Any]]:
  """One output record per example (see the module docstring)."""
  if method == 'rank_classification':
    if not label_words:
      raise ValueError('INFER_METHOD=rank_classification needs label words: the task has '
                       'none, set CLASS_LABELS.')
    label_ids = jnp.asarray(scoring.encode_labels(vocabulary, label_words))
  elif method != 'decode':
    raise ValueError(f"INFER_METHOD must be 'decode' or 'rank_classification', got {method!r}.")
  records = []
  for start, tokens in _padded(examples, batch_size, input_length):
    tokens = jnp.asarray(tokens)
    n = min(batch_size, len(examples) - start)
    if method == 'rank_classification':
      best, scores = jax.device_get(scoring.jit_rank_classify(model, params, tokens, label_ids))
      outputs = [{'prediction': label_words[b], 'score': float(s[b]),
                  'label_scores': {w: float(v) for w, v in zip(label_words, s)}}
                 for b, s in zip(best[:n], scores[:n])]
    else:
      if decoder == 'beam':
        predicted, scores = decoding.jit_beam_search(
            model, params, tokens, beam_size=beam_size, max_decode_length=max_decode_length,
            alpha=alpha)
      else:
        predicted, scores = decoding.jit_greedy_decode(
            model, params, tokens, max_decode_length=max_decode_length)
      predicted, scores = jax.device_get((predicted, scores))
      outputs = [{'prediction': vocabulary.decode([int(t) for t in row if t != 0]),
                  'score': float(score)} for row, score in zip(predicted[:n], scores[:n])]
    for offset, output in enumerate(outputs):
      ex = examples[start + offset]
      records.append({'index': start + offset, 'input': ex['input'], **output, **ex['extra']})
  return records


def write_jsonl(path: str, records: Sequence[Mapping[str, Any]]) -> None:
  """Writes records, one JSON object a line (via a temp file, renamed when complete)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + '\n')
  os.replace(tmp, path)
