"""GLUE as seqio tasks, T5 formats, official metrics.

Registered (each also as `taskless_<name>`, classification tasks also as
`<name>_rank` / `taskless_<name>_rank`; see README.md for the formats):

  glue_{cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli}_v002
  glue_mnli_matched_v002, glue_mnli_mismatched_v002, glue_ax_v002
  mixtures glue_v002_proportional, taskless_glue_v002_proportional

Reads `<dir>/<TASK>/{train,dev,test}.tsv` (the layout of GLUE's download
script; MNLI `{dev,test}_{matched,mismatched}.tsv`, AX
`diagnostic/diagnostic.tsv`) when `PTJ_GLUE_DIR` (or the gin binding
`local_data_dirs.glue`) is set, else TFDS `glue/<cfg>:2.0.0`.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from . import formats
from . import metrics
from . import postprocessors
from . import registry
from . import sources

TFDS_VERSION = '2.0.0'
GLUE_SPLITS = {'train': 'train.tsv', 'validation': 'dev.tsv',
               'test': 'test.tsv'}
MNLI_SPLITS = {
    'train': 'train.tsv',
    'validation_matched': 'dev_matched.tsv',
    'validation_mismatched': 'dev_mismatched.tsv',
    'test_matched': 'test_matched.tsv',
    'test_mismatched': 'test_mismatched.tsv',
}
# CoLA's train/dev files have no header row.
COLA_COLUMNS = ('source', 'label', 'original_label', 'sentence')

NLI3_WORDS = ('entailment', 'neutral', 'contradiction')
NLI2_WORDS = ('entailment', 'not_entailment')

# TFDS training-set sizes: the rates of the proportional mixture (T5's GLUE
# mixture members; WNLI is left out, as in T5).
TRAIN_SIZES = {
    'cola': 8_551, 'sst2': 67_349, 'mrpc': 3_668, 'qqp': 363_846,
    'stsb': 5_749, 'mnli': 392_702, 'qnli': 104_743, 'rte': 2_490,
}


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """One GLUE task: its files, columns and format."""
  key: str  # TFDS config and T5 name: cola, sst2, ...
  task_dir: str  # Official directory: CoLA, SST-2, ...
  columns: Mapping[str, str]  # Feature (TFDS name) -> TSV column.
  label_column: str
  label_words: Optional[tuple[str, ...]]  # None: a regression (STS-B).
  metric_fns: Sequence[metrics.MetricFn]
  prefix: str = ''  # Defaults to `key`.
  split_files: Mapping[str, str] = dataclasses.field(
      default_factory=lambda: GLUE_SPLITS)
  skip_short_rows: bool = False

  @property
  def fields(self) -> tuple[str, ...]:
    """Displayed fields: sorted feature names, as T5."""
    return tuple(sorted(self.columns))


def _read_cola(path: Path):
  """CoLA: headerless train/dev, test with a header."""
  headerless = not path.name.startswith('test')
  return sources.read_tsv(path, COLA_COLUMNS if headerless else None, required=('sentence',))


def _reader(task: GlueTask) -> sources.RowReader:
  if task.key == 'cola':
    return _read_cola
  return functools.partial(sources.read_tsv, skip_short_rows=task.skip_short_rows,
                           required=tuple(task.columns.values()))


def _converter(task: GlueTask) -> sources.Converter:
  """TSV row -> TFDS example: features, `idx` = row position, `label`."""

  def convert(row: dict[str, str], position: int) -> list[dict[str, Any]]:
    example: dict[str, Any] = {feature: row[column]
                               for feature, column in task.columns.items()}
    example['idx'] = position
    raw_label = row.get(task.label_column)
    if task.label_words is None:
      example['label'] = float(raw_label) if raw_label else -1.0
    else:
      example['label'] = sources.label_index(raw_label, task.label_words)
    return [example]

  return convert


def _signature(task: GlueTask) -> dict[str, Any]:
  label_dtype = tf.float32 if task.label_words is None else tf.int64
  return {**{feature: tf.TensorSpec([], tf.string) for feature in task.columns},
          'idx': tf.TensorSpec([], tf.int32),
          'label': tf.TensorSpec([], label_dtype)}


def task_format(task: GlueTask) -> registry.TaskFormat:
  """How the task is shown and scored: T5's format, label words, postprocessor, metrics."""
  prefix = task.prefix or task.key
  if task.label_words is None:
    return registry.TaskFormat(
        format_fn=formats.stsb, prefix=prefix,
        postprocess_fn=postprocessors.to_float, metric_fns=task.metric_fns)
  return registry.TaskFormat(
      format_fn=functools.partial(formats.classification, fields=task.fields,
                                  label_words=task.label_words),
      prefix=prefix,
      postprocess_fn=functools.partial(postprocessors.classification,
                                       label_words=task.label_words),
      metric_fns=task.metric_fns,
      label_words=task.label_words)


