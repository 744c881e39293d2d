"""prompt_tuning_jax: soft-prompt tuning of frozen T5 models in JAX/Flax (T5X-compatible)."""
__version__ = '0.1.0'
