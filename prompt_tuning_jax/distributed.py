"""Multi-process start-up: when to call `jax.distributed.initialize()`, who writes.

One process runs per host (TPU VM worker, GPU node). `initialize()` must run
before anything touches the devices (`jax.devices()`, the first jit). It looks
only at the environment, in this order:

1. `PTJ_DISTRIBUTED=0` / `=1`: never / always initialise (always: JAX detects
   the cluster itself, as for 3.). `launch/tpu_vm.sh` sets 1 on multi-host TPUs.
2. `JAX_COORDINATOR_ADDRESS` (host:port of process 0) with `JAX_NUM_PROCESSES`
   and `JAX_PROCESS_ID`: an explicit cluster (`launch/gpu.sh`); one process
   means no cluster.
3. A multi-process cluster that JAX detects by itself: a TPU pod slice
   (`TPU_WORKER_HOSTNAMES` / `TPU_PROCESS_ADDRESSES` listing several workers,
   `CLOUD_TPU_TASK_ID`, or Multislice's `MEGASCALE_COORDINATOR_ADDRESS`), a
   SLURM job step of several tasks, or an Open MPI run of several ranks.
Otherwise this is a single process and nothing is initialised.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Optional

import jax
import seqio

from prompt_tuning_jax import partitioning

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Arguments for `jax.distributed.initialize` and why they were chosen."""
  kwargs: dict[str, Any]
  reason: str


def plan(env: Mapping[str, str] = os.environ) -> Optional[Plan]:
  """What `initialize()` would do in `env`: a Plan, or None for a single process."""
  forced = env.get('PTJ_DISTRIBUTED')
  if forced is not None:
    if forced not in ('0', '1'):
      raise ValueError(f"PTJ_DISTRIBUTED must be '0' or '1', got {forced!r}.")
    return Plan({}, 'PTJ_DISTRIBUTED=1 (cluster detected by JAX)') if forced == '1' else None

  coordinator = env.get('JAX_COORDINATOR_ADDRESS')
  if coordinator:
    missing = [k for k in ('JAX_NUM_PROCESSES', 'JAX_PROCESS_ID') if not env.get(k)]
    if missing:
      raise ValueError(f'JAX_COORDINATOR_ADDRESS={coordinator} is set but {" and ".join(missing)} '
                       f'is not: every process needs the process count and its own id.')
    num_processes, process_id = _int(env, 'JAX_NUM_PROCESSES'), _int(env, 'JAX_PROCESS_ID')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'JAX_PROCESS_ID={process_id} is not in '
                       f'[0, JAX_NUM_PROCESSES={num_processes}).')
    if num_processes == 1:
      return None
    return Plan({'coordinator_address': coordinator, 'num_processes': num_processes,
                 'process_id': process_id},
                f'JAX_COORDINATOR_ADDRESS={coordinator}, process {process_id} of {num_processes}')

  for var in ('TPU_PROCESS_ADDRESSES', 'TPU_WORKER_HOSTNAMES'):
    workers = [w for w in env.get(var, '').split(',') if w.strip()]
    if len(workers) > 1:
      return Plan({}, f'TPU pod slice: {var} lists {len(workers)} workers')
  for var in ('CLOUD_TPU_TASK_ID', 'MEGASCALE_COORDINATOR_ADDRESS'):
    if env.get(var):
      return Plan({}, f'TPU pod slice: {var} is set')
  if env.get('SLURM_JOB_ID') and _int(env, 'SLURM_NTASKS', 1) > 1:
    return Plan({}, f'SLURM job {env["SLURM_JOB_ID"]} with {env["SLURM_NTASKS"]} tasks')
  if _int(env, 'OMPI_COMM_WORLD_SIZE', 1) > 1:
    return Plan({}, f'Open MPI run of {env["OMPI_COMM_WORLD_SIZE"]} ranks')
  return None


def _int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
  value = env.get(name)
  if value is None or value == '':
    if default is None:
      raise ValueError(f'{name} is not set.')
    return default
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name} must be an integer, got {value!r}.') from None


def initialize(env: Mapping[str, str] = os.environ) -> bool:
  """Calls `jax.distributed.initialize` when `env` describes several processes.

  Idempotent. Returns whether the distributed runtime is up after the call.
  """
  if jax.distributed.is_initialized():
    return True
  chosen = plan(env)
  if chosen is None:
    logger.info('Single process: jax.distributed is not initialised.')
    return False
  logger.info('Initialising jax.distributed: %s.', chosen.reason)
  jax.distributed.initialize(**chosen.kwargs)
  logger.info('jax.distributed is up: process %d of %d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_primary() -> bool:
  """Whether this process writes logs, summaries and prompt files (process 0)."""
  return jax.process_index() == 0


def data_shard_info(mesh: Optional[jax.sharding.Mesh] = None) -> seqio.ShardInfo:
  """Which shard of the data this process reads (for seqio's `shard_info`).

  Without a mesh: one shard per process. With a mesh: processes holding the
  same rows of its `data` axis share a shard (`partitioning.data_shard`).
  """
  if mesh is None:
    return seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
  index, num_shards = partitioning.data_shard(mesh)
  return seqio.ShardInfo(index=index, num_shards=num_shards)
