"""Multi-task prompts (the original's `extended/multitask_prompts.py`): a prompt shared by the
tasks of a mixture and one per task, combined into each example's prompt by its task.

Parameters (the original's paths): the shared prompt `encoder/prompt/prompt/shared_prompt`
[P, H_s] and the task table `encoder/prompt/prompt/task_prompts/embedding` [tasks, size],
one flattened task prompt a row. Each example's task (`MethodInputs.task_index`: its row,
`MultiTaskPrompts.task_index`) selects its row; the combination makes the prompt the
encoder input gets, placed as prompt tuning places it:

  combination          task row                     the example's prompt
  AddTaskPrompt        [P * H]                      shared + task            [P, H]
  ConcatTaskPrompt     [P_t * H]                    [shared; task]           [P + P_t, H]
  ConcatTaskFeatures   [P * (H - H_s)]              [shared, task] features  [P, H]
  ProjectSharedPrompt  [H * H_s + H]: kernel, bias  shared @ kernel.T + bias [P, H]

(kernel [H, H_s] row-major, then the bias [H].) The shared prompt starts from PROMPT_INIT /
PROMPT_FILE when it is [P, emb] (every combination but ConcatTaskFeatures); the task rows
start where the task's prompt is the shared one when the combination allows (zeros for
AddTaskPrompt, the identity map for ProjectSharedPrompt with H_s = H), else uniform in
[-0.5, 0.5] (the original starts them all uniform in [0, 0.5)).

Each task's prompt is exported beside every checkpoint as a plain [P', H] prompt file,
`encoder.prompt.prompt.prompt.<task>`: a PROMPT_FILE of prompt tuning (PROMPT_LENGTH = P')
for `ptj eval|infer`, or a prompt of a bank (`ptj infer --prompt`). Per-example `prompts`
in the method inputs replace the combined prompt, as they replace prompt tuning's. Packed rows
(`MethodInputs.prompt_slots`) may mix tasks: each example's slots get its task's prompt.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods.hooks import EncoderInput, Hooks, MethodInputs
from prompt_tuning_jax.methods.prompt_tuning import PROMPT_PATH, PromptTuning

Array = jnp.ndarray
SHARED_PATH = 'encoder/prompt/prompt/shared_prompt'
TASKS_PATH = 'encoder/prompt/prompt/task_prompts/embedding'


def task_prompt_file(task: str) -> str:
  """The name of task `task`'s exported prompt file (prompt tuning's, suffixed)."""
  return f"{PROMPT_PATH.replace('/', '.')}.{task}"


# ------------------------------------------------------------------ combinations


class Combination:
  """How a shared prompt [P, H_s] and a batch of task rows [b, size] make prompts [b, P', H]."""

  @property
  def shared_is_prompt(self) -> bool:
    """Whether the shared prompt is [P, emb], so that it starts as a prompt does."""
    return True

  def shared_width(self, emb: int) -> int:
    """H_s, the shared prompt's features."""
    return emb

  def task_size(self, length: int, emb: int) -> int:
    raise NotImplementedError

  def prompt_length(self, length: int) -> int:
    """P', the combined prompt's length."""
    return length

  def task_init(self, length: int, emb: int) -> prompts_lib.Initializer:
    del length, emb
    return prompts_lib.random_uniform()

  def __call__(self, shared: Array, tasks: Array) -> Array:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class AddTaskPrompt(Combination):
  """The shared prompt plus the task's [P, H] prompt (task rows start at zero)."""

  def task_size(self, length, emb):
    return length * emb

  def task_init(self, length, emb):
    return nn.initializers.zeros

  def __call__(self, shared, tasks):
    return shared[None] + tasks.reshape((-1,) + shared.shape)


@dataclasses.dataclass(frozen=True)
class ConcatTaskPrompt(Combination):
  """The shared prompt, then the task's [task_length, H] prompt (None: P rows)."""
  task_length: Optional[int] = None

  def __post_init__(self):
    if self.task_length is not None and (not isinstance(self.task_length, int)
                                         or self.task_length < 1):
      raise UsageError(f'ConcatTaskPrompt.task_length must be a positive number of prompt '
                       f'vectors or None, got {self.task_length!r}.')

  def _task_length(self, length):
    return length if self.task_length is None else self.task_length

  def task_size(self, length, emb):
    return self._task_length(length) * emb

  def prompt_length(self, length):
    return length + self._task_length(length)

  def __call__(self, shared, tasks):
    tasks = tasks.reshape(tasks.shape[0], -1, shared.shape[1])  # [b, P_t, H]
    return jnp.concatenate([jnp.broadcast_to(shared, (tasks.shape[0],) + shared.shape), tasks],
                           axis=1)


def _width(features: Optional[int], emb: int, name: str, default: int, limit: int) -> int:
  width = default if features is None else features
  if not isinstance(width, int) or not 0 < width <= limit:
    raise UsageError(f'{name}.shared_features must be in [1, {limit}] for emb_dim={emb}, got '
                     f'{features!r}.')
  return width


@dataclasses.dataclass(frozen=True)
class ConcatTaskFeatures(Combination):
  """Each prompt vector: the shared prompt's H_s features, then the task's H - H_s
  (`shared_features` None: H // 2)."""
  shared_features: Optional[int] = None

  @property
  def shared_is_prompt(self) -> bool:
    return False

  def shared_width(self, emb):
    return _width(self.shared_features, emb, type(self).__name__, emb // 2, emb - 1)

  def task_size(self, length, emb):
    return length * (emb - self.shared_width(emb))

  def __call__(self, shared, tasks):
    tasks = tasks.reshape(tasks.shape[0], shared.shape[0], -1)  # [b, P, H - H_s]
    return jnp.concatenate([jnp.broadcast_to(shared, tasks.shape[:2] + shared.shape[1:]), tasks],
                           axis=2)


@dataclasses.dataclass(frozen=True)
class ProjectSharedPrompt(Combination):
  """The task's affine map of the shared prompt [P, H_s] to [P, H] (`shared_features` None:
  H, and the maps start as the identity)."""
  shared_features: Optional[int] = None

  @property
  def shared_is_prompt(self) -> bool:
    return self.shared_features is None

  def shared_width(self, emb):
    return _width(self.shared_features, emb, type(self).__name__, emb, emb)

  def task_size(self, length, emb):
    return (self.shared_width(emb) + 1) * emb

  def task_init(self, length, emb):
    width = self.shared_width(emb)

    def init(rng, shape, dtype=jnp.float32):
      if width == emb:  # the identity map: every task's prompt starts as the shared one
        row = jnp.concatenate([jnp.eye(emb, dtype=dtype).reshape(-1), jnp.zeros(emb, dtype)])
        return jnp.broadcast_to(row, shape)
      kernels = jax.random.normal(rng, (shape[0], emb * width), dtype) / np.sqrt(width)
      return jnp.concatenate([kernels, jnp.zeros((shape[0], emb), dtype)], axis=1)
    return init

  def __call__(self, shared, tasks):
    emb = tasks.shape[1] // (shared.shape[1] + 1)
    kernel = tasks[:, :emb * shared.shape[1]].reshape(-1, emb, shared.shape[1])  # [b, H, H_s]
    bias = tasks[:, emb * shared.shape[1]:]  # [b, H]
    return jnp.einsum('pi,boi->bpo', shared, kernel) + bias[:, None, :]


# ------------------------------------------------------------------ modules


class TaskTable(nn.Module):
  """The task prompts, one flattened row a task: `embedding` [num_tasks, size]."""
  num_tasks: int
  size: int
  init: prompts_lib.Initializer

  @nn.compact
  def __call__(self) -> Array:
    return self.param('embedding', self.init, (self.num_tasks, self.size), jnp.float32)


class MultiTaskPrompt(nn.Module):
  """`shared_prompt` [P, H_s] and `task_prompts` combined into each example's prompt."""
  length: int
  num_tasks: int
  combination: Combination

  @nn.compact
  def __call__(self, task_index: Array, emb: int) -> Array:
    """task_index [b] -> prompts [b, P', emb] float32."""
    c = self.combination
    shared = self.param('shared_prompt', prompts_lib.random_uniform(),
                        (self.length, c.shared_width(emb)), jnp.float32)
    table = TaskTable(self.num_tasks, c.task_size(self.length, emb),
                      c.task_init(self.length, emb), name='task_prompts')()
    return c(shared, jnp.take(table, task_index, axis=0))


class MultiTaskPromptInput(nn.Module):
  """The encoder's input hook: each example's task prompt (or a given one), placed."""
  length: int
  num_tasks: int
  combination: Combination
  placement: str

  @nn.compact
  def __call__(self, embedded: Array, valid: Array, inputs: MethodInputs
               ) -> tuple[Array, Array]:
    """embedded [b, t, H], valid [b, t] -> combined [b, P' + t, H], valid [b, P' + t]."""
    prompts, prompt_mask = inputs.prompts, inputs.prompt_mask
    if inputs.prompt_slots is not None:  # Packed rows: every task's prompt, by position.
      if prompts is not None or inputs.task_index is None:
        raise ValueError('Packed rows (prompt_slots) take the task of each position '
                         '(task_index [b, L]) and no per-example prompts.')
      every_task = MultiTaskPrompt(self.length, self.num_tasks, self.combination, name='prompt')(
          jnp.arange(self.num_tasks), embedded.shape[-1])  # [tasks, P', H]
      return (prompts_lib.fill_prompt_slots(embedded, every_task, inputs.prompt_slots,
                                            inputs.task_index), valid)
    if prompts is None:
      task_index = inputs.task_index
      if task_index is None:
        if not self.is_initializing():
          raise UsageError("Multi-task prompts select each example's prompt by its task: the "
                           'model needs method_inputs=MethodInputs(task_index=...).')
        task_index = jnp.zeros(embedded.shape[:1], jnp.int32)
      prompts = MultiTaskPrompt(self.length, self.num_tasks, self.combination, name='prompt')(
          task_index, embedded.shape[-1])
    if prompt_mask is None:
      prompt_mask = jnp.ones(prompts.shape[:2], bool)
    return prompts_lib.place_prompt(embedded, valid, prompts, prompt_mask.astype(bool),
                                    self.placement)


# ------------------------------------------------------------------ the method


@dataclasses.dataclass(frozen=True)
class MultiTaskPrompts(PromptTuning):
  """A shared [length, H_s] prompt and one per task of `tasks`, combined by `combination`."""
  tasks: Sequence[str] = ()
  combination: Combination = AddTaskPrompt()
  peft_type: ClassVar[Optional[str]] = None

  def __post_init__(self):
    super().__post_init__()
    tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
      raise UsageError(f'PROMPT_TASKS must name the tasks of the multi-task prompt, got '
                       f'{self.tasks!r}.')
    if len(set(tasks)) < len(tasks):
      raise UsageError(f'PROMPT_TASKS names a task twice: {list(tasks)}.')
    if not isinstance(self.combination, Combination):
      raise UsageError(f'The multi-task prompt combination must be one of AddTaskPrompt, '
                       f'ConcatTaskPrompt, ConcatTaskFeatures, ProjectSharedPrompt; got '
                       f'{self.combination!r}.')
    object.__setattr__(self, 'tasks', tasks)

  def hooks(self) -> Hooks:
    return dataclasses.replace(super().hooks(), encoder_input=self._encoder_input)

  def _encoder_input(self, embedded, valid, *, inputs: MethodInputs) -> EncoderInput:
    # Called in the encoder: `name='prompt'` makes the paths encoder/prompt/prompt/...
    x, combined_valid = MultiTaskPromptInput(self.length, len(self.tasks), self.combination,
                                             self.placement, name='prompt')(
                                                 embedded, valid, inputs)
    if inputs.prompt_slots is not None:
      return EncoderInput(x, combined_valid, inputs.prompt_slots >= 0)
    prompt = prompts_lib.prompt_positions(valid, x.shape[1] - embedded.shape[1], self.placement)
    return EncoderInput(x, combined_valid, prompt)

  def check(self, task_names: Sequence[str]) -> None:
    missing = [name for name in task_names if name not in self.tasks]
    if missing:
      raise UsageError(f'MIXTURE_OR_TASK_NAME: the task(s) {missing} are not among the multi-task '
                       f"prompt's tasks {list(self.tasks)} (PROMPT_TASKS).")

  def task_index(self, task_names: Sequence[str]) -> dict[str, int]:
    return {name: self.tasks.index(name) for name in task_names}

  @property
  def prompt_rules(self) -> tuple[str, ...]:
    return (re.escape(SHARED_PATH),) if self.combination.shared_is_prompt else ()

  @property
  def prompt_file(self) -> None:
    return None  # One per task (`task_prompt_file`).

  @property
  def added_positions(self) -> int:
    return self.combination.prompt_length(self.length)

  def task_prompts(self, trainable: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{task: its prompt [P', H]} from the flat trained parameters."""
    shared, table = (np.asarray(jax.device_get(trainable[p])) for p in (SHARED_PATH, TASKS_PATH))
    combined = np.asarray(self.combination(jnp.asarray(shared), jnp.asarray(table)))
    return dict(zip(self.tasks, combined))

  def exports(self, trainable: Mapping[str, Any]) -> dict[str, Any]:
    """The shared prompt, the task table and each task's prompt (`task_prompt_file`)."""
    own = {path.replace('/', '.'): value for path, value in trainable.items()
           if self.owns(path)}
    return {**own, **{task_prompt_file(task): prompt
                      for task, prompt in self.task_prompts(trainable).items()}}
