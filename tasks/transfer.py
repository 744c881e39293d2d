"""Zero-shot transfer between classification tasks (the paper's Table 2: QQP <-> MRPC).

A transfer task shows a *target* task's examples to a model trained on a *source* task, in
the source's input format: its task word, its field names, and its label words as targets.
The predictions (source label words) are mapped back to the target's classes and scored by
the target's own metrics against the target's gold labels. Its rank-classification variant
scores the source's label words. Any classification task can be either side
(`register_transfer`); registered here:

  glue_mrpc_from_qqp_v002     MRPC validation as 'qqp question1: ... question2: ...'
  glue_qqp_from_mrpc_v002     QQP validation as 'mrpc sentence1: ... sentence2: ...'
  smoke_sentiment_transfer_from_sst2   the smoke task's held-out-word reviews as
                                       'sst2 sentence: ...'
  glue_sst2_from_smoke_v002   SST-2 validation as 'review: ...' (the smoke task's format)

each (but the smoke one's, which has no task word) also as `taskless_<name>` and
`<name>_rank`, and each with a zero-shot mixture (`glue_mrpc_from_qqp_zeroshot_v002`, ...):
the source task, which trains, and the transfer task at rate 0, which is only evaluated.

Unlike the original implementation, whose transfer tasks keep the target's task word and
field names (`mrpc sentence1: ...` for a QQP prompt), the inputs here are exactly what the
source's training examples look like.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Optional, Sequence

import seqio
import tensorflow as tf

from . import formats
from . import glue
from . import metrics
from . import postprocessors
from . import registry
from . import smoke


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
  """A classification task as transfer sees it: raw examples, their fields, how they show."""
  name: str  # its seqio task (a zero-shot mixture trains on the source's)
  source: seqio.DataSource  # raw examples: `fields`, 'label' (class index, -1: none), 'idx'
  fields: tuple[str, ...]  # the text fields its format shows, in that order
  task_format: registry.TaskFormat  # its format, label words, postprocessor and metrics

  @property
  def label_words(self) -> tuple[str, ...]:
    return tuple(self.task_format.label_words)


def glue_task(key: str) -> ClassificationTask:
  """A GLUE classification task (`glue_<key>_v002`), e.g. 'qqp'."""
  task = glue.task_by_key(key)
  return ClassificationTask(f'glue_{key}_v002', glue.glue_source(task), task.fields,
                            glue.task_format(task))


SMOKE_FIELDS = ('review',)
SMOKE_FORMAT = registry.TaskFormat(
    format_fn=functools.partial(formats.classification, fields=SMOKE_FIELDS,
                                label_words=smoke.WORD_LABELS),
    prefix='',  # 'review: ...', no task word
    postprocess_fn=functools.partial(postprocessors.classification,
                                     label_words=smoke.WORD_LABELS),
    metric_fns=(metrics.accuracy,),
    label_words=smoke.WORD_LABELS)


def smoke_task() -> ClassificationTask:
  """`smoke_sentiment_transfer`: training reviews and held-out-word validation/test reviews."""
  source = seqio.FunctionDataSource(
      functools.partial(smoke.review_dataset, held_out_words=True),
      splits=tuple(smoke.SPLIT_SIZES), num_input_examples=dict(smoke.SPLIT_SIZES))
  return ClassificationTask(smoke.TRANSFER_TASK_NAME, source, SMOKE_FIELDS, SMOKE_FORMAT)


class TransferSource(seqio.DataSource):
  """A target's raw examples with the source's field names and class indices."""

  def __init__(self, target: seqio.DataSource, splits: Sequence[str],
               fields: Mapping[str, str], to_source: Sequence[int]):
    """`fields`: source field -> the target field it shows; `to_source[c]`: the source class
    whose label word stands for the target's class c."""
    super().__init__(splits=tuple(splits))
    self._target = target
    self._fields = dict(fields)
    self._to_source = tf.constant(list(to_source), tf.int64)

  @property
  def local(self):
    """The target's local files (for the messages that name them), if it reads any."""
    return getattr(self._target, 'local', None)

  @property
  def uses_local_files(self) -> bool:
    return getattr(self._target, 'uses_local_files', False)

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def _convert(self, ex):
    label = tf.cast(ex['label'], tf.int64)
    relabelled = tf.where(label >= 0, tf.gather(self._to_source, tf.maximum(label, 0)), label)
    return {**{field: ex[shown] for field, shown in self._fields.items()},
            'idx': ex['idx'], 'label': relabelled}

  def get_dataset(self, split: str = 'train', shuffle: bool = True,
                  seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length=None, use_cached=False, num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # Unused by sources.
    ds = self._target.get_dataset(split=split, shuffle=shuffle, seed=seed,
                                  shard_info=shard_info)
    return ds.map(self._convert)


def _class_maps(target: ClassificationTask, source: ClassificationTask,
                label_map: Optional[Mapping[str, str]]) -> tuple[list[int], list[int]]:
  """(to_target, to_source): the target class of each source word, and the first source word
  of each target class. `label_map` (source word -> target word) defaults to class order."""
  source_words, target_words = source.label_words, target.label_words
  if label_map is None:
    if len(source_words) != len(target_words):
      raise ValueError(f'{source.name} has {len(source_words)} label words and {target.name} '
                       f'{len(target_words)}: give the label_map')
    label_map = dict(zip(source_words, target_words))
  if set(label_map) != set(source_words) or not set(label_map.values()) <= set(target_words):
    raise ValueError(f'label_map {dict(label_map)} must map each of {list(source_words)} to '
                     f'one of {list(target_words)}')
  to_target = [target_words.index(label_map[word]) for word in source_words]
  missing = [word for c, word in enumerate(target_words) if c not in to_target]
  if missing:
    raise ValueError(f'no label word of {source.name} stands for {missing} of {target.name}')
  return to_target, [to_target.index(c) for c in range(len(target_words))]


def register_transfer(name: str, target: ClassificationTask, source: ClassificationTask, *,
                      mixture: str, field_map: Optional[Mapping[str, str]] = None,
                      label_map: Optional[Mapping[str, str]] = None,
                      splits: Sequence[str] = ('validation',)) -> list[str]:
  """Registers `target`'s `splits` shown as `source`, and the zero-shot `mixture`.

  Args:
    name: the transfer task; its variants as `registry.register` makes them.
    target: the task whose examples are shown and whose metrics score them.
    source: the task the model was trained on: its format and label words are used.
    mixture: the zero-shot mixture's name (and `taskless_<mixture>` when the source has a
      task word): the source task at rate 1, the transfer task at rate 0.
    field_map: source field -> target field; default: the fields in display order.
    label_map: source label word -> target label word; default: in class order.
    splits: the target's splits to show.

  Returns:
    The task names registered.
  """
  if field_map is None:
    if len(source.fields) != len(target.fields):
      raise ValueError(f'{source.name} shows {source.fields} and {target.name} '
                       f'{target.fields}: give the field_map')
    field_map = dict(zip(source.fields, target.fields))
  if set(field_map) != set(source.fields) or not set(field_map.values()) <= set(target.fields):
    raise ValueError(f'field_map {dict(field_map)} must fill each of {source.fields} from one '
                     f'of {target.fields}')
  to_target, to_source = _class_maps(target, source, label_map)
  words = source.label_words
  task_format = dataclasses.replace(
      source.task_format,
      postprocess_fn=functools.partial(postprocessors.transferred, label_words=words,
                                       to_target=tuple(to_target)),
      metric_fns=target.task_format.metric_fns)
  names = registry.register(
      name, TransferSource(target.source, splits, field_map, to_source), task_format)
  seqio.MixtureRegistry.add(mixture, [(source.name, 1.0), (name, 0.0)])
  if source.task_format.prefix:
    seqio.MixtureRegistry.add(registry.TASKLESS_PREFIX + mixture,
                              [(registry.TASKLESS_PREFIX + source.name, 1.0),
                               (registry.TASKLESS_PREFIX + name, 0.0)])
  return names


def _register() -> None:
  qqp, mrpc, sst2, reviews = glue_task('qqp'), glue_task('mrpc'), glue_task('sst2'), smoke_task()
  # Table 2. duplicate <-> equivalent, question1/2 <-> sentence1/2, by position.
  register_transfer('glue_mrpc_from_qqp_v002', mrpc, qqp,
                    mixture='glue_mrpc_from_qqp_zeroshot_v002')
  register_transfer('glue_qqp_from_mrpc_v002', qqp, mrpc,
                    mixture='glue_qqp_from_mrpc_zeroshot_v002')
  # Domain shift at mini scale (docs/reproduction.md): real film reviews <-> generated ones.
  register_transfer('smoke_sentiment_transfer_from_sst2', reviews, sst2,
                    mixture='smoke_sentiment_transfer_from_sst2_zeroshot')
  register_transfer('glue_sst2_from_smoke_v002', sst2, reviews,
                    mixture='glue_sst2_from_smoke_zeroshot_v002')


_register()
