"""Hugging Face T5 / mT5 checkpoints (safetensors) <-> the T5X tree.

`load_hf` reads one into the T5X tree; `save_hf` writes a T5X tree as a
directory that `transformers.T5ForConditionalGeneration.from_pretrained` loads.

Names follow `T5ForConditionalGeneration`'s state dict. torch `Linear`
weights are [out, in], so kernels are transposed; so is the relative position
bias ([buckets, heads] -> [heads, buckets]). Layer sub-blocks map as

  encoder: layer.0 self-attention, layer.1 MLP;
  decoder: layer.0 self-attention, layer.1 cross-attention, layer.2 MLP;

each with its pre-norm (`layer_norm` -> `pre_*_layer_norm/scale`). Only
safetensors files are read (never pickles): a single `model.safetensors` or
shards listed by `model.safetensors.index.json`.

One set of tables below serves both directions: `_t5x_path` (HF name -> T5X
path) reads them, `hf_name` (T5X path -> HF name) reads them inverted, and
the writer checks that every name it writes maps back to its path.

Tying and logit scaling. T5X's `logits_via_embedding` means both "no
`logits_dense`: logits through the embedding" and "divide the decoder output
by sqrt(d_model) first" (T5 1.0, and the project's t5_mini with gated GELU).
transformers < 5 expressed both with `tie_word_embeddings`; transformers >= 5
always ties T5's `lm_head` to `shared` unless the checkpoint holds a different
`lm_head.weight` (it then unties, with a warning) and records the scaling as
`scale_decoder_outputs`. `save_hf` writes both flags, equal, so either
version reads the same model; `load_hf` prefers `scale_decoder_outputs`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError

SAFETENSORS_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
CONFIG_FILE = 'config.json'
# Files that make a directory a Hugging Face checkpoint (read or not).
HF_FILES = (SAFETENSORS_FILE, INDEX_FILE, 'pytorch_model.bin', 'pytorch_model.bin.index.json',
            CONFIG_FILE)

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
_MLP_KERNELS = ('wi', 'wi_0', 'wi_1', 'wo')
_BLOCK_KEY = re.compile(r'(encoder|decoder)\.block\.(\d+)\.layer\.(\d+)\.(.+)')
_FINAL_NORM_KEY = re.compile(r'(encoder|decoder)\.final_layer_norm\.weight')
# Only the first block's self-attention holds the (shared) bias table.
_RELPOS_REST = 'SelfAttention.relative_attention_bias.weight'
_EMBEDDING_KEYS = ('shared.weight', 'encoder.embed_tokens.weight',
                   'decoder.embed_tokens.weight')
_LM_HEAD_KEY = 'lm_head.weight'
# The T5X paths of the two tensors outside the encoder/decoder blocks.
_EMBEDDING_PATH = 'token_embedder/embedding'
_LOGITS_PATH = 'decoder/logits_dense/kernel'
# Written into a saved model's safetensors header; transformers expects it.


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
    try:
      with safe_open(file, framework='np') as f:
        available = set(f.keys())
        for name in names if names is not None else sorted(available):
          if name not in available:
            raise CheckpointError(
                f'{file}: tensor {name!r} listed in {INDEX_FILE} is missing')
          state[name] = f.get_tensor(name)
    except SafetensorError as e:
      raise CheckpointError(f'{file}: not a readable safetensors file ({e}): cut short by a '
                            'failed download or copy?') from e
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
  flat[_EMBEDDING_PATH] = embedding
  lm_head = state.get(_LM_HEAD_KEY)
  if tie_word_embeddings is None:
    tie_word_embeddings = lm_head is None or np.array_equal(lm_head, embedding)
  if not tie_word_embeddings:
    if lm_head is None:
      raise CheckpointError(
          f'tie_word_embeddings is false but {_LM_HEAD_KEY} is missing')
    flat[_LOGITS_PATH] = _transposed(lm_head)
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
    match = re.fullmatch(r'DenseReluDense\.(\w+)\.weight', rest)
    return (f'{layer}/{module}/{match.group(1)}/kernel'
            if match and match.group(1) in _MLP_KERNELS else None)
  match = re.fullmatch(rf'{attention}\.([qkvo])\.weight', rest)
  if match:
    return f'{layer}/{module}/{_PROJECTIONS[match.group(1)]}/kernel'
  if rest == _RELPOS_REST and block == '0' and attention == 'SelfAttention':
    return f'{stack}/relpos_bias/rel_embedding'
  return None


def hf_name(param: str) -> str | None:
  """The HF tensor name of a T5X path (the inverse of `_t5x_path`), or None."""
  if param == _EMBEDDING_PATH:
    return _EMBEDDING_KEYS[0]
  if param == _LOGITS_PATH:
    return _LM_HEAD_KEY
  match = re.fullmatch(r'(encoder|decoder)/([^/]+)/(.+)', param)
  if not match:
    return None
  stack, first, rest = match.groups()
  if first == f'{stack}_norm' and rest == 'scale':
    return f'{stack}.final_layer_norm.weight'
  if first == 'relpos_bias' and rest == 'rel_embedding':
    return f'{stack}.block.0.layer.0.{_RELPOS_REST}'
  match = re.fullmatch(r'layers_(\d+)', first)
  if not match:
    return None
  block = match.group(1)
  for sublayer, (module, norm, attention) in _SUBLAYERS[stack].items():
    prefix = f'{stack}.block.{block}.layer.{sublayer}'
    if rest == f'{norm}/scale':
      return f'{prefix}.layer_norm.weight'
    owner, _, kernel = rest.partition('/')
    if owner != module or not kernel.endswith('/kernel'):
      continue
    kernel = kernel[:-len('/kernel')]
    if attention is None and kernel in _MLP_KERNELS:
      return f'{prefix}.DenseReluDense.{kernel}.weight'
    projection = {v: k for k, v in _PROJECTIONS.items()}.get(kernel)
    if attention is not None and projection is not None:
      return f'{prefix}.{attention}.{projection}.weight'
  return None


def _is_transposed(param: str) -> bool:
  return param.endswith('/kernel') or param.endswith('/rel_embedding')


def _transposed(value: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(value.T)


def t5_to_hf_config(config) -> dict[str, Any]:
  """A `T5Config` as a transformers `config.json` dict (the inverse of `hf_config_to_t5`).

  `tie_word_embeddings` and `scale_decoder_outputs` both carry
  `logits_via_embedding` (see the module docstring).
  """
  activations = tuple(config.mlp_activations)
  proj = next((k for k, v in _MLP_ACTIVATIONS.items() if v == activations), None)
  if proj is None:
    raise CheckpointError(
        f'mlp_activations {activations} have no Hugging Face feed_forward_proj; '
        f'supported: {sorted(_MLP_ACTIVATIONS.values())}')
  tied = bool(config.logits_via_embedding)
  return {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      'vocab_size': config.vocab_size,
      'd_model': config.emb_dim,
      'd_kv': config.head_dim,
      'd_ff': config.mlp_dim,
      'num_layers': config.num_encoder_layers,
      'num_decoder_layers': config.num_decoder_layers,
      'num_heads': config.num_heads,
      'relative_attention_num_buckets': config.relative_attention_num_buckets,
      'relative_attention_max_distance': config.relative_attention_max_distance,
      'dropout_rate': config.dropout_rate,
      'layer_norm_epsilon': 1e-6,
      'initializer_factor': 1.0,
      'feed_forward_proj': proj,
      'is_encoder_decoder': True,
      'use_cache': True,
      'pad_token_id': 0,
      'eos_token_id': 1,
      'decoder_start_token_id': 0,
      'tie_word_embeddings': tied,
      'scale_decoder_outputs': tied,
  }


def t5x_to_hf(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Maps a T5X parameter tree to an HF T5 state dict (numpy arrays).

  The inverse of `hf_to_t5x`: kernels and the relative position biases are
  transposed; the embedding is `shared.weight` (transformers ties the encoder's
  and decoder's `embed_tokens` to it); `decoder/logits_dense/kernel`, when
  present, is `lm_head.weight`.

  Raises:
    CheckpointError: listing every path that has no HF T5 name.
  """
  state: dict[str, np.ndarray] = {}
  unknown = []
  for param, value in tree_lib.flatten(params).items():
    value = np.asarray(value)
    name = hf_name(param)
    if name is None:
      unknown.append(f'{param} {tree_lib.shape_str(value.shape)}')
      continue
    if name not in (_EMBEDDING_KEYS[0], _LM_HEAD_KEY) and _t5x_path(name) != param:
      raise AssertionError(f'hf.py tables disagree: {param} -> {name} -> {_t5x_path(name)}')
    state[name] = _transposed(value) if _is_transposed(param) else value
  if unknown:
    raise CheckpointError(
        'no Hugging Face T5 name for:\n  ' + '\n  '.join(unknown))
  return state


