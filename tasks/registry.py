"""Registering task families with seqio, and what other modules ask of them.

`register` adds a task in its variants: `<name>` (task word first, T5 style),
`taskless_<name>` (no task word) and, for classification, `<name>_rank` and
`taskless_<name>_rank` (rank classification: each label word is scored, for
evaluation). `label_words(name)` answers for all of them without reading data.
`add_classification_task` registers a user's own jsonl/tsv classification
task in a few lines.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from . import formats
from . import metrics
from . import postprocessors
from . import preprocessors
from . import sources
from . import vocab

TASKLESS_PREFIX = 'taskless_'
RANK_SUFFIX = '_rank'
# Examples-proportional mixing limit (T5's K). No GLUE/SuperGLUE training set
# reaches it, so the mixtures' rates are T5's.
MIXTURE_CAP = 2**19


def capped_rate(num_examples: int, cap: int = MIXTURE_CAP) -> float:
  """Examples-proportional mixing rate: the size, at most `cap`."""
  return float(min(num_examples, cap))


@dataclasses.dataclass(frozen=True)
class TaskFormat:
  """How a task is shown to the model and scored.

  `format_fn(example, prefix)` makes inputs/targets; `prefix` is the task
  word (None in the taskless variants). `preprocessors` are tf steps run after
  formatting (e.g. one example per ReCoRD answer).
  """
  format_fn: Callable[..., formats.Formatted]
  prefix: str
  postprocess_fn: Optional[Callable[..., Any]] = None
  metric_fns: Sequence[metrics.MetricFn] = ()
  label_words: Optional[Sequence[str]] = None
  preprocessors: Sequence[Callable[..., tf.data.Dataset]] = ()


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """What is known about a registered task without reading its data."""
  name: str
  label_words: Optional[tuple[str, ...]]
  postprocess_fn: Optional[Callable[..., Any]]
  benchmark_task: Optional[str]  # SuperGLUE task key (submission files).
  rank: bool


_TASKS: dict[str, TaskInfo] = {}


def task_info(task_name: str) -> TaskInfo:
  """The `TaskInfo` of a task registered here (KeyError otherwise)."""
  if task_name not in _TASKS:
    raise KeyError(f'{task_name!r} is not a task of prompt_tuning_jax.tasks')
  return _TASKS[task_name]


def registered_tasks() -> list[str]:
  """Names of all tasks registered here, sorted."""
  return sorted(_TASKS)


def label_words(task_name: str) -> Optional[list[str]]:
  """The label words of a classification task, in class-index order.

  None for a task or mixture without label words (ReCoRD, STS-B, WSC simple,
  tasks registered elsewhere); KeyError for a name seqio does not know.
  """
  if task_name in _TASKS:
    words = _TASKS[task_name].label_words
    return list(words) if words else None
  if (task_name in seqio.TaskRegistry.names()
      or task_name in seqio.MixtureRegistry.names()):
    return None
  raise KeyError(f'unknown task or mixture {task_name!r}')


def _add_task(name: str, source: seqio.DataSource, task_format: TaskFormat,
              prefix: Optional[str], benchmark_task: Optional[str],
              rank: bool) -> None:
  """Registers one variant with seqio and records its `TaskInfo`."""
  steps = [functools.partial(
      preprocessors.text_to_text,
      format_fn=functools.partial(task_format.format_fn, prefix=prefix))]
  steps.extend(task_format.preprocessors)
  postprocess_fn = task_format.postprocess_fn
  metric_fns = list(task_format.metric_fns)
  if rank:
    steps.append(functools.partial(preprocessors.rank_candidates,
                                   label_words=task_format.label_words))
    postprocess_fn = functools.partial(
        postprocessors.rank_target, label_words=task_format.label_words,
        base=task_format.postprocess_fn)
    metric_fns = [metrics.RankClassification(metric_fns)]
  steps += [seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim]
  seqio.TaskRegistry.add(
      name, source=source, preprocessors=steps,
      output_features=vocab.output_features(),
      postprocess_fn=postprocess_fn, metric_fns=metric_fns)
  words = tuple(task_format.label_words) if task_format.label_words else None
  record_task(TaskInfo(name, words, task_format.postprocess_fn, benchmark_task, rank))


def record_task(info: TaskInfo) -> None:
  """Records what other modules ask of a task registered with seqio (`label_words`, ...)."""
  _TASKS[info.name] = info


def register(name: str, source: seqio.DataSource, task_format: TaskFormat, *,
             benchmark_task: Optional[str] = None) -> list[str]:
  """Registers `name` and its variants; returns the names registered.

  A format without a task word (`prefix` empty) has no taskless variant.
  """
  variants = [(name, task_format.prefix)]
  if task_format.prefix:
    variants.append((TASKLESS_PREFIX + name, None))
  ranks = (False, True) if task_format.label_words else (False,)
  names = []
  for variant, prefix in variants:
    for rank in ranks:
      full_name = variant + (RANK_SUFFIX if rank else '')
      _add_task(full_name, source, task_format, prefix, benchmark_task, rank)
      names.append(full_name)
  return names


# ------------------------------------------------------ users' own tasks


def _text_field_spec(text_fields: Sequence[str]) -> dict[str, tf.TensorSpec]:
  return {field: tf.TensorSpec([], tf.string) for field in text_fields}


def add_classification_task(
    name: str,
    files: Mapping[str, str | os.PathLike],
    *,
    text_fields: Sequence[str],
    label_words: Sequence[str],
    label_field: str = 'label',
    prefix: Optional[str] = None,
    metric_fns: Sequence[metrics.MetricFn] = (metrics.accuracy,),
) -> list[str]:
  """Registers a classification task read from local jsonl or tsv files.

  Args:
    name: seqio name; variants `taskless_<name>`, `<name>_rank` and
      `taskless_<name>_rank` are registered too.
    files: split -> file; `.tsv` files (with a header row) are read as TSV,
      anything else as jsonl.
    text_fields: the fields shown to the model, in this order:
      '<prefix> <field>: <value> ...'.
    label_words: target words, in class-index order.
    label_field: the field holding the label: a label word, a class index
      (e.g. `0`/`1`) or a boolean; absent or empty means unlabeled.
    prefix: the task word that starts the inputs (default: `name`).
    metric_fns: seqio metric functions over class indices.

  Returns:
    The registered task names.
  """
  paths = {split: Path(path) for split, path in files.items()}
  words = tuple(label_words)
  fields = tuple(text_fields)

  def convert(row: dict[str, Any], position: int) -> list[dict[str, Any]]:
    example = {field: str(row[field]) for field in fields}
    example['idx'] = int(row.get('idx', position))
    example['label'] = sources.label_index(row.get(label_field), words)
    return [example]

  signature = {**_text_field_spec(fields),
               'idx': tf.TensorSpec([], tf.int32),
               'label': tf.TensorSpec([], tf.int64)}
  source = sources.LocalSource(
      tuple(paths), paths.__getitem__,
      sources.FileFormat(functools.partial(sources.read_rows, required=fields), convert,
                         signature))
  task_format = TaskFormat(
      format_fn=functools.partial(formats.classification, fields=fields,
                                  label_words=words),
      prefix=prefix or name,
      postprocess_fn=functools.partial(postprocessors.classification,
                                       label_words=words),
      metric_fns=metric_fns,
      label_words=words)
  return register(name, source, task_format)
