"""The gin names of the library: every configurable is registered here, once.

Library modules stay free of gin. The gin files under `gin/` refer to:

  models.PromptedT5 / models.T5 / models.get_config     the model
  optim.adafactor, optax.adamw, optax.adam               optimisers (called with learning_rate)
  optim.inverse_sqrt_schedule                           T5's pre-training learning rate
  optax.constant_schedule / linear_schedule / warmup_cosine_decay_schedule
  trainer.train / trainer.evaluate / trainer.infer       the three runs
  trainer.PromptSettings, evaluation.EvalSettings        grouped settings

plus the tasks' own configurables (`get_vocabulary`, `local_data_dirs`).
"""
from __future__ import annotations

import os
from typing import Optional

import gin
import jax.numpy as jnp
import optax

from prompt_tuning_jax import evaluation
from prompt_tuning_jax import optim
from prompt_tuning_jax import trainer
from prompt_tuning_jax.models import PromptedT5 as _PromptedT5
from prompt_tuning_jax.models import T5 as _T5
from prompt_tuning_jax.models import T5Config
from prompt_tuning_jax.models import get_config as _get_config

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def get_config(name: str, **overrides) -> T5Config:
  """A T5 preset with fields replaced; `dtype` may be given as a string ('bfloat16')."""
  if isinstance(overrides.get('dtype'), str):
    overrides['dtype'] = _DTYPES[overrides['dtype']]
  if 'mlp_activations' in overrides:
    overrides['mlp_activations'] = tuple(overrides['mlp_activations'])
  return _get_config(name, **overrides)


def prompted_t5(config: T5Config, prompt_length: int = 100,
                prompt_placement: str = 'prefix') -> _PromptedT5:
  """T5 with a soft prompt (its initial value is set by the run, see `trainer.PromptSettings`)."""
  return _PromptedT5(config, prompt_length=prompt_length, prompt_placement=prompt_placement)


def t5(config: T5Config) -> _T5:
  """Plain T5 (model tuning, the paper's baseline)."""
  return _T5(config)


gin.external_configurable(get_config, 'get_config', module='models')
gin.external_configurable(prompted_t5, 'PromptedT5', module='models')
gin.external_configurable(t5, 'T5', module='models')

gin.external_configurable(optim.adafactor, 'adafactor', module='optim')
gin.external_configurable(optim.inverse_sqrt_schedule, 'inverse_sqrt_schedule', module='optim')
for _fn in (optax.adamw, optax.adam, optax.sgd, optax.constant_schedule, optax.linear_schedule,
            optax.warmup_cosine_decay_schedule, optax.cosine_decay_schedule):
  gin.external_configurable(_fn, _fn.__name__, module='optax')

PromptSettings = gin.external_configurable(trainer.PromptSettings, module='trainer')
EvalSettings = gin.external_configurable(evaluation.EvalSettings, module='evaluation')
train = gin.external_configurable(trainer.train, module='trainer')
evaluate = gin.external_configurable(trainer.evaluate, module='trainer')
infer = gin.external_configurable(trainer.infer, module='trainer')

RUNS = {'train': train, 'eval': evaluate, 'infer': infer}


def gin_dir() -> str:
  """The installed `gin/` directory (always on the search path)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('prompt_tuning_jax.gin')
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)[0]
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gin')


def query_macro(name: str, default=None) -> Optional[object]:
  """The value bound to macro `name` (default when unbound or gin.REQUIRED)."""
  try:
    value = gin.query_parameter(f'%{name}')
  except ValueError:
    return default
  if value is gin.REQUIRED or type(value).__name__ == 'ConfigurableReference':
    return default
  return value
