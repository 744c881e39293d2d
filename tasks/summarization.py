"""Summarization (XSum, CNN/DailyMail) as seqio tasks, scored by ROUGE-1/2/Lsum.

Registered (each also as `taskless_<name>`: the document alone):

  xsum_v110            train, validation, test
  cnn_dailymail_v340   train, validation, test

'summarize: <document>' -> the reference summary, as T5's tasks; ROUGE by Google's
`rouge-score` (`metrics.rouge`). Reads `<dir>/xsum/{train,validation,test}.jsonl` and
`<dir>/cnn_dailymail/...`, one `{"document": ..., "summary": ...}` object a line, when
`PTJ_SUMMARIZATION_DIR` (or the gin binding `local_data_dirs.summarization`) is set, else
TFDS `xsum:1.1.0` (document, summary) and `cnn_dailymail:3.4.0` (article, highlights).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import tensorflow as tf

from . import formats
from . import metrics
from . import postprocessors
from . import registry
from . import sources

SPLIT_FILES = {'train': 'train.jsonl', 'validation': 'validation.jsonl',
               'test': 'test.jsonl'}
_TEXT = tf.TensorSpec([], tf.string)
SIGNATURE = {'document': _TEXT, 'summary': _TEXT}


def convert_row(row: sources.Row, position: int) -> list[dict[str, Any]]:
  """A jsonl line -> {document, summary}; both must be text."""
  del position
  example = {field: row[field] for field in SIGNATURE}
  for field, value in example.items():
    if not isinstance(value, str):
      raise ValueError(f'field {field!r} is not text')
  return [example]


FILE_FORMAT = sources.FileFormat(sources.read_jsonl, convert_row, SIGNATURE)

TASK_FORMAT = registry.TaskFormat(
    format_fn=formats.summarize, prefix='summarize', postprocess_fn=postprocessors.as_text,
    metric_fns=(metrics.rouge,))


def summarization_source(task_dir: str, tfds_name: str,
                         tfds_fields: Optional[Mapping[str, str]] = None
                         ) -> sources.BenchmarkSource:
  """Local `<dir>/<task_dir>/<split>.jsonl` or TFDS `tfds_name`."""
  return sources.BenchmarkSource('summarization', task_dir, SPLIT_FILES, FILE_FORMAT,
                                 tfds_name, tfds_fields=tfds_fields)


def _register() -> None:
  registry.register('xsum_v110', summarization_source('xsum', 'xsum:1.1.0'), TASK_FORMAT)
  registry.register('cnn_dailymail_v340',
                    summarization_source('cnn_dailymail', 'cnn_dailymail:3.4.0',
                                         {'document': 'article', 'summary': 'highlights'}),
                    TASK_FORMAT)


_register()
