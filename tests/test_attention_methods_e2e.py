"""Prefix tuning and IA3 end to end through `ptj`: train -> eval -> infer -> export (t5x, hf,
peft), on the smoke run's random tiny byte-level T5; the PEFT adapter read back holds what
the run trained (prefix tuning: its reparameterisation folded into the plain table)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from prompt_tuning_jax import cli
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax.checkpoints import load_peft_adapter, load_t5x
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.methods import IA3, PrefixTuning
from prompt_tuning_jax.models import get_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('restore_ptj_global_state')]

# Four steps, no eval while training: the machinery, not a measurement. One decoder layer:
# an odd count, so PEFT's seq2seq prefix layout holds every layer's own prefix.
SHORT = ['--gin_file=runs/smoke.gin', '--gin.TRAIN_STEPS=4', '--gin.CHECKPOINT_PERIOD=4',
         '--gin.LOG_PERIOD=2', '--gin.EVAL_PERIOD=None', '--gin.BATCH_SIZE=8',
         '--gin.NUM_EVAL_EXAMPLES=8', '--gin.EVAL_BATCH_SIZE=8',
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 4}",
         '--gin.models.get_config.num_decoder_layers=1', '--gin.LEARNING_RATE=0.01']
METHODS = {
    'ia3': (['--gin_file=methods/ia3.gin'], IA3()),
    'prefix': (['--gin_file=methods/prefix_tuning.gin', '--gin.PREFIX_LENGTH=3',
                '--gin.PREFIX_MLP_DIM=8', "--gin.PREFIX_BLOCKS=('self_attention',)"],
               PrefixTuning(3, blocks=('self_attention',), mlp_dim=None)),
}


@pytest.mark.parametrize('name', sorted(METHODS))
def test_train_eval_infer_export(tmp_path, capsys, name):
  flags, served = METHODS[name]
  model_dir = tmp_path / name
  assert cli.main(['train', *SHORT, *flags, f'--gin.MODEL_DIR={model_dir}']) == 0
  assert cli.main(['eval', f'--gin.MODEL_DIR={model_dir}']) == 0
  records = [r for r in logging_utils.read_metrics(str(model_dir)) if r['split'].startswith(
      'eval/')]
  assert records and 'rank_classification/accuracy' in records[-1]
  inputs = tmp_path / 'inputs.jsonl'
  inputs.write_text(json.dumps({'inputs': 'review: the soup was great'}) + '\n')
  out = tmp_path / 'out.jsonl'
  assert cli.main(['infer', f'--gin.MODEL_DIR={model_dir}', f'--input={inputs}',
                   f'--output={out}']) == 0
  assert len(out.read_text().splitlines()) == 1
  for export_format in ('t5x', 'hf', 'peft'):
    assert cli.main(['export', f'--gin.MODEL_DIR={model_dir}', f'--format={export_format}',
                     f'--output={tmp_path / export_format}']) == 0, capsys.readouterr().err
  trained = tree_lib.flatten(load_t5x(str(tmp_path / 't5x')))
  method, own = load_peft_adapter(str(tmp_path / 'peft'),
                                  get_config('t5_1_1_small', vocab_size=384, emb_dim=64,
                                             num_heads=4, head_dim=16, mlp_dim=128,
                                             num_encoder_layers=2, num_decoder_layers=1))
  assert method == served
  if name == 'ia3':
    assert any(not np.all(v == 1) for v in own.values())  # it trained
    for path, value in own.items():
      np.testing.assert_array_equal(value, trained[path])
  else:  # the table is the folded MLP: the numpy export beside the checkpoint
    (table,) = own.values()
    exported = np.load(model_dir / 'numpy_checkpoints' / 'checkpoint_4' /
                       'prefix.self_attention.keys_values')
    np.testing.assert_array_equal(table, exported)
    assert 'prefix/self_attention/wi/kernel' in trained  # the t5x export keeps the MLP
