"""Checkpoint I/O: T5X and Hugging Face T5 readers and writers (a causal decoder-only LM as
Pix2Struct's text decoder), prompt files (.npy and PEFT prompt-tuning adapters), PEFT
adapters of the methods, merging.

Typical use: read the frozen model, then merge it into the model's initial
parameters so that a prompt absent from the checkpoint keeps its initial
value (the original implementation's `fallback_to_scratch`):

  loaded = checkpoints.load_t5x('gs://t5-data/.../checkpoint_1100000')
  params = checkpoints.merge_params(model_params, loaded)
"""

from prompt_tuning_jax.checkpoints.hf import hf_config_to_t5
from prompt_tuning_jax.checkpoints.hf import hf_to_t5x
from prompt_tuning_jax.checkpoints.hf import load_hf
from prompt_tuning_jax.checkpoints.hf import save_hf
from prompt_tuning_jax.checkpoints.hf import t5_to_hf_config
from prompt_tuning_jax.checkpoints.hf import t5x_to_hf
from prompt_tuning_jax.checkpoints.hf_causal_lm import save_hf_causal_lm
from prompt_tuning_jax.checkpoints.peft import load_peft_adapter
from prompt_tuning_jax.checkpoints.peft import load_peft_prompt
from prompt_tuning_jax.checkpoints.peft import save_peft_adapter
from prompt_tuning_jax.checkpoints.peft import save_peft_prompt
from prompt_tuning_jax.checkpoints.prompt_io import load_prompt
from prompt_tuning_jax.checkpoints.prompt_io import save_prompt
from prompt_tuning_jax.checkpoints.sharded import load_t5x_sharded
from prompt_tuning_jax.checkpoints.t5x import load_t5x
from prompt_tuning_jax.checkpoints.t5x import save_t5x
from prompt_tuning_jax.checkpoints.tree import CheckpointError
from prompt_tuning_jax.checkpoints.tree import DEFAULT_FALLBACK_TO_INIT
from prompt_tuning_jax.checkpoints.tree import flatten
from prompt_tuning_jax.checkpoints.tree import merge_params
from prompt_tuning_jax.checkpoints.tree import unflatten

__all__ = [
    'CheckpointError',
    'DEFAULT_FALLBACK_TO_INIT',
    'flatten',
    'hf_config_to_t5',
    'hf_to_t5x',
    'load_hf',
    'load_peft_adapter',
    'load_peft_prompt',
    'load_prompt',
    'load_t5x',
    'load_t5x_sharded',
    'merge_params',
    'save_hf',
    'save_peft_adapter',
    'save_hf_causal_lm',
    'save_peft_prompt',
    'save_prompt',
    'save_t5x',
    't5_to_hf_config',
    't5x_to_hf',
    'unflatten',
]
