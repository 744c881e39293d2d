"""Predictions for examples: a task split or jsonl lines, one prompt or one per example.

`Example` is the one example type: input text, its tokens, the fields copied
to the output, its task and, in mixed-task inference, the name of its prompt.
`predict` turns examples into output records, one model call per padded batch
(`padded_batches`). Each record holds `index`, `input` (text), `prediction`
(text) and `score`: the summed log-probability of the decoded tokens
('decode'), or of the chosen label ('rank_classification', which also writes
`label_scores`). Task examples also carry `target`; lines of an input file
keep their other fields; with a prompt bank, `prompt` names the prompt used.

An input file has one JSON object per line with the model input text under
`inputs` (or `input`), already in the task's text format (e.g.
`"sst2 sentence: a gripping film"`); it is tokenized with the task's input
vocabulary, EOS appended, and cut to the input feature length (counted). A line may
name its task (`task`): its examples then carry that task's TASK_INDEX (`MethodInputs`:
what selects a multi-task prompt). For mixed-task inference each line names its prompt
(`prompt` or `task`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import seqio

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import decoding
from prompt_tuning_jax import scoring
from prompt_tuning_jax import storage
from prompt_tuning_jax.errors import DataError, UsageError
from prompt_tuning_jax.many_prompts import mixed
from prompt_tuning_jax.many_prompts.bank import PromptBank
from prompt_tuning_jax.methods import MethodInputs
from prompt_tuning_jax.settings import DECODE, GREEDY, RANK_CLASSIFICATION
from prompt_tuning_jax.tasks import sources

logger = logging.getLogger('prompt_tuning_jax')

INPUT_KEYS = ('inputs', 'input')
PROMPT_KEYS = ('prompt', 'task')  # the field of an input line naming its prompt
TASK_KEY = 'task'  # the field of an input line naming its task
LabelWords = Union[Sequence[str], Mapping[str, Sequence[str]]]


@dataclasses.dataclass(frozen=True)
class Example:
  """One model input: its text, tokens (with EOS), the fields copied to the output, its prompt."""
  input: str
  tokens: Sequence[int]
  extra: Mapping[str, Any]
  # The prompt bank entry this example uses (mixed-task inference); None: the model's.
  prompt: Optional[str] = None
  # The task it is an example of (its TASK_INDEX selects task-specific parameters); None: not
  # named (`resolve_tasks`).
  task: Optional[str] = None


def read_input_file(path: str) -> list[dict[str, Any]]:
  """Records of a jsonl file; each must have a string `inputs` (or `input`)."""
  if not os.path.isfile(path):
    raise DataError(f'Input file {path!r} does not exist.')
  records = []
  for number, record in sources.read_jsonl(pathlib.Path(path)):
    if not any(isinstance(record.get(k), str) for k in INPUT_KEYS):
      raise DataError(f'{path}:{number}: expected an object with a string "inputs" field.')
    records.append(record)
  return records


def _field(record: Mapping[str, Any], keys: Sequence[str]) -> Optional[str]:
  return next((record[k] for k in keys if isinstance(record.get(k), str)), None)


def examples_from_records(records: Sequence[Mapping[str, Any]], vocabulary: seqio.Vocabulary,
                          input_length: int, *, named_prompts: bool = False
                          ) -> tuple[list[Example], int]:
  """Tokenized examples (+EOS, cut to `input_length`) and how many were cut.

  With `named_prompts` each record must name its prompt (`prompt` or `task`).
  """
  examples, truncated = [], 0
  for number, record in enumerate(records, 1):
    text = _field(record, INPUT_KEYS)
    prompt = _field(record, PROMPT_KEYS) if named_prompts else None
    if named_prompts and prompt is None:
      raise DataError(f'Record {number} names no prompt: give each line a "prompt" (or "task") '
                      'field naming one of the --prompt entries.')
    tokens = list(vocabulary.encode(text)) + [vocabulary.eos_id]
    if len(tokens) > input_length:
      truncated += 1
      tokens = tokens[:input_length - 1] + [vocabulary.eos_id]
    dropped = INPUT_KEYS + (PROMPT_KEYS if named_prompts else ())
    extra = {k: v for k, v in record.items() if k not in dropped}
    task = None if named_prompts else _field(record, (TASK_KEY,))
    examples.append(Example(text, tokens, extra, prompt, task))
  return examples, truncated


def resolve_tasks(examples: Sequence[Example], task_index: Mapping[str, int], *,
                  required: bool, source: str) -> list[Example]:
  """The examples, each with its task: the one it names, else the run's only task.

  `task_index` holds the run's tasks. An example naming another task is refused; so is one
  naming none in a run of several tasks when the model needs each example's task
  (`required`: its method has task-specific parameters), else it gets the first.
  """
  tasks = list(task_index)
  out = []
  for number, ex in enumerate(examples, 1):
    if ex.task is not None and ex.task not in task_index:
      raise DataError(f'{source}:{number}: "task" {ex.task!r} is not a task of the run; its '
                      f'tasks are {tasks}.')
    if ex.task is None and len(tasks) > 1 and required:
      raise DataError(f'{source}:{number}: names no "task": the model selects each example\'s '
                      f'parameters by its task; name one of {tasks}.')
    out.append(ex if ex.task is not None else dataclasses.replace(ex, task=tasks[0]))
  return out


def examples_from_task(task_name: str, split: str, lengths: Mapping[str, int],
                       num_examples: Optional[int] = None) -> tuple[list[Example], int]:
  """The split's examples in order, each with its text (trimmed as seqio trims) and task, and
  how many inputs were cut. A mixture's come task by task (the first `num_examples` of each
  task that has the split)."""
  tasks = data_lib.sub_tasks(task_name)
  if len(tasks) > 1:
    tasks = [task for task in tasks if split in task.splits]
  examples, truncated = [], 0
  for task in tasks:
    ds = data_lib.examples_with_flags(task.name, split, lengths, num_examples)
    vocab = task.output_features['inputs'].vocabulary
    for ex in ds.as_numpy_iterator():
      truncated += int(ex[data_lib.TRUNCATED][0])
      text = ex.get('inputs_pretokenized')
      text = text.decode('utf-8') if text is not None else vocab.decode(ex['inputs'].tolist())
      target = ex.get('targets_pretokenized')
      examples.append(Example(text, ex['inputs'].tolist(),
                              {} if target is None else {'target': target.decode('utf-8')},
                              task=task.name))
  return examples, truncated


def log_truncated(truncated: int, examples: int, input_length: int) -> None:
  """The warning for inputs cut to the input feature length (none when none was)."""
  if truncated:
    logger.warning('%d of %d inputs were longer than %d tokens (TASK_FEATURE_LENGTHS) and were '
                   'truncated.', truncated, examples, input_length)


def padded_batches(examples: Sequence[Example], batch_size: int, length: int,
                   buckets: Optional[Sequence[int]] = None
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(rows [n], tokens [batch_size, L] int32): examples[rows], zero-padded to a full batch.

  Without `buckets` the examples come in order and L = `length`; with input
  length buckets they come in order of length and L is the smallest bucket
  that holds the batch.
  """
  lengths = np.array([len(ex.tokens) for ex in examples], np.int64)
  order = np.argsort(lengths, kind='stable') if buckets else np.arange(len(examples))
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    width = data_lib.bucket_for(int(lengths[rows].max()), buckets) if buckets else length
    tokens = np.zeros((batch_size, width), np.int32)
    for row, i in enumerate(rows):
      tokens[row, :len(examples[i].tokens)] = examples[i].tokens
    yield rows, tokens


