"""Tests for partitioning, distributed start-up and sharded T5X loading.

The multi-device checks run once, in a subprocess that sees 8 CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`): this file is that
subprocess's script (`python tests/test_partitioning.py OUT.json`). The
pytest process itself keeps seeing one device.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from prompt_tuning_jax import partitioning as pt

TINY_CHECKPOINT = (pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'checkpoints'
                   / 't5x_t5_1_1_tiny' / 'checkpoint_3')


# ------------------------------------------------------------------ the 8-device subprocess


def _tiny_model_and_batch(dtype='float32'):
  """A PromptedT5 (float32 by default) whose heads, MLP and vocabulary divide by 4, and a
  batch of 8."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import T5Config, prompted  # pylint: disable=g-import-not-at-top
  config = T5Config(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                    num_encoder_layers=1, num_decoder_layers=1,
                    relative_attention_num_buckets=8, relative_attention_max_distance=16,
                    dropout_rate=0.0, dtype=getattr(jnp, dtype))
  model = prompted.PromptedT5(config, prompt_length=4)
  rng = np.random.default_rng(0)
  targets = rng.integers(1, 64, (8, 5)).astype(np.int32)
  batch = {
      'encoder_input_tokens': rng.integers(1, 64, (8, 7)).astype(np.int32),
      'decoder_input_tokens': np.concatenate([np.zeros((8, 1), np.int32), targets[:, :-1]], 1),
      'decoder_target_tokens': targets,
      'decoder_loss_weights': np.ones((8, 5), np.float32),
  }
  return model, batch


def _check_train_step(results: dict) -> None:
  """One prompt-tuning step on 1 device vs a 2x4 (data x model) mesh, in float64."""
  with jax.enable_x64(True):
    _check_float64_train_step(results)


def _check_float64_train_step(results: dict) -> None:
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import train_step  # pylint: disable=g-import-not-at-top
  model, batch = _tiny_model_and_batch('float64')
  params = model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'],
                      batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                      enable_dropout=False)['params']
  params = jax.tree.map(lambda x: x.astype(np.float64), params)
  trainable, frozen = optim.partition(params)
  # SGD, not Adafactor: Adafactor's first update is lr * sign(g), blind to a gradient-scale error
  # (e.g. a data-parallel sum counted twice); SGD's update is -lr * g.
  import optax  # pylint: disable=g-import-not-at-top
  tx = optim.partitioned_optimizer(params, optax.sgd(1.0))
  step = train_step.make_train_step(model, tx)

  new_state1, metrics1 = _sharded_step(
      step, train_step.init_train_state(trainable, frozen, tx), frozen, batch, params,
      pt.make_mesh(1, jax.devices()[:1]))

  mesh = pt.make_mesh(4)
  (new_state, metrics), frozen_sharded = _sharded_step(
      step, train_step.init_train_state(trainable, frozen, tx), frozen, batch, params, mesh,
      return_frozen=True)
  results['mesh_shape'] = dict(mesh.shape)
  results['loss'] = [float(metrics1['loss']), float(metrics['loss'])]
  results['prompt_max_abs_diff'] = float(np.max(np.abs(
      np.asarray(new_state1.trainable['encoder']['prompt']['prompt']['prompt'])
      - np.asarray(new_state.trainable['encoder']['prompt']['prompt']['prompt']))))
  results['prompt_update_max_abs'] = float(np.max(np.abs(
      np.asarray(new_state1.trainable['encoder']['prompt']['prompt']['prompt'])
      - np.asarray(trainable['encoder']['prompt']['prompt']['prompt']))))
  results['grad_norm'] = [float(metrics1['grad_norm']), float(metrics['grad_norm'])]
  # The same examples packed two a row (`data.pack_batch`, rows divisible by the 2 data shards).
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  packed = data.pack_batch({**batch, data.TASK_INDEX: np.zeros(8, np.int32)},
                           data.Packing({'inputs': 22, 'targets': 10}, 4, 'prefix', 2))
  packed_state, packed_metrics = _sharded_step(
      step, train_step.init_train_state(trainable, frozen, tx), frozen, packed, params, mesh)
  results['packed_rows'] = int(packed['encoder_input_tokens'].shape[0])
  results['packed_loss'] = float(packed_metrics['loss'])
  results['packed_prompt_max_abs_diff'] = float(np.max(np.abs(
      np.asarray(new_state1.trainable['encoder']['prompt']['prompt']['prompt'])
      - np.asarray(packed_state.trainable['encoder']['prompt']['prompt']['prompt']))))
  # Rank classification of the packed rows on the mesh (eval with PACK_LENGTHS) vs one example
  # a row on one device.
  from prompt_tuning_jax import scoring  # pylint: disable=g-import-not-at-top
  labels = np.array([[5, 9, 1], [12, 1, 0], [7, 1, 0]], np.int32)
  _, one_a_row = scoring.rank_classify(model, params, batch['encoder_input_tokens'], labels)
  _, by_row = scoring.jit_rank_classify_packed(
      model, jax.device_put(params, pt.param_shardings(params, mesh)),
      pt.global_batch({k: packed[k] for k in ('encoder_input_tokens', 'encoder_segment_ids',
                                              data.TASK_INDEX, data.PROMPT_SLOTS)}, mesh),
      labels, members=2)
  rows = data.pack_rows(data.example_lengths(batch['encoder_input_tokens']), np.zeros(8, int),
                        data.Packing({'inputs': 22, 'targets': 10}, 4))
  by_example = np.zeros_like(np.asarray(one_a_row))
  for r, row in enumerate(rows):
    by_example[row] = np.asarray(by_row)[r, :len(row)]
  results['packed_rank_max_rel_diff'] = float(np.max(np.abs(by_example - one_a_row)
                                                     / np.abs(one_a_row)))
  results['prompt_changed'] = bool(np.any(
      np.asarray(new_state.trainable['encoder']['prompt']['prompt']['prompt'])
      != np.asarray(trainable['encoder']['prompt']['prompt']['prompt'])))
  wi = frozen_sharded['encoder']['layers_0']['mlp']['wi_0']['kernel']
  results['wi_spec'] = [str(s) for s in wi.sharding.spec]
  results['wi_shard_shape'] = list(wi.addressable_shards[0].data.shape)
  results['wi_num_devices'] = len(wi.sharding.device_set)
  emb = frozen_sharded['token_embedder']['embedding']
  results['embedding_shard_shape'] = list(emb.addressable_shards[0].data.shape)
  prompt = new_state.trainable['encoder']['prompt']['prompt']['prompt']
  results['prompt_fully_replicated'] = bool(prompt.sharding.is_fully_replicated)
  results['prompt_dtype'] = str(prompt.dtype)
  batch_on_mesh = pt.global_batch(batch, mesh)
  results['batch_shard_shape'] = list(
      batch_on_mesh['encoder_input_tokens'].addressable_shards[0].data.shape)


