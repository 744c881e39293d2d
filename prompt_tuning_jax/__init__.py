"""prompt_tuning_jax: soft-prompt tuning of frozen T5 models in JAX/Flax (T5X-compatible)."""
from prompt_tuning_jax import remote as _remote

__version__ = '0.1.0'
# Before anything imports TensorFlow, which reads its gs:// retry settings once, then.
_remote.bound_retries()
