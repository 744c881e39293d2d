"""Prompted models by the names the project uses: `PromptedT5` (`methods.PromptTuning`) and
`PromptedDecoderOnly` (`methods.DecoderOnlyPromptTuning`)."""
from __future__ import annotations

from prompt_tuning_jax.methods.prompt_tuning import (DECODER_ONLY_PROMPT_PATH, PROMPT_PATH,
                                                     DecoderOnlyPromptTuning, PromptTuning)
from prompt_tuning_jax.models.decoder_only import DecoderOnly, DecoderOnlyConfig
from prompt_tuning_jax.models.t5 import T5, T5Config


def PromptedT5(config: T5Config, prompt_length: int = 100,  # noqa: N802 (builds a module)
               prompt_placement: str = 'prefix') -> T5:
  """T5 with a [prompt_length, emb] prompt at `encoder/prompt/prompt/prompt` (`PROMPT_PATH`).

  The encoder runs on prompt_length + input positions. Prompt positions are
  visible to encoder self-attention and decoder cross-attention; the decoder's
  self-attention is unchanged. Packing is refused: a packed row would share one
  prompt between examples.
  """
  return T5(config, method=PromptTuning(prompt_length, prompt_placement))


def PromptedDecoderOnly(config: DecoderOnlyConfig, prompt_length: int = 100,  # noqa: N802
                        prompt_placement: str = 'after_bos') -> DecoderOnly:
  """A decoder-only LM with a [prompt_length, emb] prompt at `decoder/prompt/prompt/prompt`,
  inserted after BOS (default), at the very start or before the inputs' EOS; packing is
  refused, as for `PromptedT5` (`methods.DecoderOnlyPromptTuning`)."""
  return DecoderOnly(config, method=DecoderOnlyPromptTuning(prompt_length, prompt_placement))


__all__ = ['DECODER_ONLY_PROMPT_PATH', 'PROMPT_PATH', 'PromptedDecoderOnly', 'PromptedT5']
