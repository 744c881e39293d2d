"""Prompts as PEFT prompt-tuning adapters: round trips, PEFT's own reading and writing of
them, the logits of PEFT on the `save_hf` copy against our PromptedT5, and bad input."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from conftest import small_config, toy_batch
from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.models import PromptedT5

os.environ.setdefault('HF_HUB_OFFLINE', '1')

P = 3
CONFIG = small_config()  # T5.1.1-style: gated GELU, untied lm_head, emb 16


def _prompt(seed=0, shape=(P, 16)):
  return np.random.RandomState(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


# ------------------------------------------------------------ format and round trips


@pytest.mark.parametrize('submodules', [1, 2])
def test_round_trip_is_bit_exact_and_the_files_are_peft_s(tmp_path, submodules):
  prompt = _prompt()
  directory = str(tmp_path / 'adapter')
  checkpoints.save_peft_prompt(prompt, directory, base_model_name_or_path='/models/t5',
                               config=CONFIG, num_transformer_submodules=submodules)
  assert sorted(os.listdir(directory)) == ['adapter_config.json', 'adapter_model.safetensors']
  config = json.load(open(os.path.join(directory, 'adapter_config.json')))
  assert {k: config[k] for k in (
      'peft_type', 'task_type', 'num_virtual_tokens', 'token_dim', 'num_transformer_submodules',
      'num_attention_heads', 'num_layers', 'prompt_tuning_init', 'base_model_name_or_path',
      'inference_mode')} == {
          'peft_type': 'PROMPT_TUNING', 'task_type': 'SEQ_2_SEQ_LM', 'num_virtual_tokens': P,
          'token_dim': 16, 'num_transformer_submodules': submodules, 'num_attention_heads': 4,
          'num_layers': 2, 'prompt_tuning_init': 'RANDOM', 'base_model_name_or_path': '/models/t5',
          'inference_mode': True}
  tensors = safetensors.numpy.load_file(os.path.join(directory, 'adapter_model.safetensors'))
  assert list(tensors) == ['prompt_embeddings']
  assert tensors['prompt_embeddings'].shape == (P * submodules, 16)
  for loaded in (checkpoints.load_peft_prompt(directory), checkpoints.load_prompt(directory),
                 checkpoints.load_prompt(os.path.join(directory, 'adapter_config.json')),
                 checkpoints.load_prompt(directory, expected_shape=(P, 16))):
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, prompt)


def test_bfloat16_prompt_is_widened_exactly(tmp_path):
  prompt = jnp.asarray(_prompt(), jnp.bfloat16)
  checkpoints.save_peft_prompt(prompt, str(tmp_path / 'a'), base_model_name_or_path=None)
  np.testing.assert_array_equal(checkpoints.load_prompt(str(tmp_path / 'a')),
                                np.asarray(prompt, np.float32))


# ------------------------------------------------------------ against PEFT itself


def _hf_and_peft():
  torch = pytest.importorskip('torch', reason='torch is a test extra: pip install -e .[test]')
  transformers = pytest.importorskip('transformers', reason='transformers is a test extra')
  peft = pytest.importorskip('peft', reason='peft is a bench extra: pip install -e .[bench]')
  return torch, transformers, peft


@pytest.fixture(scope='module')
def frozen(tmp_path_factory):
  """Our PromptedT5's params (prompt included) and the `save_hf` copy of its frozen part."""
  batch = toy_batch(batch=3, inputs=9, vocab=CONFIG.vocab_size, seed=2)
  model = PromptedT5(CONFIG, prompt_length=P)
  params = model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'],
                      batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                      enable_dropout=False)['params']
  rng = np.random.RandomState(0)  # layer norms start at 1: make them informative
  flat = {path: np.asarray(value) for path, value in checkpoints.flatten(params).items()}
  for path, value in flat.items():
    if path.endswith('/scale'):
      flat[path] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
  params = checkpoints.unflatten(flat)
  directory = str(tmp_path_factory.mktemp('frozen') / 'hf')
  checkpoints.save_hf(params, CONFIG, directory, drop_prompt=True)
  return model, params, directory, batch


def _logits(model, params, prompt, batch):
  """Our logits in float64 (the model's dtype and params widened, under jax.enable_x64)."""
  params = jax.tree.map(lambda x: x, params)
  params['encoder']['prompt']['prompt']['prompt'] = prompt
  model = model.clone(config=model.config.replace(dtype=jnp.float64))
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    return np.asarray(model.apply({'params': params}, batch['encoder_input_tokens'],
                                  batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                                  enable_dropout=False))


