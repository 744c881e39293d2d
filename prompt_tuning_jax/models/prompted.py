"""`PromptedT5`: a T5 whose encoder prepends (or appends) a learned soft prompt."""
from __future__ import annotations

from typing import Optional

from flax import linen as nn

from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.models.t5 import T5

# Where the prompt lives in the parameter tree (as in the original implementation).
PROMPT_PATH = 'encoder/prompt/prompt/prompt'


class PromptedT5(T5):
  """T5 with a [prompt_length, emb] prompt at `encoder/prompt/prompt/prompt`.

  The encoder runs on prompt_length + input positions. Prompt positions are
  visible to encoder self-attention and decoder cross-attention; the decoder's
  self-attention is unchanged. Packing is refused: a packed row would share one
  prompt between examples.
  """
  prompt_length: int = 100
  prompt_placement: str = 'prefix'

  def make_prompt_module(self) -> Optional[nn.Module]:
    if self.prompt_placement not in prompts_lib.PLACEMENTS:
      raise ValueError(f'Unknown prompt placement {self.prompt_placement!r}; '
                       f'expected one of {prompts_lib.PLACEMENTS}.')
    return prompts_lib.PromptInput(self.prompt_length, self.prompt_placement, parent=None)

  def encode(self, encoder_input_tokens, *, enable_dropout=False, encoder_segment_ids=None,
             prompts=None, prompt_mask=None):
    if encoder_segment_ids is not None:
      raise ValueError('Packed inputs (segment ids) are not supported with prompts: '
                       'use a feature converter with pack=False.')
    return super().encode(encoder_input_tokens, enable_dropout=enable_dropout,
                          prompts=prompts, prompt_mask=prompt_mask)
