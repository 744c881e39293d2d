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
def test_matches_transformers_t5(tmp_path, feed_forward_proj, tied):
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
  torch.manual_seed(0)
  hf_config = transformers.T5Config(
      vocab_size=100, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_decoder_layers=3,
      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
      dropout_rate=0.0, feed_forward_proj=feed_forward_proj, tie_word_embeddings=tied,
      decoder_start_token_id=0, pad_token_id=0)
  hf_model = transformers.T5ForConditionalGeneration(hf_config).eval()
  with torch.no_grad():  # layer norms start at 1: make them informative
    for name, p in hf_model.named_parameters():
      if 'layer_norm' in name:
        p.uniform_(0.5, 1.5)
  hf_model.save_pretrained(tmp_path, safe_serialization=True)

  params, config_kwargs = checkpoints.load_hf(str(tmp_path))
  config = T5Config(**config_kwargs).replace(dtype=jnp.float32, dropout_rate=0.0)
  assert config.logits_via_embedding == tied
  model = T5(config)
  logits = model.apply({'params': params}, ENC, DEC_IN, TGT, enable_dropout=False)
  encoded, _ = model.apply({'params': params}, ENC, method=model.encode)
  with torch.no_grad():
    out = hf_model(input_ids=torch.tensor(ENC), attention_mask=torch.tensor(ENC > 0),
                   decoder_input_ids=torch.tensor(DEC_IN),
                   decoder_attention_mask=torch.tensor(TGT > 0))
  # Compare real (non-padding) positions; padding rows are masked differently by design.
  enc_diff = np.abs(np.asarray(encoded) - out.encoder_last_hidden_state.numpy())[ENC > 0].max()
  logit_diff = np.abs(np.asarray(logits) - out.logits.numpy())[TGT > 0].max()
  print(f'{feed_forward_proj}: max |encoder diff| {enc_diff:.2e}, max |logit diff| {logit_diff:.2e}')
  assert enc_diff < 1e-4 and logit_diff < 1e-4


def test_t5x_checkpoint_loads_into_the_prompted_model_and_runs():
  loaded = checkpoints.load_t5x(str(shared_path('checkpoints', 't5x_t5_1_1_tiny', 'checkpoint_3')))
  model = PromptedT5(get_config('t5_1_1_tiny'), prompt_length=3)
  enc, dec_in, tgt = ENC[:, :8], DEC_IN, TGT
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), enc, dec_in, tgt,
                                             enable_dropout=False))['params']
  init_prompt = {'encoder': {'prompt': {'prompt': {'prompt': jnp.zeros((3, 4))}}}}
  params = checkpoints.merge_params(
      jax.tree.map(lambda s: s, checkpoints.unflatten({
          **checkpoints.flatten(shapes), **checkpoints.flatten(init_prompt)})), loaded)
  flat = checkpoints.flatten(params)
  for path, value in checkpoints.flatten(loaded).items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)
  logits = jax.jit(lambda p: model.apply({'params': p}, enc, dec_in, tgt,
                                         enable_dropout=False))(params)
  assert logits.shape == (2, 4, 32128) and np.isfinite(np.asarray(logits)).all()
