"""Attention visibility: what the encoder's prompt positions attend (the original's
`extended/masks.py`), a setting every input-side prompt method takes.

Inputs always see every valid position, the prompt included (that is what a prompt is
for). A prompt position sees the input positions only with `prompt_to_input`, and the
prompt positions by `prompt_to_prompt`: 'all', 'causal' (those at or before it) or
'self' (itself alone). The mask itself is `masks.prompt_attention_mask`, also what a
decoder with prompt positions will use.
"""
from __future__ import annotations

import dataclasses

from prompt_tuning_jax import masks
from prompt_tuning_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Visibility:
  """What prompt positions attend; the encoder's `encoder_mask` hook (`mask`)."""
  prompt_to_input: bool = True
  prompt_to_prompt: str = 'all'

  def __post_init__(self):
    if not isinstance(self.prompt_to_input, bool):
      raise UsageError(f'PROMPT_TO_INPUT must be True or False, got {self.prompt_to_input!r}.')
    if self.prompt_to_prompt not in masks.PROMPT_TO_PROMPT:
      raise UsageError(f'PROMPT_TO_PROMPT must be one of {masks.PROMPT_TO_PROMPT}, got '
                       f'{self.prompt_to_prompt!r}.')

  def mask(self, valid, prompt):
    """valid, prompt [b, L] -> the encoder's self-attention mask [b, 1, L, L]."""
    return masks.prompt_attention_mask(valid, prompt, prompt_to_input=self.prompt_to_input,
                                       prompt_to_prompt=self.prompt_to_prompt)
