"""Reads a legacy T5X checkpoint straight into sharded global arrays.

`load_t5x` (checkpoints/t5x.py) returns whole numpy arrays; for T5-XXL that is
44 GB on every host. Here each zarr array is opened with TensorStore and only
the slices held by this process's devices are read, then placed on those
devices (`jax.make_array_from_callback`); a slice several local devices hold
(replication) is read once. Arrays stored inline in the msgpack file are
small and sliced the same way. Reads are issued ahead, up to a byte budget,
so that TensorStore overlaps them while host memory stays bounded.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import re
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np
import tensorstore as ts

from prompt_tuning_jax.checkpoints import t5x as t5x_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.checkpoints.tree import CheckpointError

logger = logging.getLogger(__name__)

Target = Union[jax.sharding.Sharding, jax.ShapeDtypeStruct]
Index = tuple[slice, ...]
Key = tuple[tuple[int, int], ...]  # (start, stop) per dimension: hashable


def load_t5x_sharded(path: str, target: Mapping[str, Any], *,
                     fallback_to_init: Optional[str] = tree_lib.DEFAULT_FALLBACK_TO_INIT,
                     max_inflight_bytes: int = 1 << 30) -> dict[str, Any]:
  """Reads the parameters of a legacy T5X checkpoint as sharded `jax.Array`s.

  Args:
    path: the checkpoint directory (or its `checkpoint` file); local or gs://.
    target: nested dict with the parameter paths of the checkpoint whose
      leaves are either a `jax.sharding.Sharding` (the array keeps the
      checkpoint's shape and dtype) or a `jax.ShapeDtypeStruct` with a
      `sharding` (the shape is checked; the array is cast to its dtype, e.g.
      bfloat16 frozen weights). Typically `partitioning.param_shardings`.
    fallback_to_init: regex of target paths the checkpoint may lack (the
      prompt); they are left out of the result, to be initialised instead.
    max_inflight_bytes: host bytes read ahead before waiting.

  Returns:
    The nested dict of loaded parameters, each a global array with the
    target's sharding.

  Raises:
    CheckpointError: listing every missing, unexpected or mis-shaped
      parameter, or arrays that could not be read.
  """
  ckpt_dir, stored = _read_target_tree(path)
  wanted = tree_lib.flatten(target)
  problems = _match(stored, wanted, fallback_to_init)
  if problems:
    raise CheckpointError(f'{ckpt_dir}: checkpoint does not match the target '
                          f'({len(problems)} problem(s)):\n  ' + '\n  '.join(problems))

  loaded: dict[str, jax.Array] = {}
  pending: collections.deque[_Pending] = collections.deque()
  inflight = total = 0
  for param, leaf in stored.items():
    read = _start_read(param, leaf, wanted[param], ckpt_dir)
    pending.append(read)
    inflight += read.nbytes
    total += read.nbytes
    while inflight > max_inflight_bytes and pending:
      done = pending.popleft()
      loaded[done.param] = done.finish()
      inflight -= done.nbytes
  for done in pending:
    loaded[done.param] = done.finish()
  logger.info("Read %d parameters from %s: %.2f GiB of slices for this process's devices.",
              len(loaded), ckpt_dir, total / 2**30)
  return tree_lib.unflatten(loaded)


def _read_target_tree(path: str) -> tuple[str, dict[str, Any]]:
  """(checkpoint dir, {param path: inline array or TensorStore spec})."""
  ckpt_dir, state = t5x_lib.read_state_specs(path)
  return ckpt_dir, tree_lib.flatten(state['target'], is_leaf=t5x_lib.is_ts_spec)


def _stored_shape(leaf: Any) -> Optional[tuple[int, ...]]:
  if t5x_lib.is_ts_spec(leaf):
    shape = leaf.get('metadata', {}).get('shape')
    return None if shape is None else tuple(shape)
  return tuple(np.shape(leaf))


def _match(stored: dict[str, Any], wanted: dict[str, Target],
           fallback_to_init: Optional[str]) -> list[str]:
  problems = []
  for param, target in wanted.items():
    if param not in stored:
      if not (fallback_to_init and re.fullmatch(fallback_to_init, param)):
        problems.append(f'{param}: missing from the checkpoint')
      continue
    stored_shape = _stored_shape(stored[param])
    if (isinstance(target, jax.ShapeDtypeStruct) and stored_shape is not None
        and tuple(target.shape) != stored_shape):
      problems.append(f'{param}: target expects {tree_lib.shape_str(target.shape)}, '
                      f'checkpoint has {tree_lib.shape_str(stored_shape)}')
    elif isinstance(target, jax.ShapeDtypeStruct) and target.sharding is None:
      problems.append(f'{param}: the target ShapeDtypeStruct has no sharding')
  for param in sorted(stored.keys() - wanted.keys()):
    problems.append(f'{param}: in the checkpoint but not in the target')
  return problems


@dataclasses.dataclass
class _Pending:
  """The host slices of one parameter being read; `finish` builds the array."""
  param: str
  shape: tuple[int, ...]
  dtype: Optional[np.dtype]  # None: keep the stored dtype
  sharding: jax.sharding.Sharding
  slices: dict[Key, Any]  # TensorStore future or numpy array per distinct slice
  nbytes: int
  location: str

  def finish(self) -> jax.Array:
    host = {}
    for index, value in self.slices.items():
      try:
        data = value.result() if isinstance(value, ts.Future) else value
      except ValueError as e:
        raise CheckpointError(f'{self.param}: cannot read zarr array {self.location}: {e}') from e
      host[index] = np.asarray(data if self.dtype is None else data.astype(self.dtype))
    return jax.make_array_from_callback(self.shape, self.sharding,
                                        lambda index: host[_key(index, self.shape)])


def _key(index: Index, shape: tuple[int, ...]) -> Key:
  """Hashable, normalised form of a device's index."""
  return tuple(s.indices(n)[:2] for s, n in zip(index, shape))


def _index(key: Key) -> Index:
  return tuple(slice(start, stop) for start, stop in key)


def _start_read(param: str, leaf: Any, target: Target, ckpt_dir: str) -> _Pending:
  """Opens the array (zarr or inline) and starts reading this process's slices."""
  if isinstance(target, jax.ShapeDtypeStruct):
    sharding, dtype = target.sharding, np.dtype(target.dtype)
  else:
    sharding, dtype = target, None
  if t5x_lib.is_ts_spec(leaf):
    location = t5x_lib.zarr_location(leaf, ckpt_dir)
    try:
      store = ts.open(t5x_lib.resolve_spec(leaf, ckpt_dir), open=True).result()
    except ValueError as e:
      raise CheckpointError(f'{param}: cannot open zarr array {location}: {e}') from e
    problem = t5x_lib.store_problem(param, leaf, store, ckpt_dir)
    if problem:
      raise CheckpointError(problem)
    shape, itemsize = tuple(store.shape), store.dtype.numpy_dtype.itemsize
    read = lambda index: store[index].read()
  else:
    array = np.asarray(leaf)
    location, shape, itemsize = 'inline msgpack array', array.shape, array.itemsize
    read = lambda index: array[index]
  slices: dict[Key, Any] = {}
  for index in sharding.addressable_devices_indices_map(shape).values():
    key = _key(index, shape)
    if key not in slices:
      slices[key] = read(_index(key))
  nbytes = sum(itemsize * int(np.prod([stop - start for start, stop in key])) for key in slices)
  return _Pending(param, shape, dtype, sharding, slices, nbytes, location)