def _peft_logits(torch, peft_model, batch):
  """PEFT's (or HF's) logits in float64 (`.double()`; see conftest.hf_t5_float64)."""
  enc, dec_in, tgt = (np.asarray(batch[k]) for k in (
      'encoder_input_tokens', 'decoder_input_tokens', 'decoder_target_tokens'))
  with torch.no_grad():
    return peft_model.double()(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0),
                      decoder_input_ids=torch.tensor(dec_in),
                      decoder_attention_mask=torch.tensor(tgt > 0)).logits.numpy()


@pytest.mark.parametrize('submodules', [1, 2])
def test_peft_on_the_save_hf_copy_gives_our_prompted_logits(tmp_path, frozen, submodules,
                                                            hf_t5_float64):
  torch, transformers, peft = _hf_and_peft()
  model, params, hf_dir, batch = frozen
  prompt = _prompt(seed=5)
  adapter = str(tmp_path / 'adapter')
  checkpoints.save_peft_prompt(prompt, adapter, base_model_name_or_path=hf_dir, config=CONFIG,
                               num_transformer_submodules=submodules)
  if submodules == 2:
    # PEFT's seq2seq default doubles the table; prompt tuning never reads rows [P, 2P)
    # (only multitask prompt tuning feeds them to the decoder): garbage there changes nothing.
    path = os.path.join(adapter, 'adapter_model.safetensors')
    table = safetensors.numpy.load_file(path)['prompt_embeddings'].copy()
    table[P:] = 1e3 * _prompt(seed=6)
    safetensors.numpy.save_file({'prompt_embeddings': table}, path, metadata={'format': 'pt'})
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
  peft_model = peft.PeftModel.from_pretrained(base, adapter).eval()
  cfg = peft_model.peft_config['default']
  assert (cfg.peft_type, cfg.num_virtual_tokens, cfg.num_transformer_submodules) == (
      'PROMPT_TUNING', P, submodules)
  np.testing.assert_array_equal(
      peft_model.prompt_encoder['default'].embedding.weight.detach().numpy()[:P], prompt)

  theirs = _peft_logits(torch, peft_model, batch)
  ours = _logits(model, params, prompt, batch)
  tgt = np.asarray(batch['decoder_target_tokens'])
  assert theirs.shape == ours.shape  # no virtual tokens in the decoder
  # Same placement: PEFT prepends the prompt to inputs_embeds and P ones to the attention
  # mask, and HF T5's relative positions count the prompt, as ours do. Both in float64:
  # rounding of O(1) logits stays below ~1e-13; a misplaced or unmasked prompt is >1e-2.
  diff = np.abs(theirs - ours)[tgt > 0].max()
  print(f'submodules={submodules}: max |logit diff| through the PEFT adapter {diff:.2e}')
  assert diff <= 1e-10
  # ... and the prompt matters: without it the logits are far apart.
  with torch.no_grad():
    plain = _peft_logits(torch, base, batch)
  assert np.abs(plain - ours)[tgt > 0].max() > 1e-2


def test_we_read_an_adapter_peft_wrote_and_match_its_logits(tmp_path, frozen, hf_t5_float64):
  torch, transformers, peft = _hf_and_peft()
  model, params, hf_dir, batch = frozen
  torch.manual_seed(0)
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
  peft_model = peft.get_peft_model(base, peft.PromptTuningConfig(
      task_type='SEQ_2_SEQ_LM', num_virtual_tokens=P, prompt_tuning_init='SAMPLE_VOCAB'))
  assert peft_model.peft_config['default'].num_transformer_submodules == 2  # PEFT's default
  peft_model.save_pretrained(str(tmp_path / 'peft_written'))
  peft_model.eval()
  weight = peft_model.prompt_encoder['default'].embedding.weight.detach().numpy()
  prompt = checkpoints.load_prompt(str(tmp_path / 'peft_written'), expected_shape=(P, 16))
  np.testing.assert_array_equal(prompt, weight[:P])
  diff = np.abs(_peft_logits(torch, peft_model, batch) - _logits(model, params, prompt, batch))
  assert diff[np.asarray(batch['decoder_target_tokens']) > 0].max() <= 1e-10  # float64


# ------------------------------------------------------------ bad input


def test_a_lora_adapter_is_refused(tmp_path, frozen):
  _, transformers, peft = _hf_and_peft()
  _, _, hf_dir, _ = frozen
  base = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir)
  lora = peft.get_peft_model(base, peft.LoraConfig(task_type='SEQ_2_SEQ_LM',
                                                   target_modules=['q', 'v']))
  lora.save_pretrained(str(tmp_path / 'lora'))
  for load in (checkpoints.load_prompt, checkpoints.load_peft_prompt):
    with pytest.raises(checkpoints.CheckpointError,
                       match='a LORA adapter, not a prompt-tuning one'):
      load(str(tmp_path / 'lora'))


def _adapter(tmp_path, name='a', **kwargs):
  directory = str(tmp_path / name)
  checkpoints.save_peft_prompt(_prompt(), directory, base_model_name_or_path=None, **kwargs)
  return directory


