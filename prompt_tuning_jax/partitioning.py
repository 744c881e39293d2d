"""Device mesh, logical axis names of T5X parameters, and their shardings.

The mesh has two axes, `data` and `model` (T5X's names). Each parameter gets
logical axis names from its path (e.g. a query kernel is ('embed', 'joined_kv'));
logical-to-mesh rules map those to mesh axes, as T5X's
`standard_logical_axis_rules` do for 1-D model parallelism: vocabulary, heads
and MLP dimensions are split over `model`, the embedding dimension and the
prompt are replicated, the batch is split over `data`.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import flax
import jax
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = 'data', 'model'

# (regex over the '/'-joined parameter path, logical axes of its dimensions).
PARAM_AXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r'.*prompt/prompt', ('prompt', 'embed')),
    (r'token_embedder/embedding', ('vocab', 'embed')),
    (r'.*/(query|key|value)/kernel', ('embed', 'joined_kv')),
    (r'.*/out/kernel', ('joined_kv', 'embed')),
    (r'.*/mlp/wi(_\d+)?/kernel', ('embed', 'mlp')),
    (r'.*/mlp/wo/kernel', ('mlp', 'embed')),
    (r'.*/logits_dense/kernel', ('embed', 'vocab')),
    (r'.*/rel_embedding', ('heads', 'relpos_buckets')),
    (r'.*/scale', ('embed',)),
)

# Logical axis -> mesh axis (None: replicated).
LOGICAL_RULES: tuple[tuple[str, Optional[str]], ...] = (
    ('batch', DATA),
    ('vocab', MODEL),
    ('mlp', MODEL),
    ('heads', MODEL),
    ('joined_kv', MODEL),
    ('embed', None),
    ('prompt', None),
    ('relpos_buckets', None),
)


def make_mesh(num_partitions: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A (data, model) mesh over `devices` (default: all) with `num_partitions` model shards."""
  devices = list(jax.devices() if devices is None else devices)
  if num_partitions < 1 or len(devices) % num_partitions:
    raise ValueError(f'num_partitions={num_partitions} does not divide the {len(devices)} devices.')
  grid = np.asarray(devices).reshape(len(devices) // num_partitions, num_partitions)
  return Mesh(grid, (DATA, MODEL))


def logical_axes(path: str) -> tuple[str, ...]:
  """Logical axis names of the parameter at `path` ('/'-joined)."""
  for pattern, axes in PARAM_AXES:
    if re.fullmatch(pattern, path):
      return axes
  raise ValueError(f'No logical axes are known for parameter {path!r}.')


def spec_for(shape: Sequence[int], axes: Sequence[str], mesh: Mesh,
             rules: Sequence[tuple[str, Optional[str]]] = LOGICAL_RULES) -> P:
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


def param_shardings(params, mesh: Mesh,
                    rules: Sequence[tuple[str, Optional[str]]] = LOGICAL_RULES):
  """Tree of NamedShardings for a parameter tree (arrays or ShapeDtypeStructs)."""
  flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  out = {k: NamedSharding(mesh, spec_for(v.shape, logical_axes(k), mesh, rules))
         for k, v in flat.items()}
  return traverse_util.unflatten_dict(out, sep='/')


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
