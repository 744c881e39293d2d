"""Prefix tuning and IA3 (methods/prefix_tuning.py, methods/ia3.py) and their PEFT adapters.

Identities are exact (assert_array_equal); comparisons of two computations run in float64
(`dtype=jnp.float64` under `jax.enable_x64`, torch's `.double()`), where rounding of O(1)
logits stays below ~1e-13, so 1e-10 bounds them with room while any real difference (a
misplaced prefix, a wrong row, a scale on the wrong side of a projection) is > 1e-3.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import naive_greedy, small_config, toy_batch
from prompt_tuning_jax import checkpoints, decoding, optim, scoring, train_step
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods import IA3, PrefixTuning
from prompt_tuning_jax.models import T5
from prompt_tuning_jax.models.t5 import relative_position_bucket

FLOAT64 = dict(rtol=0, atol=1e-10)


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def _unflat(flat):
  return traverse_util.unflatten_dict(flat, sep='/')


def _args(batch):
  return batch['encoder_input_tokens'], batch['decoder_input_tokens'], batch['decoder_target_tokens']


def _logits(model, params, batch):
  return np.asarray(model.apply({'params': params}, *_args(batch), enable_dropout=False))


def _with(method, batch, cfg=None, seed=1):
  """(T5 with `method`, plain T5's params at PRNGKey(0) plus the method's, plain params)."""
  cfg = cfg or small_config()
  plain = _flat(T5(cfg).init(jax.random.PRNGKey(0), *_args(batch),
                             enable_dropout=False)['params'])
  model = T5(cfg, method=method)
  params = _flat(model.init(jax.random.PRNGKey(seed), *_args(batch),
                            enable_dropout=False)['params'])
  own = {k: v for k, v in params.items() if method.owns(k)}
  assert sorted(params) == sorted(plain.keys() | own.keys())
  return model, _unflat({**plain, **own}), _unflat(plain)


def _float64(model, params):
  """The model and params in float64 (call under `jax.enable_x64(True)`)."""
  return (model.clone(config=model.config.replace(dtype=jnp.float64)),
          jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params))


# ------------------------------------------------------------ identities


def test_ia3_at_ones_is_the_base_model_exactly_and_its_paths_are_the_originals():
  batch = toy_batch(batch=3)
  model, params, plain = _with(IA3(), batch)
  own = sorted(k for k in _flat(params) if model.method.owns(k))
  assert 'encoder/layers_1/attention/k_conv/ia3_scaling' in own
  assert 'decoder/layers_0/encoder_decoder_attention/v_conv/ia3_scaling' in own
  assert 'decoder/layers_1/mlp/intermediate_conv/ia3_scaling' in own
  assert len(own) == 2 * 6 + 4  # keys and values of 6 attentions, one per MLP
  assert all(np.all(_flat(params)[k] == 1) for k in own)
  assert _flat(params)[own[0]].shape in ((4, 4), (32,))  # [heads, head_dim] or [mlp]
  np.testing.assert_array_equal(_logits(model, params, batch),
                                _logits(T5(small_config()), plain, batch))
  tokens = decoding.greedy_decode(model, params, batch['encoder_input_tokens'],
                                  max_decode_length=4)
  plain_tokens = decoding.greedy_decode(T5(small_config()), plain, batch['encoder_input_tokens'],
                                        max_decode_length=4)
  np.testing.assert_array_equal(tokens[0], plain_tokens[0])
  np.testing.assert_array_equal(tokens[1], plain_tokens[1])
  for path in (own[0], 'encoder/layers_0/mlp/intermediate_conv/ia3_scaling'):
    scaled = _unflat({**_flat(params), path: 1.5 * _flat(params)[path]})
    assert np.abs(_logits(model, scaled, batch) - _logits(model, params, batch)).max() > 1e-3


@pytest.mark.parametrize('mlp_dim', [None, 8])
def test_a_prefix_of_length_0_is_the_plain_model(mlp_dim):
  batch = toy_batch(batch=3)
  model, params, plain = _with(PrefixTuning(0, mlp_dim=mlp_dim), batch)
  np.testing.assert_array_equal(_logits(model, params, batch),
                                _logits(T5(small_config()), plain, batch))
  tokens, scores = decoding.greedy_decode(model, params, batch['encoder_input_tokens'],
                                          max_decode_length=4)
  want = decoding.greedy_decode(T5(small_config()), plain, batch['encoder_input_tokens'],
                                max_decode_length=4)
  np.testing.assert_array_equal(tokens, want[0])
  np.testing.assert_array_equal(scores, want[1])


# ------------------------------------------------------------ prefix attention


def _rms(x, scale):
  return x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + 1e-6) * scale


def _numpy_encoder(p, tokens, prefix, cfg):
  """A one-layer T5 encoder (ReLU MLP) with key/value prefixes [P, 2, h, d], in numpy."""
  h, d = cfg.num_heads, cfg.head_dim
  length, b, n = prefix.shape[0], tokens.shape[0], tokens.shape[1]
  layer = 'encoder/layers_0/'
  x = p['token_embedder/embedding'][tokens]  # [b, n, emb]
  y = _rms(x, p[layer + 'pre_attention_layer_norm/scale'])
  project = lambda name: (y @ p[f'{layer}attention/{name}/kernel']).reshape(b, n, h, d)
  q, k, v = project('query'), project('key'), project('value')
  k = np.concatenate([np.broadcast_to(prefix[:, 0], (b, length, h, d)), k], axis=1)
  v = np.concatenate([np.broadcast_to(prefix[:, 1], (b, length, h, d)), v], axis=1)
  # Key j sits at position j - P (the prefix before the sequence), query i at i.
  rel = (np.arange(length + n)[None, :] - length) - np.arange(n)[:, None]  # [n, P + n]
  buckets = relative_position_bucket(rel, True, cfg.relative_attention_num_buckets,
                                     cfg.relative_attention_max_distance)
  position = p['encoder/relpos_bias/rel_embedding'][:, buckets]  # [h, n, P + n]
  valid = tokens > 0
  key_valid = np.concatenate([np.ones((b, length), bool), valid], axis=1)  # the prefix: always
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) + position[None]
  logits = np.where(key_valid[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, n, h * d)
  x = x + out @ p[layer + 'attention/out/kernel']
  y = _rms(x, p[layer + 'pre_mlp_layer_norm/scale'])
  x = x + np.maximum(y @ p[layer + 'mlp/wi/kernel'], 0) @ p[layer + 'mlp/wo/kernel']
  return _rms(x, p['encoder/encoder_norm/scale']), valid


def test_prefix_attention_matches_a_numpy_reference():
  cfg = small_config(num_encoder_layers=1, mlp_activations=('relu',), dtype=jnp.float64)
  batch = toy_batch(batch=3, inputs=9)
  method = PrefixTuning(3, blocks=('attention',), mlp_dim=None)
  with jax.enable_x64(True):
    model = T5(cfg, method=method)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), model.init(
        jax.random.PRNGKey(3), *_args(batch), enable_dropout=False)['params'])
    flat = {k: np.asarray(v) for k, v in _flat(params).items()}
    rng = np.random.RandomState(0)  # norms start at 1: make them informative
    for k in flat:
      if k.endswith('/scale'):
        flat[k] = rng.uniform(0.5, 1.5, flat[k].shape)
    encoded, valid = model.apply({'params': _unflat(flat)}, batch['encoder_input_tokens'],
                                 method=T5.encode)
  table = flat['prefix/attention/keys_values']
  assert table.shape == (3, 1 * 2 * 4 * 4)  # [P, layers * (key, value) * heads * head_dim]
  want, want_valid = _numpy_encoder(flat, np.asarray(batch['encoder_input_tokens']),
                                    table.reshape(3, 2, 4, 4), cfg)
  np.testing.assert_array_equal(valid, want_valid)
  np.testing.assert_allclose(np.asarray(encoded)[want_valid], want[want_valid], **FLOAT64)
  # The prefix matters (the reference without it is far from the model's output).
  without, _ = _numpy_encoder(flat, np.asarray(batch['encoder_input_tokens']),
                              np.zeros((0, 2, 4, 4)), cfg)
  assert np.abs(without - want)[want_valid].max() > 1e-2


def test_prefixes_decode_with_the_cache_as_without():
  """Decoder self- and cross-attention prefixes are added on every step, never cached."""
  batch = toy_batch(batch=3)
  model, params, _ = _with(PrefixTuning(2, mlp_dim=8), batch)
  tokens, scores = decoding.greedy_decode(model, params, batch['encoder_input_tokens'],
                                          max_decode_length=4)
  want_tokens, want_scores = naive_greedy(model, params, batch['encoder_input_tokens'], 4)
  np.testing.assert_array_equal(tokens, want_tokens)
  np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)  # float32, 4 steps


def test_the_folded_prefix_gives_the_unfolded_logits():
  batch = toy_batch(batch=3)
  method = PrefixTuning(3, mlp_dim=8)
  model, params, _ = _with(method, batch)
  own = {k: v for k, v in _flat(params).items() if method.owns(k)}
  assert sorted(own) == sorted(f'prefix/{block}/{leaf}' for block in method.blocks
                               for leaf in ('embedding', 'wi/kernel', 'wi/bias', 'wo/kernel',
                                            'wo/bias'))
  with jax.enable_x64(True):
    model64, params64 = _float64(model, params)
    folded, tables = method.fold({k: v for k, v in _flat(params64).items() if method.owns(k)})
    assert folded == PrefixTuning(3, mlp_dim=None)
    assert sorted(tables) == sorted(f'prefix/{block}/keys_values' for block in method.blocks)
    frozen = {k: v for k, v in _flat(params64).items() if not method.owns(k)}
    folded_model = model64.clone(method=folded)
    np.testing.assert_allclose(_logits(folded_model, _unflat({**frozen, **tables}), batch),
                               _logits(model64, params64, batch), **FLOAT64)
  # The exports beside each checkpoint are these tables.
  exports = method.exports(own)
  assert sorted(exports) == sorted(f'prefix.{block}.keys_values' for block in method.blocks)
  assert exports['prefix.attention.keys_values'].shape == (3, 2 * 2 * 4 * 4)


def test_rank_classification_with_a_decoder_prefix_scores_each_label_alone():
  """Labels packed in one decoder row would sit at different distances from the prefix."""
  batch = toy_batch(batch=3)
  model, params, _ = _with(PrefixTuning(2, mlp_dim=None), batch)
  labels = jnp.array([[5, 9, 1], [7, 1, 0], [11, 12, 1]], jnp.int32)
  best, scores = scoring.rank_classify(model, params, batch['encoder_input_tokens'], labels)
  alone = np.stack([scoring.score_targets(model, params, batch['encoder_input_tokens'],
                                          jnp.broadcast_to(label, (3, 3))) for label in labels],
                   axis=1)  # [batch, labels]
  np.testing.assert_allclose(scores, alone, rtol=0, atol=1e-5)  # float32 log-likelihoods
  np.testing.assert_array_equal(best, alone.argmax(-1))


# ------------------------------------------------------------ what trains


def _step_flops(model, rules, batch, params):
  trainable, frozen = optim.partition(params, rules)
  tx = optim.partitioned_optimizer(params, optim.adafactor(), rules)
  state = jax.eval_shape(lambda t, f: train_step.init_train_state(t, f, tx), trainable, frozen)
  compiled = jax.jit(train_step.make_train_step(model, tx)).lower(state, frozen, batch).compile()
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']


@pytest.mark.parametrize('method', [IA3(), PrefixTuning(4, mlp_dim=16)], ids=['ia3', 'prefix'])
def test_only_the_methods_parameters_change_and_weights_are_not_differentiated(method):
  batch = toy_batch(batch=4)
  model, params, _ = _with(method, batch)
  rules = method.trainable_rules
  trainable, frozen = optim.partition(params, rules)
  assert sorted(_flat(trainable)) == sorted(k for k in _flat(params) if method.owns(k))
  tx = optim.partitioned_optimizer(params, optim.adafactor(1e-2), rules)
  state = train_step.init_train_state(trainable, frozen, tx)
  state, _ = jax.jit(train_step.make_train_step(model, tx))(state, frozen, batch)
  moved = [k for k, v in _flat(state.trainable).items()
           if not np.array_equal(v, _flat(trainable)[k])]
  assert sorted(moved) == sorted(_flat(trainable))  # every one of the method's, nothing else
  assert sorted(_flat(state.trainable)) == sorted(_flat(trainable))

  # The frozen weights' gradients are never computed (as tests/test_train_step.py's
  # prompt-only step): a full step is forward (2 matmul units), activation gradients (2) and
  # weight gradients (2); without the last, 4/6 of the FLOPs. The method's own work (IA3's
  # elementwise scales, the prefix MLP on [P, emb]) and the non-matmul work (Adafactor over
  # every weight in the full step: below 4/6) move it by a few percent.
  cfg = small_config(emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128, vocab_size=256)
  batch = toy_batch(batch=4, inputs=32, targets=8, vocab=256)
  model, params, _ = _with(method, batch, cfg)
  own, full = (_step_flops(model, rules, batch, params)
               for rules in (method.trainable_rules, optim.MODEL_TUNING_RULES))
  print(f'{type(method).__name__}: compiled step FLOPs {own:.3e}, all weights {full:.3e}, '
        f'ratio {own / full:.3f} (no weight gradients: ~4/6)')
  assert 0.58 < own / full < 0.72


# ------------------------------------------------------------ settings refused


def test_impossible_settings_stop_with_one_line():
  with pytest.raises(UsageError, match=r'PrefixTuning.length must be .* >= 0, got -1'):
    PrefixTuning(-1)
  with pytest.raises(UsageError, match=r'PrefixTuning.blocks must name attentions among'):
    PrefixTuning(2, blocks=('mlp',))
  with pytest.raises(UsageError, match=r'PrefixTuning.mlp_dim must be a positive width'):
    PrefixTuning(2, mlp_dim=0)
  with pytest.raises(UsageError, match=r'holds decoder self-attention prefixes only'):
    PrefixTuning(2).check_peft()
  PrefixTuning(2, blocks='self_attention').check_peft()
  with pytest.raises(TypeError):  # a prefix has no placement: gin names the parameter
    PrefixTuning(2, placement='suffix')  # pylint: disable=unexpected-keyword-arg
  batch = dict(toy_batch(), encoder_segment_ids=jnp.ones((2, 7), jnp.int32))
  model, params, _ = _with(PrefixTuning(2, mlp_dim=None), toy_batch())
  with pytest.raises(ValueError, match='Packed rows .* not supported with a key/value prefix'):
    model.apply({'params': params}, *_args(batch), enable_dropout=False,
                encoder_segment_ids=batch['encoder_segment_ids'])


# ------------------------------------------------------------ PEFT


def _hf_and_peft():
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
  peft = pytest.importorskip('peft', reason='peft is a bench extra: pip install -e .[bench]')
  return torch, transformers, peft


def _frozen_hf(tmp_path, cfg, batch):
  """Plain T5 params (informative norms) and the `save_hf` copy of them."""
  params = _flat(T5(cfg).init(jax.random.PRNGKey(0), *_args(batch),
                              enable_dropout=False)['params'])
  rng = np.random.RandomState(0)
  params = {k: (rng.uniform(0.5, 1.5, v.shape).astype(np.float32) if k.endswith('/scale')
                else np.asarray(v)) for k, v in params.items()}
  directory = str(tmp_path / 'hf')
  checkpoints.save_hf(_unflat(params), cfg, directory)
  return params, directory


def _ours64(method, cfg, params, batch):
  with jax.enable_x64(True):
    model, params = _float64(T5(cfg, method=method), _unflat(params))
    return _logits(model, params, batch)


def _peft64(torch, model, batch):
  enc, dec_in, tgt = (np.asarray(batch[k]) for k in (
      'encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens'))
  with torch.no_grad():
    return model.double()(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0),
                          decoder_input_ids=torch.tensor(dec_in),
                          decoder_attention_mask=torch.tensor(tgt > 0)).logits.numpy()


def _assert_close_where_targets(theirs, ours, batch, plain=None):
  tgt = np.asarray(batch['decoder_target_tokens']) > 0
  diff = np.abs(theirs - ours)[tgt].max()
  print(f'max |logit diff| ours vs PEFT (float64): {diff:.2e}')
  assert diff <= 1e-10
  if plain is not None:  # ... and the adapter matters
    assert np.abs(plain - ours)[tgt].max() > 1e-3


def test_our_ia3_adapter_in_peft_gives_our_logits_and_reads_back(tmp_path, hf_t5_float64):
  torch, transformers, peft = _hf_and_peft()
  cfg, batch = small_config(), toy_batch(batch=3, inputs=9)
  params, hf_dir = _frozen_hf(tmp_path, cfg, batch)
  _, with_ia3, _ = _with(IA3(), batch, cfg)
  rng = np.random.RandomState(1)
  scales = {k: rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
            for k, v in _flat(with_ia3).items() if IA3().owns(k)}
  adapter = str(tmp_path / 'ia3')
  checkpoints.save_peft_adapter('IA3', scales, adapter, base_model_name_or_path=hf_dir,
                                config=cfg)
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    plain = _peft64(torch, base, batch)
  peft_model = peft.PeftModel.from_pretrained(base, adapter).eval()
  ours = _ours64(IA3(), cfg, {**params, **scales}, batch)
  _assert_close_where_targets(_peft64(torch, peft_model, batch), ours, batch, plain)
  method, read = checkpoints.load_peft_adapter(adapter, cfg)
  assert method == IA3() and sorted(read) == sorted(scales)
  for k, v in scales.items():
    np.testing.assert_array_equal(read[k], v)


def test_an_ia3_adapter_peft_wrote_loads_into_ours(tmp_path, hf_t5_float64):
  torch, transformers, peft = _hf_and_peft()
  cfg, batch = small_config(), toy_batch(batch=3, inputs=9)
  params, hf_dir = _frozen_hf(tmp_path, cfg, batch)
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  peft_model = peft.get_peft_model(base, peft.IA3Config(
      task_type='SEQ_2_SEQ_LM', target_modules=['k', 'v', 'wo'], feedforward_modules=['wo']))
  torch.manual_seed(0)
  with torch.no_grad():
    for name, p in peft_model.named_parameters():
      if 'ia3_l' in name:
        p.uniform_(0.5, 1.5)
  peft_model.save_pretrained(str(tmp_path / 'written'))
  method, scales = checkpoints.load_peft_adapter(str(tmp_path / 'written'), cfg)
  assert method == IA3()
  _assert_close_where_targets(_peft64(torch, peft_model.eval(), batch),
                              _ours64(method, cfg, {**params, **scales}, batch), batch)


@pytest.mark.parametrize('decoder_layers', [3, 2])
def test_our_prefix_adapter_in_peft_gives_our_logits_and_reads_back(tmp_path, hf_t5_float64,
                                                                     decoder_layers):
  torch, transformers, peft = _hf_and_peft()
  cfg, batch = small_config(num_decoder_layers=decoder_layers), toy_batch(batch=3, inputs=9)
  params, hf_dir = _frozen_hf(tmp_path, cfg, batch)
  method = PrefixTuning(3, blocks=('self_attention',), mlp_dim=None)
  rng = np.random.RandomState(2)
  table = rng.normal(size=(3, decoder_layers, 2 * 4 * 4)).astype(np.float32)
  if decoder_layers % 2 == 0:  # PEFT gives layers i and i + L/2 the same rows (peft.py)
    different = table.reshape(3, -1).copy()
    with pytest.raises(checkpoints.CheckpointError, match='PEFT cannot hold it'):
      checkpoints.save_peft_adapter('PREFIX_TUNING', {
          'prefix/self_attention/keys_values': different}, str(tmp_path / 'refused'),
          base_model_name_or_path=hf_dir, config=cfg)
    assert not os.path.exists(tmp_path / 'refused')
    table[:, decoder_layers // 2:] = table[:, :decoder_layers // 2]
  own = {'prefix/self_attention/keys_values': table.reshape(3, -1)}
  adapter = str(tmp_path / 'prefix')
  checkpoints.save_peft_adapter('PREFIX_TUNING', own, adapter, base_model_name_or_path=hf_dir,
                                config=cfg)
  with open(os.path.join(adapter, 'adapter_config.json')) as f:
    assert json.load(f)['peft_type'] == 'PREFIX_TUNING'
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    plain = _peft64(torch, base, batch)
  peft_model = peft.PeftModel.from_pretrained(base, adapter).eval()
  _assert_close_where_targets(_peft64(torch, peft_model, batch),
                              _ours64(method, cfg, {**params, **own}, batch), batch, plain)
  read_method, read = checkpoints.load_peft_adapter(adapter, cfg)
  assert read_method == method
  np.testing.assert_array_equal(read['prefix/self_attention/keys_values'], own[
      'prefix/self_attention/keys_values'])


def test_a_prefix_adapter_peft_wrote_loads_into_ours(tmp_path, hf_t5_float64):
  torch, transformers, peft = _hf_and_peft()
  cfg, batch = small_config(), toy_batch(batch=3, inputs=9)
  params, hf_dir = _frozen_hf(tmp_path, cfg, batch)
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  torch.manual_seed(0)
  peft_model = peft.get_peft_model(base, peft.PrefixTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=4))
  peft_model.save_pretrained(str(tmp_path / 'written'))
  method, own = checkpoints.load_peft_adapter(str(tmp_path / 'written'), cfg)
  assert method == PrefixTuning(4, blocks=('self_attention',), mlp_dim=None)
  _assert_close_where_targets(_peft64(torch, peft_model.eval(), batch),
                              _ours64(method, cfg, {**params, **own}, batch), batch)
  # Cached decoding with the read prefix is the uncached one.
  model = T5(cfg, method=method)
  tokens, _ = decoding.greedy_decode(model, _unflat({**params, **own}),
                                     batch['encoder_input_tokens'], max_decode_length=4)
  want, _ = naive_greedy(model, _unflat({**params, **own}), batch['encoder_input_tokens'], 4)
  np.testing.assert_array_equal(tokens, want)


def test_adapters_of_other_modules_are_refused(tmp_path):
  _, transformers, peft = _hf_and_peft()
  cfg, batch = small_config(), toy_batch()
  _, hf_dir = _frozen_hf(tmp_path, cfg, batch)
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  peft.get_peft_model(base, peft.IA3Config(
      task_type='SEQ_2_SEQ_LM', target_modules=['q', 'v'], feedforward_modules=[])
  ).save_pretrained(str(tmp_path / 'q'))
  with pytest.raises(checkpoints.CheckpointError, match=r'q.ia3_l scales a module our IA3 does'):
    checkpoints.load_peft_adapter(str(tmp_path / 'q'), cfg)
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  peft.get_peft_model(base, peft.LoraConfig(task_type='SEQ_2_SEQ_LM', target_modules=['q'])
                      ).save_pretrained(str(tmp_path / 'lora'))
  with pytest.raises(checkpoints.CheckpointError, match=r'a LORA adapter; readable PEFT types'):
    checkpoints.load_peft_adapter(str(tmp_path / 'lora'), cfg)



def test_a_label_loss_with_a_decoder_self_attention_prefix_stops_before_training(tmp_path):
  """Losses over the label set score all labels in one decoder row, which a prefix in the
  decoder's self-attention would see at different distances: refused, with the way out."""
  from prompt_tuning_jax import config, train  # pylint: disable=g-import-not-at-top
  run = config.configure('train', ['runs/smoke.gin', 'methods/prefix_tuning.gin'], [
      f"MODEL_DIR = '{tmp_path / 'run'}'", "LOSS = 'hinge'"]).settings
  with pytest.raises(UsageError, match="PREFIX_BLOCKS without 'self_attention'"):
    train.train(run)
  assert not (tmp_path / 'run' / 'checkpoints').exists()
