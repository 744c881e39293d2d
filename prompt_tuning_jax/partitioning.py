"""Device mesh, logical axis names of T5X parameters and activations, shardings.

The mesh has two axes, `data` and `model` (T5X's names). Each parameter gets
logical axis names from its path (e.g. a query kernel is ('embed', 'joined_kv'));
logical-to-mesh rules map those to mesh axes, as T5X's
`standard_logical_axis_rules` do for 1-D model parallelism: vocabulary, heads
and MLP dimensions are split over `model`, the embedding dimension and the
prompt are replicated, the batch is split over `data`.

Everything here also works on an `AbstractMesh` (axis sizes without devices),
which is what `dry_run` uses for a declared topology such as 'v3-32'.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Mapping, Optional, Sequence, Union

import flax
import jax
import numpy as np
from flax import traverse_util
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = 'data', 'model'
AnyMesh = Union[Mesh, AbstractMesh]
Rules = Sequence[tuple[str, Optional[str]]]

# (regex over the '/'-joined parameter path, logical axes of its dimensions).
PARAM_AXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r'.*prompt/prompt', ('prompt', 'embed')),
    (r'.*/shared_prompt', ('prompt', 'embed')),  # multi-task prompts
    (r'.*/task_prompts/embedding', ('tasks', 'prompt+embed')),
    (r'(.*/)?token_embedder/embedding', ('vocab', 'embed')),
    (r'.*/(query|key|value)/kernel', ('embed', 'joined_kv')),
    (r'.*/out/kernel', ('joined_kv', 'embed')),
    (r'.*/mlp/wi(_\d+)?/kernel', ('embed', 'mlp')),
    (r'.*/mlp/wo/kernel', ('mlp', 'embed')),
    (r'.*/logits_dense/kernel', ('embed', 'vocab')),
    (r'.*/rel_embedding', ('heads', 'relpos_buckets')),
    (r'.*/scale', ('embed',)),
    # Methods' parameters (methods/): IA3's scales, prefix tuning's generators.
    (r'.*/(k_conv|v_conv)/ia3_scaling', ('heads', 'kv')),
    (r'.*/intermediate_conv/ia3_scaling', ('mlp',)),
    (r'prefix/\w+/(keys_values|embedding)', ('prompt', 'prefix_table')),
    (r'prefix/\w+/(wi|wo)/kernel', ('prefix_table', 'prefix_table')),
    (r'prefix/\w+/(wi|wo)/bias', ('prefix_table',)),
)

# Logical axes of the activations the model computes (used for memory
# estimates and sharding constraints); 'length' is any sequence axis.
ACTIVATION_AXES: dict[str, tuple[str, ...]] = {
    'residual': ('batch', 'length', 'embed'),  # [batch, length, emb]
    'projected_heads': ('batch', 'length', 'joined_kv'),  # [batch, length, heads * head_dim]
    'attention_weights': ('batch', 'heads', 'length', 'length'),  # [batch, heads, q, k]
    'mlp_hidden': ('batch', 'length', 'mlp'),  # [batch, length, mlp]
    'logits': ('batch', 'length', 'vocab'),  # [batch, length, vocab]
}

# Logical axis -> mesh axis (None: replicated).
LOGICAL_RULES: tuple[tuple[str, Optional[str]], ...] = (
    ('batch', DATA),
    ('vocab', MODEL),
    ('mlp', MODEL),
    ('heads', MODEL),
    ('joined_kv', MODEL),
    ('embed', None),
    ('prompt', None),
    ('kv', None),
    ('prefix_table', None),
    ('tasks', None),
    ('prompt+embed', None),
    ('relpos_buckets', None),
    ('length', None),
)


# ------------------------------------------------------------------ meshes


def make_mesh(num_partitions: int = 1, devices: Optional[Sequence[jax.Device]] = None, *,
              model_parallel_submesh: Optional[Sequence[int]] = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all).

  With `num_partitions`, each model-parallel group is `num_partitions`
  consecutive devices of `devices` (jax orders them host by host, so a group
  stays within a host whenever it fits in one). With `model_parallel_submesh`
  (T5X's option, e.g. (2, 2, 1, 2) = x, y, z, core on TPU), each group is that
  physical block of the TPU torus instead; `num_partitions` must then be 1
  or the block's size.
  """
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(device_grid(devices, num_partitions, model_parallel_submesh), (DATA, MODEL))


