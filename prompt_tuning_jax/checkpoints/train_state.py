"""The train state on disk: orbax checkpoints plus the method's numpy exports (the prompt).

Layout under MODEL_DIR:

  checkpoints/<step>/state   the TrainState (step, trainable params, optimiser
                             state); the frozen weights are not written: they
                             come from INITIAL_CHECKPOINT_PATH on every start.
  checkpoints/<step>/meta    JSON: the data position, the eval metrics and the
                             topology (processes, devices, mesh) that wrote it.
  numpy_checkpoints/checkpoint_<step>/<name>
                             the method's exports (`Method.exports`) as float32
                             .npy arrays, for every save; prompt tuning's is
                             encoder.prompt.prompt.prompt (the original
                             implementation's layout).
  best_checkpoint.json       the best step by the best metric, written by the
                             train loop at its end.

Atomicity: orbax writes each step into a temporary directory and renames it
when complete (on gs://, where there is no rename, it writes the step's
directory and then `commit_success.txt`), and lists only complete steps; a run
killed mid-write, or whose bucket stopped answering, leaves a step that is
ignored (and removed by the next writing checkpointer), so a restore always
finds the last complete checkpoint.

Damage: a restore of the latest step that fails (files damaged or cut short
after the save) falls back to the newest step that restores, with a warning
naming the bad one; a writing checkpointer moves it aside to
`checkpoints/<step>.damaged`, so that the resumed run can save that step again.
When no step restores, the newest one's error is raised.

Retention: the latest `keep` steps, plus the best step by `best_metric`
(when given) among those saved with eval metrics.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable, Mapping, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies

from prompt_tuning_jax import distributed
from prompt_tuning_jax import train_step
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.methods import PROMPT_PATH

STATE, META = 'state', 'meta'
CHECKPOINT_SUBDIR = 'checkpoints'
NUMPY_SUBDIR = 'numpy_checkpoints'
BEST_CHECKPOINT_FILE = 'best_checkpoint.json'
DAMAGED_SUFFIX = '.damaged'
# What orbax and TensorStore raise for unreadable, cut-short or mismatched checkpoint files.
_RESTORE_ERRORS = (ValueError, KeyError, TypeError, OSError)

logger = logging.getLogger('prompt_tuning_jax')
# {path: trainable parameter} -> {file name: array}: what is exported beside each checkpoint.
Exports = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def numpy_checkpoint_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, NUMPY_SUBDIR, f'checkpoint_{step}')


def prompt_file(model_dir: str, step: int, path: str = PROMPT_PATH) -> str:
  """Where the numpy export of the prompt parameter `path` at `step` lives."""
  return os.path.join(numpy_checkpoint_dir(model_dir, step), path.replace('/', '.'))


class TrainStateCheckpointer:
  """Saves and restores `train_step.TrainState`s under `model_dir`.

  `exports` (the run's `Method.exports`) gives the numpy files written with each save.
  """

  def __init__(self, model_dir: str, *, keep: int = 3, best_metric: Optional[str] = None,
               best_mode: str = 'max', read_only: bool = False,
               exports: Optional[Exports] = None):
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    if keep < 1:
      raise ValueError(f'KEEP_CHECKPOINTS must be at least 1, got {keep}.')
    self.model_dir = model_dir
    self.read_only = read_only
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._exports = exports
    kept = [policies.LatestN(n=keep)]
    if best_metric:
      kept.append(policies.BestN(
          get_metric_fn=self._metric_value, reverse=best_mode == 'min', n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(kept),
        enable_async_checkpointing=False, cleanup_tmp_directories=not read_only,
        create=False, read_only=read_only)  # checkpoints/ appears with the first save.
    local = '://' not in model_dir
    self._manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(model_dir) if local else model_dir, CHECKPOINT_SUBDIR),
        options=options, item_names=(STATE, META))

  def _metric_value(self, metrics: Mapping[str, Any]) -> float:
    value = metrics.get(self.best_metric)
    if value is None:  # Saved with metrics, but not this one: never the best.
      return float('inf') if self.best_mode == 'min' else float('-inf')
    return float(value)

  # ---------------------------------------------------------------- queries

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def best_step(self) -> Optional[int]:
    """The kept step with the best `best_metric`, or None."""
    if not self.best_metric:
      return None
    scored = [(self._metric_value(m), s) for s in self.all_steps()
              if (m := self.metrics(s)) and self.best_metric in m]
    if not scored:
      return None
    pick = min if self.best_mode == 'min' else max
    return pick(scored)[1]

  def metrics(self, step: int) -> Optional[dict[str, float]]:
    """The eval metrics saved with `step` (None when it was saved without)."""
    return self.meta(step).get('metrics')

  def meta(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
    return dict(restored[META])

  # ---------------------------------------------------------------- save / restore

  def save(self, state: train_step.TrainState, *, data_position: Mapping[str, Any],
           metrics: Optional[Mapping[str, float]] = None,
           topology: Optional[Mapping[str, Any]] = None) -> int:
    """Writes `state` (atomically) and its numpy exports; returns the step.

    A write that fails (disk full, permissions) leaves nothing of the step behind.
    """
    step = int(jax.device_get(state.step))
    meta = {'step': step, 'data_position': dict(data_position)}
    if topology is not None:
      meta['topology'] = dict(topology)
    if metrics is not None:
      meta['metrics'] = {k: float(v) for k, v in metrics.items()}
    previous = self.latest_step()
    quiet = _WriteErrorFilter()  # Orbax's threads log each failed write with its traceback.
    logging.getLogger('absl').addFilter(quiet)
    try:
      self._manager.save(
          step, args=ocp.args.Composite(**{
              STATE: ocp.args.StandardSave(state._asdict()),
              META: ocp.args.JsonSave(meta)}),
          metrics=meta.get('metrics'), force=True)
      self._manager.wait_until_finished()
      if distributed.is_primary():  # Orbax writes collectively; the numpy export once.
        self.export_numpy(step, state.trainable)
    except _write_errors('://' in self.model_dir) as e:
      last = (f'the last complete checkpoint is step {previous}' if previous is not None
              else 'no checkpoint was saved')
      if '://' in self.model_dir:  # Unreachable: what is left of the step is never listed.
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise tree_lib.CheckpointError(
            f'Cannot write the checkpoint of step {step} in {self.model_dir}: {reason}. '
            f'Training stopped; {last}. Run the same command to resume once '
            f'{self.model_dir} answers again.') from e
      self._remove_partial(step)
      raise tree_lib.CheckpointError(
          f'Cannot write the checkpoint of step {step} in {self.model_dir}: '
          f'{e.strerror or e}. Training stopped; {last}. Free space (or fix the permissions) '
          'and run the same command to resume.') from e
    finally:
      logging.getLogger('absl').removeFilter(quiet)
    return step

  def _remove_partial(self, step: int) -> None:
    """Deletes what a failed save of `step` wrote (first process only)."""
    if jax.process_index() != 0:
      return
    directory = epath.Path(self._manager.directory)
    for path in directory.glob(f'{step}.orbax-checkpoint-tmp*'):
      path.rmtree(missing_ok=True)  # Orbax's own start-up cleanup may be removing it too.
    if step not in self.all_steps():
      numpy_dir = epath.Path(numpy_checkpoint_dir(self.model_dir, step))
      if numpy_dir.exists():
        numpy_dir.rmtree()

  def export_numpy(self, step: int, trainable: Mapping[str, Any]) -> list[str]:
    """Writes the method's exports of `trainable` as float32 .npy files; returns their paths."""
    if self._exports is None:
      return []
    written = []
    for name, value in self._exports(tree_lib.flatten(trainable)).items():
      target = os.path.join(numpy_checkpoint_dir(self.model_dir, step), name)
      prompt_io.save_prompt(target, jax.device_get(value))
      written.append(target)
    return written

  def restore(self, abstract_state: train_step.TrainState, step: Optional[int] = None
              ) -> tuple[train_step.TrainState, dict[str, Any]]:
    """Restores `step` (default: the latest) into the structure/shardings of `abstract_state`.

    `abstract_state` holds arrays or `jax.ShapeDtypeStruct`s (with shardings).
    Returns (state, meta).
    """
    target = jax.tree.map(_abstract, abstract_state._asdict())
    step, restored = self._restore(step, ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore(target), META: ocp.args.JsonRestore()}))
    state = train_step.TrainState(**restored[STATE])
    logger.info('Restored the train state of step %d from %s.', step, self._manager.directory)
    return state, dict(restored[META])

  def restore_trainable(self, step: Optional[int] = None) -> tuple[dict[str, Any], int]:
    """The trainable params of `step` (default: the latest), without needing the optimiser.

    Returns (trainable params as nested dicts of arrays, step).
    """
    if step is not None and step not in self.all_steps():
      raise tree_lib.CheckpointError(f'No checkpoint of step {step} in {self._manager.directory}; '
                              f'kept steps: {self.all_steps()}.')
    step, restored = self._restore(step, ocp.args.Composite(**{
        STATE: ocp.args.StandardRestore()}))
    return dict(restored[STATE]['trainable']), step

  def _restore(self, step: Optional[int], args: ocp.args.Composite) -> tuple[int, Any]:
    """(step, what orbax restored): `step`, or by default the newest step that restores."""
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    if not steps:
      raise tree_lib.CheckpointError(f'No checkpoint in {self._manager.directory}.')
    failed = []
    for candidate in steps:
      try:
        restored = self._manager.restore(candidate, args=args)
      except _RESTORE_ERRORS as e:
        failed.append((candidate, e))
        continue
      if failed:
        self._set_aside(failed, candidate)
      return candidate, restored
    bad, error = failed[0]
    raise tree_lib.CheckpointError(
        f'{self._manager.directory}/{bad}: the saved train state does not match this run '
        f'(different model, prompt length or optimiser?), or its files are damaged: '
        f'{error}') from error

  def _set_aside(self, failed: list[tuple[int, Exception]], used: int) -> None:
    """Warns of the steps that did not restore; moves them aside when writing."""
    directory = epath.Path(self._manager.directory)
    for bad, error in failed:
      reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
      moved = ''
      if not self.read_only:
        target = directory / f'{bad}{DAMAGED_SUFFIX}'
        if target.exists():  # damaged before: keep both
          target = directory / f'{bad}{DAMAGED_SUFFIX}.{len(list(directory.iterdir()))}'
        moved = f'; moved to {target}'
        if jax.process_index() == 0:
          (directory / str(bad)).rename(target)
      logger.warning('Checkpoint %s cannot be restored (%s): using step %d, the newest intact '
                     'one, instead%s.', directory / str(bad), reason, used, moved)
    if not self.read_only:
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices('ptj: damaged checkpoints moved aside')
      self._manager.reload()

  def close(self) -> None:
    self._manager.close()


def _write_errors(remote: bool = True) -> tuple[type[Exception], ...]:
  """What a failed write raises: OSError; on a remote MODEL_DIR also TensorFlow's errors
  (orbax's gfile) and TensorStore's ValueErrors (orbax's arrays), after their retries."""
  if not remote:
    return (OSError,)
  tf = sys.modules.get('tensorflow')
  return (OSError, ValueError) + ((tf.errors.OpError,) if tf is not None else ())


class _WriteErrorFilter(logging.Filter):
  """Drops log records of OSErrors (the save reports them in one line)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], _write_errors()))


def _abstract(x):
  if isinstance(x, jax.ShapeDtypeStruct):
    return x
  sharding = getattr(x, 'sharding', None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def write_json(path: str, value: Mapping[str, Any]) -> None:
  """Writes a small JSON file atomically."""
  tree_lib.write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + '\n').encode())
