"""Where run metrics go: log lines, `metrics.jsonl`, TensorBoard, a progress bar.

`metrics.jsonl` in MODEL_DIR gets one JSON object per record:
`{"step": 120, "split": "train", "loss": 2.31, ...}`; eval records have
`"split": "eval/<task>"`. TensorBoard event files are written under
`MODEL_DIR/tensorboard/<split>`.
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
  """Appends metrics to MODEL_DIR/metrics.jsonl and TensorBoard; no-op if not primary."""

  def __init__(self, model_dir: str, enabled: bool = True):
    self.model_dir = model_dir
    self.enabled = enabled
    self._writers = {}
    if enabled:
      os.makedirs(model_dir, exist_ok=True)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split, **{k: float(v) for k, v in metrics.items()}}
    with open(os.path.join(self.model_dir, METRICS_FILE), 'a') as f:
      f.write(json.dumps(record) + '\n')
    writer = self._writer(split.split('/')[0])
    prefix = split.split('/', 1)[1] + '/' if '/' in split else ''
    for name, value in metrics.items():
      writer.add_scalar(prefix + name, float(value), int(step))
    writer.flush()

  def _writer(self, name: str):
    if name not in self._writers:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writers[name] = SummaryWriter(
          os.path.join(self.model_dir, TENSORBOARD_SUBDIR, name))
    return self._writers[name]

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()


def read_metrics(model_dir: str) -> list[dict]:
  """The records of MODEL_DIR/metrics.jsonl (empty if none)."""
  path = os.path.join(model_dir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def format_train_line(step: int, total: int, metrics: Mapping[str, float],
                      eta_seconds: Optional[float]) -> str:
  """`step 120/300 | loss 2.31 | acc 0.41 | lr 0.3 | 85.2 ex/s | 10.9k tok/s |
  pad eff 0.71 [32+16:80 64+16:20] | eta 0:01:02` (batch shapes inputs+targets:steps)."""
  parts = [f'step {step}/{total}', f'loss {metrics["loss"]:.4g}',
           f'acc {metrics["accuracy"]:.3f}']
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
    return cls(tokens=int((inputs > 0).sum() + (targets > 0).sum()),
               positions=inputs.size + targets.size,
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
    """Window averages; loss and z-loss per target token whatever the normalisation."""
    values = self.values()
    tokens = sum(float(m['target_tokens']) for m in values)

    def per_token(key):  # 'sum' normalisation reports sums, 'mean' per-token means.
      weight = (lambda m: 1.0) if self.loss_normalization == 'sum' else (
          lambda m: float(m['target_tokens']))
      return sum(float(m[key]) * weight(m) for m in values) / max(tokens, 1.0)

    return {
        'loss': per_token('loss'),
        'z_loss': per_token('z_loss'),
        'accuracy': sum(float(m['accuracy']) * float(m['target_tokens']) for m in values)
                    / max(tokens, 1.0),
        'grad_norm': float(np.mean([float(m['grad_norm']) for m in values])),
        'target_tokens_per_step': tokens / len(values),
    }
