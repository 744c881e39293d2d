"""A causal decoder-only LM as Hugging Face's `Pix2StructTextModel`, written without transformers.

Hugging Face has one causal LM with a T5 decoder-only LM's math: the text decoder of
Pix2Struct, run without encoder states (its cross-attention is then skipped). Its
blocks are T5's: RMS norms without mean (eps 1e-6), unscaled attention logits, one
relative-position bias table (in layer 0, shared) with causal buckets, a gated MLP
(`dense_act_fn`: gelu_new is flax's tanh GELU), an untied `lm_head`. So a
`DecoderOnly` whose config is causal (`inputs_bidirectional_attention=False`, the
prefix LM has no equivalent there), gated, and whose attention width
`num_heads * head_dim` is `emb_dim` (Pix2Struct's projections are square) is the
same function. Tied logits (x @ E^T / sqrt(emb)) become an untied `lm_head` of
E / sqrt(emb). The cross-attention weights a Pix2Struct checkpoint must hold are
written as zeros: they are never used without encoder states.

  DIR/config.json          model_type pix2struct_text_model
  DIR/model.safetensors    embed_tokens.weight, layer.<i>.self_attention.attention.
                           {query,key,value,output}.weight ([out, in]),
                           layer.0.self_attention.attention.relative_attention_bias.weight
                           [buckets, heads], layer.<i>.self_attention.layer_norm.weight,
                           layer.<i>.mlp.DenseReluDense.{wi_0,wi_1,wo}.weight,
                           layer.<i>.mlp.layer_norm.weight, final_layer_norm.weight,
                           lm_head.weight; layer.<i>.encoder_decoder_attention.* (zeros)

A prompt of such a model, placed at the very start (`prompt_placement='prefix'`),
is what PEFT's prompt tuning does to a decoder (its virtual tokens precede the whole
input, BOS included): `save_peft_prompt(..., task_type=DECODER_ONLY_TASK_TYPE)`, an adapter
PEFT loads as `PeftModelForFeatureExtraction` (its output is the LM's logits).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
_ACTIVATIONS = {'gelu': 'gelu_new', 'relu': 'relu'}  # flax's gelu is the tanh form


def exportable(config) -> str | None:
  """Why a decoder-only `config` has no exact Pix2StructTextModel (None: it has one)."""
  if config.inputs_bidirectional_attention:
    return ('it is a prefix LM (inputs_bidirectional_attention): no Hugging Face causal LM '
            'has the bidirectional prefix')
  acts = tuple(config.mlp_activations)
  if len(acts) != 2 or acts[1] != 'linear' or acts[0] not in _ACTIVATIONS:
    return f'its MLP {acts} is not a gated GELU or ReLU, the only MLP Pix2Struct has'
  if config.num_heads * config.head_dim != config.emb_dim:
    return (f'its attention width num_heads * head_dim = {config.num_heads * config.head_dim} '
            f'is not emb_dim = {config.emb_dim} (Pix2Struct projections are square)')
  return None


def hf_config(config) -> dict[str, Any]:
  """Pix2StructTextConfig's fields for a decoder-only `config` (`exportable`)."""
  return {
      'architectures': ['Pix2StructTextModel'],
      'model_type': 'pix2struct_text_model',
      'vocab_size': config.vocab_size,
      'hidden_size': config.emb_dim,
      'd_kv': config.head_dim,
      'd_ff': config.mlp_dim,
      'num_layers': config.num_decoder_layers,
      'num_heads': config.num_heads,
      'relative_attention_num_buckets': config.relative_attention_num_buckets,
      'relative_attention_max_distance': config.relative_attention_max_distance,
      'dense_act_fn': _ACTIVATIONS[config.mlp_activations[0]],
      'dropout_rate': config.dropout_rate,
      'layer_norm_epsilon': 1e-6,
      'initializer_factor': 1.0,
      # transformers 5 initialises the text model with this field, which its text
      # config lacks; without it loading fails.
      'initializer_range': 0.02,
      'is_decoder': True,
      'tie_word_embeddings': False,
      'use_cache': False,
      'pad_token_id': 0,
      'eos_token_id': 1,
      'decoder_start_token_id': 0,
  }


def hf_weights(params: Mapping[str, Any], config) -> dict[str, np.ndarray]:
  """The Pix2StructTextModel state dict (float32 numpy) of a decoder-only T5X tree."""
  flat = {k: np.asarray(v, np.float32) for k, v in tree_lib.flatten(params).items()}
  out = {'embed_tokens.weight': flat['decoder/token_embedder/embedding'],
         'final_layer_norm.weight': flat['decoder/decoder_norm/scale'],
         'layer.0.self_attention.attention.relative_attention_bias.weight':
             flat['decoder/relpos_bias/rel_embedding'].T}
  if config.logits_via_embedding:
    out['lm_head.weight'] = flat['decoder/token_embedder/embedding'] / np.sqrt(config.emb_dim)
  else:
    out['lm_head.weight'] = flat['decoder/logits_dense/kernel'].T
  e = config.emb_dim
  for i in range(config.num_decoder_layers):
    ours, theirs = f'decoder/layers_{i}', f'layer.{i}'
    for name, hf_name in (('query', 'query'), ('key', 'key'), ('value', 'value'),
                          ('out', 'output')):
      out[f'{theirs}.self_attention.attention.{hf_name}.weight'] = (
          flat[f'{ours}/self_attention/{name}/kernel'].T)
      out[f'{theirs}.encoder_decoder_attention.attention.{hf_name}.weight'] = np.zeros(
          (e, e), np.float32)
    out[f'{theirs}.encoder_decoder_attention.layer_norm.weight'] = np.ones(e, np.float32)
    out[f'{theirs}.self_attention.layer_norm.weight'] = (
        flat[f'{ours}/pre_self_attention_layer_norm/scale'])
    for name in ('wi_0', 'wi_1', 'wo'):
      out[f'{theirs}.mlp.DenseReluDense.{name}.weight'] = flat[f'{ours}/mlp/{name}/kernel'].T
    out[f'{theirs}.mlp.layer_norm.weight'] = flat[f'{ours}/pre_mlp_layer_norm/scale']
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def save_hf_causal_lm(params: Mapping[str, Any], config, directory: str) -> str:
  """Writes a causal decoder-only LM (its prompt left out) as a Pix2StructTextModel directory.

  `transformers.Pix2StructTextModel.from_pretrained(directory)` loads it offline and
  computes the same logits. Raises CheckpointError when `config` has no exact
  equivalent there (`exportable`), or `directory` exists and is not empty.
  """
  why = exportable(config)
  if why is not None:
    raise CheckpointError(f'{directory}: no Hugging Face causal LM computes this model: {why}')
  weights = hf_weights(params, config)
  directory = tree_lib.new_local_directory(directory, 'save_hf_causal_lm')
  return tree_lib.write_weights_directory(directory, WEIGHTS_FILE, weights, CONFIG_FILE,
                                          hf_config(config))
