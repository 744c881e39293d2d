"""`save_hf`: the T5X tree written in transformers' T5 layout.

Three variants: T5.1.1 (gated GELU, untied `lm_head`), T5 1.0 (ReLU, logits through
the embedding scaled by d_model**-0.5) and the project's t5_mini preset (gated GELU
AND tied+scaled). Each is written once (module fixture), read back by `load_hf`
(bit-exact) and by `transformers.T5ForConditionalGeneration.from_pretrained`
(same logits as our T5).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config, toy_batch
from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.models import PromptedT5, T5, get_config

os.environ.setdefault('HF_HUB_OFFLINE', '1')

VARIANTS = {
    't5_1_1_gated_untied': small_config(num_decoder_layers=3),
    't5_1_0_relu_tied': small_config(mlp_activations=('relu',), logits_via_embedding=True),
    't5_mini_gated_tied': get_config('t5_mini', dropout_rate=0.0),
}


def _random_params(config, seed=0):
  """Initialised params with layer-norm scales drawn from U[0.5, 1.5] (they start at 1).

  (Perturbing every kernel instead makes the random model ill-conditioned: for
  t5_mini, transformers in float32 then differs from itself in float64 by 1.5e-4.)
  """
  batch = toy_batch(vocab=config.vocab_size)
  params = T5(config).init(jax.random.PRNGKey(seed), batch['encoder_input_tokens'],
                           batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                           enable_dropout=False)['params']
  rng = np.random.RandomState(seed)
  flat = {path: np.asarray(value) for path, value in checkpoints.flatten(params).items()}
  for path, value in flat.items():
    if path.endswith('/scale'):
      flat[path] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
  return checkpoints.unflatten(flat)


@pytest.fixture(scope='module', params=list(VARIANTS))
def saved(request, tmp_path_factory):
  config = VARIANTS[request.param]
  params = _random_params(config)
  directory = str(tmp_path_factory.mktemp(request.param) / 'hf')
  assert checkpoints.save_hf(params, config, directory) == directory
  return request.param, config, params, directory


def test_load_hf_gives_back_the_params_bit_exact(saved):
  name, config, params, directory = saved
  assert sorted(os.listdir(directory)) == ['config.json', 'model.safetensors']
  loaded, config_kwargs = checkpoints.load_hf(directory)
  want, got = checkpoints.flatten(params), checkpoints.flatten(loaded)
  assert sorted(got) == sorted(want)
  for path, value in want.items():
    assert got[path].dtype == np.float32, path
    np.testing.assert_array_equal(got[path], value, err_msg=path)
  # The config round-trips too (dtype is not part of an HF config).
  assert config.replace(**config_kwargs) == config
  hf_config = json.load(open(os.path.join(directory, 'config.json')))
  tied = config.logits_via_embedding
  assert hf_config['tie_word_embeddings'] is tied and hf_config['scale_decoder_outputs'] is tied
  assert ('decoder/logits_dense/kernel' in got) is not tied


def test_transformers_loads_the_directory_and_gives_our_logits(saved, hf_t5_float64):
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
  name, config, params, directory = saved
  hf_model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
  tied = config.logits_via_embedding
  assert (hf_model.lm_head.weight.data_ptr() == hf_model.shared.weight.data_ptr()) is tied
  # transformers >= 5 records T5 1.0's scaling separately; < 5 derives it from tying.
  assert getattr(hf_model.config, 'scale_decoder_outputs', hf_model.config.tie_word_embeddings) is tied

  batch = toy_batch(batch=3, inputs=9, vocab=config.vocab_size, seed=1)
  enc, dec_in, tgt = (np.asarray(batch[k]) for k in (
      'encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens'))
  # Both in float64 (ours under jax.enable_x64; torch's double, conftest.hf_t5_float64).
  with jax.enable_x64(True):
    ours = np.asarray(T5(config.replace(dtype=jnp.float64)).apply(
        {'params': jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)}, enc, dec_in,
        tgt, enable_dropout=False))
  assert ours.dtype == np.float64
  with torch.no_grad():
    theirs = hf_model.double()(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0),
                      decoder_input_ids=torch.tensor(dec_in),
                      decoder_attention_mask=torch.tensor(tgt > 0)).logits.numpy()
  # Real target positions only: padded query rows are masked differently (T5X masks
  # them, HF does not). Float64 rounding of logits up to ~10 stays below ~1e-12; a
  # mis-mapped weight or scale moves them by far more than the 1e-9 allowed.
  diff = np.abs(ours - theirs)[tgt > 0].max()
  print(f'{name}: max |logit diff| {diff:.2e}')
  assert diff <= 1e-9


def test_a_prompt_is_refused_unless_dropped(tmp_path):
  config = small_config()
  batch = toy_batch()
  model = PromptedT5(config, prompt_length=3)
  params = jax.tree.map(np.asarray, model.init(
      jax.random.PRNGKey(0), batch['encoder_input_tokens'], batch['decoder_input_tokens'],
      batch['decoder_target_tokens'], enable_dropout=False)['params'])
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'encoder/prompt/prompt/prompt \[3, 16\].*not part of a Hugging Face T5'
                           r'.*drop_prompt=True.*save_peft_prompt'):
    checkpoints.save_hf(params, config, str(tmp_path / 'refused'))
  assert not (tmp_path / 'refused').exists()
  checkpoints.save_hf(params, config, str(tmp_path / 'dropped'), drop_prompt=True)
  loaded, _ = checkpoints.load_hf(str(tmp_path / 'dropped'))
  flat = checkpoints.flatten(params)
  del flat['encoder/prompt/prompt/prompt']
  assert sorted(checkpoints.flatten(loaded)) == sorted(flat)


def test_an_existing_directory_with_files_is_not_touched(tmp_path):
  config = small_config()
  params = _random_params(config)
  (tmp_path / 'model.safetensors').write_bytes(b'precious')
  with pytest.raises(checkpoints.CheckpointError, match='already exists.*overwrites nothing'):
    checkpoints.save_hf(params, config, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['model.safetensors']
  assert (tmp_path / 'model.safetensors').read_bytes() == b'precious'
  empty = tmp_path / 'empty'
  empty.mkdir()
  checkpoints.save_hf(params, config, str(empty))  # an empty directory is fine
  assert sorted(os.listdir(empty)) == ['config.json', 'model.safetensors']
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]  # no staging left


def test_params_that_do_not_match_the_config_are_listed(tmp_path):
  config = small_config()
  params = checkpoints.flatten(_random_params(config))
  del params['decoder/logits_dense/kernel']
  params['encoder/layers_0/mlp/wo/kernel'] = params['encoder/layers_0/mlp/wo/kernel'][:5]
  params['encoder/extra/kernel'] = np.zeros((2, 2), np.float32)
  with pytest.raises(checkpoints.CheckpointError, match=(
      r'(?s)do not match the T5Config.*3 problems'
      r'.*decoder/logits_dense/kernel: missing'
      r'.*encoder/layers_0/mlp/wo/kernel: model expects \[32, 16\], checkpoint has \[5, 16\]'
      r'.*encoder/extra/kernel: not in the model')):
    checkpoints.save_hf(checkpoints.unflatten(params), config, str(tmp_path / 'x'))
  assert not (tmp_path / 'x').exists()
  with pytest.raises(checkpoints.CheckpointError, match='no Hugging Face feed_forward_proj'):
    checkpoints.save_hf(_random_params(config), config.replace(mlp_activations=('tanh',)),
                        str(tmp_path / 'y'))
  with pytest.raises(checkpoints.CheckpointError, match='float32 or float16'):
    checkpoints.save_hf(_random_params(config), config, str(tmp_path / 'z'), dtype='int8')


def test_bfloat16_params_are_widened_exactly(tmp_path):
  config = small_config()
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), _random_params(config))
  checkpoints.save_hf(params, config, str(tmp_path / 'hf'))
  loaded, _ = checkpoints.load_hf(str(tmp_path / 'hf'))
  want = checkpoints.flatten(params)
  for path, value in checkpoints.flatten(loaded).items():
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, np.asarray(want[path], np.float32), err_msg=path)
