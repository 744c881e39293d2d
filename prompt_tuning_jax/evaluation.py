"""Evaluation through `seqio.Evaluator`: decoding, rank classification, scoring.

Three model functions feed seqio's metrics:
- 'decode': greedy decoding with the KV cache (or beam search) -> predicted
  tokens -> the task's postprocessor -> its predict metrics.
- 'rank_classification': for a task with label words, every label's
  log-likelihood is scored (the encoder runs once per example, all labels are
  scored from its output) and the best label's tokens are the prediction, so
  the task's own predict metrics apply. Reported as
  `rank_classification/<metric>`.
- score metrics of a task (e.g. the `_rank` task variants) get the summed
  log-likelihood of each example's targets.

Metric keys are `<task>/<metric>`. `selection_value` averages one metric over
the tasks that report it: the value used to keep the best checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import decoding
from prompt_tuning_jax import scoring

logger = logging.getLogger(__name__)

DECODE, RANK = 'decode', 'rank_classification'
METHODS = (DECODE, RANK)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How to evaluate (gin: `evaluation.EvalSettings`)."""
  split: str = 'validation'
  methods: Sequence[str] = METHODS
  # 'greedy' or 'beam'.
  decoder: str = 'greedy'
  beam_size: int = 4
  alpha: float = 0.6
  batch_size: int = 32
  # First N examples of each task's split; None: all.
  num_examples: Optional[int] = None
  # Keeps the best checkpoint by this metric (averaged over tasks); None: none.
  best_metric: Optional[str] = 'accuracy'
  best_mode: str = 'max'

  def __post_init__(self):
    unknown = set(self.methods) - set(METHODS)
    if unknown:
      raise ValueError(f'Unknown eval methods {sorted(unknown)}; expected some of {METHODS}.')
    if self.decoder not in ('greedy', 'beam'):
      raise ValueError(f"decoder must be 'greedy' or 'beam', got {self.decoder!r}.")


def label_words(task_name: str, class_labels: Optional[Sequence[str]] = None
                ) -> Optional[list[str]]:
  """The label words of a task: CLASS_LABELS when set, else what the task module knows."""
  if class_labels:
    return list(class_labels)
  from prompt_tuning_jax import tasks  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.tasks import smoke  # pylint: disable=g-import-not-at-top
  if task_name in smoke.LABEL_WORDS:
    return list(smoke.LABEL_WORDS[task_name])
  try:
    return tasks.label_words(task_name)
  except KeyError:  # Not a task of this package's registry.
    return None


def _has_predict_metrics(task: seqio.Task) -> bool:
  return any(m.model_output_type == seqio.metrics.ModelOutputType.PREDICTION
             for m in task.metric_objs)


def _batches(ds: tf.data.Dataset, batch_size: int):
  """(indices [n], encoder tokens [batch_size, L], targets [batch_size, D]) with n <= batch_size.

  The last batch is zero-padded to `batch_size` so one compilation serves all.
  """
  for index, features in ds.batch(batch_size).as_numpy_iterator():
    n = len(index)
    pad = lambda x: np.pad(x, [(0, batch_size - n)] + [(0, 0)] * (x.ndim - 1))
    yield index, pad(features['encoder_input_tokens']), pad(features['decoder_target_tokens'])


