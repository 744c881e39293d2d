"""T5 and the prompted T5 (T5X parameter tree)."""
from prompt_tuning_jax.models.prompted import PROMPT_PATH, PromptedT5
from prompt_tuning_jax.models.t5 import PRESETS, T5, T5Config, get_config

__all__ = ['PRESETS', 'PROMPT_PATH', 'PromptedT5', 'T5', 'T5Config', 'get_config']
