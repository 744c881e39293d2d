"""Where run metrics go: log lines, `metrics.jsonl`, TensorBoard, a progress bar.

`metrics.jsonl` in MODEL_DIR gets one JSON object per record:
`{"step": 120, "split": "train", "loss": 2.31, ...}`; eval records have
`"split": "eval/<task>"`. TensorBoard event files are written under
`MODEL_DIR/tensorboard/<split>`. On gs:// both go through `storage` (TensorBoard's
event files through a tensorboardX writer factory), each write replacing the object.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import math
import os
import sys
import time
from typing import Mapping, Optional

import jax
import numpy as np

from prompt_tuning_jax import storage
from prompt_tuning_jax.errors import StorageError

logger = logging.getLogger('prompt_tuning_jax')

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_SUBDIR = 'tensorboard'


def setup_logging(level: int = logging.INFO) -> None:
  """Plain timestamped lines on stderr (one handler on the root logger); quiets seqio/orbax/TF."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', datefmt='%H:%M:%S'))
  # Other libraries' info lines (absl's bypass logger levels) stay out; warnings pass.
  handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name.startswith(logger.name))
  root = logging.getLogger()
  root.handlers = [handler]  # Replaces absl's and basicConfig's, which would print twice.
  root.setLevel(logging.WARNING)
  logger.setLevel(level)
  # seqio/orbax warn through absl about things that are fine here (e.g. eval
  # lengths longer than needed); our own warnings use the 'prompt_tuning_jax' logger.
  for name in ('absl', 'jax', 'orbax', 'tensorflow'):
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.ERROR)
  except ImportError:
    pass


class MetricsWriter:
  """Appends metrics to MODEL_DIR/metrics.jsonl and TensorBoard; no-op if not primary.

  A training run resumed at `resume_step` first drops the records of later steps (written
  before the run stopped, and about to be written again), and TensorBoard purges them too.
  """

  def __init__(self, model_dir: str, enabled: bool = True, resume_step: Optional[int] = None):
    self.model_dir = model_dir
    self.enabled = enabled
    self._writers = {}
    self._purge_step = None if resume_step is None else resume_step + 1
    self._event_files = _ObjectEventFiles()
    if enabled and not storage.is_gcs(model_dir):
      os.makedirs(model_dir, exist_ok=True)
    if enabled and resume_step is not None:
      self._drop_after(resume_step)

  def _drop_after(self, step: int) -> None:
    path = os.path.join(self.model_dir, METRICS_FILE)
    data = storage.read(path)
    if data is None:
      return
    lines = data.decode().splitlines(keepends=True)

    def kept(line: str) -> bool:
      try:
        return json.loads(line)['step'] <= step
      except (ValueError, KeyError, TypeError):  # A line cut short by the kill.
        return False

    keep = [line.rstrip('\n') + '\n' for line in lines if kept(line)]
    if keep != lines:
      storage.write(path, ''.join(keep).encode())

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    path = os.path.join(self.model_dir, METRICS_FILE)
    try:
      storage.append(path, (json.dumps(record) + '\n').encode())
      writer = self._writer(split.split('/')[0])
      prefix = split.split('/', 1)[1] + '/' if '/' in split else ''
      for name, value in metrics.items():
        writer.add_scalar(prefix + name, float(value), int(step))
      writer.flush()
      self._event_files.check()
    except OSError as e:
      raise StorageError(
          f'Cannot write the metrics of step {step} to {self.model_dir}: {e}. The run stopped; '
          'run the same command to resume from its last complete checkpoint (once '
          f'{self.model_dir} can be written again).') from e

  def _writer(self, name: str):
    if name not in self._writers:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
      record_writer.register_writer_factory('gs', self._event_files)
      # Flushed by `write`; tensorboardX's own timer thread waits a day (its longest wait).
      self._writers[name] = SummaryWriter(
          os.path.join(self.model_dir, TENSORBOARD_SUBDIR, name), purge_step=self._purge_step,
          flush_secs=24 * 3600)
    return self._writers[name]

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    try:
      self._event_files.check()
    except OSError as e:  # The run's own error (or its end) is what matters now.
      logger.warning('Could not write the last TensorBoard events: %s', e)


class _ObjectEventFile:
  """A TensorBoard event file on gs://: kept in memory, the object rewritten at each flush.

  A failed write is kept (`error`), not raised inside tensorboardX, and stops later ones.
  """

  def __init__(self, path: str):
    self.path = path
    self.data = bytearray()
    self.flushed = 0
    self.error: Optional[OSError] = None

  def write(self, data: bytes) -> None:
    self.data += data

  def flush(self) -> None:
    if self.error is None and len(self.data) > self.flushed:
      try:
        storage.write(self.path, bytes(self.data))
        self.flushed = len(self.data)
      except OSError as e:
        self.error = e

  def close(self) -> None:
    self.flush()


