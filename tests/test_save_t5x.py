"""checkpoints.save_t5x: the legacy T5X layout that load_t5x (and T5X) read."""
import os

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import serialization

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.models import T5
from conftest import shared_path
from conftest import small_config


def _params():
  model = T5(small_config())
  dummy = jnp.ones((1, 1), jnp.int32)
  return jax.device_get(model.init(jax.random.PRNGKey(0), dummy, dummy, dummy,
                                   enable_dropout=False)['params'])


def _assert_trees_identical(a, b):
  fa, fb = checkpoints.flatten(a), checkpoints.flatten(b)
  assert fa.keys() == fb.keys()
  for key in fa:
    assert fa[key].dtype == fb[key].dtype, key
    np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def test_round_trip_is_bit_exact(tmp_path):
  params = _params()
  path = checkpoints.save_t5x(params, str(tmp_path / 'checkpoint_7'), step=7)
  _assert_trees_identical(checkpoints.load_t5x(path), params)
  # The msgpack holds what T5X writes: version, optimizer/{target, state/step}.
  with open(os.path.join(path, 'checkpoint'), 'rb') as f:
    contents = serialization.msgpack_restore(f.read())
  assert contents['version'] == t5x_lib.T5X_CHECKPOINT_VERSION
  assert int(contents['optimizer']['state']['step']) == 7
  spec = contents['optimizer']['target']['encoder']['layers_0']['attention']['query']['kernel']
  assert spec['driver'] == 'zarr'
  assert spec['kvstore']['path'] == 'target.encoder.layers_0.attention.query.kernel'
  assert os.path.isdir(os.path.join(path, spec['kvstore']['path']))
  assert not os.path.exists(path + '.tmp')


def test_bfloat16_round_trip(tmp_path):
  params = _params()
  path = checkpoints.save_t5x(params, str(tmp_path / 'bf16'), dtype='bfloat16')
  loaded = checkpoints.load_t5x(path)
  expected = jax.tree.map(lambda x: x.astype(ml_dtypes.bfloat16), params)
  _assert_trees_identical(loaded, expected)


def test_shared_t5x_checkpoint_survives_a_round_trip(tmp_path):
  original = checkpoints.load_t5x(str(shared_path('checkpoints', 't5x_t5_1_1_tiny',
                                                  'checkpoint_3')))
  path = checkpoints.save_t5x(original, str(tmp_path / 'copy'))
  _assert_trees_identical(checkpoints.load_t5x(path), original)


def test_existing_directory_is_never_overwritten(tmp_path):
  target = tmp_path / 'checkpoint_1'
  target.mkdir()
  (target / 'keep').write_text('x')
  with pytest.raises(checkpoints.CheckpointError, match='already exists'):
    checkpoints.save_t5x(_params(), str(target))
  assert os.listdir(target) == ['keep']


def test_interrupted_save_leaves_no_checkpoint(tmp_path, monkeypatch):
  params = _params()
  path = str(tmp_path / 'checkpoint_2')

  def fail(*args, **kwargs):
    raise OSError('disk full')
  monkeypatch.setattr(t5x_lib.tree_lib, 'write_bytes', fail)
  with pytest.raises(OSError):
    checkpoints.save_t5x(params, path)
  assert not os.path.exists(path)  # only the temporary directory is left
  monkeypatch.undo()
  _assert_trees_identical(checkpoints.load_t5x(checkpoints.save_t5x(params, path)), params)
