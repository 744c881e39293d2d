"""Prompt tuning (Lester, Al-Rfou & Constant 2021): a learned [P, H] prompt beside the input.

The prompt is `encoder/prompt/prompt/prompt` (the original implementation's path): the
encoder's input hook places it before the input tokens ('prefix') or right after the last
one ('suffix'); it is visible to encoder self-attention and decoder cross-attention and
counts in the encoder's relative positions. Per-example `prompts` / `prompt_mask` in the
method inputs replace it (mixed-task batches, prompt ensembles). In packed rows
(`MethodInputs.prompt_slots`, `data.pack_batch`) every example has its own copy of the
prompt, in the positions the data left for it (placed as `placement` says). `visibility`
(None: every position sees every other, as T5X) restricts what the prompt positions attend;
the methods built on this one (multi-task, per-layer prompts) take it too.
"""
from __future__ import annotations

import dataclasses
import re
from typing import ClassVar, Optional

from prompt_tuning_jax import optim
from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods.base import Method
from prompt_tuning_jax.methods.hooks import EncoderInput, Hooks, MethodInputs
from prompt_tuning_jax.methods.visibility import Visibility

PROMPT_PATH = 'encoder/prompt/prompt/prompt'
# A decoder-only LM's prompt (the original's path for its decoder-only models).
DECODER_ONLY_PROMPT_PATH = 'decoder/prompt/prompt/prompt'


@dataclasses.dataclass(frozen=True)
class PromptTuning(Method):
  """A [length, emb] prompt at `PROMPT_PATH`, placed 'prefix' or 'suffix'; only it trains."""
  length: int = 100
  placement: str = 'prefix'
  visibility: Optional[Visibility] = None
  peft_type: ClassVar[Optional[str]] = 'PROMPT_TUNING'

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length < 1:
      raise UsageError(f'PROMPT_LENGTH must be a positive number of prompt vectors, got '
                       f'{self.length!r}.')
    if self.placement not in prompts_lib.PLACEMENTS:
      raise UsageError(f'Unknown prompt placement {self.placement!r}; expected one of '
                       f'{prompts_lib.PLACEMENTS}.')

  def check_peft(self) -> None:
    if self.placement != 'prefix':
      raise UsageError(
          f"PEFT prompt tuning puts the prompt before the input; this run places it "
          f"{self.placement!r}: train with methods.PromptTuning.placement = 'prefix' to export "
          'to PEFT, or use --format t5x.')
    if self.visibility is not None and self.visibility != Visibility():
      raise UsageError(
          'PEFT prompt tuning lets the prompt attend every position; this run restricts it '
          f'(PROMPT_TO_INPUT = {self.visibility.prompt_to_input}, PROMPT_TO_PROMPT = '
          f'{self.visibility.prompt_to_prompt!r}): PEFT would compute other outputs; use '
          '--format t5x.')

  def hooks(self) -> Hooks:
    return Hooks(encoder_input=self._encoder_input,
                 encoder_mask=None if self.visibility is None else self.visibility.mask)

  def _encoder_input(self, embedded, valid, *, inputs: MethodInputs) -> EncoderInput:
    # Called in the encoder: `name='prompt'` makes the path encoder/prompt/prompt/prompt.
    x, combined_valid = prompts_lib.PromptInput(self.length, self.placement, name='prompt')(
        embedded, valid, prompts=inputs.prompts, prompt_mask=inputs.prompt_mask,
        prompt_slots=inputs.prompt_slots)
    if inputs.prompt_slots is not None:  # Packed rows: the data placed the prompts.
      return EncoderInput(x, combined_valid, inputs.prompt_slots >= 0)
    prompt = prompts_lib.prompt_positions(valid, x.shape[1] - embedded.shape[1], self.placement)
    return EncoderInput(x, combined_valid, prompt)

  @property
  def parameter_rules(self) -> tuple[str, ...]:
    return optim.PROMPT_TUNING_RULES

  @property
  def prompt_rules(self) -> tuple[str, ...]:
    return (re.escape(PROMPT_PATH),)

  @property
  def prompt_file(self) -> str:
    return PROMPT_PATH.replace('/', '.')

  @property
  def added_positions(self) -> int:
    return self.length


@dataclasses.dataclass(frozen=True)
class DecoderOnlyPromptTuning(PromptTuning):
  """Prompt tuning of a decoder-only LM: a [length, emb] prompt at `DECODER_ONLY_PROMPT_PATH`.

  The decoder inserts it into the embedded sequence (`Hooks.decoder_prompt`): after BOS
  (the original's default for decoder-only models), at the very start ('prefix') or
  before the inputs' EOS ('suffix'). Its positions count in the relative positions and
  are visible to every later position (in a prefix LM they join the bidirectional
  prefix); the logits drop them. Attention visibility is T5's encoder setting only.
  """
  placement: str = 'after_bos'

  def __post_init__(self):
    if not isinstance(self.length, int) or self.length < 1:
      raise UsageError(f'PROMPT_LENGTH must be a positive number of prompt vectors, got '
                       f'{self.length!r}.')
    if self.placement not in prompts_lib.DECODER_ONLY_PLACEMENTS:
      raise UsageError(f'Unknown decoder-only prompt placement {self.placement!r}; expected '
                       f'one of {prompts_lib.DECODER_ONLY_PLACEMENTS}.')
    if self.visibility is not None:
      raise UsageError("PROMPT_VISIBILITY is a setting of the T5 encoder's prompt; a "
                       'decoder-only prompt is visible to every later position (None).')

  def hooks(self) -> Hooks:
    return Hooks(decoder_prompt=lambda: prompts_lib.PromptSequence(
        self.length, self.placement, parent=None))

  @property
  def prompt_rules(self) -> tuple[str, ...]:
    return (re.escape(DECODER_ONLY_PROMPT_PATH),)

  @property
  def prompt_file(self) -> str:
    return DECODER_ONLY_PROMPT_PATH.replace('/', '.')