def _sharded_step(step, state, frozen, batch, params, mesh, return_frozen=False):
  state_shardings = pt.shardings_like_params(state, params, mesh)
  frozen_shardings = pt.param_shardings(frozen, mesh)
  batch_shardings = {k: pt.batch_sharding(mesh) for k in batch}
  jitted = jax.jit(step, in_shardings=(state_shardings, frozen_shardings, batch_shardings),
                   out_shardings=(state_shardings, pt.replicated(mesh)))
  state = jax.device_put(state, state_shardings)
  frozen = jax.device_put(frozen, frozen_shardings)
  out = jitted(state, frozen, pt.global_batch(batch, mesh))
  return (out, frozen) if return_frozen else out


def _check_checkpoint_reshard(results: dict, directory: str) -> None:
  """A model-tuning TrainState saved under 2x4 restores under 4x2 and 8x1."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import train_step  # pylint: disable=g-import-not-at-top
  model, batch = _tiny_model_and_batch()
  params = model.init(jax.random.PRNGKey(1), batch['encoder_input_tokens'],
                      batch['decoder_input_tokens'], batch['decoder_target_tokens'],
                      enable_dropout=False)['params']
  trainable, frozen = optim.partition(params, optim.MODEL_TUNING_RULES)
  tx = optim.partitioned_optimizer(params, optim.adafactor(), optim.MODEL_TUNING_RULES)
  state = train_step.init_train_state(trainable, frozen, tx)
  state = state._replace(opt_state=jax.tree.map(lambda x: x + 0.5, state.opt_state))
  saved_mesh = pt.make_mesh(4)
  saved = jax.device_put(state, pt.shardings_like_params(state, params, saved_mesh))
  path = os.path.join(directory, 'state')
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, saved)
    checkpointer.wait_until_finished()
  expected = jax.tree.leaves(jax.tree.map(np.asarray, state))
  for num_partitions in (2, 1):
    mesh = pt.make_mesh(num_partitions)
    shardings = pt.shardings_like_params(state, params, mesh)
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          state, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(path, target)
    leaves = jax.tree.leaves(restored)
    key = f'{mesh.shape[pt.DATA]}x{mesh.shape[pt.MODEL]}'
    results[f'restore_{key}_equal'] = len(leaves) == len(expected) and all(
        np.array_equal(np.asarray(a), b) for a, b in zip(leaves, expected))
    results[f'restore_{key}_shardings'] = all(
        a.sharding == s for a, s in zip(leaves, jax.tree.leaves(shardings)))
    wo = restored.trainable['decoder']['layers_0']['mlp']['wo']['kernel']
    results[f'restore_{key}_wo_shard_shape'] = list(wo.addressable_shards[0].data.shape)


def _check_sharded_t5x_load(results: dict) -> None:
  """load_t5x_sharded under 2x4 equals load_t5x; bfloat16 targets are cast."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import sharded  # pylint: disable=g-import-not-at-top
  reference = checkpoints.flatten(checkpoints.load_t5x(str(TINY_CHECKPOINT)))
  mesh = pt.make_mesh(4)
  shardings = pt.param_shardings(checkpoints.unflatten(reference), mesh)
  loaded = checkpoints.flatten(sharded.load_t5x_sharded(str(TINY_CHECKPOINT), shardings,
                                                        max_inflight_bytes=1 << 16))
  results['t5x_same_paths'] = sorted(loaded) == sorted(reference)
  results['t5x_equal'] = all(np.array_equal(np.asarray(loaded[k]), reference[k]) for k in reference)
  results['t5x_shardings'] = all(
      loaded[k].sharding == pt.NamedSharding(mesh, checkpoints.flatten(shardings)[k].spec)
      for k in reference)
  wi = loaded['decoder/layers_0/mlp/wi_0/kernel']
  results['t5x_wi_shard_shape'] = list(wi.addressable_shards[0].data.shape)
  flat_shardings = checkpoints.flatten(shardings)
  targets = checkpoints.unflatten({
      k: jax.ShapeDtypeStruct(v.shape, jnp.bfloat16, sharding=flat_shardings[k])
      for k, v in reference.items()})
  as_bf16 = checkpoints.flatten(sharded.load_t5x_sharded(str(TINY_CHECKPOINT), targets))
  results['t5x_bf16'] = all(
      as_bf16[k].dtype == jnp.bfloat16 and np.array_equal(
          np.asarray(as_bf16[k]), reference[k].astype(jnp.bfloat16)) for k in reference)


