"""`PromptedT5`: T5 with prompt tuning (`methods.PromptTuning`), by the name the project uses."""
from __future__ import annotations

from prompt_tuning_jax.methods.prompt_tuning import PROMPT_PATH, PromptTuning
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


__all__ = ['PROMPT_PATH', 'PromptedT5']