def _edit_config(directory, **changes):
  path = os.path.join(directory, 'adapter_config.json')
  config = json.load(open(path))
  config.update(changes)
  json.dump(config, open(path, 'w'))


def test_another_width_is_refused(tmp_path):
  directory = _adapter(tmp_path)
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'expected prompt shape \[3, 32\], got \[3, 16\]'):
    checkpoints.load_prompt(directory, expected_shape=(3, 32))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'expected prompt shape \[None, 8\], got \[3, 16\]'):
    checkpoints.load_peft_prompt(directory, expected_shape=(None, 8))
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'the prompt is \[3, 16\] but the model width .* is 32'):
    checkpoints.save_peft_prompt(_prompt(), str(tmp_path / 'b'), base_model_name_or_path=None,
                                 config=small_config(emb_dim=32))
  _edit_config(directory, token_dim=32)  # a config that disagrees with its tensor
  with pytest.raises(checkpoints.CheckpointError, match=(
      r'prompt_embeddings is \[3, 16\], but adapter_config.json says num_virtual_tokens=3 x '
      r'num_transformer_submodules=1 rows of token_dim=32')):
    checkpoints.load_prompt(directory)


def test_missing_or_unreadable_files_are_refused(tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match='no such PEFT adapter directory'):
    checkpoints.load_peft_prompt(str(tmp_path / 'nowhere'))
  (tmp_path / 'plain').mkdir()
  with pytest.raises(checkpoints.CheckpointError,
                     match='directory without adapter_config.json: neither a prompt file'):
    checkpoints.load_prompt(str(tmp_path / 'plain'))
  with pytest.raises(checkpoints.CheckpointError, match='no adapter_config.json'):
    checkpoints.load_peft_prompt(str(tmp_path / 'plain'))

  directory = _adapter(tmp_path)
  weights = os.path.join(directory, 'adapter_model.safetensors')
  os.rename(weights, os.path.join(directory, 'adapter_model.bin'))
  with pytest.raises(checkpoints.CheckpointError,
                     match='no adapter_model.safetensors .*never the pickled adapter_model.bin'):
    checkpoints.load_prompt(directory)
  os.remove(os.path.join(directory, 'adapter_model.bin'))
  with pytest.raises(checkpoints.CheckpointError, match='no adapter_model.safetensors$'):
    checkpoints.load_prompt(directory)
  open(weights, 'wb').write(b'not safetensors')
  with pytest.raises(checkpoints.CheckpointError, match='not a readable safetensors file'):
    checkpoints.load_prompt(directory)
  safetensors.numpy.save_file({'prompt_embeddings': _prompt(), 'extra': _prompt()}, weights)
  with pytest.raises(checkpoints.CheckpointError, match=r"one tensor 'prompt_embeddings', found"):
    checkpoints.load_prompt(directory)
  open(os.path.join(directory, 'adapter_config.json'), 'w').write('{not json')
  with pytest.raises(checkpoints.CheckpointError, match='adapter_config.json: not valid JSON'):
    checkpoints.load_prompt(directory)


def test_other_config_values_are_refused(tmp_path):
  directory = _adapter(tmp_path)
  _edit_config(directory, task_type='CAUSAL_LM')
  with pytest.raises(checkpoints.CheckpointError, match="task_type 'CAUSAL_LM'"):
    checkpoints.load_prompt(directory)
  _edit_config(directory, task_type='SEQ_2_SEQ_LM', num_virtual_tokens=0)
  with pytest.raises(checkpoints.CheckpointError, match='num_virtual_tokens is 0'):
    checkpoints.load_prompt(directory)
  _edit_config(directory, num_virtual_tokens=3, num_transformer_submodules=3)
  with pytest.raises(checkpoints.CheckpointError, match='num_transformer_submodules is 3'):
    checkpoints.load_prompt(directory)
  with pytest.raises(checkpoints.CheckpointError, match='needs prompt_tuning_init_text'):
    _adapter(tmp_path, 'text', prompt_tuning_init='TEXT')
  with pytest.raises(checkpoints.CheckpointError, match='a 2-D float array'):
    checkpoints.save_peft_prompt(np.zeros((3,), np.float32), str(tmp_path / 'c'),
                                 base_model_name_or_path=None)


def test_an_existing_directory_with_files_is_not_touched(tmp_path):
  (tmp_path / 'adapter_config.json').write_text('{"peft_type": "LORA"}')
  with pytest.raises(checkpoints.CheckpointError, match='already exists.*overwrites nothing'):
    checkpoints.save_peft_prompt(_prompt(), str(tmp_path), base_model_name_or_path=None)
  assert sorted(os.listdir(tmp_path)) == ['adapter_config.json']
  assert (tmp_path / 'adapter_config.json').read_text() == '{"peft_type": "LORA"}'