def _run_multidevice_checks(out_file: str, directory: str) -> None:
  results = {'device_count': jax.device_count()}
  _check_train_step(results)
  _check_checkpoint_reshard(results, directory)
  if TINY_CHECKPOINT.is_dir():
    _check_sharded_t5x_load(results)
  with open(out_file, 'w') as f:
    json.dump(results, f)


@pytest.fixture(scope='module')
def eight_devices(tmp_path_factory) -> dict:
  """Results of the checks run in a subprocess with 8 CPU devices."""
  directory = tmp_path_factory.mktemp('eight_devices')
  out_file = directory / 'results.json'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, __file__, str(out_file), str(directory)], env=env,
                        capture_output=True, text=True, timeout=300)
  if proc.returncode:
    pytest.fail(f'8-device subprocess failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')
  return json.loads(out_file.read_text())


def test_subprocess_sees_eight_devices_and_main_process_one(eight_devices):
  assert eight_devices['device_count'] == 8
  assert jax.device_count() == 1
  assert eight_devices['mesh_shape'] == {'data': 2, 'model': 4}


def test_sharded_step_matches_single_device(eight_devices):
  """In float64: the mesh sums over data and model shards in another order, ~1e-15
  relative apart; a scale error (a sum counted twice) or a wrong shard is far beyond 1e-10."""
  assert eight_devices['prompt_dtype'] == 'float64'
  loss_one, loss_mesh = eight_devices['loss']
  assert abs(loss_one - loss_mesh) <= 1e-10 * max(1.0, abs(loss_one))
  assert eight_devices['prompt_changed']
  # One SGD step (lr 1): the update is the gradient, so a scale error on either side fails.
  assert eight_devices['prompt_update_max_abs'] > 1.0
  assert eight_devices['prompt_max_abs_diff'] <= 1e-10 * eight_devices['prompt_update_max_abs']
  grad_norm_one, grad_norm_mesh = eight_devices['grad_norm']
  assert abs(grad_norm_one - grad_norm_mesh) <= 1e-10 * grad_norm_one