def predict(model, params, examples: Sequence[Example], vocabulary: seqio.Vocabulary, *,
            input_length: int, max_decode_length: int, batch_size: int,
            method: str = DECODE, decoder: str = GREEDY, beam_size: int = 4,
            alpha: float = 0.6, label_words: Optional[LabelWords] = None,
            bank: Optional[PromptBank] = None,
            length_buckets: Optional[Sequence[int]] = None,
            task_index: Optional[Mapping[str, int]] = None) -> list[dict[str, Any]]:
  """One output record per example, in the examples' order (see the module docstring).

  With `length_buckets` (of the inputs) the batches are formed by length.
  With a `bank` (mixed-task inference), example i uses the bank's prompt
  `examples[i].prompt` and every batch is one model call whatever its mix
  (greedy decoding); `label_words` may then map each prompt name to its own
  labels. Without one, the model's learned parameters serve every example, and with
  `task_index` ({task: TASK_INDEX}) each example gets its task's index (`resolve_tasks`).
  """
  for number, ex in enumerate(examples if bank is not None else (), 1):
    if ex.prompt not in bank:
      raise DataError(f'Input {number} names prompt {ex.prompt!r}; the --prompt entries are '
                      f'{list(bank.names)}.')
  ranker = None
  if method == RANK_CLASSIFICATION:
    ranker = _Ranker(vocabulary, label_words, {ex.prompt for ex in examples})
  records: list[Optional[dict[str, Any]]] = [None] * len(examples)
  for rows, tokens in padded_batches(examples, batch_size, input_length, length_buckets):
    batch, n = [examples[i] for i in rows], len(rows)
    names = [ex.prompt for ex in batch] + [batch[0].prompt] * (batch_size - n)
    inputs = MethodInputs()
    if task_index is not None and bank is None:
      tasks = [task_index[ex.task] for ex in batch]
      inputs = MethodInputs(task_index=jnp.asarray(tasks + tasks[:1] * (batch_size - n),
                                                   jnp.int32))
    if ranker is not None:
      outputs = ranker(model, params, tokens, names, bank, inputs)[:n]
    else:
      if bank is None:
        predicted, scores = decoding.jit_decode(
            model, params, jnp.asarray(tokens), max_decode_length=max_decode_length,
            decoder=decoder, beam_size=beam_size, alpha=alpha, method_inputs=inputs)
      else:
        predicted, scores = mixed.mixed_greedy_decode(model, params, bank, names, tokens,
                                                      max_decode_length=max_decode_length)
      predicted, scores = jax.device_get((predicted, scores))
      outputs = [{'prediction': vocabulary.decode([int(t) for t in row if t != 0]),
                  'score': float(score)} for row, score in zip(predicted[:n], scores[:n])]
    for i, ex, output in zip(rows, batch, outputs):
      named = {} if ex.prompt is None else {'prompt': ex.prompt}
      records[i] = {'index': int(i), 'input': ex.input, **named, **output, **ex.extra}
  return records


