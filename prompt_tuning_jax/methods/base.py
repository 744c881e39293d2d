"""`Method`: what trains on the T5 and where it plugs in, asked by every run instead of its name."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Mapping, Optional, Sequence

from prompt_tuning_jax.methods.hooks import NO_HOOKS, Hooks


def matches(path: str, rules: Sequence[str]) -> bool:
  """Whether a '/'-joined parameter path fully matches one of the regexes `rules`."""
  return any(re.fullmatch(rule, path) for rule in rules)


@dataclasses.dataclass(frozen=True)
class Method:
  """A trainable method: subclasses are frozen dataclasses of its settings (the model keys on them).

  The base class is plain T5 with nothing added; a method overrides what it changes:
  - `hooks()`: the functions it plugs into the T5 (`methods/hooks.py`);
  - `parameter_rules`: the parameters it adds to the T5 (its modules'): the frozen
    checkpoint may lack them, and by default they are what trains (`trainable_rules`);
  - `prompt_rules`: those of them that start as a prompt does, from PROMPT_FILE or the
    PROMPT_INIT initialiser (`run_setup`); the others start from their modules' initialisers;
  - `exports(trainable)`: the arrays written as numpy files beside every checkpoint;
    `prompt_file`: which of them is a plain [P, H] prompt file (`ptj eval|infer` PROMPT_FILE,
    prompt banks, PEFT prompt adapters);
  - `peft_type`: its PEFT adapter type (`checkpoints.peft`), or None;
  - `added_positions`: encoder positions it adds before the first layer (the dry run's
    activation memory);
  - `check(task_names)`: refuses, with one line, a run it cannot do;
  - `task_index(task_names)`: the TASK_INDEX each task's examples carry, when its
    parameters depend on the example's task.
  """
  peft_type: ClassVar[Optional[str]] = None

  def hooks(self) -> Hooks:
    return NO_HOOKS

  @property
  def parameter_rules(self) -> tuple[str, ...]:
    return ()

  @property
  def trainable_rules(self) -> tuple[str, ...]:
    return self.parameter_rules

  @property
  def prompt_rules(self) -> tuple[str, ...]:
    return ()

  @property
  def prompt_file(self) -> Optional[str]:
    return None

  @property
  def added_positions(self) -> int:
    return 0

  def owns(self, path: str) -> bool:
    """Whether the parameter at `path` is one the method adds to the T5."""
    return matches(path, self.parameter_rules)

  def is_prompt(self, path: str) -> bool:
    """Whether the parameter at `path` starts as a prompt (PROMPT_FILE / PROMPT_INIT)."""
    return matches(path, self.prompt_rules)

  def exports(self, trainable: Mapping[str, Any]) -> dict[str, Any]:
    """{file name: array} written beside every checkpoint, from the flat trainable parameters.

    By default the prompts, each named by its path with '.' for '/' (the original
    implementation's `numpy_checkpoints` layout).
    """
    return {path.replace('/', '.'): value for path, value in trainable.items()
            if self.is_prompt(path)}

  def check(self, task_names: Sequence[str]) -> None:
    """Raises `errors.UsageError` for a run the method cannot do (`task_names`: by TASK_INDEX).

    Called by `run_setup.setup`, before anything loads or compiles.
    """
    del task_names

  def task_index(self, task_names: Sequence[str]) -> Optional[dict[str, int]]:
    """{task: the TASK_INDEX (`MethodInputs.task_index`) of its examples} for the run's tasks.

    None (the default): the method has no task-specific parameters, and the examples carry
    their task's place in the run's mixture (`data.task_index_of`). Batches, eval and infer
    pass these indices (`run_setup.Setup.task_index`).
    """
    del task_names
    return None