def test_packed_rows_on_the_mesh_match_one_example_a_row_on_one_device(eight_devices):
  """8 examples packed into 4 rows (a prompt each) on the 2x4 mesh vs one a row on one
  device, in float64: the bound of `test_sharded_step_matches_single_device`."""
  assert eight_devices['packed_rows'] == 4
  loss_one = eight_devices['loss'][0]
  assert abs(eight_devices['packed_loss'] - loss_one) <= 1e-10 * max(1.0, abs(loss_one))
  assert (eight_devices['packed_prompt_max_abs_diff']
          <= 1e-10 * eight_devices['prompt_update_max_abs'])


def test_packed_rank_classification_on_the_mesh_scores_one_example_a_row(eight_devices):
  """Eval with PACK_LENGTHS: the 8 examples' label scores from 4 packed rows on the 2x4 mesh
  equal one example a row on one device, in float64 (~1e-15 apart; 1e-10 as above)."""
  assert eight_devices['packed_rank_max_rel_diff'] <= 1e-10


def test_parameters_are_sharded_over_model(eight_devices):
  # wi_0 kernel [emb 16, mlp 32]: mlp split 4 ways, replicated over data.
  assert eight_devices['wi_spec'] == ['None', 'model']
  assert eight_devices['wi_shard_shape'] == [16, 8]
  assert eight_devices['wi_num_devices'] == 8
  assert eight_devices['embedding_shard_shape'] == [16, 16]  # vocab 64 / 4
  assert eight_devices['prompt_fully_replicated']
  assert eight_devices['batch_shard_shape'] == [4, 7]  # batch 8 / data 2


def test_checkpoint_restores_under_other_mesh_shapes(eight_devices):
  for mesh in ('4x2', '8x1'):
    assert eight_devices[f'restore_{mesh}_equal'], mesh
    assert eight_devices[f'restore_{mesh}_shardings'], mesh
  assert eight_devices['restore_4x2_wo_shard_shape'] == [16, 16]  # mlp 32 / model 2
  assert eight_devices['restore_8x1_wo_shard_shape'] == [32, 16]


def test_load_t5x_sharded_equals_load_t5x(eight_devices):
  if not TINY_CHECKPOINT.is_dir():
    pytest.skip(f'../shared is absent ({TINY_CHECKPOINT} not found)')
  assert eight_devices['t5x_same_paths']
  assert eight_devices['t5x_equal']
  assert eight_devices['t5x_shardings']
  assert eight_devices['t5x_wi_shard_shape'] == [4, 2]  # mlp 8 / model 4
  assert eight_devices['t5x_bf16']


# ------------------------------------------------------------------ single-process tests


def _fake_tpu_devices(shape=(2, 2, 1), cores=2):
  devices = []
  for x in range(shape[0]):
    for y in range(shape[1]):
      for z in range(shape[2]):
        for core in range(cores):
          devices.append(types.SimpleNamespace(id=len(devices), coords=(x, y, z),
                                               core_on_chip=core, process_index=0))
  return devices


def test_model_parallel_submesh_groups_physical_blocks():
  devices = _fake_tpu_devices((2, 2, 1), cores=2)  # 8 cores
  grid = pt.device_grid(devices, model_parallel_submesh=(1, 2, 1, 2))
  assert grid.shape == (2, 4)
  for row in grid:  # each model group: one x, both y, both cores
    assert len({d.coords[0] for d in row}) == 1
    assert {(d.coords[1], d.core_on_chip) for d in row} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_model_parallel_submesh_errors():
  devices = _fake_tpu_devices((2, 2, 1), cores=2)
  with pytest.raises(ValueError, match='does not tile'):
    pt.device_grid(devices, model_parallel_submesh=(1, 3, 1, 1))
  with pytest.raises(ValueError, match='contradicts'):
    pt.device_grid(devices, num_partitions=2, model_parallel_submesh=(1, 2, 1, 2))
  # Devices without physical coordinates: consecutive groups of the block's size.
  plain = [types.SimpleNamespace(id=i) for i in range(8)]
  assert pt.device_grid(plain, model_parallel_submesh=(2, 1)).shape == (4, 2)
  with pytest.raises(ValueError, match='does not divide'):
    pt.device_grid(plain, num_partitions=3)


