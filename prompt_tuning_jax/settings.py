"""What a run is configured with: one frozen settings object per concern, checked when built.

`RunSettings` holds the model, MODEL_DIR and the run's length with one object
per concern: `DataSettings`, `PromptSettings`, `OptimizerSettings`,
`CheckpointSettings`, `EvalSettings`, `InferSettings`. gin builds them from the
macros of the run file (gin/runs/prompt_finetune.gin, where every setting's
default and meaning is written once); here they are plain Python. A field
bound by a macro has no default here. A value a user can get wrong raises
`errors.UsageError` when the object is built, before anything is loaded.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from prompt_tuning_jax.errors import UsageError

DECODE, RANK_CLASSIFICATION = 'decode', 'rank_classification'
METHODS = (DECODE, RANK_CLASSIFICATION)
GREEDY, BEAM = 'greedy', 'beam'
DECODERS = (GREEDY, BEAM)
PROMPT_INITS = ('random_uniform', 'sampled_vocab', 'class_labels', 'from_text')
LATEST, BEST = 'latest', 'best'
LOSS_NORMALIZATIONS = ('sum', 'mean')
# LENGTH_BUCKETS = POW2: each feature's buckets are the powers of two from its
# MIN_BUCKET up to its TASK_FEATURE_LENGTHS value, and that value itself
# (targets start lower: class labels are 1-3 tokens).
POW2 = 'pow2'
MIN_BUCKET = {'inputs': 16, 'targets': 4}
# RunSettings fields that may change when a run in MODEL_DIR is resumed.
RESUMABLE_FIELDS = ('model_dir', 'train_steps', 'log_period', 'eval_period', 'checkpoints',
                    'evaluation', 'inference', 'num_partitions', 'stop_on_divergence')


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise UsageError(message)


def _positive(value: Any, name: str, optional: bool = False) -> None:
  if optional and value is None:
    return
  _require(isinstance(value, int) and value >= 1, f'{name} must be a positive integer, got '
           f'{value!r}.')


def _one_of(value: Any, choices: Sequence[str], name: str) -> None:
  _require(value in choices, f'Unknown {name} {value!r}; expected one of {tuple(choices)}.')


def _freeze(obj: Any, **values: Any) -> None:
  """Sets normalised field values of a frozen dataclass (in __post_init__)."""
  for name, value in values.items():
    object.__setattr__(obj, name, value)


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """Which examples train, in which shapes and order (T5X's DatasetConfig)."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  batch_size: int
  seed: int
  # Module(s) imported to register the task (MIXTURE_OR_TASK_MODULE).
  module: Union[None, str, Sequence[str]]
  # LENGTH_BUCKETS: None (every batch padded to TASK_FEATURE_LENGTHS), 'pow2', or
  # {'inputs': (64, 128, 512), ...}; normalised to {feature: sorted lengths}. The
  # default keeps the fixed shapes of runs saved before buckets existed.
  length_buckets: Union[None, str, Mapping[str, Sequence[int]]] = None

  def __post_init__(self):
    _require(isinstance(self.mixture_or_task_name, str) and self.mixture_or_task_name,
             f'MIXTURE_OR_TASK_NAME must be a task or mixture name, got '
             f'{self.mixture_or_task_name!r}.')
    lengths = dict(self.task_feature_lengths)
    _require(set(lengths) == {'inputs', 'targets'},
             f"TASK_FEATURE_LENGTHS must have exactly 'inputs' and 'targets', got {lengths}.")
    for key, value in lengths.items():
      _positive(value, f'TASK_FEATURE_LENGTHS[{key!r}]')
    # One input token is EOS alone: the model would see no text.
    _require(lengths['inputs'] >= 2,
             f"TASK_FEATURE_LENGTHS['inputs']={lengths['inputs']}: at least 2 (text + EOS).")
    _positive(self.batch_size, 'BATCH_SIZE')
    _freeze(self, task_feature_lengths=lengths,
            module=self.module if self.module is None or isinstance(self.module, str)
            else tuple(self.module),
            length_buckets=_length_buckets(self.length_buckets, lengths))


def _length_buckets(buckets: Any, lengths: Mapping[str, int]
                    ) -> Optional[dict[str, tuple[int, ...]]]:
  """LENGTH_BUCKETS as {feature: ascending lengths ending at the feature length}, or None."""
  if buckets is None:
    return None
  if buckets == POW2:
    out = {}
    for key, length in lengths.items():
      powers = [2 ** k for k in range(MIN_BUCKET[key].bit_length() - 1, length.bit_length())]
      out[key] = tuple(p for p in powers if p < length) + (length,)
    return out
  _require(isinstance(buckets, Mapping) and set(buckets) <= set(lengths),
           f"LENGTH_BUCKETS must be None, {POW2!r} or a mapping of 'inputs'/'targets' to "
           f'lengths, got {buckets!r}.')
  out = {key: (length,) for key, length in lengths.items()}  # A feature not named: fixed.
  for key, values in buckets.items():
    name = f'LENGTH_BUCKETS[{key!r}]'
    values = (values,) if isinstance(values, int) else tuple(values)
    _require(bool(values) and all(isinstance(v, int) and v >= 1 for v in values),
             f'{name} must be positive integers, got {values!r}.')
    _require(list(values) == sorted(set(values)),
             f'{name} must be in ascending order without repeats, got {values!r}.')
    _require(values[-1] == lengths[key],
             f'{name}={values!r} must end at TASK_FEATURE_LENGTHS[{key!r}]={lengths[key]}, '
             'the length every example is cut to'
             + (' (longer examples would not fit a bucket).' if values[-1] < lengths[key]
                else ' (a longer bucket would never be used).'))
    out[key] = values
  return out


@dataclasses.dataclass(frozen=True)
class PromptSettings:
  """Where the prompt's initial value comes from: `file` when set, else the `init` initialiser."""
  init: str
  file: Optional[str]
  # Label words for class-label init and rank classification; None: the task's.
  class_labels: Optional[Sequence[str]]
  # The text of init 'from_text'.
  text: Optional[str] = None

  def __post_init__(self):
    _one_of(self.init, PROMPT_INITS, 'PROMPT_INIT')
    _require(self.init != 'from_text' or self.file or self.text,
             "PROMPT_INIT='from_text' needs the text: bind PromptSettings.text.")
    if self.class_labels is not None:
      _require(not isinstance(self.class_labels, str) and all(
          isinstance(w, str) and w for w in self.class_labels),
               f'CLASS_LABELS must be a list of words, got {self.class_labels!r}.')
      _freeze(self, class_labels=tuple(self.class_labels))


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """What trains and how."""
  # An optax optimiser factory called with `learning_rate=`, e.g. `optim.adafactor`.
  optimizer: Callable[..., Any]
  # A float, or a schedule: step -> rate.
  learning_rate: Union[float, Callable[[Any], Any]]
  # Regexes over '/'-joined parameter paths (`optim.partition`); None: the method's own
  # (`RunSettings.trainable_rules`).
  trainable_rules: Optional[Sequence[str]]
  accumulation_steps: int
  z_loss: float = 1e-4
  loss_normalization: str = 'sum'

  def __post_init__(self):
    _require(callable(self.optimizer),
             f'OPTIMIZER must be an optimiser factory such as @optim.adafactor, got '
             f'{self.optimizer!r}.')
    _require(callable(self.learning_rate) or (
        isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0),
             f'LEARNING_RATE must be a positive number or a schedule, got '
             f'{self.learning_rate!r}.')
    _positive(self.accumulation_steps, 'ACCUMULATION_STEPS')
    _one_of(self.loss_normalization, LOSS_NORMALIZATIONS, 'loss_normalization')
    if self.trainable_rules is None:
      return
    rules = (self.trainable_rules,) if isinstance(self.trainable_rules, str) else tuple(
        self.trainable_rules)
    _require(bool(rules), 'TRAINABLE_RULES is empty: nothing would train.')
    for rule in rules:
      try:
        re.compile(rule)
      except (re.error, TypeError) as e:
        raise UsageError(f'TRAINABLE_RULES: {rule!r} is not a regular expression ({e}).') from e
    _freeze(self, trainable_rules=rules)


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
  """When the train state is saved, how many are kept, which one eval/infer read."""
  period: int
  keep: int
  # eval / infer: 'latest', 'best' (by EvalSettings.best_metric) or a step.
  step: Union[int, str]

  def __post_init__(self):
    _positive(self.period, 'CHECKPOINT_PERIOD')
    _positive(self.keep, 'KEEP_CHECKPOINTS')
    _require(self.step in (LATEST, BEST) or (isinstance(self.step, int) and self.step >= 0),
             f"CHECKPOINT_STEP must be 'latest', 'best' or a step, got {self.step!r}.")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How to evaluate, during training and with `ptj eval`; infer decodes the same way."""
  split: str
  methods: Sequence[str]
  decoder: str
  beam_size: int
  batch_size: int
  # First N examples of each task's split; None: all.
  num_examples: Optional[int]
  # Keeps the best checkpoint by this metric (averaged over tasks); None: none.
  best_metric: Optional[str]
  best_mode: str = 'max'
  alpha: float = 0.6

  def __post_init__(self):
    methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
    _require(bool(methods), f'EVAL_METHODS is empty; expected some of {METHODS}.')
    for method in methods:
      _one_of(method, METHODS, 'eval method (EVAL_METHODS)')
    _one_of(self.decoder, DECODERS, 'DECODER')
    _positive(self.beam_size, 'BEAM_SIZE')
    _positive(self.batch_size, 'EVAL_BATCH_SIZE')
    _positive(self.num_examples, 'NUM_EVAL_EXAMPLES', optional=True)
    _one_of(self.best_mode, ('max', 'min'), 'best_mode')
    _freeze(self, methods=methods)


@dataclasses.dataclass(frozen=True)
class InferSettings:
  """What `ptj infer` predicts and where it writes."""
  # jsonl of {"inputs": ...}; None: the task's `split`.
  input_file: Optional[str]
  split: str
  # None: MODEL_DIR/inference/<name>_<step>.jsonl.
  output_file: Optional[str]
  method: str
  num_examples: Optional[int]

  def __post_init__(self):
    _one_of(self.method, METHODS, 'INFER_METHOD')
    _positive(self.num_examples, 'INFER_NUM_EXAMPLES', optional=True)


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Everything a run (train, eval, infer, ensemble) is configured with."""
  model_dir: str
  # The flax module: models.T5 with its method (`model.method`: methods/).
  model: Any
  # T5X or Hugging Face checkpoint of the frozen weights; None: random weights.
  initial_checkpoint_path: Optional[str]
  data: DataSettings
  prompt: PromptSettings
  optimizer: OptimizerSettings
  checkpoints: CheckpointSettings
  evaluation: EvalSettings
  inference: InferSettings
  train_steps: int
  # Steps between evaluations during training; None: none.
  eval_period: Optional[int]
  log_period: int
  # Model-parallel devices; the rest split the batch.
  num_partitions: int
  # Stop (DivergedError) when the prompt's rows grow far beyond the embedding's; else a
  # warning. The default serves runs saved before the setting existed.
  stop_on_divergence: bool = False

  def __post_init__(self):
    _require(isinstance(self.model_dir, str) and self.model_dir,
             f'MODEL_DIR must be a directory, got {self.model_dir!r}.')
    _require(isinstance(self.train_steps, int) and self.train_steps >= 0,
             f'TRAIN_STEPS must be a non-negative integer, got {self.train_steps!r}.')
    _positive(self.eval_period, 'EVAL_PERIOD', optional=True)
    _positive(self.log_period, 'LOG_PERIOD')
    _positive(self.num_partitions, 'NUM_PARTITIONS')
    _require(isinstance(self.stop_on_divergence, bool),
             f'STOP_ON_DIVERGENCE must be True or False, got {self.stop_on_divergence!r}.')
    accumulation = self.optimizer.accumulation_steps
    _require(self.data.batch_size % accumulation == 0,
             f'BATCH_SIZE={self.data.batch_size} is not divisible by '
             f'ACCUMULATION_STEPS={accumulation}.')

  @property
  def trainable_rules(self) -> tuple[str, ...]:
    """TRAINABLE_RULES, or when None the model's method's own (`methods.Method`)."""
    rules = self.optimizer.trainable_rules
    return tuple(self.model.method.trainable_rules) if rules is None else rules

