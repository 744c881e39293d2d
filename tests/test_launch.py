"""The launch scripts parse (bash -n), pass shellcheck, and check their arguments."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / 'launch'
SCRIPTS = sorted(LAUNCH.glob('*.sh'))


def _run(*args: str, env=None) -> subprocess.CompletedProcess:
  return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=env)


def test_scripts_exist():
  names = {p.name for p in SCRIPTS}
  assert {'tpu_vm.sh', 'gpu.sh'} <= names, names
  assert (LAUNCH / 'README.md').is_file()


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  result = _run('bash', '-n', str(script))
  assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='shellcheck is not installed (apt-get install shellcheck; .ci/run does)')
@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
  result = _run('shellcheck', str(script))
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('script', ['tpu_vm.sh', 'gpu.sh'])
def test_help_and_missing_arguments(script):
  path = str(LAUNCH / script)
  result = _run('bash', path, '--help')
  assert result.returncode == 0 and 'Usage:' in result.stdout
  env = {k: v for k, v in os.environ.items()
         if k not in ('MODEL_DIR', 'GIN_FILES', 'TPU_NAME', 'ZONE')}
  result = _run('bash', path, env=env)
  assert result.returncode != 0 and 'is required' in result.stderr
  result = _run('bash', path, '--no_such_flag', env=env)
  assert result.returncode != 0 and 'unknown argument: --no_such_flag' in result.stderr


def test_gpu_multi_node_needs_all_three_settings(tmp_path):
  # A stand-in `ptj` on PATH so the script reaches its multi-node checks.
  fake = tmp_path / 'ptj'
  fake.write_text('#!/bin/sh\necho "ptj $*"\necho "coordinator=$JAX_COORDINATOR_ADDRESS '
                  'processes=$JAX_NUM_PROCESSES id=$JAX_PROCESS_ID"\n')
  fake.chmod(0o755)
  env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}')
  for k in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    env.pop(k, None)
  gpu = str(LAUNCH / 'gpu.sh')
  result = _run('bash', gpu, '--model_dir', str(tmp_path / 'run'), '--gin_file', 'a.gin',
                '--coordinator', 'node0:1234', env=env)
  assert result.returncode != 0 and 'together' in result.stderr
  result = subprocess.run(
      ['bash', gpu, '--model_dir', str(tmp_path / 'run'), '--gin_file', 'a.gin',
       '--coordinator', 'node0:1234', '--num_nodes', '2', '--node_rank', '1', '--',
       '--gin.NUM_PARTITIONS=2'],
      capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert f"ptj train --gin_file=a.gin --gin.MODEL_DIR='{tmp_path / 'run'}' " \
         '--gin.NUM_PARTITIONS=2' in result.stdout
  assert 'coordinator=node0:1234 processes=2 id=1' in result.stdout
  assert list((tmp_path / 'logs').glob('gpu-node1-*.log'))


def _fake_ptj(directory, model_dir):
  """A stand-in `ptj`: prints its command and cluster variables; process $FAIL_ID fails."""
  fake = directory / 'ptj'
  fake.write_text(
      '#!/bin/sh\n'
      'echo "ptj $1 id=$JAX_PROCESS_ID of $JAX_NUM_PROCESSES at $JAX_COORDINATOR_ADDRESS '
      'args=[$*] $XLA_FLAGS"\n'
      '[ "$JAX_PROCESS_ID" = "$FAIL_ID" ] && exit 3\n'
      '[ -n "$FAIL_ID" ] && exec sleep 30\n'
      f'mkdir -p {model_dir}/inference && echo "{{}}" > '
      f'{model_dir}/inference/smoke_sentiment_test_step1.jsonl\n')
  fake.chmod(0o755)
  return dict(os.environ, PATH=f'{directory}:{os.environ["PATH"]}')


def test_local_runs_each_command_as_several_processes(tmp_path):
  env = _fake_ptj(tmp_path, tmp_path / 'run')
  result = _run('bash', str(LAUNCH / 'local.sh'), '--processes', '2', '--devices_per_process',
                '3', str(tmp_path / 'run'), env=env)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  for command in ('train', 'eval', 'infer'):
    for i in (0, 1):
      assert any(line.startswith(f'[p{i}] ptj {command} id={i} of 2 at 127.0.0.1:') and
                 line.endswith('--xla_force_host_platform_device_count=3') for line in lines), \
          result.stdout
  train = [line for line in lines if '] ptj train ' in line]
  assert len(train) == 2, train
  assert all('--gin_file=runs/smoke_pretrained.gin ' in line for line in train), train
  result = _run('bash', str(LAUNCH / 'local.sh'), '--run', 'runs/smoke.gin',
                str(tmp_path / 'run'), '--gin.TRAIN_STEPS=3', env=dict(env, JAX_PROCESS_ID='0'))
  assert result.returncode == 0, result.stderr
  assert ('ptj train id=0 of  at  args=[train --gin_file=runs/smoke.gin '
          f"--gin.MODEL_DIR={tmp_path / 'run'} --gin.TRAIN_STEPS=3]") in result.stdout
  assert 'ptj infer id=0 of  at  args=[infer --gin.MODEL_DIR=' in result.stdout
  result = _run('bash', str(LAUNCH / 'local.sh'), '--processes', 'two', env=env)
  assert result.returncode != 0 and 'positive integers' in result.stderr


def test_local_stops_the_other_processes_when_one_fails(tmp_path):
  env = dict(_fake_ptj(tmp_path, tmp_path / 'run'), FAIL_ID='1')
  tick = time.time()
  result = _run('bash', str(LAUNCH / 'local.sh'), '--processes', '3', str(tmp_path / 'run'),
                env=env)
  assert result.returncode != 0 and time.time() - tick < 20
  assert "process 1 of 'ptj train' failed; stopping the others" in result.stderr
  assert '== ptj eval' not in result.stdout