def test_shardings_like_params_handles_factored_statistics():
  mesh = pt.abstract_mesh(8, 4)
  params = {'encoder': {'layers_0': {'mlp': {'wi_0': {'kernel': jax.ShapeDtypeStruct(
      (16, 256), np.float32)}}}}}
  stats = {'v_row': {'encoder': {'layers_0': {'mlp': {'wi_0': {'kernel': np.zeros(16)}}}}},
           'v_col': {'encoder': {'layers_0': {'mlp': {'wi_0': {'kernel': np.zeros(256)}}}}},
           'count': np.zeros(())}
  out = pt.shardings_like_params(stats, params, mesh)
  assert out['v_row']['encoder']['layers_0']['mlp']['wi_0']['kernel'].spec == pt.P(None)
  assert out['v_col']['encoder']['layers_0']['mlp']['wi_0']['kernel'].spec == pt.P('model')
  assert out['count'].spec == pt.P()


def test_spec_replicates_dimensions_the_mesh_does_not_divide():
  mesh = pt.abstract_mesh(8, 4)
  assert pt.spec_for((16, 32), ('embed', 'mlp'), mesh) == pt.P(None, 'model')
  assert pt.spec_for((16, 6), ('embed', 'mlp'), mesh) == pt.P(None, None)
  assert pt.spec_for((8, 5), ('batch', 'length'), mesh) == pt.P('data', None)


def test_declared_topologies():
  v3 = pt.declared_topology('v3-32')
  assert (v3.num_devices, v3.memory_per_device, v3.num_hosts) == (32, 16 * pt.GiB, 4)
  v4 = pt.declared_topology('v4-32')  # 16 chips, one device each
  assert (v4.num_devices, v4.memory_per_device) == (16, 32 * pt.GiB)
  gpus = pt.declared_topology('8xA100-80GB')
  assert (gpus.num_devices, gpus.memory_per_device, gpus.num_hosts) == (8, 80 * pt.GiB, 1)
  nodes = pt.declared_topology('2x8xH100-80GB')
  assert (nodes.num_devices, nodes.num_hosts) == (16, 2)
  assert pt.declared_topology('4x16GiB').memory_per_device == 16 * pt.GiB
  with pytest.raises(ValueError, match='Cannot parse'):
    pt.declared_topology('a-lot-of-tpus')
  with pytest.raises(ValueError, match='Unknown device'):
    pt.declared_topology('8xB999')


def test_load_t5x_sharded_reports_mismatches():
  if not TINY_CHECKPOINT.is_dir():
    pytest.skip(f'../shared is absent ({TINY_CHECKPOINT} not found)')
  from prompt_tuning_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import sharded  # pylint: disable=g-import-not-at-top
  mesh = pt.make_mesh(1)
  reference = checkpoints.flatten(checkpoints.load_t5x(str(TINY_CHECKPOINT)))
  shardings = checkpoints.flatten(pt.param_shardings(checkpoints.unflatten(reference), mesh))
  # The prompt is absent from a pre-trained checkpoint: left out, to be initialised.
  with_prompt = dict(shardings, **{'encoder/prompt/prompt/prompt': pt.replicated(mesh)})
  loaded = checkpoints.flatten(sharded.load_t5x_sharded(
      str(TINY_CHECKPOINT), checkpoints.unflatten(with_prompt)))
  assert sorted(loaded) == sorted(reference)
  targets = dict(shardings)
  del targets['decoder/decoder_norm/scale']
  targets['encoder/layers_0/mlp/wo/kernel'] = jax.ShapeDtypeStruct(
      (3, 4), np.float32, sharding=pt.replicated(mesh))
  targets['encoder/layers_9/mlp/wo/kernel'] = pt.replicated(mesh)
  with pytest.raises(checkpoints.CheckpointError) as error:
    sharded.load_t5x_sharded(str(TINY_CHECKPOINT), checkpoints.unflatten(targets))
  message = str(error.value)
  assert '3 problem(s)' in message
  assert 'decoder/decoder_norm/scale: in the checkpoint but not in the target' in message
  assert 'encoder/layers_0/mlp/wo/kernel: target expects [3, 4], checkpoint has [8, 4]' in message
  assert 'encoder/layers_9/mlp/wo/kernel: missing from the checkpoint' in message


# ------------------------------------------------------------------ distributed
# (imported per test: it imports seqio, which the 8-device subprocess does not need)


