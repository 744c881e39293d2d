"""SuperGLUE (and FewGLUE) as seqio tasks, T5 formats, official metrics.

Registered (each also as `taskless_<name>`, and classification tasks as
`<name>_rank` / `taskless_<name>_rank`; see README.md for the formats):

  super_glue_{boolq,cb,copa,multirc,record,rte,wic,wsc,axb,axg}_v102
  super_glue_wsc_v102_simple_train, super_glue_wsc_v102_simple_eval
  fewglue_{boolq,cb,copa,multirc,record,rte,wic,wsc}
  fewglue_wsc_simple_train, fewglue_wsc_simple_eval
  mixtures super_glue_v102_proportional, taskless_super_glue_v102_proportional

SuperGLUE reads `<dir>/<Task>/{train,val,test}.jsonl` (AX-b, AX-g:
`<dir>/AX-b/AX-b.jsonl`) when `PTJ_SUPERGLUE_DIR` (or the gin binding
`local_data_dirs.superglue`) is set, else TFDS `super_glue/<cfg>:1.0.2`.
FewGLUE reads `<dir>/<Task>/{train,dev32}.jsonl` (dev32 is the `validation`
split) from `PTJ_FEWGLUE_DIR` / `local_data_dirs.fewglue`; it has no TFDS
version.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from . import formats
from . import metrics
from . import postprocessors
from . import preprocessors
from . import registry
from . import sources

TFDS_VERSION = '1.0.2'
SUPERGLUE_SPLITS = {'train': 'train.jsonl', 'validation': 'val.jsonl',
                    'test': 'test.jsonl'}
FEWGLUE_SPLITS = {'train': 'train.jsonl', 'validation': 'dev32.jsonl'}

BOOL_WORDS = ('False', 'True')
NLI2_WORDS = ('entailment', 'not_entailment')
CB_WORDS = ('entailment', 'contradiction', 'neutral')
COPA_WORDS = ('choice1', 'choice2')

_TEXT = tf.TensorSpec([], tf.string)
_TEXTS = tf.TensorSpec([None], tf.string)
_INT = tf.TensorSpec([], tf.int32)
_LABEL = tf.TensorSpec([], tf.int64)

# Training-set sizes in examples after preprocessing (as T5's mixture rates:
# MultiRC per answer option, ReCoRD per gold answer, WSC correct referents).
TRAIN_SIZES = {
    'boolq': 9_427, 'cb': 250, 'copa': 400, 'multirc': 27_243,
    'record': 138_854, 'rte': 2_490, 'wic': 5_428, 'wsc_simple_train': 259,
}


# --------------------------------------------- local rows -> TFDS examples


def _flat_converter(text_fields: Sequence[str], label_words: Sequence[str],
                    int_fields: Sequence[str] = ()) -> sources.Converter:
  """Row -> one example with text/int fields, `idx` and `label`."""

  def convert(row: dict[str, Any], position: int) -> list[dict[str, Any]]:
    del position
    example = {field: str(row[field]) for field in text_fields}
    example.update({field: int(row[field]) for field in int_fields})
    example['idx'] = int(row['idx'])
    example['label'] = sources.label_index(row.get('label'), label_words)
    return [example]

  return convert


def _flat_signature(text_fields: Sequence[str],
                    int_fields: Sequence[str] = ()) -> dict[str, Any]:
  return {**{field: _TEXT for field in text_fields},
          **{field: _INT for field in int_fields},
          'idx': _INT, 'label': _LABEL}


_WSC_TEXT = ('text', 'span1_text', 'span2_text')
_WSC_INTS = ('span1_index', 'span2_index')


_convert_wsc_fields = _flat_converter(_WSC_TEXT, BOOL_WORDS, _WSC_INTS)


def _convert_wsc(row: dict[str, Any], position: int) -> list[dict[str, Any]]:
  """WSC: the `target` spans become top-level fields (as TFDS)."""
  return _convert_wsc_fields({**row, **row['target']}, position)


def _convert_multirc(row: dict[str, Any],
                     position: int) -> list[dict[str, Any]]:
  """MultiRC: one example per answer option, with its three ids."""
  del position
  passage = row['passage']
  examples = []
  for question in passage['questions']:
    for answer in question['answers']:
      examples.append({
          'paragraph': passage['text'],
          'question': question['question'],
          'answer': answer['text'],
          'label': sources.label_index(answer.get('label'), BOOL_WORDS),
          'idx': {'paragraph': int(row['idx']),
                  'question': int(question['idx']),
                  'answer': int(answer['idx'])},
      })
  return examples


def _convert_record(row: dict[str, Any],
                    position: int) -> list[dict[str, Any]]:
  """ReCoRD: one example per query; entities and answers sorted, unique."""
  del position
  passage = row['passage']
  text = passage['text']
  entities = sorted({text[e['start']:e['end'] + 1] for e in passage['entities']})
  return [{
      'passage': text,
      'query': qa['query'],
      'entities': entities,
      'answers': sorted({answer['text'] for answer in qa.get('answers', [])}),
      'idx': {'passage': int(row['idx']), 'query': int(qa['idx'])},
  } for qa in row['qas']]


_MULTIRC_SIGNATURE = {
    'paragraph': _TEXT, 'question': _TEXT, 'answer': _TEXT, 'label': _LABEL,
    'idx': {'paragraph': _INT, 'question': _INT, 'answer': _INT}}
_RECORD_SIGNATURE = {
    'passage': _TEXT, 'query': _TEXT, 'entities': _TEXTS, 'answers': _TEXTS,
    'idx': {'passage': _INT, 'query': _INT}}


# ------------------------------------------------------------------- tasks


@dataclasses.dataclass(frozen=True)
class SuperGlueTask:
  """One SuperGLUE task: where its data is and how it is formatted."""
  key: str  # T5's name: boolq, cb, ..., axb.
  task_dir: str  # Official directory: BoolQ, CB, ..., AX-b.
  tfds_config: str
  file_format: sources.FileFormat
  task_format: registry.TaskFormat
  split_files: Mapping[str, str] = dataclasses.field(
      default_factory=lambda: SUPERGLUE_SPLITS)


def _flat_file_format(text_fields: Sequence[str], label_words: Sequence[str],
                      int_fields: Sequence[str] = ()) -> sources.FileFormat:
  return sources.FileFormat(
      sources.read_jsonl, _flat_converter(text_fields, label_words, int_fields),
      _flat_signature(text_fields, int_fields))


def _classification(prefix: str, fields: Sequence[str],
                    label_words: Sequence[str],
                    metric_fns: Sequence[metrics.MetricFn] = (metrics.accuracy,),
                    format_fn: Optional[Callable[..., Any]] = None,
                    postprocess_fn: Optional[Callable[..., Any]] = None
                    ) -> registry.TaskFormat:
  """A label-word task (generic field format unless `format_fn` is given)."""
  return registry.TaskFormat(
      format_fn=format_fn or functools.partial(
          formats.classification, fields=fields, label_words=label_words),
      prefix=prefix,
      postprocess_fn=postprocess_fn or functools.partial(
          postprocessors.classification, label_words=label_words),
      metric_fns=metric_fns,
      label_words=label_words)


_WSC_FILES = sources.FileFormat(
    sources.read_jsonl, _convert_wsc, _flat_signature(_WSC_TEXT, _WSC_INTS))

def _flat_task(key: str, task_dir: str, file_fields: Sequence[str], fields: Sequence[str],
               label_words: Sequence[str], *, prefix: Optional[str] = None,
               metric_fns: Sequence[metrics.MetricFn] = (metrics.accuracy,),
               postprocess_fn: Optional[Callable[..., Any]] = None,
               split_files: Optional[Mapping[str, str]] = None) -> SuperGlueTask:
  """A task whose rows hold `file_fields` flat, shown as `fields` and a label word."""
  return SuperGlueTask(
      key, task_dir, key, _flat_file_format(file_fields, label_words),
      _classification(prefix or key, fields, label_words, metric_fns,
                      postprocess_fn=postprocess_fn),
      split_files=SUPERGLUE_SPLITS if split_files is None else split_files)


TASKS = (
    _flat_task('boolq', 'BoolQ', ('question', 'passage'), ('passage', 'question'), BOOL_WORDS),
    _flat_task('cb', 'CB', ('premise', 'hypothesis'), ('hypothesis', 'premise'), CB_WORDS,
               metric_fns=(metrics.macro_f1_and_accuracy,)),
    _flat_task('copa', 'COPA', ('premise', 'choice1', 'choice2', 'question'),
               ('choice1', 'choice2', 'premise', 'question'), COPA_WORDS),
    SuperGlueTask(
        'multirc', 'MultiRC', 'multirc',
        sources.FileFormat(sources.read_jsonl, _convert_multirc,
                           _MULTIRC_SIGNATURE),
        _classification(
            'multirc', (), BOOL_WORDS, (metrics.multirc,),
            format_fn=functools.partial(formats.multirc,
                                        label_words=BOOL_WORDS),
            postprocess_fn=functools.partial(
                postprocessors.grouped, label_words=BOOL_WORDS,
                group=postprocessors.multirc_group))),
    SuperGlueTask(
        'record', 'ReCoRD', 'record',
        sources.FileFormat(sources.read_jsonl, _convert_record,
                           _RECORD_SIGNATURE),
        registry.TaskFormat(
            format_fn=formats.record, prefix='record',
            postprocess_fn=postprocessors.record,
            metric_fns=(metrics.record,),
            preprocessors=(preprocessors.one_example_per_answer,))),
    _flat_task('rte', 'RTE', ('premise', 'hypothesis'), ('hypothesis', 'premise'), NLI2_WORDS),
    _flat_task('wic', 'WiC', ('word', 'sentence1', 'sentence2'),
               ('sentence1', 'sentence2', 'word'), BOOL_WORDS),
    SuperGlueTask(
        'wsc', 'WSC', 'wsc.fixed', _WSC_FILES,
        _classification('wsc', (), BOOL_WORDS, format_fn=functools.partial(
            formats.wsc, label_words=BOOL_WORDS))),
    _flat_task('axb', 'AX-b', ('sentence1', 'sentence2'), ('sentence1', 'sentence2'), NLI2_WORDS,
               prefix='rte', metric_fns=(metrics.matthews_corrcoef,),
               split_files={'test': 'AX-b.jsonl'}),
    _flat_task('axg', 'AX-g', ('premise', 'hypothesis'), ('hypothesis', 'premise'), NLI2_WORDS,
               prefix='rte', metric_fns=(metrics.axg,),
               postprocess_fn=functools.partial(postprocessors.grouped, label_words=NLI2_WORDS,
                                                group=postprocessors.axg_pair),
               split_files={'test': 'AX-g.jsonl'}),
)

WSC_SIMPLE_TRAIN = registry.TaskFormat(
    format_fn=formats.wsc_simple, prefix='wsc',
    preprocessors=(preprocessors.keep_correct_referents,))
WSC_SIMPLE_EVAL = registry.TaskFormat(
    format_fn=formats.wsc_simple, prefix='wsc',
    postprocess_fn=postprocessors.wsc_simple, metric_fns=(metrics.accuracy,))

FEWGLUE_TASKS = ('boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic',
                 'wsc')


def superglue_source(task: SuperGlueTask,
                     splits: Optional[Sequence[str]] = None
                     ) -> sources.BenchmarkSource:
  """Local `<dir>/<Task>/` files or TFDS; `splits` restricts the splits."""
  files = {s: f for s, f in task.split_files.items() if not splits or s in splits}
  return sources.BenchmarkSource(
      'superglue', task.task_dir, files, task.file_format,
      f'super_glue/{task.tfds_config}:{TFDS_VERSION}')


def fewglue_source(task: SuperGlueTask,
                   splits: Optional[Sequence[str]] = None
                   ) -> sources.BenchmarkSource:
  """FewGLUE `<dir>/<Task>/{train,dev32}.jsonl` (local only)."""
  files = {s: f for s, f in FEWGLUE_SPLITS.items() if not splits or s in splits}
  return sources.BenchmarkSource('fewglue', task.task_dir, files,
                                 task.file_format, None)


def task_by_key(key: str) -> SuperGlueTask:
  """The `SuperGlueTask` named `key` (e.g. 'cb')."""
  return next(task for task in TASKS if task.key == key)


def _register_wsc_simple(prefix: str, source_fn, eval_splits) -> None:
  wsc = task_by_key('wsc')
  registry.register(f'{prefix}_simple_train', source_fn(wsc, ['train']),
                    WSC_SIMPLE_TRAIN)
  registry.register(f'{prefix}_simple_eval', source_fn(wsc, eval_splits),
                    WSC_SIMPLE_EVAL, benchmark_task='wsc')


def _register_tasks() -> None:
  for task in TASKS:
    registry.register(f'super_glue_{task.key}_v102', superglue_source(task),
                      task.task_format, benchmark_task=task.key)
  _register_wsc_simple('super_glue_wsc_v102', superglue_source,
                       ['validation', 'test'])
  for key in FEWGLUE_TASKS:
    task = task_by_key(key)
    registry.register(f'fewglue_{key}', fewglue_source(task), task.task_format)
  _register_wsc_simple('fewglue_wsc', fewglue_source, ['validation'])


def _register_mixtures() -> None:
  for prefix in ('', registry.TASKLESS_PREFIX):
    rates = [(f'{prefix}super_glue_{key}_v102', registry.capped_rate(size))
             for key, size in TRAIN_SIZES.items() if key != 'wsc_simple_train']
    rates.append((f'{prefix}super_glue_wsc_v102_simple_train',
                  registry.capped_rate(TRAIN_SIZES['wsc_simple_train'])))
    # Evaluation-only members.
    rates += [(f'{prefix}super_glue_wsc_v102_simple_eval', 0.0),
              (f'{prefix}super_glue_axb_v102', 0.0),
              (f'{prefix}super_glue_axg_v102', 0.0)]
    seqio.MixtureRegistry.add(f'{prefix}super_glue_v102_proportional', rates)


_register_tasks()
_register_mixtures()