def device_grid(devices: Sequence[Any], num_partitions: int = 1,
                model_parallel_submesh: Optional[Sequence[int]] = None) -> np.ndarray:
  """[data, model] object array of `devices` (see `make_mesh`)."""
  if model_parallel_submesh is not None:
    block = tuple(int(s) for s in model_parallel_submesh)
    if num_partitions not in (1, math.prod(block)):
      raise ValueError(f'num_partitions={num_partitions} contradicts model_parallel_submesh='
                       f'{block} (a group of {math.prod(block)} devices).')
    if getattr(devices[0], 'coords', None) is not None:
      return _physical_grid(devices, block)
    num_partitions = math.prod(block)  # No physical layout: consecutive devices.
  if num_partitions < 1 or len(devices) % num_partitions:
    raise ValueError(f'num_partitions={num_partitions} does not divide the {len(devices)} devices.')
  return np.asarray(devices, dtype=object).reshape(len(devices) // num_partitions, num_partitions)


def _physical_grid(devices: Sequence[Any], block: tuple[int, ...]) -> np.ndarray:
  """Groups TPU devices into `block`-shaped (x, y, z, core) tiles of the torus."""
  positions = [tuple(d.coords) + (getattr(d, 'core_on_chip', 0),) for d in devices]
  if len(block) != len(positions[0]):
    raise ValueError(f'model_parallel_submesh={block} needs {len(positions[0])} entries '
                     f'(x, y, z, core) for these devices.')
  origin = np.min(positions, axis=0)
  extent = np.max(positions, axis=0) - origin + 1
  if math.prod(extent) != len(devices) or np.any(extent % np.asarray(block)):
    raise ValueError(f'The devices form a {tuple(extent)} grid (x, y, z, core) that '
                     f'model_parallel_submesh={block} does not tile.')
  tiles = tuple(extent // np.asarray(block))
  grid = np.empty((math.prod(tiles), math.prod(block)), dtype=object)
  for device, position in zip(devices, positions):
    offset = np.asarray(position) - origin
    grid[np.ravel_multi_index(tuple(offset // block), tiles),
         np.ravel_multi_index(tuple(offset % block), block)] = device
  return grid


def abstract_mesh(num_devices: int, num_partitions: int = 1) -> AbstractMesh:
  """A (data, model) mesh of axis sizes only, for planning without devices."""
  if num_partitions < 1 or num_devices % num_partitions:
    raise ValueError(f'num_partitions={num_partitions} does not divide the {num_devices} devices.')
  return AbstractMesh((num_devices // num_partitions, num_partitions), (DATA, MODEL))


# ------------------------------------------------------------------ topologies

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Topology:
  """What a dry run plans for: devices, memory of each, devices per host."""
  name: str
  num_devices: int
  memory_per_device: int  # bytes
  devices_per_host: int

  @property
  def num_hosts(self) -> int:
    return max(1, self.num_devices // self.devices_per_host)


# TPU generation -> (TensorCores per JAX device, memory per JAX device,
# devices per host in a pod, devices of the largest single-host slice).
# The number in 'v3-32' counts TensorCores (v5e/v6e: chips, one core each).
_TPUS: dict[str, tuple[int, int, int, int]] = {
    'v2': (1, 8 * GiB, 8, 8),
    'v3': (1, 16 * GiB, 8, 8),
    'v4': (2, 32 * GiB, 4, 4),  # megacore: one device per chip
    'v5p': (2, 95 * GiB, 4, 4),
    'v5litepod': (1, 16 * GiB, 4, 8),  # v5e
    'v5e': (1, 16 * GiB, 4, 8),
    'v6e': (1, 32 * GiB, 4, 8),
}

# GPU name -> memory per device (bytes), as reported by the card.
_GPUS: dict[str, int] = {
    'A100-40GB': 40 * GiB,
    'A100-80GB': 80 * GiB,
    'H100-80GB': 80 * GiB,
    'H100': 80 * GiB,
    'H200': 141 * 10**9,
    'V100-16GB': 16 * GiB,
    'V100-32GB': 32 * GiB,
    'L4': 24 * GiB,
    'A10G': 24 * GiB,
}


def declared_topology(name: str) -> Topology:
  """Parses 'v3-32', 'v4-64', 'v5litepod-16', '8xA100-80GB', '2x8xH100-80GB' or '4x16GiB'.

  GPU forms are [hosts x] devices x card; a bare memory size ('16GiB', '80GB')
  stands for any device of that much memory.
  """
  tpu = re.fullmatch(r'(v\d+[a-z]*)-(\d+)', name)
  if tpu:
    generation, cores = tpu.group(1), int(tpu.group(2))
    if generation not in _TPUS:
      raise ValueError(f'Unknown TPU generation {generation!r} in {name!r}; known: {sorted(_TPUS)}')
    cores_per_device, memory, per_host, single_host = _TPUS[generation]
    devices = max(1, cores // cores_per_device)
    return Topology(name, devices, memory, devices if devices <= single_host else per_host)
  gpu = re.fullmatch(r'(?:(\d+)x)?(\d+)x([\w.-]+)', name)
  if gpu:
    hosts, per_host, card = int(gpu.group(1) or 1), int(gpu.group(2)), gpu.group(3)
    size = re.fullmatch(r'(\d+)(GiB|GB)', card)
    if size:
      memory = int(size.group(1)) * (GiB if size.group(2) == 'GiB' else 10**9)
    elif card in _GPUS:
      memory = _GPUS[card]
    else:
      raise ValueError(f'Unknown device {card!r} in {name!r}; known: {sorted(_GPUS)} '
                       f"or a size such as '16GiB'.")
    return Topology(name, hosts * per_host, memory, per_host)
  raise ValueError(f"Cannot parse topology {name!r}: expected e.g. 'v3-32', '8xA100-80GB', "
                   f"'2x8xH100-80GB' or '4x16GiB'.")


def visible_topology() -> Topology:
  """The devices of all processes, with the memory each reports.

  Only this process's own devices report memory; CPU devices report none
  (they share the host's physical memory).
  """
  devices = jax.devices()
  stats = jax.local_devices()[0].memory_stats() or {}
  memory = stats.get('bytes_limit')
  if memory is None:
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // jax.local_device_count()
  name = f'{len(devices)}x{devices[0].device_kind}'
  return Topology(name, len(devices), int(memory), jax.local_device_count())


# ------------------------------------------------------------------ shardings


def logical_axes(path: str) -> tuple[str, ...]:
  """Logical axis names of the parameter at `path` ('/'-joined)."""
  for pattern, axes in PARAM_AXES:
    if re.fullmatch(pattern, path):
      return axes
  raise ValueError(f'No logical axes are known for parameter {path!r}.')


def spec_for(shape: Sequence[int], axes: Sequence[str], mesh: AnyMesh,
             rules: Rules = LOGICAL_RULES) -> P:
  """PartitionSpec for one array; a dimension the mesh axis does not divide is replicated."""
  rule = dict(rules)
  spec = []
  for size, axis in zip(shape, axes):
    mesh_axis = rule.get(axis)
    if mesh_axis is not None and size % mesh.shape[mesh_axis] == 0:
      spec.append(mesh_axis)
    else:
      spec.append(None)
  return P(*spec)


def param_shardings(params, mesh: AnyMesh, rules: Rules = LOGICAL_RULES):
  """Tree of NamedShardings for a parameter tree (arrays or ShapeDtypeStructs)."""
  flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  out = {k: NamedSharding(mesh, spec_for(v.shape, logical_axes(k), mesh, rules))
         for k, v in flat.items()}
  return traverse_util.unflatten_dict(out, sep='/')


def shardings_like_params(tree, params, mesh: AnyMesh, rules: Rules = LOGICAL_RULES):
  """NamedShardings for a tree whose leaves live under parameter paths.

  For a `TrainState`, gradients or optimiser states: a leaf whose key path
  contains a parameter's path is sharded like that parameter when it has the
  parameter's shape, and like the remaining dimensions when it lacks one
  (Adafactor's factored row/column statistics). Anything else (the step
  counter, scalar statistics) is replicated.
  """
  param_shapes = {k: tuple(v.shape) for k, v in
                  traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/').items()}

  def sharding(key_path, leaf) -> NamedSharding:
    names = [str(k.key) for k in key_path if isinstance(k, jax.tree_util.DictKey)]
    shape = tuple(np.shape(leaf))
    for start in range(len(names)):
      path = '/'.join(names[start:])
      if path in param_shapes:
        axes = _axes_of_statistic(shape, param_shapes[path], logical_axes(path))
        return NamedSharding(mesh, spec_for(shape, axes, mesh, rules) if axes else P())
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(sharding, tree)


def _axes_of_statistic(shape: tuple[int, ...], param_shape: tuple[int, ...],
                       axes: tuple[str, ...]) -> Optional[tuple[str, ...]]:
  """Logical axes of an array derived from a parameter: same shape or one dimension fewer."""
  if shape == param_shape:
    return axes
  if len(shape) == len(param_shape) - 1:
    for dropped in range(len(param_shape) - 1, -1, -1):
      if param_shape[:dropped] + param_shape[dropped + 1:] == shape:
        return axes[:dropped] + axes[dropped + 1:]
  return None


def logical_sharding(mesh: AnyMesh, shape: Sequence[int], axes: Sequence[str],
                     rules: Rules = LOGICAL_RULES) -> NamedSharding:
  """Sharding of an activation with the given logical axes (see ACTIVATION_AXES)."""
  return NamedSharding(mesh, spec_for(shape, axes, mesh, rules))


def batch_sharding(mesh: AnyMesh) -> NamedSharding:
  """Leading (batch) dimension over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: AnyMesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """The same global batch on every process -> arrays with the batch dimension over `data`.

  Each device gets its rows of `batch` (a process places only those of its
  own devices), so which example lands where depends on the mesh alone, not
  on how many processes feed it.
  """
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_callback(np.shape(rows), sharding,
                                             lambda index, rows=np.asarray(rows): rows[index])
          for name, rows in batch.items()}
