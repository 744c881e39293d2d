"""Tests for prompt_tuning_jax.checkpoints (T5X, Hugging Face, prompt files)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization
from safetensors.numpy import save_file

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import remote
from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.checkpoints import CheckpointError

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / 'shared'
TINY = SHARED / 'checkpoints' / 't5x_t5_1_1_tiny' / 'checkpoint_3'
PROMPTS = SHARED / 'prompts'
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f'shared data not present at {SHARED} (repo-root ../shared)')

# The tiny checkpoint's model (shared/README.md).
VOCAB, EMB, HEADS, HEAD_DIM, MLP, BUCKETS, LAYERS = 32128, 4, 2, 2, 8, 4, 2


def t5_1_1_shapes(num_layers: int = LAYERS) -> dict[str, tuple[int, ...]]:
  """The T5X parameter paths and shapes of a T5.1.1 model (untied logits)."""
  qkv, out = (EMB, HEADS * HEAD_DIM), (HEADS * HEAD_DIM, EMB)
  mlp = {'mlp/wi_0/kernel': (EMB, MLP), 'mlp/wi_1/kernel': (EMB, MLP),
         'mlp/wo/kernel': (MLP, EMB), 'pre_mlp_layer_norm/scale': (EMB,)}
  shapes = {
      'token_embedder/embedding': (VOCAB, EMB),
      'encoder/relpos_bias/rel_embedding': (HEADS, BUCKETS),
      'encoder/encoder_norm/scale': (EMB,),
      'decoder/relpos_bias/rel_embedding': (HEADS, BUCKETS),
      'decoder/decoder_norm/scale': (EMB,),
      'decoder/logits_dense/kernel': (EMB, VOCAB),
  }
  for i in range(num_layers):
    enc, dec = f'encoder/layers_{i}', f'decoder/layers_{i}'
    shapes[f'{enc}/pre_attention_layer_norm/scale'] = (EMB,)
    shapes[f'{dec}/pre_self_attention_layer_norm/scale'] = (EMB,)
    shapes[f'{dec}/pre_cross_attention_layer_norm/scale'] = (EMB,)
    for proj in ('query', 'key', 'value', 'out'):
      shape = out if proj == 'out' else qkv
      shapes[f'{enc}/attention/{proj}/kernel'] = shape
      shapes[f'{dec}/self_attention/{proj}/kernel'] = shape
      shapes[f'{dec}/encoder_decoder_attention/{proj}/kernel'] = shape
    for name, shape in mlp.items():
      shapes[f'{enc}/{name}'] = shape
      shapes[f'{dec}/{name}'] = shape
  return shapes


def raw_msgpack(ckpt_dir: pathlib.Path) -> dict:
  return serialization.msgpack_restore((ckpt_dir / 'checkpoint').read_bytes())


def write_msgpack(ckpt_dir: pathlib.Path, contents: dict) -> None:
  (ckpt_dir / 'checkpoint').write_bytes(
      serialization.msgpack_serialize(contents))


@pytest.fixture
def tiny_copy(tmp_path: pathlib.Path) -> pathlib.Path:
  """A writable copy of the tiny checkpoint."""
  ckpt_dir = tmp_path / 'checkpoint_3'
  shutil.copytree(TINY, ckpt_dir)
  for root, dirs, files in os.walk(ckpt_dir):
    for name in dirs + files:
      os.chmod(os.path.join(root, name), 0o755)
  return ckpt_dir


# ---------------------------------------------------------------- T5X


@needs_shared
def test_load_t5x_tiny_has_exactly_the_t5x_tree():
  params = checkpoints.load_t5x(str(TINY))
  flat = checkpoints.flatten(params)
  assert {p: v.shape for p, v in flat.items()} == t5_1_1_shapes()
  assert {v.dtype for v in flat.values()} == {np.dtype(np.float32)}
  assert all(isinstance(v, np.ndarray) for v in flat.values())


@needs_shared
def test_load_t5x_tiny_arrays_equal_direct_reads():
  flat = checkpoints.flatten(checkpoints.load_t5x(str(TINY)))
  stored = checkpoints.flatten(
      raw_msgpack(TINY)['optimizer']['target'],
      is_leaf=lambda node: 'driver' in node)
  assert stored.keys() == flat.keys()
  zarr_dirs = set()
  for path, leaf in stored.items():
    if isinstance(leaf, dict):
      zarr_dirs.add(leaf['kvstore']['path'])
      directory = TINY / leaf['kvstore']['path']
      expected = ts.open({'driver': 'zarr',
                          'kvstore': {'driver': 'file',
                                      'path': str(directory)}}).result().read(
                                      ).result()
    else:
      expected = leaf
    assert flat[path].dtype == expected.dtype, path
    np.testing.assert_array_equal(flat[path], expected, err_msg=path)
  # Kernels and the embedding are zarr arrays (one directory each, all used);
  # layer norms and relative position biases are inline.
  assert zarr_dirs == {p.name for p in TINY.iterdir() if p.is_dir()}
  assert len(zarr_dirs) == 38 and len(stored) - len(zarr_dirs) == 14


@needs_shared
def test_load_t5x_file_path_and_optimizer_state():
  by_dir = checkpoints.load_t5x(str(TINY) + '/')
  by_file = checkpoints.load_t5x(str(TINY / 'checkpoint'))
  assert checkpoints.flatten(by_dir).keys() == checkpoints.flatten(
      by_file).keys()
  full = checkpoints.load_t5x(str(TINY), include_optimizer_state=True)
  assert set(full) == {'target', 'state'}
  assert int(full['state']['step']) == 3
  factored = full['state']['param_states']['encoder']['layers_0']['mlp']
  assert factored['wi_0']['kernel']['v'].shape == (EMB, MLP)
  np.testing.assert_array_equal(full['target']['decoder']['decoder_norm']['scale'],
                                by_dir['decoder']['decoder_norm']['scale'])


@needs_shared
def test_load_t5x_then_merge_keeps_initial_prompt():
  loaded = checkpoints.load_t5x(str(TINY))
  init = {p: np.zeros(s, np.float32) for p, s in t5_1_1_shapes().items()}
  prompt = np.random.default_rng(0).normal(size=(3, EMB)).astype(np.float32)
  init['encoder/prompt/prompt/prompt'] = prompt
  merged = checkpoints.merge_params(checkpoints.unflatten(init), loaded)
  np.testing.assert_array_equal(merged['encoder']['prompt']['prompt']['prompt'],
                                prompt)
  np.testing.assert_array_equal(merged['token_embedder']['embedding'],
                                loaded['token_embedder']['embedding'])


def test_load_t5x_missing_path(tmp_path):
  with pytest.raises(CheckpointError, match='no such checkpoint'):
    checkpoints.load_t5x(str(tmp_path / 'checkpoint_7'))
  with pytest.raises(CheckpointError, match=r'checkpoint_7/checkpoint: cannot'):
    (tmp_path / 'checkpoint_7').mkdir()
    checkpoints.load_t5x(str(tmp_path / 'checkpoint_7'))


def test_load_t5x_not_msgpack(tmp_path):
  (tmp_path / 'checkpoint').write_bytes(b'\xc1 not msgpack')
  with pytest.raises(CheckpointError, match='not a T5X msgpack checkpoint'):
    checkpoints.load_t5x(str(tmp_path))


@needs_shared
def test_load_t5x_missing_zarr_array_and_chunk(tiny_copy):
  shutil.rmtree(tiny_copy / 'target.encoder.layers_1.mlp.wo.kernel')
  os.remove(tiny_copy / 'target.token_embedder.embedding' / '3.0')
  with pytest.raises(CheckpointError) as e:
    checkpoints.load_t5x(str(tiny_copy))
  message = str(e.value)
  assert '2 array(s) could not be read' in message
  assert ('encoder/layers_1/mlp/wo/kernel: cannot open zarr array '
          f'{tiny_copy}/target.encoder.layers_1.mlp.wo.kernel') in message
  assert 'token_embedder/embedding: cannot read zarr array' in message
  assert 'target.token_embedder.embedding/3.0' in message


@needs_shared
def test_load_t5x_declared_shape_mismatch(tiny_copy):
  contents = raw_msgpack(tiny_copy)
  spec = contents['optimizer']['target']['encoder']['layers_0']['mlp']['wo'][
      'kernel']
  spec['metadata']['shape'] = [16, 4]
  write_msgpack(tiny_copy, contents)
  with pytest.raises(CheckpointError,
                     match=r'encoder/layers_0/mlp/wo/kernel: checkpoint '
                     r'declares shape \[16, 4\], zarr array .* has \[8, 4\]'):
    checkpoints.load_t5x(str(tiny_copy))


@needs_shared
def test_load_t5x_prompted_bfloat16_old_style_spec(tiny_copy):
  """A prompt written by TensorStore on GCS (old spec layout), read locally."""
  prompt = np.arange(3 * EMB, dtype=np.float32).reshape(3, EMB) / 7
  name = 'target.encoder.prompt.prompt.prompt'
  store = ts.open({'driver': 'zarr', 'dtype': 'bfloat16',
                   'kvstore': {'driver': 'file',
                               'path': str(tiny_copy / name)},
                   'metadata': {'shape': [3, EMB], 'chunks': [3, EMB]}},
                  create=True).result()
  store.write(prompt.astype(ml_dtypes.bfloat16)).result()
  contents = raw_msgpack(tiny_copy)
  contents['optimizer']['target']['encoder']['prompt'] = {'prompt': {
      'prompt': {'driver': 'zarr',
                 'kvstore': {'driver': 'gcs', 'bucket': 't5x-dummy-bucket'},
                 'path': name,
                 'metadata': {'shape': [3, EMB], 'dtype': 'bfloat16'}}}}
  write_msgpack(tiny_copy, contents)
  loaded = checkpoints.load_t5x(str(tiny_copy))['encoder']['prompt']['prompt'][
      'prompt']
  assert loaded.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(loaded, prompt.astype(ml_dtypes.bfloat16))


def test_resolve_spec_gcs_and_local():
  spec = {'driver': 'zarr',
          'kvstore': {'driver': 'gfile', 'path': 'target.decoder.x.kernel'},
          'metadata': {'shape': [4, 4], 'chunks': [4, 4]}}
  assert t5x_lib.resolve_spec(spec, 'gs://t5-data/models/checkpoint_3') == {
      'driver': 'zarr',
      'kvstore': {'driver': 'gcs', 'bucket': 't5-data',
                  'path': 'models/checkpoint_3/target.decoder.x.kernel',
                  'gcs_request_retries': remote.retry_budget()},  # bounded: PTJ_REMOTE_TIMEOUT_S
      'fill_missing_data_reads': False}
  old = {'driver': 'zarr', 'kvstore': {'driver': 'gcs', 'bucket': 'other'},
         'path': 'target.decoder.x.kernel'}
  assert t5x_lib.resolve_spec(old, '/ckpt/checkpoint_3')['kvstore'] == {
      'driver': 'file', 'path': '/ckpt/checkpoint_3/target.decoder.x.kernel'}
  with pytest.raises(CheckpointError, match="kvstore driver 's3'"):
    t5x_lib.resolve_spec({'driver': 'zarr', 'kvstore': {'driver': 's3'}}, '/c')


# ---------------------------------------------------------------- merging


def test_merge_params_casts_and_falls_back():
  init = {'a': {'kernel': np.zeros((2, 3), np.float32)},
          'encoder': {'prompt': {'prompt': {'prompt': np.ones((5, 2))}}}}
  loaded = {'a': {'kernel': np.full((2, 3), 1.5, ml_dtypes.bfloat16)}}
  merged = checkpoints.merge_params(init, loaded)
  assert merged['a']['kernel'].dtype == np.float32
  np.testing.assert_array_equal(merged['a']['kernel'], 1.5)
  assert merged['encoder']['prompt']['prompt']['prompt'] is init['encoder'][
      'prompt']['prompt']['prompt']
  kept = checkpoints.merge_params(init, loaded, cast_to_init_dtype=False)
  assert kept['a']['kernel'].dtype == ml_dtypes.bfloat16
  with pytest.raises(CheckpointError,
                     match=r'encoder/prompt/prompt/prompt: missing from the '
                     r'checkpoint \(model expects \[5, 2\]\)'):
    checkpoints.merge_params(init, loaded, fallback_to_init=None)


def test_merge_params_lists_every_problem():
  init = {'a': np.zeros((2, 3)), 'b': np.zeros((4,)), 'c': np.zeros((1,))}
  loaded = {'a': np.zeros((3, 2)), 'c': np.zeros((1,)),
            'x': {'y': np.zeros((7, 7))}}
  with pytest.raises(CheckpointError) as e:
    checkpoints.merge_params(init, loaded)
  assert str(e.value) == (
      'Checkpoint does not match the model (3 problems):\n'
      '  a: model expects [2, 3], checkpoint has [3, 2]\n'
      '  b: missing from the checkpoint (model expects [4])\n'
      '  x/y: not in the model (checkpoint has [7, 7])')


# ---------------------------------------------------------------- prompts


@needs_shared
@pytest.mark.parametrize('task', ['sst2', 'rte', 'mrpc'])
def test_released_prompts(task):
  path = PROMPTS / 'original_release' / f'{task}.npy'
  prompt = checkpoints.load_prompt(str(path), expected_shape=(100, 768))
  assert prompt.shape == (100, 768) and prompt.dtype == np.float32
  stored = np.load(path)  # The file's own float32 array, bit for bit.
  assert stored.dtype == np.float32
  np.testing.assert_array_equal(prompt, stored)


@needs_shared
def test_prompt_5x256_and_extensionless_copy(tmp_path):
  prompt = checkpoints.load_prompt(str(PROMPTS / 'prompt_5x256.npy'))
  assert prompt.shape == (5, 256) and prompt.dtype == np.float32
  # The original implementation's numpy checkpoints: np.save, no suffix.
  path = tmp_path / 'numpy_checkpoints' / 'checkpoint_1100'
  path.mkdir(parents=True)
  shutil.copyfile(PROMPTS / 'prompt_5x256.npy',
                  path / 'encoder.prompt.prompt.prompt')
  np.testing.assert_array_equal(
      checkpoints.load_prompt(str(path / 'encoder.prompt.prompt.prompt')),
      prompt)


def test_save_load_prompt_roundtrip(tmp_path):
  prompt = np.random.default_rng(1).normal(size=(4, 6))  # float64
  path = tmp_path / 'run' / 'prompts' / 'step_10.npy'
  checkpoints.save_prompt(str(path), prompt)
  assert os.listdir(path.parent) == ['step_10.npy']  # no temp file left
  assert np.load(path).dtype == np.float32
  loaded = checkpoints.load_prompt(str(path), expected_shape=(None, 6))
  np.testing.assert_array_equal(loaded, prompt.astype(np.float32))
  # Written exactly at the given path, without an added suffix.
  checkpoints.save_prompt(str(tmp_path / 'encoder.prompt.prompt.prompt'),
                          prompt.astype(ml_dtypes.bfloat16))
  assert (tmp_path / 'encoder.prompt.prompt.prompt').is_file()


def test_prompt_errors(tmp_path):
  path = str(tmp_path / 'p.npy')
  checkpoints.save_prompt(path, np.zeros((5, 256), np.float32))
  with pytest.raises(CheckpointError,
                     match=r'p\.npy: expected prompt shape \[100, 768\], got '
                     r'\[5, 256\]'):
    checkpoints.load_prompt(path, expected_shape=(100, 768))
  with pytest.raises(CheckpointError, match='missing.npy: cannot read file'):
    checkpoints.load_prompt(str(tmp_path / 'missing.npy'))
  np.save(tmp_path / 'v.npy', np.zeros((3,), np.float32))
  with pytest.raises(CheckpointError, match=r'2-D float array \[P, H\], got \[3\]'):
    checkpoints.load_prompt(str(tmp_path / 'v.npy'))
  (tmp_path / 'junk').write_bytes(b'not numpy')
  with pytest.raises(CheckpointError, match='junk: not a numpy .npy file'):
    checkpoints.load_prompt(str(tmp_path / 'junk'))
  with pytest.raises(CheckpointError, match=r'got \[2, 2, 2\] float32'):
    checkpoints.save_prompt(path, np.zeros((2, 2, 2), np.float32))


# ---------------------------------------------------------------- Hugging Face

# A tiny HF T5 with every dimension distinct, so that a missing or wrong
# transpose changes the shape.
D_MODEL, D_KV, N_HEADS, D_FF, HF_VOCAB, HF_BUCKETS, N_ENC, N_DEC = (
    4, 3, 2, 5, 11, 6, 2, 3)


def hf_state(gated: bool, tied: bool, dtype=np.float32) -> dict[str, np.ndarray]:
  """A random `T5ForConditionalGeneration` state dict in HF shapes."""
  rng = np.random.default_rng(0)
  inner = N_HEADS * D_KV
  state = {}

  def add(name, *shape):
    state[name] = rng.normal(size=shape).astype(dtype)

  add('shared.weight', HF_VOCAB, D_MODEL)
  state['encoder.embed_tokens.weight'] = state['shared.weight']
  state['decoder.embed_tokens.weight'] = state['shared.weight']
  wi = ('wi_0', 'wi_1') if gated else ('wi',)
  for stack, n, attns in (('encoder', N_ENC, ['SelfAttention']),
                          ('decoder', N_DEC, ['SelfAttention',
                                              'EncDecAttention'])):
    add(f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
        HF_BUCKETS, N_HEADS)
    for i in range(n):
      for j, attn in enumerate(attns):
        prefix = f'{stack}.block.{i}.layer.{j}'
        for p in 'qkv':
          add(f'{prefix}.{attn}.{p}.weight', inner, D_MODEL)
        add(f'{prefix}.{attn}.o.weight', D_MODEL, inner)
        add(f'{prefix}.layer_norm.weight', D_MODEL)
      prefix = f'{stack}.block.{i}.layer.{len(attns)}'
      for w in wi:
        add(f'{prefix}.DenseReluDense.{w}.weight', D_FF, D_MODEL)
      add(f'{prefix}.DenseReluDense.wo.weight', D_MODEL, D_FF)
      add(f'{prefix}.layer_norm.weight', D_MODEL)
    add(f'{stack}.final_layer_norm.weight', D_MODEL)
  if tied:
    state['lm_head.weight'] = state['shared.weight']
  else:
    add('lm_head.weight', HF_VOCAB, D_MODEL)
  return state


def hf_config(gated: bool, tied: bool) -> dict:
  return {'model_type': 't5', 'vocab_size': HF_VOCAB, 'd_model': D_MODEL,
          'd_kv': D_KV, 'd_ff': D_FF, 'num_heads': N_HEADS,
          'num_layers': N_ENC, 'num_decoder_layers': N_DEC,
          'relative_attention_num_buckets': HF_BUCKETS,
          'relative_attention_max_distance': 20, 'dropout_rate': 0.0,
          'feed_forward_proj': 'gated-gelu' if gated else 'relu',
          'tie_word_embeddings': tied}


def expected_t5x(state: dict[str, np.ndarray], gated: bool,
                 tied: bool) -> dict[str, np.ndarray]:
  """The T5X tree spelled out name by name."""
  t = lambda name: state[name].T  # pylint: disable=unnecessary-lambda-assignment
  out = {'token_embedder/embedding': state['shared.weight']}
  if not tied:
    out['decoder/logits_dense/kernel'] = t('lm_head.weight')
  projections = {'q': 'query', 'k': 'key', 'v': 'value', 'o': 'out'}
  wi = ('wi_0', 'wi_1') if gated else ('wi',)
  for stack, n in (('encoder', N_ENC), ('decoder', N_DEC)):
    out[f'{stack}/relpos_bias/rel_embedding'] = t(
        f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight')
    out[f'{stack}/{stack}_norm/scale'] = state[
        f'{stack}.final_layer_norm.weight']
    for i in range(n):
      hf, tx = f'{stack}.block.{i}.layer', f'{stack}/layers_{i}'
      if stack == 'encoder':
        subs = [(0, 'SelfAttention', 'attention', 'pre_attention_layer_norm')]
        mlp = 1
      else:
        subs = [(0, 'SelfAttention', 'self_attention',
                 'pre_self_attention_layer_norm'),
                (1, 'EncDecAttention', 'encoder_decoder_attention',
                 'pre_cross_attention_layer_norm')]
        mlp = 2
      for j, hf_attn, attn, norm in subs:
        for p, name in projections.items():
          out[f'{tx}/{attn}/{name}/kernel'] = t(f'{hf}.{j}.{hf_attn}.{p}.weight')
        out[f'{tx}/{norm}/scale'] = state[f'{hf}.{j}.layer_norm.weight']
      for w in wi + ('wo',):
        out[f'{tx}/mlp/{w}/kernel'] = t(f'{hf}.{mlp}.DenseReluDense.{w}.weight')
      out[f'{tx}/pre_mlp_layer_norm/scale'] = state[
          f'{hf}.{mlp}.layer_norm.weight']
  return out


def assert_trees_equal(actual: dict, expected_flat: dict) -> None:
  flat = checkpoints.flatten(actual)
  assert sorted(flat) == sorted(expected_flat)
  for path, value in expected_flat.items():
    assert flat[path].shape == value.shape, path
    assert flat[path].dtype == value.dtype, path
    np.testing.assert_array_equal(flat[path], value, err_msg=path)


@pytest.mark.parametrize('gated,tied', [(True, False), (False, True),
                                        (True, True), (False, False)])
def test_load_hf_single_file(tmp_path, gated, tied):
  state = hf_state(gated, tied)
  if tied:  # transformers drops the duplicates of tied tensors when saving.
    for name in ('encoder.embed_tokens.weight', 'decoder.embed_tokens.weight',
                 'lm_head.weight'):
      del state[name]
  save_file(state, str(tmp_path / 'model.safetensors'))
  (tmp_path / 'config.json').write_text(json.dumps(hf_config(gated, tied)))
  params, config = checkpoints.load_hf(str(tmp_path))
  assert_trees_equal(params, expected_t5x(state, gated, tied))
  assert config == dict(
      vocab_size=HF_VOCAB, emb_dim=D_MODEL, num_heads=N_HEADS, head_dim=D_KV,
      mlp_dim=D_FF, num_encoder_layers=N_ENC, num_decoder_layers=N_DEC,
      mlp_activations=('gelu', 'linear') if gated else ('relu',),
      logits_via_embedding=tied, relative_attention_num_buckets=HF_BUCKETS,
      relative_attention_max_distance=20, dropout_rate=0.0)


def test_load_hf_sharded_bfloat16_without_config(tmp_path):
  state = hf_state(gated=True, tied=False, dtype=ml_dtypes.bfloat16)
  names = sorted(state)
  shards = {'model-00001-of-00002.safetensors': names[::2],
            'model-00002-of-00002.safetensors': names[1::2]}
  weight_map = {}
  for file, shard_names in shards.items():
    save_file({n: state[n] for n in shard_names}, str(tmp_path / file))
    weight_map.update({n: file for n in shard_names})
  (tmp_path / 'model.safetensors.index.json').write_text(
      json.dumps({'metadata': {}, 'weight_map': weight_map}))
  params, config = checkpoints.load_hf(str(tmp_path))
  assert config is None  # Untied inferred: lm_head differs from the embedding.
  assert_trees_equal(params, expected_t5x(state, gated=True, tied=False))
  os.remove(tmp_path / 'model-00002-of-00002.safetensors')
  with pytest.raises(CheckpointError, match='00002.safetensors: shard listed'):
    checkpoints.load_hf(str(tmp_path / 'model.safetensors.index.json'))


def test_load_hf_errors(tmp_path):
  with pytest.raises(CheckpointError, match='no model.safetensors'):
    checkpoints.load_hf(str(tmp_path))
  state = hf_state(gated=True, tied=False)
  state['encoder.block.0.layer.0.SelfAttention.q.bias'] = np.zeros(6)
  state['encoder.block.0.layer.2.DenseReluDense.wo.weight'] = np.zeros(1)
  with pytest.raises(CheckpointError) as e:
    checkpoints.hf_to_t5x(state)
  assert str(e.value) == (
      'not Hugging Face T5 tensor names:\n'
      '  encoder.block.0.layer.0.SelfAttention.q.bias [6]\n'
      '  encoder.block.0.layer.2.DenseReluDense.wo.weight [1]')
  state = hf_state(gated=True, tied=False)
  del state['lm_head.weight']
  with pytest.raises(CheckpointError, match='lm_head.weight is missing'):
    checkpoints.hf_to_t5x(state, tie_word_embeddings=False)
  with pytest.raises(CheckpointError, match="feed_forward_proj 'gelu'"):
    checkpoints.hf_config_to_t5({**hf_config(True, False),
                                 'feed_forward_proj': 'gelu'})