_PAIR = {'sentence1': 'sentence1', 'sentence2': 'sentence2'}
_MNLI = {'premise': 'sentence1', 'hypothesis': 'sentence2'}

TASKS = (
    GlueTask('cola', 'CoLA', {'sentence': 'sentence'}, 'label',
             ('unacceptable', 'acceptable'), (metrics.matthews_corrcoef,)),
    GlueTask('sst2', 'SST-2', {'sentence': 'sentence'}, 'label',
             ('negative', 'positive'), (metrics.accuracy,)),
    GlueTask('mrpc', 'MRPC',
             {'sentence1': '#1 String', 'sentence2': '#2 String'}, 'Quality',
             ('not_equivalent', 'equivalent'), (metrics.f1_and_accuracy,)),
    GlueTask('qqp', 'QQP', {'question1': 'question1', 'question2': 'question2'},
             'is_duplicate', ('not_duplicate', 'duplicate'),
             (metrics.f1_and_accuracy,), skip_short_rows=True),
    GlueTask('stsb', 'STS-B', _PAIR, 'score', None,
             (metrics.pearson_and_spearman,)),
    GlueTask('mnli', 'MNLI', _MNLI, 'gold_label', NLI3_WORDS,
             (metrics.accuracy,), split_files=MNLI_SPLITS),
    GlueTask('mnli_matched', 'MNLI', _MNLI, 'gold_label', NLI3_WORDS,
             (metrics.accuracy,), prefix='mnli',
             split_files={'validation': 'dev_matched.tsv',
                          'test': 'test_matched.tsv'}),
    GlueTask('mnli_mismatched', 'MNLI', _MNLI, 'gold_label', NLI3_WORDS,
             (metrics.accuracy,), prefix='mnli',
             split_files={'validation': 'dev_mismatched.tsv',
                          'test': 'test_mismatched.tsv'}),
    GlueTask('qnli', 'QNLI', {'question': 'question', 'sentence': 'sentence'},
             'label', NLI2_WORDS, (metrics.accuracy,)),
    GlueTask('rte', 'RTE', _PAIR, 'label', NLI2_WORDS, (metrics.accuracy,)),
    GlueTask('wnli', 'WNLI', _PAIR, 'label', ('not_entailment', 'entailment'),
             (metrics.accuracy,)),
    # The diagnostic set has no public labels: no metrics.
    GlueTask('ax', 'diagnostic', _MNLI, 'label', NLI3_WORDS, (),
             prefix='mnli', split_files={'test': 'diagnostic.tsv'}),
)


def glue_source(task: GlueTask) -> sources.BenchmarkSource:
  """Local `<dir>/<TASK>/*.tsv` files or TFDS `glue/<cfg>`."""
  file_format = sources.FileFormat(_reader(task), _converter(task),
                                   _signature(task))
  return sources.BenchmarkSource('glue', task.task_dir, task.split_files,
                                 file_format,
                                 f'glue/{task.key}:{TFDS_VERSION}')


def task_by_key(key: str) -> GlueTask:
  """The `GlueTask` named `key` (e.g. 'sst2')."""
  return next(task for task in TASKS if task.key == key)


def _register() -> None:
  for task in TASKS:
    registry.register(f'glue_{task.key}_v002', glue_source(task),
                      task_format(task))
  for prefix in ('', registry.TASKLESS_PREFIX):
    rates = [(f'{prefix}glue_{key}_v002', registry.capped_rate(size))
             for key, size in TRAIN_SIZES.items()]
    rates += [(f'{prefix}glue_{key}_v002', 0.0)
              for key in ('mnli_matched', 'mnli_mismatched', 'ax')]
    seqio.MixtureRegistry.add(f'{prefix}glue_v002_proportional', rates)


_register()