class Evaluator:
  """Evaluates params on a task or mixture; build once, call `evaluate` per step."""

  def __init__(self, model, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
               settings: EvalSettings, *, class_labels: Optional[Sequence[str]] = None):
    self.model = model
    self.settings = settings
    self.task_feature_lengths = dict(task_feature_lengths)
    self.max_decode_length = int(task_feature_lengths['targets'])
    tasks = data_lib.sub_tasks(mixture_or_task_name)
    if not any(settings.split in task.splits for task in tasks):
      splits = sorted({split for task in tasks for split in task.splits})
      raise ValueError(f'EVAL_SPLIT {settings.split!r} is not a split of '
                       f'{mixture_or_task_name!r} (it has {splits}).')
    converter = seqio.EncDecFeatureConverter(pack=False)
    common = dict(feature_converter=converter, eval_split=settings.split,
                  sequence_length=self.task_feature_lengths,
                  num_examples=settings.num_examples, logger_cls=(), use_memory_cache=True)
    self._main = None
    if DECODE in settings.methods:
      self._main = seqio.Evaluator(mixture_or_task_name, **common)
    # Rank classification needs the task's labels, so one evaluator per task.
    self._rank: dict[str, tuple[seqio.Evaluator, np.ndarray]] = {}
    if RANK in settings.methods:
      for task in tasks:
        words = label_words(task.name, class_labels)
        if not words or not _has_predict_metrics(task) or settings.split not in task.splits:
          continue
        vocab = task.output_features['targets'].vocabulary
        self._rank[task.name] = (seqio.Evaluator(task.name, **common),
                                 scoring.encode_labels(vocab, words))
    if self._main is None and not self._rank:
      raise ValueError(f'Nothing to evaluate on {mixture_or_task_name!r} split '
                       f'{settings.split!r} with methods {tuple(settings.methods)} '
                       '(rank classification needs label words: set CLASS_LABELS).')

  # ---------------------------------------------------------------- model fns

  def _decode(self, params, tokens):
    s = self.settings
    if s.decoder == 'beam':
      return decoding.jit_beam_search(self.model, params, tokens, beam_size=s.beam_size,
                                      max_decode_length=self.max_decode_length, alpha=s.alpha)
    return decoding.jit_greedy_decode(self.model, params, tokens,
                                      max_decode_length=self.max_decode_length)

  def predict_fn(self, params) -> Callable[[tf.data.Dataset], list]:
    def predict(ds):
      out = []
      for index, tokens, _ in _batches(ds, self.settings.batch_size):
        predicted, _ = jax.device_get(self._decode(params, jnp.asarray(tokens)))
        out.extend((int(i), _after_eos_zeroed(row)) for i, row in zip(index, predicted))
      return out
    return predict

  def rank_fn(self, params, label_ids: np.ndarray) -> Callable[[tf.data.Dataset], list]:
    def predict(ds):
      out = []
      for index, tokens, _ in _batches(ds, self.settings.batch_size):
        best, _ = jax.device_get(scoring.jit_rank_classify(
            self.model, params, jnp.asarray(tokens), jnp.asarray(label_ids)))
        out.extend((int(i), label_ids[b]) for i, b in zip(index, best))
      return out
    return predict

  def score_fn(self, params) -> Callable[[tf.data.Dataset], list]:
    def score(ds):
      out = []
      for index, tokens, targets in _batches(ds, self.settings.batch_size):
        scores = jax.device_get(scoring.jit_score_targets(
            self.model, params, jnp.asarray(tokens), jnp.asarray(targets)))
        out.extend((int(i), float(v)) for i, v in zip(index, scores))
      return out
    return score

  # ---------------------------------------------------------------- evaluate

  def evaluate(self, params, step: int) -> dict[str, float]:
    """Flat metrics {'<task>/<metric>': value} (rank classification under `rank_classification/`)."""
    results: dict[str, float] = {}
    if self._main is not None:
      metrics, _ = self._main.evaluate(compute_metrics=True, step=step,
                                       predict_fn=self.predict_fn(params),
                                       score_fn=self.score_fn(params))
      results.update(_flatten(metrics.result()))
    for task_name, (evaluator, label_ids) in self._rank.items():
      metrics, _ = evaluator.evaluate(compute_metrics=True, step=step,
                                      predict_fn=self.rank_fn(params, label_ids))
      results.update(_flatten(metrics.result(), infix=RANK))
    return results


def _after_eos_zeroed(tokens: np.ndarray, eos_id: int = 1) -> np.ndarray:
  """The row with every position after the first EOS set to 0 (fixed length, as seqio needs)."""
  tokens = np.asarray(tokens).copy()
  eos = np.flatnonzero(tokens == eos_id)
  if eos.size:
    tokens[eos[0] + 1:] = 0
  return tokens


def _flatten(metrics: Mapping[str, Mapping[str, Any]], infix: str = '') -> dict[str, float]:
  out = {}
  for task_name, task_metrics in (metrics or {}).items():
    for name, value in task_metrics.items():
      value = getattr(value, 'value', value)  # clu/seqio metric objects
      if np.ndim(value) == 0:
        key = '/'.join(p for p in (task_name, infix, name) if p)
        out[key] = float(value)
  return out


def selection_value(metrics: Mapping[str, float], metric: str) -> Optional[float]:
  """Mean of `<task>/<metric>` over the tasks that report it (None if none does)."""
  values = [v for k, v in metrics.items() if k.split('/', 1)[-1] == metric]
  return float(np.mean(values)) if values else None


def summary_lines(metrics: Mapping[str, float], step: int) -> list[str]:
  """Readable lines: one per task, metrics sorted."""
  by_task: dict[str, list[str]] = {}
  for key in sorted(metrics):
    task, name = key.split('/', 1)
    by_task.setdefault(task, []).append(f'{name} {metrics[key]:.2f}')
  return [f'eval step {step} | {task} | ' + ' | '.join(items) for task, items in by_task.items()]
