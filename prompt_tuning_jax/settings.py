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
import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from prompt_tuning_jax.errors import UsageError

DECODE, RANK_CLASSIFICATION = 'decode', 'rank_classification'
METHODS = (DECODE, RANK_CLASSIFICATION)
GREEDY, BEAM, SAMPLE = 'greedy', 'beam', 'sample'
DECODERS = (GREEDY, BEAM, SAMPLE)
PROMPT_INITS = ('random_uniform', 'sampled_vocab', 'class_labels', 'from_text')
LATEST, BEST = 'latest', 'best'
LOSS_NORMALIZATIONS = ('sum', 'mean')
# LOSS: what a train step minimises (objectives.py). The first is T5X's token loss; the
# others score every label word of the example's task (its label set) and compare them.
TOKEN_CROSS_ENTROPY = 'token_cross_entropy'
LABEL_SET_LOSSES = ('sequence_cross_entropy', 'perceptron', 'hinge')
LOSSES = (TOKEN_CROSS_ENTROPY, *LABEL_SET_LOSSES)
# LENGTH_BUCKETS = POW2: each feature's buckets are the powers of two from its
# MIN_BUCKET up to its TASK_FEATURE_LENGTHS value, and that value itself
# (targets start lower: class labels are 1-3 tokens).
POW2 = 'pow2'
MIN_BUCKET = {'inputs': 16, 'targets': 4}
# LENGTH_BUCKETS = 'step<N>' (e.g. 'step32'): the inputs' buckets are the multiples of N up
# to the inputs length, and that length itself; the targets' those of POW2. Finer than POW2:
# less padding, more shapes to compile (the compilation cache keeps them across runs).
STEP = re.compile(r'step([1-9][0-9]*)')
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
  # PACK_LENGTHS: None (one example a row), or {'inputs': R, 'targets': D}: each batch's
  # examples packed into rows of R encoder positions (each example's prompt included) and D
  # decoder positions (`data.pack_batch`); eval's rank classification packs its batches'
  # inputs into rows of R too (`scoring.rank_classify_packed`).
  pack_lengths: Optional[Mapping[str, int]] = None
  # TARGET_SENTINEL: every target starts with the vocabulary's first sentinel,
  # <extra_id_0> (`sentinel.py`). Off in runs saved before it existed.
  target_sentinel: bool = False

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
    _require(isinstance(self.target_sentinel, bool),
             f'TARGET_SENTINEL must be True or False, got {self.target_sentinel!r}.')
    if self.pack_lengths is not None:
      _require(isinstance(self.pack_lengths, Mapping)
               and set(self.pack_lengths) == {'inputs', 'targets'},
               f"PACK_LENGTHS must be None or {{'inputs': R, 'targets': D}}, got "
               f'{self.pack_lengths!r}.')
      for key, value in self.pack_lengths.items():
        _positive(value, f'PACK_LENGTHS[{key!r}]')
      _require(self.pack_lengths['targets'] >= lengths['targets'],
               f"PACK_LENGTHS['targets']={self.pack_lengths['targets']} must hold the longest "
               f"target, TASK_FEATURE_LENGTHS['targets']={lengths['targets']}.")
      _freeze(self, pack_lengths=dict(self.pack_lengths))
    _freeze(self, task_feature_lengths=lengths,
            module=self.module if self.module is None or isinstance(self.module, str)
            else tuple(self.module),
            length_buckets=_length_buckets(self.length_buckets, lengths))