def save_hf(params: Mapping[str, Any], config, directory: str, *,
            drop_prompt: bool = False, dtype: str | np.dtype = 'float32') -> str:
  """Writes a T5X tree as a transformers T5 directory: `model.safetensors` + `config.json`.

  `T5ForConditionalGeneration.from_pretrained(directory)` loads it offline
  (T5.1.1 gated-GELU untied, T5 1.0 ReLU tied, gated-GELU tied as t5_mini),
  and `load_hf(directory)` gives back `params` bit for bit (and `config`'s
  fields). transformers >= 5 warns, loading an untied model, that `lm_head`
  and `shared` differ "so we will NOT tie them": that is the intended result.

  Args:
    params: the T5X tree of `T5(config)` (numpy or jax arrays).
    config: the `T5Config` the params belong to; every parameter's path and
      shape is checked against it.
    directory: a local directory that does not exist or is empty. The files
      are written into a temporary sibling that is renamed at the end, so an
      interrupted save leaves nothing at `directory`.
    drop_prompt: a prompt (`encoder/prompt/...`, e.g. PromptedT5's params) is
      not part of a Hugging Face T5 model and is refused unless this is True,
      when it is left out. Export it with `save_peft_prompt`.
    dtype: 'float32' (default; bfloat16 parameters are widened exactly) or
      'float16'.

  Returns:
    `directory`.

  Raises:
    CheckpointError: a prompt without `drop_prompt`, parameters that do not
      match `config` (all listed), an unsupported dtype or activation, a
      `gs://` path, or an existing non-empty `directory`.
  """
  from prompt_tuning_jax.models import t5 as t5_lib  # local: models import flax
  import jax  # pylint: disable=g-import-not-at-top

  directory = tree_lib.new_local_directory(directory, 'save_hf')
  if np.dtype(dtype) not in (np.float32, np.float16):
    raise CheckpointError(f'dtype {dtype}: save_hf writes float32 or float16')
  hf_config = t5_to_hf_config(config)
  flat = tree_lib.flatten(params)
  prompts = sorted(p for p in flat if re.fullmatch(tree_lib.DEFAULT_FALLBACK_TO_INIT, p))
  if prompts and not drop_prompt:
    raise CheckpointError(
        'params hold a prompt (' + ', '.join(
            f'{p} {tree_lib.shape_str(np.shape(flat[p]))}' for p in prompts) +
        '), which is not part of a Hugging Face T5 model: pass drop_prompt=True to '
        'leave it out, and export it with save_peft_prompt')
  flat = {p: v for p, v in flat.items() if p not in prompts}
  model = t5_lib.T5(config.replace(dtype=np.float32))
  dummy = np.ones((1, 1), np.int32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), dummy, dummy, dummy,
                         enable_dropout=False))['params']
  try:
    tree_lib.merge_params(shapes, tree_lib.unflatten(flat), fallback_to_init=None,
                          cast_to_init_dtype=False)
  except CheckpointError as e:
    raise CheckpointError(f'params do not match the T5Config given to save_hf: {e}') from e
  state = {name: np.ascontiguousarray(np.asarray(value).astype(dtype))
           for name, value in t5x_to_hf(tree_lib.unflatten(flat)).items()}
  hf_config['dtype'] = np.dtype(dtype).name

  return tree_lib.write_weights_directory(directory, SAFETENSORS_FILE, state, CONFIG_FILE,
                                          hf_config)
