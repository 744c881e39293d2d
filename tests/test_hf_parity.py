"""Parity with an independent T5 (Hugging Face transformers, PyTorch) via `load_hf`,
and a forward pass of the real T5X test checkpoint via `load_t5x`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_path
from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.models import PromptedT5, T5, T5Config, get_config

ENC = np.array([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 1, 0],
                [8, 9, 3, 1] + [0] * 19])
TGT = np.array([[3, 4, 5, 1], [5, 1, 0, 0]])
DEC_IN = np.array([[0, 3, 4, 5], [0, 5, 1, 0]])


@pytest.mark.parametrize('feed_forward_proj,tied', [('gated-gelu', False), ('relu', True)],
                         ids=['t5_1_1_style', 't5_1_0_style'])
def test_matches_transformers_t5(tmp_path, feed_forward_proj, tied, hf_t5_float64):
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
  torch.manual_seed(0)
  hf_config = transformers.T5Config(
      vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=3,
      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
      dropout_rate=0.0, feed_forward_proj=feed_forward_proj, tie_word_embeddings=tied,
      decoder_start_token_id=0, pad_token_id=0)
  hf_model = transformers.T5ForConditionalGeneration(hf_config).eval()
  if not tied:  # transformers >= 5 shares lm_head with the embedding: give T5.1.1 its own head.
    hf_model.lm_head = torch.nn.Linear(16, 100, bias=False)
    assert hf_model.lm_head.weight is not hf_model.shared.weight
  with torch.no_grad():  # layer norms start at 1: make them informative
    for name, p in hf_model.named_parameters():
      if 'layer_norm' in name:
        p.uniform_(0.5, 1.5)
  hf_model.save_pretrained(tmp_path, safe_serialization=True)

  params, config_kwargs = checkpoints.load_hf(str(tmp_path))
  # Both in float64 (ours under jax.enable_x64, torch's double): the same math in another
  # order differs by float64 rounding, ~1e-15 here.
  config = T5Config(**config_kwargs).replace(dtype=jnp.float64, dropout_rate=0.0)
  assert config.logits_via_embedding == tied
  model = T5(config)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    logits = model.apply({'params': params}, ENC, DEC_IN, TGT, enable_dropout=False)
    encoded, _ = model.apply({'params': params}, ENC, method=model.encode)
  assert logits.dtype == np.float64
  with torch.no_grad():
    out = hf_model.double()(input_ids=torch.tensor(ENC), attention_mask=torch.tensor(ENC > 0),
                            decoder_input_ids=torch.tensor(DEC_IN),
                            decoder_attention_mask=torch.tensor(TGT > 0))
  # Compare real (non-padding) positions; padding rows are masked differently by design.
  enc_diff = np.abs(np.asarray(encoded) - out.encoder_last_hidden_state.numpy())[ENC > 0].max()
  logit_diff = np.abs(np.asarray(logits) - out.logits.numpy())[TGT > 0].max()
  print(f'{feed_forward_proj}: max |encoder diff| {enc_diff:.2e}, max |logit diff| {logit_diff:.2e}')
  # Values are O(1-10): float64 rounding through a few layers stays below ~1e-13; any
  # difference in the math (a scale, a mask, the GELU's form) is above 1e-4.
  assert enc_diff < 1e-10 and logit_diff < 1e-10


def _read_t5x_directly(ckpt_dir) -> dict[str, np.ndarray]:
  """{'encoder/layers_0/...': array} of a legacy T5X checkpoint, read without
  `load_t5x`: the msgpack tree, and each zarr array with TensorStore."""
  ts = pytest.importorskip('tensorstore')
  from flax import serialization
  target = serialization.msgpack_restore(
      (ckpt_dir / 'checkpoint').read_bytes())['optimizer']['target']
  flat = {}

  def walk(node, path):
    if isinstance(node, dict) and 'driver' not in node:
      for key, child in node.items():
        walk(child, path + (key,))
    elif isinstance(node, dict):  # A zarr array in its own directory.
      spec = {'driver': 'zarr', 'kvstore': {'driver': 'file',
                                            'path': str(ckpt_dir / node['kvstore']['path'])}}
      flat['/'.join(path)] = ts.open(spec).result().read().result()
    else:
      flat['/'.join(path)] = np.asarray(node)

  walk(target, ())
  return flat


def _hf_t5_1_1_from_t5x(raw, cfg, torch, transformers):
  """An HF PyTorch T5.1.1 holding the raw T5X arrays (kernels [in, out] -> weights [out, in])."""
  hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.emb_dim, d_kv=cfg.head_dim, d_ff=cfg.mlp_dim,
      num_layers=cfg.num_encoder_layers, num_decoder_layers=cfg.num_decoder_layers,
      num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.relative_attention_num_buckets,
      relative_attention_max_distance=cfg.relative_attention_max_distance, dropout_rate=0.0,
      feed_forward_proj='gated-gelu', tie_word_embeddings=False, decoder_start_token_id=0,
      pad_token_id=0)).eval()
  # transformers >= 5 shares lm_head with the embedding; T5.1.1's head is its own matrix.
  hf.lm_head = torch.nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
  state = {'lm_head.weight': raw['decoder/logits_dense/kernel'].T}
  for name in ('shared', 'encoder.embed_tokens', 'decoder.embed_tokens'):
    state[f'{name}.weight'] = raw['token_embedder/embedding']
  attention = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}
  for stack, layers in (('encoder', cfg.num_encoder_layers), ('decoder', cfg.num_decoder_layers)):
    state[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'] = raw[
        f'{stack}/relpos_bias/rel_embedding'].T
    state[f'{stack}.final_layer_norm.weight'] = raw[f'{stack}/{stack}_norm/scale']
    for i in range(layers):
      hf_layer, t5x_layer = f'{stack}.block.{i}.layer', f'{stack}/layers_{i}'
      if stack == 'encoder':
        blocks = [(0, 'SelfAttention', 'attention', 'pre_attention_layer_norm')]
      else:
        blocks = [(0, 'SelfAttention', 'self_attention', 'pre_self_attention_layer_norm'),
                  (1, 'EncDecAttention', 'encoder_decoder_attention',
                   'pre_cross_attention_layer_norm')]
      for j, hf_name, t5x_name, norm in blocks:
        for hf_proj, t5x_proj in attention.items():
          state[f'{hf_layer}.{j}.{hf_name}.{hf_proj}.weight'] = raw[
              f'{t5x_layer}/{t5x_name}/{t5x_proj}/kernel'].T
        state[f'{hf_layer}.{j}.layer_norm.weight'] = raw[f'{t5x_layer}/{norm}/scale']
      mlp = len(blocks)
      for w in ('wi_0', 'wi_1', 'wo'):
        state[f'{hf_layer}.{mlp}.DenseReluDense.{w}.weight'] = raw[f'{t5x_layer}/mlp/{w}/kernel'].T
      state[f'{hf_layer}.{mlp}.layer_norm.weight'] = raw[f'{t5x_layer}/pre_mlp_layer_norm/scale']
  assert len(state) == len(raw) + 2  # every checkpoint array used; the embedding thrice
  hf.load_state_dict({name: torch.tensor(np.array(value)) for name, value in state.items()},
                     strict=True)
  return hf


def test_t5x_checkpoint_in_the_prompted_model_matches_an_independent_t5(hf_t5_float64):
  """The real T5X test checkpoint, read by `load_t5x` and merged into a PromptedT5, holds
  exactly the arrays a direct msgpack/TensorStore read gives; with a prompt, its encoder
  outputs and logits equal HF's PyTorch T5 built from those direct reads, fed the prompt
  as the first input embeddings."""
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
  ckpt = shared_path('checkpoints', 't5x_t5_1_1_tiny', 'checkpoint_3')
  raw = _read_t5x_directly(ckpt)
  cfg = get_config('t5_1_1_tiny').replace(dtype=jnp.float32, dropout_rate=0.0)
  length = 3
  model = PromptedT5(cfg, prompt_length=length)
  enc, dec_in, tgt = ENC[:, :8], DEC_IN, TGT
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), enc, dec_in, tgt,
                                             enable_dropout=False))['params']
  prompt = np.random.RandomState(0).normal(size=(length, cfg.emb_dim)).astype(np.float32)
  params = checkpoints.merge_params(
      checkpoints.unflatten({**checkpoints.flatten(shapes), 'encoder/prompt/prompt/prompt':
                             jnp.asarray(prompt)}),
      checkpoints.load_t5x(str(ckpt)))
  flat = checkpoints.flatten(params)
  assert set(flat) == set(raw) | {'encoder/prompt/prompt/prompt'}
  for path, value in raw.items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)
  np.testing.assert_array_equal(flat['encoder/prompt/prompt/prompt'], prompt)

  # The forward passes in float64 (ours under jax.enable_x64, torch's double), from the
  # same float32 arrays: they differ by float64 rounding only.
  model = PromptedT5(cfg.replace(dtype=jnp.float64), prompt_length=length)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    logits = jax.jit(lambda p: model.apply({'params': p}, enc, dec_in, tgt,
                                           enable_dropout=False))(params)
    encoded, valid = model.apply({'params': params}, enc, method=model.encode)
  assert logits.shape == (2, 4, 32128) and logits.dtype == np.float64
  hf = _hf_t5_1_1_from_t5x(raw, cfg, torch, transformers).double()
  embedded = np.concatenate([np.broadcast_to(prompt, (2, length, cfg.emb_dim)),
                             raw['token_embedder/embedding'][enc]], axis=1).astype(np.float64)
  mask = np.concatenate([np.ones((2, length), bool), enc > 0], axis=1)
  with torch.no_grad():
    out = hf(inputs_embeds=torch.tensor(embedded), attention_mask=torch.tensor(mask),
             decoder_input_ids=torch.tensor(dec_in), decoder_attention_mask=torch.tensor(tgt > 0))
  np.testing.assert_array_equal(valid, mask)
  enc_diff = np.abs(np.asarray(encoded) - out.encoder_last_hidden_state.numpy())[mask].max()
  logit_diff = np.abs(np.asarray(logits) - out.logits.numpy())[tgt > 0].max()
  print(f't5x tiny + prompt: max |encoder diff| {enc_diff:.2e}, max |logit diff| {logit_diff:.2e}')
  # Float64 rounding of O(1-100) values: below ~1e-12; a difference in the math, far above.
  assert enc_diff < 1e-9 and logit_diff < 1e-9
