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

Failures: a process that sends no heartbeat for `PTJ_HEARTBEAT_TIMEOUT_SECONDS`
(default 30; JAX's own default is 100) is dead, and the coordinator then
stops every other process (non-zero exit, JAX's message "another task died").
A process that ends waits at most `PTJ_SHUTDOWN_TIMEOUT_SECONDS` (default
120) for the others to end too; if they do not (one failed while the others
wait in a collective), all stop with an error instead of hanging.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Any, Iterator, Mapping, Optional

import jax

from prompt_tuning_jax.errors import PeerError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Arguments for `jax.distributed.initialize` and why they were chosen."""
  kwargs: dict[str, Any]
  reason: str


HEARTBEAT_TIMEOUT_SECONDS = 30
SHUTDOWN_TIMEOUT_SECONDS = 120


def plan(env: Mapping[str, str] = os.environ) -> Optional[Plan]:
  """What `initialize()` would do in `env`: a Plan, or None for a single process."""
  cluster = _cluster(env)
  if cluster is None:
    return None
  timeouts = {
      'heartbeat_timeout_seconds': _int(env, 'PTJ_HEARTBEAT_TIMEOUT_SECONDS',
                                        HEARTBEAT_TIMEOUT_SECONDS),
      'shutdown_timeout_seconds': _int(env, 'PTJ_SHUTDOWN_TIMEOUT_SECONDS',
                                       SHUTDOWN_TIMEOUT_SECONDS)}
  return Plan({**cluster.kwargs, **timeouts}, cluster.reason)


def _cluster(env: Mapping[str, str]) -> Optional[Plan]:
  """The cluster `env` describes (coordinator, process count and id), or None."""
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
  logger.info('jax.distributed is up: process %d of %d, %d local / %d global devices; a '
              'process silent for %ds is dead, and then every process stops.',
              jax.process_index(), jax.process_count(), jax.local_device_count(),
              jax.device_count(), chosen.kwargs['heartbeat_timeout_seconds'])
  return True


@contextlib.contextmanager
def peer_failures() -> Iterator[None]:
  """Reports a runtime error of a multi-process run as a `PeerError` saying what to do.

  When a process dies, the collective the others are in fails (gloo: the
  connection is reset) or the coordinator stops them; either way a rerun of
  every process resumes from the last checkpoint. One process: no change.
  """
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise PeerError(
        f'process {jax.process_index()} of {jax.process_count()}: a step across the processes '
        f'failed ({first_line}). Most likely another process died or was killed (its log says '
        'why); every process stops. Rerun all of them to resume from the last checkpoint.'
    ) from e


def is_primary() -> bool:
  """Whether this process writes logs, summaries and prompt files (process 0)."""
  return jax.process_index() == 0



def topology(mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """What a checkpoint records of the machines that wrote it."""
  return {'processes': jax.process_count(), 'devices': mesh.devices.size,
          'mesh': {str(name): int(size) for name, size in mesh.shape.items()}}


def log_topology_change(saved: Optional[Mapping[str, Any]], now: Mapping[str, Any]) -> None:
  """Logs how the topology of a resumed run differs from its checkpoint's (if it does).

  A change is allowed: the batches do not depend on it (see `data.py`).
  """
  if not saved or dict(saved) == dict(now):
    return
  describe = lambda t: (f"{t['processes']} process(es), {t['devices']} devices, mesh "
                        + ' x '.join(f'{k}={v}' for k, v in t['mesh'].items()))
  logger.info('Resuming on another topology: the checkpoint was written by %s, this run has %s. '
              'The data stream continues unchanged (batches do not depend on the topology); '
              'the rounding of reductions may differ with the mesh.', describe(saved),
              describe(now))
