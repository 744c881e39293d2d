"""Evaluation through `seqio.Evaluator`: decoding, rank classification, scoring.

Three model functions feed seqio's metrics:
- 'decode': greedy decoding with the KV cache (or beam search, or sampling)
  -> predicted tokens -> the task's postprocessor -> its predict metrics.
  Sampled examples draw with their own keys (`decoding.example_keys` of
  SAMPLE_SEED and the example's position in the split).
- 'rank_classification': for a task with label words, every label's
  log-likelihood is scored (the encoder runs once per example, all labels are
  scored from its output) and the best label's tokens are the prediction, so
  the task's own predict metrics apply. Reported as
  `rank_classification/<metric>`.
- score metrics of a task (e.g. the `_rank` task variants) get the summed
  log-likelihood of each example's targets.

With PACK_LENGTHS (`packing`), rank classification packs each batch's examples into rows as
training does (`data.pack_batch`: a prompt per example, segment ids keep them apart) and ranks
them with `scoring.rank_classify_packed`: the same scores as one example a row, with less
padding in the encoder. Decoding and scoring the targets stay one example a row.

Each task of a mixture is evaluated on its own, its examples with its TASK_INDEX
(`MethodInputs.task_index`: what selects a multi-task prompt). With TARGET_SENTINEL
(`target_sentinel`, the id of <extra_id_0>) a leading sentinel is stripped from decoded
tokens before the postprocessor, and labels and targets are scored with it in front
(`sentinel.py`). Metric keys are `<task>/<metric>`. `selection_value` averages one metric over
the tasks that report it: the value used to keep the best checkpoint.
`evaluate_and_record` is what the train loop and `ptj eval` run at each eval.

With a mesh, each eval batch is split over its `data` axis (every process
reads the same examples and places its devices' rows) and the outputs are
gathered back to every process, so each computes the same metrics and
process 0 writes them once.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio
import tensorflow as tf
from jax.experimental import multihost_utils

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import decoding
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import partitioning
from prompt_tuning_jax import scoring
from prompt_tuning_jax import sentinel as sentinel_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods import MethodInputs
from prompt_tuning_jax.settings import DECODE, RANK_CLASSIFICATION, SAMPLE, EvalSettings

logger = logging.getLogger(__name__)


def _has_predict_metrics(task: seqio.Task) -> bool:
  return any(m.model_output_type == seqio.metrics.ModelOutputType.PREDICTION
             for m in task.metric_objs)


def _batches(ds: tf.data.Dataset, batch_size: int, padded_size: int,
             buckets: Optional[Mapping[str, Sequence[int]]] = None):
  """(indices [n], encoder tokens [padded_size, L], targets [padded_size, D]), n <= batch_size.

  Every batch is zero-padded to `padded_size` rows. Without `buckets`, L and D
  are the feature lengths (one compilation serves all); with them, the examples
  are taken in order of length and each batch is cut to its buckets (the
  outputs are matched back to the examples by index).
  """
  def pad(x, n):
    return np.pad(x, [(0, padded_size - n)] + [(0, 0)] * (x.ndim - 1))

  if buckets is None:
    for index, features in ds.batch(batch_size).as_numpy_iterator():
      yield (index, pad(features['encoder_input_tokens'], len(index)),
             pad(features['decoder_target_tokens'], len(index)))
    return
  parts = list(ds.batch(1024).as_numpy_iterator())
  if not parts:
    return
  index = np.concatenate([p[0] for p in parts])
  features = {key: np.concatenate([p[1][key] for p in parts])
              for key in ('encoder_input_tokens', 'decoder_target_tokens')}
  order = np.argsort(data_lib.example_lengths(features['encoder_input_tokens']), kind='stable')
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    batch = data_lib.cut_to_buckets({k: v[rows] for k, v in features.items()}, buckets)
    yield (index[rows], pad(batch['encoder_input_tokens'], len(rows)),
           pad(batch['decoder_target_tokens'], len(rows)))


class Evaluator:
  """Evaluates params on a task or mixture; build once, call `evaluate` per step."""

  def __init__(self, model, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
               settings: EvalSettings, *, class_labels: Optional[Sequence[str]] = None,
               mesh: Optional[jax.sharding.Mesh] = None,
               length_buckets: Optional[Mapping[str, Sequence[int]]] = None,
               task_index: Optional[Mapping[str, int]] = None,
               target_sentinel: Optional[int] = None,
               packing: Optional[data_lib.Packing] = None):
    """`task_index`: {task: its examples' TASK_INDEX} (None: `data.task_index_of`).
    `packing` (PACK_LENGTHS, `run_setup.packing`): rank classification runs on packed rows."""
    self.model = model
    self.length_buckets = length_buckets
    self.target_sentinel = target_sentinel
    self.settings = settings
    self.mesh = mesh
    # Batches are padded to a multiple of the data-parallel devices.
    replicas = mesh.shape[partitioning.DATA] if mesh is not None else 1
    self._padded_size = -(-settings.batch_size // replicas) * replicas
    # Packed rows are split over the data axis only (eval has no micro-batches).
    self.packing = (None if packing is None
                    else dataclasses.replace(packing, row_multiple=replicas))
    self.task_feature_lengths = dict(task_feature_lengths)
    self.max_decode_length = int(task_feature_lengths['targets'])
    tasks = data_lib.sub_tasks(mixture_or_task_name)
    if not any(settings.split in task.splits for task in tasks):
      splits = sorted({split for task in tasks for split in task.splits})
      raise UsageError(f'EVAL_SPLIT {settings.split!r} is not a split of '
                       f'{mixture_or_task_name!r} (it has {splits}).')
    self.task_index = dict(task_index or data_lib.task_index_of(mixture_or_task_name))
    converter = seqio.EncDecFeatureConverter(pack=False)
    common = dict(feature_converter=converter, eval_split=settings.split,
                  sequence_length=self.task_feature_lengths,
                  num_examples=settings.num_examples, logger_cls=(), use_memory_cache=True)
    evaluated = [task for task in tasks if settings.split in task.splits and task.metric_objs]
    self._main: dict[str, seqio.Evaluator] = {}
    if DECODE in settings.methods:
      self._main = {task.name: seqio.Evaluator(task.name, **common) for task in evaluated}
    # Rank classification needs the task's labels.
    self._rank: dict[str, tuple[seqio.Evaluator, np.ndarray]] = {}
    if RANK_CLASSIFICATION in settings.methods:
      for task in evaluated:
        words = data_lib.label_words(task.name, class_labels)
        if not words or not _has_predict_metrics(task):
          continue
        label_ids = scoring.encode_labels(task.output_features['targets'].vocabulary, words)
        if target_sentinel is not None:
          label_ids = sentinel_lib.prefix_labels(label_ids, target_sentinel)
        self._rank[task.name] = (seqio.Evaluator(task.name, **common), label_ids)
    if not self._main and not self._rank:
      raise UsageError(f'Nothing to evaluate on {mixture_or_task_name!r} split '
                       f'{settings.split!r} with methods {tuple(settings.methods)} '
                       '(rank classification needs label words: set CLASS_LABELS).')
    counts = data_lib.split_counts(mixture_or_task_name, settings.split, task_feature_lengths,
                                   settings.num_examples)
    self.truncated = {k: v for k, v in counts.items() if k.startswith('truncated_')}
    if any(self.truncated.values()):
      logger.warning('Of the %d %s examples evaluated, %d inputs and %d targets are longer than '
                     'TASK_FEATURE_LENGTHS=%s and are truncated.', counts['examples'],
                     settings.split, counts['truncated_inputs'], counts['truncated_targets'],
                     self.task_feature_lengths)

  # ---------------------------------------------------------------- model fns

  def _place(self, rows: np.ndarray) -> jax.Array:
    """Rows on the devices: split over the mesh's `data` axis, or on the default device."""
    if self.mesh is None:
      return jnp.asarray(rows)
    return partitioning.global_batch({'rows': rows}, self.mesh)['rows']

  def _gather(self, outputs):
    """Every row of the outputs, on every process."""
    if self.mesh is None:
      return jax.device_get(outputs)
    return multihost_utils.process_allgather(outputs, tiled=True)

  def _model_batches(self, ds):
    return _batches(ds, self.settings.batch_size, self._padded_size, self.length_buckets)

  def _method_inputs(self, task_name: str) -> MethodInputs:
    """Every row of a batch of `task_name`'s examples: its TASK_INDEX."""
    rows = np.full(self._padded_size, self.task_index[task_name], np.int32)
    return MethodInputs(task_index=self._place(rows))

  def predict_fn(self, params, task_name: str) -> Callable[[tf.data.Dataset], list]:
    inputs = self._method_inputs(task_name)
    s = self.settings

    def predict(ds):
      out = []
      for index, tokens, _ in self._model_batches(ds):
        keys = None
        if s.decoder == SAMPLE:  # Each example's own key, from its position in the split.
          rows = np.pad(index, (0, len(tokens) - len(index)))
          keys = self._place(np.asarray(decoding.example_keys(s.sample_seed, rows)))
        predicted, _ = self._gather(decoding.jit_decode(
            self.model, params, self._place(tokens), max_decode_length=self.max_decode_length,
            decoder=s.decoder, beam_size=s.beam_size, alpha=s.alpha, temperature=s.temperature,
            top_k=s.top_k, top_p=s.top_p, keys=keys, method_inputs=inputs))
        if self.target_sentinel is not None:
          predicted = sentinel_lib.strip_leading(predicted, self.target_sentinel)
        out.extend((int(i), _after_eos_zeroed(row)) for i, row in zip(index, predicted))
      return out
    return predict

  def _ranked_packed(self, params, task_name: str, tokens: np.ndarray,
                     label_ids: np.ndarray) -> np.ndarray:
    """The best label [n] of each of the examples `tokens` [n, L], ranked in packed rows."""
    packed, rows = data_lib.pack_encoder_rows(
        tokens, np.full(len(tokens), self.task_index[task_name], np.int32), self.packing)
    best, _ = self._gather(scoring.jit_rank_classify_packed(
        self.model, params, {k: self._place(v) for k, v in packed.items()},
        jnp.asarray(label_ids), members=max(len(row) for row in rows)))
    out = np.zeros(len(tokens), np.int32)
    for r, row in enumerate(rows):
      out[row] = best[r, :len(row)]
    return out

  def rank_fn(self, params, task_name: str, label_ids: np.ndarray
              ) -> Callable[[tf.data.Dataset], list]:
    inputs = self._method_inputs(task_name)

    def predict(ds):
      out = []
      for index, tokens, _ in self._model_batches(ds):
        if self.packing is not None:
          best = self._ranked_packed(params, task_name, tokens[:len(index)], label_ids)
        else:
          best, _ = self._gather(scoring.jit_rank_classify(
              self.model, params, self._place(tokens), jnp.asarray(label_ids),
              method_inputs=inputs))
        predicted = label_ids[best]  # The chosen labels' tokens, sentinel stripped.
        if self.target_sentinel is not None:
          predicted = sentinel_lib.strip_leading(predicted, self.target_sentinel)
        out.extend((int(i), row) for i, row in zip(index, predicted))
      return out
    return predict

  def score_fn(self, params, task_name: str) -> Callable[[tf.data.Dataset], list]:
    inputs = self._method_inputs(task_name)

    def score(ds):
      out = []
      for index, tokens, targets in self._model_batches(ds):
        if self.target_sentinel is not None:
          targets = sentinel_lib.prefix_targets(targets, self.target_sentinel)
        scores = self._gather(scoring.jit_score_targets(
            self.model, params, self._place(tokens), self._place(targets),
            method_inputs=inputs))
        out.extend((int(i), float(v)) for i, v in zip(index, scores))
      return out
    return score

  # ---------------------------------------------------------------- evaluate

  def evaluate(self, params, step: int) -> dict[str, float]:
    """Flat metrics {'<task>/<metric>': value}.

    Rank classification's are `<task>/rank_classification/<metric>` (a task with
    score metrics too has them there as well, with the same values).
    """
    results: dict[str, float] = {}
    for task_name, evaluator in self._main.items():
      metrics, _ = evaluator.evaluate(compute_metrics=True, step=step,
                                      predict_fn=self.predict_fn(params, task_name),
                                      score_fn=self.score_fn(params, task_name))
      results.update(_flatten(metrics.result()))
    for task_name, (evaluator, label_ids) in self._rank.items():
      # seqio computes every metric of the task: its score metrics (if any) need scores.
      metrics, _ = evaluator.evaluate(compute_metrics=True, step=step,
                                      predict_fn=self.rank_fn(params, task_name, label_ids),
                                      score_fn=self.score_fn(params, task_name))
      results.update(_flatten(metrics.result(), infix=RANK_CLASSIFICATION))
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


def evaluate_and_record(evaluator: Evaluator, params, step: int,
                        writer: logging_utils.MetricsWriter, progress: logging_utils.Progress
                        ) -> tuple[dict[str, float], Optional[float]]:
  """Evaluates; logs a line per task and writes each task's metrics (split `eval/<task>`).

  Returns the metrics and the value that ranks checkpoints (None without a
  best metric).
  """
  tick = time.time()
  metrics = evaluator.evaluate(params, step)
  for line in summary_lines(metrics, step):
    progress.log(line)
  progress.log(f'eval took {time.time() - tick:.1f}s')
  by_task: dict[str, dict[str, float]] = {}
  for key, value in metrics.items():
    task, name = key.split('/', 1)
    by_task.setdefault(task, {})[name] = value
  for task, values in by_task.items():
    writer.write(step, f'eval/{task}', values)
  best = evaluator.settings.best_metric
  value = selection_value(metrics, best) if best else None
  if best and value is None:
    names = sorted({key.split('/', 1)[-1] for key in metrics})
    progress.log(f'BEST_METRIC={best!r} is not among the eval metrics {names}: no best '
                 'checkpoint is kept. Set BEST_METRIC to one of them, or to None.')
  return dict(metrics), value
