"""Tests for the dry run: shardings and per-device memory without allocation."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from prompt_tuning_jax import dry_run as dry_run_lib
from prompt_tuning_jax import optim
from prompt_tuning_jax import partitioning as pt
from prompt_tuning_jax.methods import PromptTuning
from prompt_tuning_jax.models import t5

# The paper's SuperGLUE setting: 512 input tokens, a 100-token prompt.
LENGTHS = {'inputs': 512, 'targets': 16}
P20, P100 = PromptTuning(20), PromptTuning(100)


def test_xxl_fits_on_v3_32():
  report = dry_run_lib.dry_run('t5_1_1_xxl', P100, 32, LENGTHS, 8, 'v3-32',
                               accumulation_steps=2)
  assert report.mesh_shape == {'data': 4, 'model': 8}
  # 11.1B float32 frozen parameters split 8 ways (embedding, kernels over 'model').
  assert 5.0 * pt.GiB < report.frozen_bytes < 5.4 * pt.GiB
  assert report.fits, str(report)
  text = str(report)
  assert 'Verdict: FITS' in text
  assert 'encoder/layers_*/mlp/wi_0/kernel' in text and '(-, model)' in text
  assert 'encoder/prompt/prompt/prompt' in text and 'trainable' in text
  # 4 hosts of 8 cores; each host is one model group: one of the 4 data rows, 8 examples.
  assert report.rows_per_host == 8
  assert ('Per host (4 host(s) of 8 devices): ' in text and
          'each host reads every global batch (32 examples) and feeds 8 rows of it.' in text)


def test_xl_fits_on_eight_80gb_gpus():
  report = dry_run_lib.dry_run('t5_1_1_xl', P100, 32, LENGTHS, 1, '8xA100-80GB')
  assert report.mesh_shape == {'data': 8, 'model': 1}
  assert report.fits, str(report)
  assert report.topology.memory_per_device == 80 * pt.GiB


def test_xxl_on_one_16gib_device_does_not_fit():
  report = dry_run_lib.dry_run('t5_1_1_xxl', P100, 32, LENGTHS, 1, '1x16GiB')
  assert not report.fits
  text = str(report)
  assert 'Verdict: DOES NOT FIT' in text and 'Try more model partitions' in text
  assert report.frozen_bytes > 40 * pt.GiB  # the whole float32 model on one device


def test_params_match_eval_shape_and_bf16_halves_frozen_bytes():
  f32 = dry_run_lib.dry_run('t5_1_1_small', P20, 8, {'inputs': 32, 'targets': 4}, 1, '1x16GiB')
  bf16 = dry_run_lib.dry_run('t5_1_1_small', P20, 8, {'inputs': 32, 'targets': 4}, 1, '1x16GiB',
                             frozen_dtype=jnp.bfloat16)
  # T5.1.1-small: 76,961,152 parameters besides the prompt (as in T5X).
  frozen = sum(p.count * p.bytes_per_device for p in f32.params if not p.trainable)
  assert frozen == f32.frozen_bytes == 4 * 76_961_152
  assert bf16.frozen_bytes == f32.frozen_bytes // 2
  assert f32.trainable_bytes == bf16.trainable_bytes == 4 * 20 * 512


def test_model_tuning_counts_gradients_and_optimizer_state():
  prompt = dry_run_lib.dry_run('t5_1_1_small', P20, 8, {'inputs': 32, 'targets': 4}, 2, '4x16GiB')
  model = dry_run_lib.dry_run('t5_1_1_small', P20, 8, {'inputs': 32, 'targets': 4}, 2, '4x16GiB',
                              trainable_rules=optim.MODEL_TUNING_RULES)
  assert model.gradient_bytes == model.trainable_bytes > 10 * prompt.trainable_bytes
  # Adafactor factors [rows, cols] kernels into row and column statistics:
  # far less than the parameters themselves.
  assert 0 < model.optimizer_bytes < model.trainable_bytes / 10
  adam = dry_run_lib.dry_run('t5_1_1_small', P20, 8, {'inputs': 32, 'targets': 4}, 2, '4x16GiB',
                             trainable_rules=optim.MODEL_TUNING_RULES, optimizer='adam')
  assert adam.optimizer_bytes >= 2 * adam.trainable_bytes  # two moments
  assert sum(model.activation_bytes.values()) > sum(prompt.activation_bytes.values())


def test_activations_shrink_with_data_and_model_parallelism():
  def activations(num_devices, num_partitions):
    mesh = pt.abstract_mesh(num_devices, num_partitions)
    return sum(dry_run_lib.activation_bytes(t5.get_config('t5_1_1_base'), 8, 128, 8,
                                            mesh).values())
  one, data, model = activations(1, 1), activations(2, 1), activations(2, 2)
  assert data == pytest.approx(one / 2, rel=0.01)  # the batch splits evenly
  assert model < one  # heads and MLP split; the residual stream does not


def test_errors():
  with pytest.raises(ValueError, match='not a multiple of the 4 data-parallel'):
    dry_run_lib.dry_run('t5_1_1_small', P20, 6, LENGTHS, 2, '8x16GiB')
  with pytest.raises(ValueError, match='does not divide'):
    dry_run_lib.dry_run('t5_1_1_small', P20, 8, LENGTHS, 3, '8x16GiB')
  with pytest.raises(ValueError, match='Unknown optimizer'):
    dry_run_lib.dry_run('t5_1_1_small', P20, 8, LENGTHS, 1, '8x16GiB', optimizer='sgd9')


def test_visible_devices_are_the_default_topology():
  report = dry_run_lib.dry_run('t5_1_1_small', P20, 8, {'inputs': 32, 'targets': 4}, 1)
  assert report.topology.num_devices == jax.device_count()
  assert report.topology.memory_per_device > 0


def test_rows_per_host_are_the_hosts_share_of_the_data_axis():
  # 2 nodes of 8 GPUs, 2 partitions: 8 data rows, 4 on each node.
  nodes = dry_run_lib.dry_run('t5_1_1_small', P20, 32, LENGTHS, 2, '2x8xH100-80GB')
  assert nodes.mesh_shape == {'data': 8, 'model': 2} and nodes.rows_per_host == 16
  # A model group wider than a host (16 partitions over 2 hosts): both feed every row.
  wide = dry_run_lib.dry_run('t5_1_1_small', P20, 32, LENGTHS, 16, '2x8xH100-80GB')
  assert wide.rows_per_host == 32
