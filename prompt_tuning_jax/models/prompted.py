"""Prompted models: `PromptedT5` (the prompt in front of the encoder input) and
`PromptedDecoderOnly` (the prompt inside a decoder-only LM's sequence)."""
from __future__ import annotations

from typing import Optional

from flax import linen as nn

from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.models.decoder_only import DecoderOnly
from prompt_tuning_jax.models.t5 import T5

# Where the prompt lives in the parameter tree (as in the original implementation).
PROMPT_PATH = 'encoder/prompt/prompt/prompt'
DECODER_ONLY_PROMPT_PATH = 'decoder/prompt/prompt/prompt'
PROMPT_PATHS = (PROMPT_PATH, DECODER_ONLY_PROMPT_PATH)


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


class PromptedDecoderOnly(DecoderOnly):
  """A decoder-only LM with a [prompt_length, emb] prompt at `decoder/prompt/prompt/prompt`.

  The prompt is inserted into the embedded sequence: after BOS (default, the
  original's for decoder-only models), at the very start ('prefix') or after
  the inputs, before their EOS ('suffix'). Its positions are real, count in
  the relative positions, are visible to every later position (and, in a
  prefix LM, belong to the bidirectional prefix); the logits drop them.
  Packing is refused, as for `PromptedT5`.
  """
  prompt_length: int = 100
  prompt_placement: str = 'after_bos'

  def make_prompt_module(self) -> Optional[nn.Module]:
    if self.prompt_placement not in prompts_lib.DECODER_ONLY_PLACEMENTS:
      raise ValueError(f'Unknown decoder-only prompt placement {self.prompt_placement!r}; '
                       f'expected one of {prompts_lib.DECODER_ONLY_PLACEMENTS}.')
    return prompts_lib.PromptSequence(self.prompt_length, self.prompt_placement, parent=None)

  def __call__(self, decoder_input_tokens, decoder_target_tokens, decoder_segment_ids=None,
               decoder_positions=None, decoder_causal_attention=None, **kwargs):
    if decoder_segment_ids is not None:
      raise ValueError('Packed inputs (segment ids) are not supported with prompts: '
                       'use a feature converter with pack=False.')
    return super().__call__(decoder_input_tokens, decoder_target_tokens,
                            decoder_positions=decoder_positions,
                            decoder_causal_attention=decoder_causal_attention, **kwargs)
