"""Model tuning, the paper's baseline: every weight of the T5 trains; nothing is added."""
from __future__ import annotations

import dataclasses

from prompt_tuning_jax import optim
from prompt_tuning_jax.methods.base import Method


@dataclasses.dataclass(frozen=True)
class ModelTuning(Method):
  """Plain T5, all of it trainable (`optim.MODEL_TUNING_RULES`)."""

  @property
  def trainable_rules(self) -> tuple[str, ...]:
    return optim.MODEL_TUNING_RULES