class _Ranker:
  """Rank classification of padded batches: each example among its prompt's label words."""

  def __init__(self, vocabulary: seqio.Vocabulary, label_words: Optional[LabelWords],
               prompts: set[Optional[str]]):
    if isinstance(label_words, Mapping):
      missing = sorted(p for p in prompts if not label_words.get(p))
      if missing:
        raise UsageError(f'Rank classification needs label words for prompt(s) {missing}.')
      self.words = {p: list(label_words[p]) for p in prompts}
    elif label_words:
      self.words = {p: list(label_words) for p in prompts}
    else:
      raise UsageError('Rank classification needs label words: the task has none, set '
                       'CLASS_LABELS.')
    self.label_ids = {p: scoring.encode_labels(vocabulary, w) for p, w in self.words.items()}

  def __call__(self, model, params, tokens: np.ndarray, names: Sequence[Optional[str]],
               bank: Optional[PromptBank], inputs: MethodInputs) -> list[dict[str, Any]]:
    if bank is None:
      (label_ids,) = self.label_ids.values()
      best, scores = jax.device_get(scoring.jit_rank_classify(
          model, params, jnp.asarray(tokens), jnp.asarray(label_ids), method_inputs=inputs))
    else:
      best, scores = mixed.mixed_rank_classify(model, params, bank, names, tokens,
                                               self.label_ids)
    outputs = []
    for name, b, row in zip(names, best, scores):
      words = self.words[name]
      outputs.append({'prediction': words[b], 'score': float(row[b]),
                      'label_scores': {w: float(v) for w, v in zip(words, row)}})
    return outputs


def write_jsonl(path: str, records: Sequence[Mapping[str, Any]]) -> None:
  """Writes records, one JSON object a line, at once (local or gs://; `storage.write`)."""
  storage.write(path, ''.join(json.dumps(record, ensure_ascii=False) + '\n'
                              for record in records).encode())