class _ObjectEventFiles:
  """tensorboardX's writer factory for gs:// (`record_writer.register_writer_factory`)."""

  def __init__(self):
    self.opened: list[_ObjectEventFile] = []

  def open(self, path: str) -> _ObjectEventFile:
    self.opened.append(_ObjectEventFile(path))
    return self.opened[-1]

  def directory_check(self, path: str) -> None:
    del path  # Buckets have no directories to create.

  def check(self) -> None:
    """Raises the first failed write of an event file."""
    for event_file in self.opened:
      if event_file.error is not None:
        raise event_file.error


def read_metrics(model_dir: str) -> list[dict]:
  """The records of MODEL_DIR/metrics.jsonl (empty if none)."""
  data = storage.read(os.path.join(model_dir, METRICS_FILE))
  return [json.loads(line) for line in (data or b'').decode().splitlines() if line.strip()]


def format_train_line(step: int, total: int, metrics: Mapping[str, float],
                      eta_seconds: Optional[float]) -> str:
  """`step 120/300 | loss 2.31 | acc 0.41 | lr 0.3 | 85.2 ex/s | 10.9k tok/s |
  pad eff 0.71 [32+16:80 64+16:20] | eta 0:01:02` (batch shapes inputs+targets:steps).

  A loss over the label set shows `rank acc` (on the batches) instead of `acc`
  (tokens); a run with a prompt `prompt norm 3.2 (emb 11.3)`: the mean L2 norm of
  the prompt's rows and of the embedding's rows; a regularizer (Wayward) `reg`."""
  parts = [f'step {step}/{total}', f'loss {metrics["loss"]:.4g}']
  if 'accuracy' in metrics:
    parts.append(f'acc {metrics["accuracy"]:.3f}')
  if 'rank_accuracy' in metrics:
    parts.append(f'rank acc {metrics["rank_accuracy"]:.3f}')
  if 'regularizer' in metrics:
    parts.append(f'reg {metrics["regularizer"]:.4g}')
  if 'prompt_norm' in metrics:
    parts.append(f'prompt norm {metrics["prompt_norm"]:.3g} (emb {metrics["embedding_norm"]:.3g})')
  if 'learning_rate' in metrics:
    parts.append(f'lr {metrics["learning_rate"]:.3g}')
  if 'examples_per_second' in metrics:
    parts.append(f'{metrics["examples_per_second"]:.1f} ex/s')
    parts.append(f'{_si(metrics["tokens_per_second"])} tok/s')
  if 'padding_efficiency' in metrics:
    shapes = ' '.join(f'{k[len("steps_inputs"):].replace("_targets", "+")}:{int(v)}'
                      for k, v in metrics.items() if k.startswith('steps_inputs'))
    parts.append(f'pad eff {metrics["padding_efficiency"]:.2f} [{shapes}]')
  if eta_seconds is not None:
    parts.append(f'eta {datetime.timedelta(seconds=round(eta_seconds))}')
  return ' | '.join(parts)


def _si(value: float) -> str:
  for unit, scale in (('M', 1e6), ('k', 1e3)):
    if value >= scale:
      return f'{value / scale:.1f}{unit}'
  return f'{value:.0f}'


class Progress:
  """A tqdm bar when stderr is a terminal; otherwise nothing (log lines suffice)."""

  def __init__(self, start: int, total: int):
    self._bar = None
    if sys.stderr.isatty():
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=start, unit='step', dynamic_ncols=True, leave=False)

  def update(self, n: int = 1, loss: Optional[float] = None) -> None:
    if self._bar is not None:
      self._bar.update(n)
      if loss is not None:
        self._bar.set_postfix(loss=f'{loss:.4g}')

  def log(self, line: str) -> None:
    """A log line that does not break the bar."""
    if self._bar is not None:
      self._bar.write(line, file=sys.stderr)
    else:
      logger.info(line)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


