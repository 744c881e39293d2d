"""Reads Hugging Face T5 / mT5 checkpoints (safetensors) into the T5X tree.

Names follow `T5ForConditionalGeneration`'s state dict. torch `Linear`
weights are [out, in], so kernels are transposed; so is the relative position
bias ([buckets, heads] -> [heads, buckets]). Layer sub-blocks map as

  encoder: layer.0 self-attention, layer.1 MLP;
  decoder: layer.0 self-attention, layer.1 cross-attention, layer.2 MLP;

each with its pre-norm (`layer_norm` -> `pre_*_layer_norm/scale`). Only
safetensors files are read (never pickles): a single `model.safetensors` or
shards listed by `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import safe_open

from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError

SAFETENSORS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
CONFIG_FILE = 'config.json'

# HF `feed_forward_proj` -> T5X `mlp_activations`. HF's 'gated-gelu' is the
# tanh approximation ("gelu_new"), as is flax's default `gelu`.
_MLP_ACTIVATIONS = {
    'relu': ('relu',),
    'gated-gelu': ('gelu', 'linear'),
    'gated-relu': ('relu', 'linear'),
    'gated-silu': ('silu', 'linear'),
}
_MODEL_TYPES = ('t5', 'mt5')

# Sub-block index -> (T5X module, T5X pre-norm, HF attention module or None).
_SUBLAYERS = {
    'encoder': {
        0: ('attention', 'pre_attention_layer_norm', 'SelfAttention'),
        1: ('mlp', 'pre_mlp_layer_norm', None),
    },
    'decoder': {
        0: ('self_attention', 'pre_self_attention_layer_norm',
            'SelfAttention'),
        1: ('encoder_decoder_attention', 'pre_cross_attention_layer_norm',
            'EncDecAttention'),
        2: ('mlp', 'pre_mlp_layer_norm', None),
    },
}
_PROJECTIONS = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}
_BLOCK_KEY = re.compile(r'(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)')
_FINAL_NORM_KEY = re.compile(r'(encoder|decoder)\.final_layer_norm\.weight')
_EMBEDDING_KEYS = ('shared.weight', 'encoder.embed_tokens.weight',
                   'decoder.embed_tokens.weight')
_LM_HEAD_KEY = 'lm_head.weight'


def load_hf(path: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """Reads a Hugging Face T5 checkpoint.

  Args:
    path: a directory with `model.safetensors` or `model.safetensors.index.json`
      (and usually `config.json`), or one of those files.

  Returns:
    (params, config): the T5X parameter tree (numpy arrays in the stored
    dtype) and, when `config.json` is next to the weights, its
    `hf_config_to_t5` keyword arguments for `T5Config`, else None.

  Raises:
    CheckpointError: missing files, unknown tensor names, or an untied model
      without `lm_head.weight`.
  """
  files, directory = _weight_files(path)
  config_path = os.path.join(directory, CONFIG_FILE)
  config = None
  if os.path.isfile(config_path):
    try:
      with open(config_path) as f:
        config = json.load(f)
    except ValueError as e:
      raise CheckpointError(f'{config_path}: not valid JSON: {e}') from e
  state = {}
  for file, names in files.items():
    with safe_open(file, framework='np') as f:
      available = set(f.keys())
      for name in names if names is not None else sorted(available):
        if name not in available:
          raise CheckpointError(
              f'{file}: tensor {name!r} listed in {INDEX_FILE} is missing')
        state[name] = f.get_tensor(name)
  tie = None if config is None else _logits_via_embedding(config)
  if tie is False and _LM_HEAD_KEY not in state and config.get('tie_word_embeddings', True):
    # transformers >= 5 always shares lm_head with the embedding and records
    # T5 1.0's logit scaling separately (`scale_decoder_outputs`): unscaled
    # logits through the shared table are an untied head holding that table.
    embedding_key = next((k for k in _EMBEDDING_KEYS if k in state), None)
    if embedding_key is not None:
      state[_LM_HEAD_KEY] = state[embedding_key]
  params = hf_to_t5x(state, tie_word_embeddings=tie)
  return params, None if config is None else hf_config_to_t5(config)


def _weight_files(path: str) -> tuple[dict[str, list[str] | None], str]:
  """Returns ({file: tensor names or None for all}, directory)."""
  path = path.rstrip('/')
  if os.path.isdir(path):
    found = [os.path.join(path, name) for name in (INDEX_FILE, SAFETENSORS_FILE)
             if os.path.isfile(os.path.join(path, name))]
    if not found:
      raise CheckpointError(
          f'{path}: no {SAFETENSORS_FILE} or {INDEX_FILE} (only '
          f'safetensors are read; convert pickled pytorch_model.bin first)')
    path = found[0]
  elif not os.path.isfile(path):
    raise CheckpointError(f'{path}: no such file or directory')
  directory = os.path.dirname(path)
  if not path.endswith('.json'):
    return {path: None}, directory
  try:
    with open(path) as f:
      weight_map = json.load(f)['weight_map']
  except (ValueError, KeyError) as e:
    raise CheckpointError(f'{path}: not a safetensors index: {e!r}') from e
  files: dict[str, list[str] | None] = {}
  for name, shard in weight_map.items():
    files.setdefault(os.path.join(directory, shard), []).append(name)
  for shard in files:
    if not os.path.isfile(shard):
      raise CheckpointError(f'{shard}: shard listed in {path} is missing')
  return files, directory


def _logits_via_embedding(config: Mapping[str, Any]) -> bool:
  """T5X's tied, sqrt(d)-scaled logits: `scale_decoder_outputs` (transformers >= 5)
  or `tie_word_embeddings` (earlier configs)."""
  if 'scale_decoder_outputs' in config:
    return bool(config['scale_decoder_outputs'])
  return bool(config.get('tie_word_embeddings', True))


def hf_config_to_t5(config: Mapping[str, Any]) -> dict[str, Any]:
  """Maps an HF T5 `config.json` dict to `T5Config` keyword arguments."""
  model_type = config.get('model_type', 't5')
  if model_type not in _MODEL_TYPES:
    raise CheckpointError(
        f'unsupported model_type {model_type!r}; expected one of '
        f'{_MODEL_TYPES}')
  proj = config.get('feed_forward_proj', 'relu')
  if proj not in _MLP_ACTIVATIONS:
    raise CheckpointError(
        f'unsupported feed_forward_proj {proj!r}; expected one of '
        f'{sorted(_MLP_ACTIVATIONS)}')
  num_layers = config['num_layers']
  return dict(
      vocab_size=config['vocab_size'],
      emb_dim=config['d_model'],
      num_heads=config['num_heads'],
      head_dim=config['d_kv'],
      mlp_dim=config['d_ff'],
      num_encoder_layers=num_layers,
      num_decoder_layers=config.get('num_decoder_layers') or num_layers,
      mlp_activations=_MLP_ACTIVATIONS[proj],
      logits_via_embedding=_logits_via_embedding(config),
      relative_attention_num_buckets=config.get(
          'relative_attention_num_buckets', 32),
      relative_attention_max_distance=config.get(
          'relative_attention_max_distance', 128),
      dropout_rate=config.get('dropout_rate', 0.1),
  )


def hf_to_t5x(state: Mapping[str, np.ndarray], *,
              tie_word_embeddings: bool | None = None) -> dict[str, Any]:
  """Maps an HF T5 state dict (numpy arrays) to the T5X parameter tree.

  Args:
    state: tensor name -> array.
    tie_word_embeddings: the HF config's flag. When tied, `lm_head.weight`
      (if stored) duplicates the embedding and no `logits_dense` is made.
      None infers it: tied unless `lm_head.weight` differs from the embedding.

  Raises:
    CheckpointError: listing every tensor name that is not part of HF's T5,
      or when the model is untied but `lm_head.weight` is absent.
  """
  flat: dict[str, np.ndarray] = {}
  unknown = []
  for name, value in state.items():
    if name in _EMBEDDING_KEYS or name == _LM_HEAD_KEY:
      continue
    param = _t5x_path(name)
    if param is None:
      unknown.append(f'{name} {tree_lib.shape_str(value.shape)}')
    else:
      flat[param] = _transposed(value) if _is_transposed(param) else value
  if unknown:
    raise CheckpointError(
        'not Hugging Face T5 tensor names:\n  ' + '\n  '.join(unknown))
  embedding_key = next((k for k in _EMBEDDING_KEYS if k in state), None)
  if embedding_key is None:
    raise CheckpointError(f'no token embedding (one of {_EMBEDDING_KEYS})')
  embedding = state[embedding_key]
  flat['token_embedder/embedding'] = embedding
  lm_head = state.get(_LM_HEAD_KEY)
  if tie_word_embeddings is None:
    tie_word_embeddings = lm_head is None or np.array_equal(lm_head, embedding)
  if not tie_word_embeddings:
    if lm_head is None:
      raise CheckpointError(
          f'tie_word_embeddings is false but {_LM_HEAD_KEY} is missing')
    flat['decoder/logits_dense/kernel'] = _transposed(lm_head)
  return tree_lib.unflatten(flat)


def _t5x_path(name: str) -> str | None:
  """The T5X path of an HF tensor name, or None if it is not T5's."""
  match = _FINAL_NORM_KEY.fullmatch(name)
  if match:
    stack = match.group(1)
    return f'{stack}/{stack}_norm/scale'
  match = _BLOCK_KEY.fullmatch(name)
  if not match:
    return None
  stack, block, sublayer, rest = match.groups()
  role = _SUBLAYERS[stack].get(int(sublayer))
  if role is None:
    return None
  module, norm, attention = role
  layer = f'{stack}/layers_{block}'
  if rest == 'layer_norm.weight':
    return f'{layer}/{norm}/scale'
  if attention is None:
    match = re.fullmatch(r'DenseReluDense\.(wi|wi_0|wi_1|wo)\.weight', rest)
    return f'{layer}/mlp/{match.group(1)}/kernel' if match else None
  match = re.fullmatch(rf'{attention}\.([qkvo])\.weight', rest)
  if match:
    return f'{layer}/{module}/{_PROJECTIONS[match.group(1)]}/kernel'
  # Only the first block's self-attention holds the (shared) bias table.
  if (rest == 'SelfAttention.relative_attention_bias.weight' and
      block == '0' and attention == 'SelfAttention'):
    return f'{stack}/relpos_bias/rel_embedding'
  return None


def _is_transposed(param: str) -> bool:
  return param.endswith('/kernel') or param.endswith('/rel_embedding')


def _transposed(value: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(value.T)
