"""SuperGLUE leaderboard files: one `<Task>.jsonl` per task.

Each line is `{"idx": ..., "label": ...}` with the leaderboard's label
spelling (BoolQ/WiC `true`/`false`, WSC `True`/`False`, COPA 0/1, CB/RTE/AX
label words, ReCoRD the answer text); MultiRC nests its answers per passage
and question. Rows are made from a task's test-split examples (as seqio gives
them, e.g. `task.get_dataset(...).as_numpy_iterator()`) and the decoded
predictions, in the same order.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import postprocessors
from . import registry

FILE_NAMES = {
    'boolq': 'BoolQ', 'cb': 'CB', 'copa': 'COPA', 'multirc': 'MultiRC',
    'record': 'ReCoRD', 'rte': 'RTE', 'wic': 'WiC', 'wsc': 'WSC',
    'axb': 'AX-b', 'axg': 'AX-g',
}
# Leaderboard spelling of each class index.
LABELS = {
    'boolq': ('false', 'true'),
    'wic': ('false', 'true'),
    'wsc': ('False', 'True'),
    'copa': (0, 1),
    'multirc': (0, 1),
    'cb': ('entailment', 'contradiction', 'neutral'),
    'rte': ('entailment', 'not_entailment'),
    'axb': ('entailment', 'not_entailment'),
    'axg': ('entailment', 'not_entailment'),
}


def _benchmark_task(task_name: str) -> str:
  """The SuperGLUE key of a generation task, or ValueError."""
  info = registry.task_info(task_name)
  if info.benchmark_task is None or info.rank:
    raise ValueError(
        f'{task_name!r} has no SuperGLUE submission file (use a super_glue_* '
        'task that generates its labels)')
  return info.benchmark_task


def _class_index(task_name: str, prediction: str,
                 example: Mapping[str, Any]) -> int:
  """The predicted class; an invalid prediction becomes class 0."""
  value = registry.task_info(task_name).postprocess_fn(
      prediction, example=example, is_target=False)
  if isinstance(value, Mapping):
    value = value['value']
  return value if value != postprocessors.INVALID else 0


def _multirc_rows(labelled: Iterable[tuple[Mapping[str, Any], int]]
                  ) -> list[dict[str, Any]]:
  """Answers nested as passage -> questions -> answers, in input order."""
  passages: dict[int, dict[int, list]] = {}
  for ex, label in labelled:
    questions = passages.setdefault(int(ex['idx/paragraph']), {})
    answers = questions.setdefault(int(ex['idx/question']), [])
    answers.append({'idx': int(ex['idx/answer']), 'label': label})
  return [{'idx': p, 'passage': {'questions': [
      {'idx': q, 'answers': answers} for q, answers in questions.items()]}}
          for p, questions in passages.items()]


def submission_rows(task_name: str, examples: Iterable[Mapping[str, Any]],
                    predictions: Iterable[str]) -> list[dict[str, Any]]:
  """Leaderboard rows of a registered SuperGLUE task's test predictions."""
  key = _benchmark_task(task_name)
  pairs = list(zip(examples, predictions))
  if key == 'record':
    rows = {}
    for ex, prediction in pairs:  # One row per query, not per answer copy.
      rows.setdefault(int(ex['idx/query']), prediction)
    return [{'idx': idx, 'label': label} for idx, label in rows.items()]
  labelled = [(ex, LABELS[key][_class_index(task_name, prediction, ex)])
              for ex, prediction in pairs]
  if key == 'multirc':
    return _multirc_rows(labelled)
  return [{'idx': int(ex['idx']), 'label': label} for ex, label in labelled]


def write_submission(out_dir: str | os.PathLike,
                     rows_by_task: Mapping[str, Sequence[Mapping[str, Any]]]
                     ) -> list[Path]:
  """Writes `<out_dir>/<Task>.jsonl` for each task name -> rows; the paths."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = []
  for task_name, rows in rows_by_task.items():
    path = out / f'{FILE_NAMES[_benchmark_task(task_name)]}.jsonl'
    with open(path, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(row) + '\n' for row in rows)
    paths.append(path)
  return paths