@dataclasses.dataclass(frozen=True)
class BatchShape:
  """What a training batch holds: real tokens, and the positions it is padded to."""
  tokens: int             # non-padding input + target tokens
  positions: int          # batch * (input + target length)
  inputs_length: int
  targets_length: int

  @classmethod
  def of(cls, batch: Mapping[str, np.ndarray]) -> 'BatchShape':
    """A T5 batch, or a decoder-only one (inputs and targets in one sequence: inputs_length
    is the sequence's, targets_length 0)."""
    targets = batch['decoder_target_tokens']
    if 'encoder_input_tokens' in batch:
      inputs = batch['encoder_input_tokens']
    else:
      inputs, targets = targets, targets[:, :0]
    # Packed rows' prompt positions (`data.PROMPT_SLOTS`) count neither as text nor as
    # padding, as the prompt of unpacked rows, which the batch does not hold.
    slots = int((batch['prompt_slots'] >= 0).sum()) if 'prompt_slots' in batch else 0
    return cls(tokens=int((inputs > 0).sum() + (targets > 0).sum()) - slots,
               positions=inputs.size + targets.size - slots,
               inputs_length=inputs.shape[1], targets_length=targets.shape[1])


class TrainWindow:
  """Train metrics of the steps since the last log line, kept on device until read."""

  def __init__(self, loss_normalization: str = 'sum'):
    self.loss_normalization = loss_normalization
    self.total_start = time.time()
    self.total_excluded = 0.0
    self.reset()

  def reset(self) -> None:
    self.pending: list[dict] = []
    self._fetched: list[dict] = []
    self.steps_done = 0
    self.tokens_done = 0
    self.positions_done = 0
    self.shapes: collections.Counter = collections.Counter()
    self.start = time.time()
    self.excluded = 0.0

  def add(self, metrics: Mapping[str, jax.Array], shape: BatchShape) -> None:
    self.pending.append(metrics)
    self.steps_done += 1
    self.tokens_done += shape.tokens
    self.positions_done += shape.positions
    self.shapes[shape.inputs_length, shape.targets_length] += 1

  def padding(self) -> dict[str, float]:
    """`padding_efficiency` (real tokens / padded positions, prompt excluded) and the
    bucket histogram: `steps_inputs<I>_targets<T>` steps at each batch shape."""
    out = {'padding_efficiency': self.tokens_done / max(self.positions_done, 1)}
    for (inputs, targets), count in sorted(self.shapes.items()):
      out[f'steps_inputs{inputs}_targets{targets}'] = count
    return out

  def exclude(self, seconds: float) -> None:
    """Time spent on eval/checkpoints: not training throughput."""
    self.excluded += seconds
    self.total_excluded += seconds

  @property
  def seconds(self) -> float:
    return max(time.time() - self.start - self.excluded, 1e-9)

  @property
  def total_seconds(self) -> float:
    return time.time() - self.total_start - self.total_excluded

  def values(self) -> list[dict]:
    """The window's metrics on the host (fetched once)."""
    if len(self._fetched) < len(self.pending):
      self._fetched += jax.device_get(self.pending[len(self._fetched):])
    return self._fetched

  def first_nonfinite_loss(self, step: int) -> Optional[tuple[int, float]]:
    """(step, loss) of the window's first NaN/inf loss; `step` is the window's last step."""
    values = self.values()
    for i, m in enumerate(values):
      if not math.isfinite(float(m['loss'])):
        return step - len(values) + 1 + i, float(m['loss'])
    return None

  def averages(self) -> dict[str, float]:
    """Window averages: the loss per target token (token loss) or per example (a loss over
    the label set), whatever the normalisation; the token or rank accuracy."""
    values = self.values()
    if 'examples' in values[0]:  # A loss over the label set.
      out = self._averaged(values, 'examples', 'rank_accuracy', ('loss',))
    else:
      tokens = sum(float(m['target_tokens']) for m in values)
      out = {**self._averaged(values, 'target_tokens', 'accuracy', ('loss', 'z_loss')),
             'target_tokens_per_step': tokens / len(values)}
    out['grad_norm'] = float(np.mean([float(m['grad_norm']) for m in values]))
    if 'regularizer' in values[0]:  # A penalty per step (train_step's `regularizer`).
      out['regularizer'] = float(np.mean([float(m['regularizer']) for m in values]))
    return out

  def _averaged(self, values: list[dict], count: str, accuracy: str, losses: tuple[str, ...]
                ) -> dict[str, float]:
    """Each of `losses` per unit of `count` and `accuracy` weighted by it, over the window."""
    total = max(sum(float(m[count]) for m in values), 1.0)
    # 'sum' normalisation reports sums, 'mean' means per unit.
    weight = (lambda m: 1.0) if self.loss_normalization == 'sum' else (lambda m: float(m[count]))
    out = {key: sum(float(m[key]) * weight(m) for m in values) / total for key in losses}
    out[accuracy] = sum(float(m[accuracy]) * float(m[count]) for m in values) / total
    return out
