"""`train.train` end to end on an 8-device mesh with gradient accumulation, resumed elsewhere.

The 8-device runs happen in a subprocess that sees 8 CPU devices (this file is
its script: `python tests/test_train_mesh.py DIR`); the pytest process, with
one device, resumes one of their checkpoints itself. Tiny model, smoke task,
dropout on, BATCH_SIZE 8 in 2 accumulation steps.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

# ~3-4 min on 2 busy cores (three compilations); .ci/run runs the whole suite, this included.
pytestmark = pytest.mark.slow

STEPS, HALF = 4, 2
MESH_RUN = ('BATCH_SIZE = 8', 'ACCUMULATION_STEPS = 2')


def _run(model_dir, steps, num_partitions):
  """A run of test_train's tiny model computing in float64 (JAX_ENABLE_X64 in the
  subprocess, jax.enable_x64 here); its parameters, the prompt included, stay float32."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from test_train import model, run  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    return run(model_dir, steps, *MESH_RUN, f'NUM_PARTITIONS = {num_partitions}',
               f'CHECKPOINT_PERIOD = {HALF}', model=model(dtype=jnp.float64))


def _eight_device_runs(directory: str) -> None:
  """Uninterrupted on 4x2 (data x model); half on 4x2 resumed on 2x4; a copy of the half."""
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 8
  _run(os.path.join(directory, 'straight'), STEPS, 2)
  _run(os.path.join(directory, 'resumed'), HALF, 2)
  shutil.copytree(os.path.join(directory, 'resumed'), os.path.join(directory, 'one_device'))
  assert _run(os.path.join(directory, 'resumed'), STEPS, 4)['start_step'] == HALF


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  directory = tmp_path_factory.mktemp('train_mesh')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', JAX_ENABLE_X64='1')
  proc = subprocess.run([sys.executable, __file__, str(directory)], env=env,
                        capture_output=True, text=True, timeout=600)
  if proc.returncode:
    pytest.fail(f'8-device subprocess failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}')
  return directory


def test_resumed_on_other_meshes_equals_the_uninterrupted_mesh_run(runs,
                                                                    restore_ptj_global_state):
  from test_train import exported_prompt  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  assert jax.device_count() == 1
  assert _run(runs / 'one_device', STEPS, 1)['start_step'] == HALF  # 8 devices -> 1
  straight = exported_prompt(runs / 'straight', STEPS)
  # Steps 3-4 move the prompt by far more than the tolerance below.
  assert np.abs(straight - exported_prompt(runs / 'straight', HALF)).max() > 0.1
  for resumed in ('resumed', 'one_device'):
    # The same program on the same mesh: bit for bit.
    np.testing.assert_array_equal(exported_prompt(runs / resumed, HALF),
                                  exported_prompt(runs / 'straight', HALF))
    # Another split of the model axis sums in another order: in float64, ~1e-15 relative.
    # What remains is float32: each of the 2 steps rounds the prompt's gradient and the new
    # prompt to float32 (either run may round the other way), and Adafactor's update is
    # scaled by the prompt's RMS, so a rounding difference is an ulp at the prompt's scale,
    # not at a small element's: 2 steps x (1 + 1) ulps of max |prompt|; 8 allowed (~2e-6
    # here). A wrong shard or a sum counted twice moves the prompt by ~0.1.
    diff = np.abs(exported_prompt(runs / resumed, STEPS) - straight).max()
    assert diff <= 8 * np.spacing(np.abs(straight).max()), (resumed, diff)


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  _eight_device_runs(sys.argv[1])
