"""The T5 stack and the prompted model: tree, shapes, dtypes, masks, placement."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import small_config, toy_batch
from prompt_tuning_jax.methods import MethodInputs
from prompt_tuning_jax.models import PRESETS, PromptedT5, T5, get_config


def _init(model, batch):
  return model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'],
                    batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                    enable_dropout=False)['params']


def _paths(params):
  return {k: v.shape for k, v in traverse_util.flatten_dict(params, sep='/').items()}


def _expected_tree(cfg, prompt_length=None):
  e, hd, m, v = cfg.emb_dim, cfg.num_heads * cfg.head_dim, cfg.mlp_dim, cfg.vocab_size
  wi = (['wi'] if len(cfg.mlp_activations) == 1
        else [f'wi_{i}' for i in range(len(cfg.mlp_activations))])

  def attention(prefix):
    return {**{f'{prefix}/{n}/kernel': (e, hd) for n in ('query', 'key', 'value')},
            f'{prefix}/out/kernel': (hd, e)}

  def mlp(prefix):
    return {**{f'{prefix}/mlp/{n}/kernel': (e, m) for n in wi}, f'{prefix}/mlp/wo/kernel': (m, e)}

  tree = {'token_embedder/embedding': (v, e),
          'encoder/relpos_bias/rel_embedding': (cfg.num_heads, cfg.relative_attention_num_buckets),
          'decoder/relpos_bias/rel_embedding': (cfg.num_heads, cfg.relative_attention_num_buckets),
          'encoder/encoder_norm/scale': (e,), 'decoder/decoder_norm/scale': (e,)}
  for i in range(cfg.num_encoder_layers):
    p = f'encoder/layers_{i}'
    tree.update({f'{p}/pre_attention_layer_norm/scale': (e,), f'{p}/pre_mlp_layer_norm/scale': (e,),
                 **attention(f'{p}/attention'), **mlp(p)})
  for i in range(cfg.num_decoder_layers):
    p = f'decoder/layers_{i}'
    tree.update({f'{p}/pre_self_attention_layer_norm/scale': (e,),
                 f'{p}/pre_cross_attention_layer_norm/scale': (e,),
                 f'{p}/pre_mlp_layer_norm/scale': (e,), **attention(f'{p}/self_attention'),
                 **attention(f'{p}/encoder_decoder_attention'), **mlp(p)})
  if not cfg.logits_via_embedding:
    tree['decoder/logits_dense/kernel'] = (e, v)
  if prompt_length:
    tree['encoder/prompt/prompt/prompt'] = (prompt_length, e)
  return tree


@pytest.mark.parametrize('acts,tied', [(('gelu', 'linear'), False), (('relu',), True)])
def test_parameter_tree_is_t5x(acts, tied):
  cfg = small_config(mlp_activations=acts, logits_via_embedding=tied)
  batch = toy_batch()
  assert _paths(_init(T5(cfg), batch)) == _expected_tree(cfg)
  assert _paths(_init(PromptedT5(cfg, prompt_length=3), batch)) == _expected_tree(cfg, 3)


def test_presets():
  assert set(PRESETS) >= {'t5_1_1_small', 't5_1_1_base', 't5_1_1_large', 't5_1_1_xl', 't5_1_1_xxl',
                          't5_1_0_small', 't5_1_0_base', 'mt5_small', 'mt5_base', 't5_1_1_tiny'}
  xxl = get_config('t5_1_1_xxl')
  assert (xxl.emb_dim, xxl.num_heads, xxl.mlp_dim, xxl.num_encoder_layers) == (4096, 64, 10240, 24)
  assert get_config('t5_1_0_base').mlp_activations == ('relu',)
  assert get_config('t5_1_0_base').logits_via_embedding
  assert get_config('mt5_base').vocab_size == 250112
  assert get_config('t5_1_1_small', dropout_rate=0.0).dropout_rate == 0.0
  with pytest.raises(ValueError, match='t5_1_1_smal.*known'):
    get_config('t5_1_1_smal')


def test_dtypes_and_shapes_under_jit():
  cfg = small_config(dtype=jnp.bfloat16)
  model = PromptedT5(cfg, prompt_length=5)
  batch = toy_batch()
  params = _init(model, batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  logits = jax.jit(lambda p, b: model.apply(
      {'params': p}, b['encoder_input_tokens'], b['decoder_input_tokens'],
      b['decoder_target_tokens'], enable_dropout=False))(params, batch)
  assert logits.shape == (2, 4, cfg.vocab_size) and logits.dtype == jnp.float32
  encoded, valid = model.apply({'params': params}, batch['encoder_input_tokens'],
                               method=model.encode)
  assert encoded.shape == (2, 5 + 7, cfg.emb_dim) and encoded.dtype == jnp.bfloat16
  np.testing.assert_array_equal(valid[:, :5], True)  # prompt positions are always valid
  np.testing.assert_array_equal(valid[:, 5:], batch['encoder_input_tokens'] > 0)


def test_prompt_reaches_the_encoder_and_decoder_stays_causal():
  cfg = small_config()
  model = PromptedT5(cfg, prompt_length=4)
  batch = toy_batch()
  params = _init(model, batch)
  run = lambda p, b: model.apply({'params': p}, b['encoder_input_tokens'],
                                 b['decoder_input_tokens'], b['decoder_target_tokens'],
                                 enable_dropout=False)
  base = run(params, batch)
  # Encoder self-attention: the outputs at the input tokens' positions depend on the prompt.
  encode = lambda p: model.apply({'params': p}, batch['encoder_input_tokens'],
                                 method=model.encode)[0][:, 4:]
  moved = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 1.0 if 'prompt' in jax.tree_util.keystr(path) else x, params)
  assert np.abs(encode(moved) - encode(params)).max() > 1e-2
  # Decoder self-attention: logits at position i ignore decoder inputs after i.
  later = dict(batch, decoder_input_tokens=batch['decoder_input_tokens'].at[:, 3].set(9))
  np.testing.assert_allclose(run(params, later)[:, :3], base[:, :3], atol=1e-6)


@pytest.mark.parametrize('placement', ['prefix', 'suffix'])
def test_decoder_cross_attends_to_prompt_positions(placement):
  """Only the encoder outputs at the prompt positions are changed: the decoder's
  logits change, and cross-attention is their only path; with the prompt
  positions masked out of cross-attention, the same change is invisible."""
  cfg, length = small_config(), 4
  model = PromptedT5(cfg, prompt_length=length, prompt_placement=placement)
  batch = toy_batch()
  params = _init(model, batch)
  tokens = batch['encoder_input_tokens']
  decoder_args = (batch['decoder_input_tokens'], batch['decoder_target_tokens'])
  encoded, valid = model.apply({'params': params}, tokens, method=model.encode)
  decode = lambda e, v: np.asarray(model.apply({'params': params}, e, v, *decoder_args,
                                               method=model.decode))
  # The model's forward pass is this encode + decode.
  np.testing.assert_array_equal(
      decode(encoded, valid),
      model.apply({'params': params}, tokens, *decoder_args, enable_dropout=False))
  # Prompt positions: the first `length` (prefix) or right after each row's last token.
  n = np.asarray((tokens > 0).sum(axis=1))
  start = np.zeros_like(n) if placement == 'prefix' else n
  positions = np.arange(encoded.shape[1])
  is_prompt = (positions >= start[:, None]) & (positions < start[:, None] + length)
  np.testing.assert_array_equal(np.asarray(valid)[is_prompt], True)
  noise = jax.random.normal(jax.random.PRNGKey(1), encoded.shape)
  perturbed = encoded + jnp.where(is_prompt[..., None], noise, 0.0)
  real = np.asarray(batch['decoder_target_tokens'] > 0)
  change = np.abs(decode(perturbed, valid) - decode(encoded, valid)).max(axis=-1)
  assert change[real].min() > 1e-2  # every real target position reads the prompt (>= 0.29)
  # Padding queries attend to nothing real (a uniform average): compared at real targets.
  hidden = valid & ~is_prompt
  np.testing.assert_array_equal(decode(perturbed, hidden)[real], decode(encoded, hidden)[real])


def test_left_padded_prompt_equals_unpadded_prompt():
  """Mixed batches left-pad shorter prompts; relative positions must not change."""
  cfg = small_config()
  batch = toy_batch(batch=1)
  model = PromptedT5(cfg, prompt_length=3)
  params = _init(model, batch)
  prompt = params['encoder']['prompt']['prompt']['prompt']  # [3, emb]
  padded = jnp.concatenate([jnp.full((2, cfg.emb_dim), 7.0), prompt])[None]  # [1, 5, emb]
  mask = jnp.array([[False, False, True, True, True]])
  args = (batch['encoder_input_tokens'], batch['decoder_input_tokens'],
          batch['decoder_target_tokens'])
  want = model.apply({'params': params}, *args, enable_dropout=False)
  got = model.apply({'params': params}, *args, enable_dropout=False,
                    method_inputs=MethodInputs(prompts=padded, prompt_mask=mask))
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_suffix_placement_puts_prompt_after_last_real_token():
  cfg = small_config()
  model = PromptedT5(cfg, prompt_length=2, prompt_placement='suffix')
  batch = toy_batch()
  params = _init(model, batch)
  tokens = batch['encoder_input_tokens']
  emb = params['token_embedder']['embedding']
  prompt = params['encoder']['prompt']['prompt']['prompt']
  x = jnp.take(emb, tokens, axis=0)
  from prompt_tuning_jax.prompts import place_prompt
  combined, valid = place_prompt(x, tokens > 0, jnp.broadcast_to(prompt, (2, 2, cfg.emb_dim)),
                                 jnp.ones((2, 2), bool), 'suffix')
  n = int((tokens[1] > 0).sum())  # row 1 has padding
  np.testing.assert_array_equal(combined[1, :n], x[1, :n])
  np.testing.assert_array_equal(combined[1, n:n + 2], prompt)
  np.testing.assert_array_equal(combined[1, n + 2:], x[1, n:])
  np.testing.assert_array_equal(valid[1], [True] * (n + 2) + [False] * (7 - n))
  logits = model.apply({'params': params}, tokens, batch['decoder_input_tokens'],
                       batch['decoder_target_tokens'], enable_dropout=False)
  assert logits.shape == (2, 4, cfg.vocab_size)


def test_packed_rows_without_prompt_slots_are_refused_with_prompts():
  cfg = small_config()
  model = PromptedT5(cfg, prompt_length=2)
  batch = toy_batch()
  params = _init(model, batch)
  with pytest.raises(ValueError, match='need a prompt slot per example'):
    model.apply({'params': params}, batch['encoder_input_tokens'],
                batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                encoder_segment_ids=jnp.ones_like(batch['encoder_input_tokens']),
                enable_dropout=False)


def test_unknown_placement_is_an_error():
  with pytest.raises(ValueError, match='placement'):
    _init(PromptedT5(small_config(), prompt_length=2, prompt_placement='middle'), toy_batch())


def test_dropout_changes_outputs_only_when_enabled():
  cfg = small_config(dropout_rate=0.3)
  model = PromptedT5(cfg, prompt_length=2)
  batch = toy_batch()
  params = _init(model, batch)
  args = (batch['encoder_input_tokens'], batch['decoder_input_tokens'],
          batch['decoder_target_tokens'])
  a = model.apply({'params': params}, *args, enable_dropout=False)
  b = model.apply({'params': params}, *args, enable_dropout=False)
  c = model.apply({'params': params}, *args, enable_dropout=True,
                  rngs={'dropout': jax.random.PRNGKey(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_padded_prompt_equals_unpadded_prompt_with_suffix_placement():
  cfg = small_config()
  batch = toy_batch()
  model = PromptedT5(cfg, prompt_length=3, prompt_placement='suffix')
  params = _init(model, batch)
  prompt = params['encoder']['prompt']['prompt']['prompt']
  padded = jnp.broadcast_to(jnp.concatenate([jnp.full((2, cfg.emb_dim), 7.0), prompt]),
                            (2, 5, cfg.emb_dim))
  mask = jnp.array([[False, False, True, True, True]] * 2)
  args = (batch['encoder_input_tokens'], batch['decoder_input_tokens'],
          batch['decoder_target_tokens'])
  want = model.apply({'params': params}, *args, enable_dropout=False)
  got = model.apply({'params': params}, *args, enable_dropout=False,
                    method_inputs=MethodInputs(prompts=padded, prompt_mask=mask))
  real = np.asarray(batch['decoder_target_tokens'] > 0)  # padded targets attend to nothing real
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5)