def test_distributed_plan_single_process():
  from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.plan({}) is None
  assert distributed.plan({'TPU_WORKER_HOSTNAMES': 'localhost'}) is None
  assert distributed.plan({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}) is None
  assert distributed.plan({'PTJ_DISTRIBUTED': '0', 'TPU_WORKER_HOSTNAMES': 'a,b'}) is None
  assert distributed.plan({'JAX_COORDINATOR_ADDRESS': 'h:1234', 'JAX_NUM_PROCESSES': '1',
                           'JAX_PROCESS_ID': '0'}) is None


def test_distributed_plan_clusters():
  from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
  explicit = distributed.plan({'JAX_COORDINATOR_ADDRESS': 'h:1234', 'JAX_NUM_PROCESSES': '4',
                               'JAX_PROCESS_ID': '3'})
  assert explicit.kwargs == {'coordinator_address': 'h:1234', 'num_processes': 4,
                             'process_id': 3, 'heartbeat_timeout_seconds': 30,
                             'shutdown_timeout_seconds': 120}
  for env in ({'TPU_WORKER_HOSTNAMES': 'w0,w1,w2,w3'}, {'CLOUD_TPU_TASK_ID': '2'},
              {'MEGASCALE_COORDINATOR_ADDRESS': 'c:8080'}, {'PTJ_DISTRIBUTED': '1'},
              {'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '2'}, {'OMPI_COMM_WORLD_SIZE': '2'}):
    chosen = distributed.plan(env)
    assert chosen is not None, env  # JAX detects the rest: only the timeouts are given.
    assert set(chosen.kwargs) == {'heartbeat_timeout_seconds', 'shutdown_timeout_seconds'}, env
  faster = distributed.plan({'PTJ_DISTRIBUTED': '1', 'PTJ_HEARTBEAT_TIMEOUT_SECONDS': '10',
                             'PTJ_SHUTDOWN_TIMEOUT_SECONDS': '20'})
  assert faster.kwargs == {'heartbeat_timeout_seconds': 10, 'shutdown_timeout_seconds': 20}


def test_distributed_plan_errors():
  from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='JAX_NUM_PROCESSES and JAX_PROCESS_ID'):
    distributed.plan({'JAX_COORDINATOR_ADDRESS': 'h:1234'})
  with pytest.raises(ValueError, match='is not in'):
    distributed.plan({'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2',
                      'JAX_PROCESS_ID': '2'})
  with pytest.raises(ValueError, match='must be an integer'):
    distributed.plan({'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': 'two',
                      'JAX_PROCESS_ID': '0'})
  with pytest.raises(ValueError, match="PTJ_DISTRIBUTED must be '0' or '1'"):
    distributed.plan({'PTJ_DISTRIBUTED': 'yes'})


def test_single_process_helpers():
  from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.initialize({}) is False
  assert distributed.initialize({}) is False  # idempotent
  assert distributed.is_primary()



def test_peer_failures_explain_what_to_do(monkeypatch):
  from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.errors import PeerError  # pylint: disable=g-import-not-at-top
  failure = jax.errors.JaxRuntimeError('UNKNOWN: Gloo AllGather failed: reset by peer\ndetails')
  with pytest.raises(jax.errors.JaxRuntimeError):  # one process: unchanged
    with distributed.peer_failures():
      raise failure
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  with pytest.raises(PeerError, match=r'process 0 of 2: a step across the processes failed '
                     r'\(UNKNOWN: Gloo AllGather failed: reset by peer\)\. Most likely another '
                     r'process died'):
    with distributed.peer_failures():
      raise failure



def test_a_topology_change_on_resume_is_logged(caplog):
  from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
  now = distributed.topology(pt.make_mesh(1))
  assert now == {'processes': 1, 'devices': jax.device_count(),
                 'mesh': {'data': jax.device_count(), 'model': 1}}
  with caplog.at_level('INFO'):
    distributed.log_topology_change(None, now)  # a checkpoint of before the record
    distributed.log_topology_change(now, now)
    assert not caplog.records
    distributed.log_topology_change(dict(now, processes=2, devices=4, mesh={'data': 4,
                                                                            'model': 1}), now)
  assert ('the checkpoint was written by 2 process(es), 4 devices, mesh data=4 x model=1, this '
          'run has 1 process(es)') in caplog.text


if __name__ == '__main__':
  _run_multidevice_checks(sys.argv[1], sys.argv[2])
