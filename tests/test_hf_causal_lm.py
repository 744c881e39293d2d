"""A causal decoder-only LM and its prompt in Hugging Face: Pix2StructTextModel under PEFT's
causal-LM prompt tuning gives our logits; the models without an equivalent are refused."""
from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from conftest import decoder_only_config, prefix_lm_batch
from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.checkpoints import hf_causal_lm
from prompt_tuning_jax.checkpoints import peft as peft_lib
from prompt_tuning_jax.models import PromptedDecoderOnly, dummy_inputs, model_inputs

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def _model_and_params(**overrides):
  cfg = decoder_only_config(inputs_bidirectional_attention=False, **overrides)
  model = PromptedDecoderOnly(cfg, prompt_length=3, prompt_placement='prefix')
  params = model.init(jax.random.PRNGKey(0), **dummy_inputs(model), enable_dropout=False)
  leaves, tree = jax.tree.flatten(params['params'])
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape) + (x.ndim == 1)
                                     for k, x in zip(keys, leaves)])
  return model, params


@pytest.mark.parametrize('tied', [True, False])
def test_pix2struct_text_model_with_the_peft_adapter_gives_our_logits(tmp_path, tied):
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  peft = pytest.importorskip('peft')
  model, params = _model_and_params(logits_via_embedding=tied)
  batch = prefix_lm_batch([([5, 7, 9, 1], [3, 1]), ([4, 1], [8, 8, 6, 1])], length=10)
  ours = np.asarray(model.apply({'params': params}, **model_inputs(model, batch),
                                enable_dropout=False))
  flat = checkpoints.flatten(jax.device_get(params))
  prompt = flat.pop('decoder/prompt/prompt/prompt')
  checkpoints.save_hf_causal_lm(checkpoints.unflatten(flat), model.config, str(tmp_path / 'hf'))
  checkpoints.save_peft_prompt(prompt, str(tmp_path / 'adapter'),
                               task_type=peft_lib.DECODER_ONLY_TASK_TYPE,
                               base_model_name_or_path=str(tmp_path / 'hf'), config=model.config)
  assert json.load(open(tmp_path / 'adapter' / 'adapter_config.json'))['num_layers'] == 2
  base = transformers.Pix2StructTextModel.from_pretrained(str(tmp_path / 'hf')).eval()
  peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path / 'adapter')).eval()
  assert isinstance(peft_model, peft.PeftModelForFeatureExtraction)
  ids = torch.tensor(np.asarray(batch['decoder_input_tokens']), dtype=torch.long)
  mask = torch.tensor(np.asarray(batch['decoder_target_tokens']) > 0, dtype=torch.long)
  with torch.no_grad():
    theirs = peft_model(input_ids=ids, attention_mask=mask).logits[:, 3:].numpy()
  real = np.asarray(batch['decoder_target_tokens']) > 0
  scale = np.abs(ours[real]).max()
  np.testing.assert_allclose(theirs[real], ours[real], atol=1e-5 * scale, rtol=0)
  np.testing.assert_array_equal(checkpoints.load_peft_prompt(str(tmp_path / 'adapter')), prompt)


def test_models_without_an_equivalent_are_refused(tmp_path):
  _, params = _model_and_params()
  prefix_lm = decoder_only_config()  # inputs_bidirectional_attention=True
  assert 'prefix LM' in hf_causal_lm.exportable(prefix_lm)
  with pytest.raises(checkpoints.CheckpointError, match='prefix LM'):
    checkpoints.save_hf_causal_lm(params, prefix_lm, str(tmp_path / 'a'))
  narrow = decoder_only_config(inputs_bidirectional_attention=False, head_dim=2)
  assert 'square' in hf_causal_lm.exportable(narrow)
  relu = decoder_only_config(inputs_bidirectional_attention=False, mlp_activations=('relu',))
  assert 'gated' in hf_causal_lm.exportable(relu)
  assert not os.path.exists(tmp_path / 'a')