def _length_buckets(buckets: Any, lengths: Mapping[str, int]
                    ) -> Optional[dict[str, tuple[int, ...]]]:
  """LENGTH_BUCKETS as {feature: ascending lengths ending at the feature length}, or None."""
  if buckets is None:
    return None
  step = STEP.fullmatch(buckets) if isinstance(buckets, str) else None
  if buckets == POW2 or step:
    out = {}
    for key, length in lengths.items():
      powers = [2 ** k for k in range(MIN_BUCKET[key].bit_length() - 1, length.bit_length())]
      out[key] = tuple(p for p in powers if p < length) + (length,)
    if step:
      n = int(step.group(1))
      out['inputs'] = tuple(range(n, lengths['inputs'], n)) + (lengths['inputs'],)
    return out
  _require(isinstance(buckets, Mapping) and set(buckets) <= set(lengths),
           f"LENGTH_BUCKETS must be None, {POW2!r}, 'step<N>' (e.g. 'step32') or a mapping of "
           f"'inputs'/'targets' to lengths, got {buckets!r}.")
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
  # LOSS: one of LOSSES; HINGE_MARGIN: the margin of 'hinge' (in label log-likelihood).
  loss: str = TOKEN_CROSS_ENTROPY
  hinge_margin: float = 1.0
  z_loss: float = 1e-4
  loss_normalization: str = 'sum'
  # Wayward prompts (`wayward.py`): WAYWARD_WEIGHT x the mean squared distance between the
  # prompt's first rows and the embedded WAYWARD_TEXT joins the loss; weight 0: off.
  wayward_weight: float = 0.0
  wayward_text: Optional[str] = None

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
    _require(isinstance(self.wayward_weight, (int, float)) and self.wayward_weight >= 0,
             f'WAYWARD_WEIGHT must be a number >= 0, got {self.wayward_weight!r}.')
    _require(self.wayward_text is None or (isinstance(self.wayward_text, str)
                                           and self.wayward_text.strip()),
             f'WAYWARD_TEXT must be a text or None, got {self.wayward_text!r}.')
    _require(self.wayward_weight == 0 or self.wayward_text is not None,
             f'WAYWARD_WEIGHT={self.wayward_weight} needs the text the prompt is held near: '
             'set WAYWARD_TEXT.')
    _one_of(self.loss, LOSSES, 'LOSS')
    _require(isinstance(self.hinge_margin, (int, float)) and self.hinge_margin > 0,
             f'HINGE_MARGIN must be a positive number, got {self.hinge_margin!r}.')
    _freeze(self, hinge_margin=float(self.hinge_margin))
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
  # DECODER='sample' (defaults: runs saved before sampling existed). TEMPERATURE 0 is
  # greedy; TOP_K 0 and TOP_P 1.0 keep every token; SAMPLE_SEED seeds each example's draws.
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  sample_seed: int = 0

  def __post_init__(self):
    methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
    _require(bool(methods), f'EVAL_METHODS is empty; expected some of {METHODS}.')
    for method in methods:
      _one_of(method, METHODS, 'eval method (EVAL_METHODS)')
    _one_of(self.decoder, DECODERS, 'DECODER')
    _positive(self.beam_size, 'BEAM_SIZE')
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    _require(number(self.temperature) and self.temperature >= 0,
             f'TEMPERATURE must be a number >= 0 (0: greedy), got {self.temperature!r}.')
    _require(isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 0,
             f'TOP_K must be an integer >= 0 (0: no limit), got {self.top_k!r}.')
    _require(number(self.top_p) and 0 < self.top_p <= 1,
             f'TOP_P must be in (0, 1] (1: no limit), got {self.top_p!r}.')
    _require(isinstance(self.sample_seed, int) and not isinstance(self.sample_seed, bool),
             f'SAMPLE_SEED must be an integer, got {self.sample_seed!r}.')
    sampling = (self.temperature, self.top_k, self.top_p) != (1.0, 0, 1.0)
    _require(self.decoder == SAMPLE or not sampling,
             f'TEMPERATURE, TOP_K and TOP_P apply to DECODER={SAMPLE!r} only (DECODER is '
             f'{self.decoder!r}): set DECODER={SAMPLE!r}, or leave them at 1.0, 0 and 1.0.')
    _positive(self.batch_size, 'EVAL_BATCH_SIZE')
    _positive(self.num_examples, 'NUM_EVAL_EXAMPLES', optional=True)
    _one_of(self.best_mode, ('max', 'min'), 'best_mode')
    _freeze(self, methods=methods, temperature=float(self.temperature), top_p=float(self.top_p))


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

