"""Plans a training run's sharding and memory without allocating the model.

`dry_run` traces the model and optimiser with `jax.eval_shape` (shapes only),
shards every parameter with the logical axis rules over a (data, model) mesh
of the visible devices or of a declared topology ('v3-32', '8xA100-80GB'),
and estimates the bytes each device holds:

* frozen parameters, in their dtype (float32, or bfloat16 when frozen weights
  are stored so);
* trainable parameters and their gradients (float32);
* optimiser state, from `jax.eval_shape(tx.init, params)`, sharded like the
  parameters it belongs to (Adafactor's factored statistics drop a dimension);
* activations kept for the backward pass (formula in `activation_bytes`).

The verdict compares the sum with `usable_fraction` of a device's memory
(the rest is left for XLA's temporaries, fragmentation and the runtime).
`plan` is `ptj train --dry_run`: the model, batch and optimiser a run's
settings configure.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from prompt_tuning_jax import models
from prompt_tuning_jax import optim
from prompt_tuning_jax import partitioning as pt
from prompt_tuning_jax.methods import Method
from prompt_tuning_jax.models import t5
from prompt_tuning_jax.settings import RunSettings

FLOAT32 = 4


@dataclasses.dataclass(frozen=True)
class ParamPlan:
  """One parameter (or a group of identical ones across layers)."""
  path: str  # layer indices replaced by '*' for a group
  count: int
  shape: tuple[int, ...]
  dtype: str
  spec: jax.sharding.PartitionSpec
  bytes_per_device: int  # of one parameter of the group
  trainable: bool


@dataclasses.dataclass(frozen=True)
class DryRunReport:
  """Sharding and per-device memory of a planned run; `str()` renders it."""
  topology: pt.Topology
  mesh_shape: dict[str, int]
  model: str
  batch_size: int
  accumulation_steps: int
  encoder_length: int
  decoder_length: int
  params: tuple[ParamPlan, ...]
  frozen_bytes: int
  trainable_bytes: int
  gradient_bytes: int
  optimizer_bytes: int
  activation_bytes: dict[str, int]  # term -> bytes per device
  usable_fraction: float

  @property
  def num_params(self) -> int:
    return sum(p.count * math.prod(p.shape) for p in self.params)

  @property
  def num_trainable_params(self) -> int:
    return sum(p.count * math.prod(p.shape) for p in self.params if p.trainable)

  @property
  def total_bytes(self) -> int:
    return (self.frozen_bytes + self.trainable_bytes + self.gradient_bytes
            + self.optimizer_bytes + sum(self.activation_bytes.values()))

  @property
  def usable_bytes(self) -> int:
    return int(self.topology.memory_per_device * self.usable_fraction)

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.usable_bytes

  @property
  def rows_per_host(self) -> int:
    """Rows of each global batch one host feeds: its devices' share of the `data` axis.

    Every host reads the whole global batch (see `data.py`) and keeps these.
    """
    per_host, partitions = self.topology.devices_per_host, self.mesh_shape[pt.MODEL]
    data_rows = max(1, per_host // partitions)  # a model group wider than a host: one row
    return self.batch_size * data_rows // self.mesh_shape[pt.DATA]

  def __str__(self) -> str:
    t = self.topology
    lengths = (f'encoder length {self.encoder_length} (inputs + prompt), decoder length '
               f'{self.decoder_length}' if self.encoder_length else
               f'sequence length {self.decoder_length} (inputs + prompt + targets)')
    lines = [
        f'Dry run: {self.model}, batch {self.batch_size} in {self.accumulation_steps} '
        f'micro-batch(es), {lengths}',
        f'Parameters: {self.num_params:,} ({self.num_trainable_params:,} trainable)',
        f'Topology {t.name}: {t.num_devices} devices of {_gib(t.memory_per_device)} '
        f'({t.num_hosts} host(s)); mesh data={self.mesh_shape[pt.DATA]} '
        f'model={self.mesh_shape[pt.MODEL]}',
        '',
        f'{"parameter":<62} {"count":>5} {"shape":<16} {"dtype":<9} {"spec":<22} '
        f'{"per device":>10}  role',
    ]
    for p in self.params:
      lines.append(
          f'{p.path:<62} {p.count:>5} {"x".join(map(str, p.shape)):<16} {p.dtype:<9} '
          f'{_spec_str(p.spec):<22} {_mib(p.bytes_per_device):>10}  '
          f'{"trainable" if p.trainable else "frozen"}')
    lines += [
        '',
        'Estimated memory per device:',
        f'  frozen parameters     {_gib(self.frozen_bytes):>12}',
        f'  trainable parameters  {_gib(self.trainable_bytes):>12}',
        f'  gradients             {_gib(self.gradient_bytes):>12}',
        f'  optimiser state       {_gib(self.optimizer_bytes):>12}',
        f'  activations           {_gib(sum(self.activation_bytes.values())):>12}',
    ]
    lines += [f'    {term:<22}{_gib(b):>10}' for term, b in self.activation_bytes.items()]
    verdict = 'FITS' if self.fits else 'DOES NOT FIT'
    lines += [
        f'  total                 {_gib(self.total_bytes):>12}',
        f'Verdict: {verdict}: {_gib(self.total_bytes)} of {_gib(self.usable_bytes)} usable '
        f'per device ({self.usable_fraction:.0%} of {_gib(t.memory_per_device)}).',
        f'Per host ({t.num_hosts} host(s) of {t.devices_per_host} devices): '
        f'{_gib(self.total_bytes * t.devices_per_host)} of device memory; each host reads '
        f'every global batch ({self.batch_size} examples) and feeds {self.rows_per_host} '
        'rows of it.',
    ]
    if not self.fits:
      lines.append('  Try more model partitions, a smaller batch (or gradient accumulation), '
                   'bfloat16 frozen weights, or a larger topology.')
    return '\n'.join(lines)


def dry_run(model_config: Union[str, t5.T5Config], method: Method, batch_size: int,
            feature_lengths: Mapping[str, int], num_partitions: int,
            topology: Union[None, str, pt.Topology] = None,
            rules: pt.Rules = pt.LOGICAL_RULES,
            optimizer: Union[str, optax.GradientTransformation] = 'adafactor',
            trainable_rules: Optional[Sequence[str]] = None, *,
            accumulation_steps: int = 1, frozen_dtype: Optional[Any] = None,
            usable_fraction: float = 0.9) -> DryRunReport:
  """Plans a run: shardings and per-device memory, allocating nothing.

  Args:
    model_config: a `T5Config` or a preset name ('t5_1_1_xxl').
    method: the trainable method (`methods.PromptTuning(100)`, `methods.ModelTuning()`):
      its parameters, and the encoder positions it adds (`added_positions`).
    batch_size: global batch (all data-parallel replicas together).
    feature_lengths: {'inputs': ..., 'targets': ...} as for the feature converter.
    num_partitions: model-parallel shards (the mesh's `model` axis).
    topology: None (the visible devices), a declared name ('v3-32',
      '8xA100-80GB', see `partitioning.declared_topology`) or a `Topology`.
    rules: logical-to-mesh axis rules.
    optimizer: 'adafactor' (the paper's), 'adam', or an optax transformation
      for the trainable partition.
    trainable_rules: regexes of trainable parameter paths (optim's rules); None: the
      method's.
    accumulation_steps: micro-batches per step (`train_step.make_train_step`);
      activations are those of one micro-batch.
    frozen_dtype: dtype frozen weights are kept in (default: the model's, float32).
    usable_fraction: share of a device's memory the run may use.
  """
  config = models.get_config(model_config) if isinstance(model_config, str) else model_config
  decoder_only = isinstance(config, models.DecoderOnlyConfig)
  name = model_config if isinstance(model_config, str) else (
      f'decoder-only LM (emb {config.emb_dim}, {config.num_decoder_layers} layers, vocab '
      f'{config.vocab_size})' if decoder_only else
      f'T5 (emb {config.emb_dim}, {config.num_encoder_layers}+{config.num_decoder_layers} '
      f'layers, vocab {config.vocab_size})')
  if isinstance(topology, str):
    topology = pt.declared_topology(topology)
  elif topology is None:
    topology = pt.visible_topology()
  mesh = pt.abstract_mesh(topology.num_devices, num_partitions)
  micro_batch, remainder = divmod(batch_size, accumulation_steps)
  if remainder or micro_batch % mesh.shape[pt.DATA]:
    raise ValueError(f'batch_size={batch_size} / accumulation_steps={accumulation_steps} is not '
                     f'a multiple of the {mesh.shape[pt.DATA]} data-parallel replicas '
                     f'({topology.num_devices} devices / {num_partitions} partitions).')

  params = _abstract_params(config, method)
  prompt_length = method.added_positions
  trainable_rules = method.trainable_rules if trainable_rules is None else trainable_rules
  tx = optim.partitioned_optimizer(params, _base_optimizer(optimizer), trainable_rules)
  opt_state = jax.eval_shape(tx.init, params)
  shardings = pt.param_shardings(params, mesh, rules)
  flat_params = traverse_util.flatten_dict(params, sep='/')
  flat_shardings = traverse_util.flatten_dict(shardings, sep='/')
  if not any(optim.is_trainable(k, trainable_rules) for k in flat_params):
    raise ValueError(f'No parameter matches the trainable rules {list(trainable_rules)}.')
  frozen_dtype = jnp.dtype(frozen_dtype) if frozen_dtype is not None else None

  plans, frozen, trainable = [], 0, 0
  for path, leaf in flat_params.items():
    is_trainable = optim.is_trainable(path, trainable_rules)
    dtype = leaf.dtype if is_trainable or frozen_dtype is None else frozen_dtype
    nbytes = _shard_bytes(leaf.shape, dtype, flat_shardings[path])
    plans.append((path, leaf.shape, jnp.dtype(dtype).name, flat_shardings[path].spec,
                  nbytes, is_trainable))
    if is_trainable:
      trainable += nbytes
    else:
      frozen += nbytes
  opt_shardings = pt.shardings_like_params(opt_state, params, mesh, rules)
  optimizer_bytes = sum(
      _shard_bytes(leaf.shape, leaf.dtype, s) for leaf, s in
      zip(jax.tree.leaves(opt_state), jax.tree.leaves(opt_shardings)))

  kernels_trainable = any(optim.is_trainable(k, trainable_rules) for k in flat_params
                          if k.endswith('/kernel') or k.endswith('/embedding'))
  # A decoder-only LM runs one sequence: inputs, prompt and targets.
  encoder_length = 0 if decoder_only else feature_lengths['inputs'] + prompt_length
  decoder_length = feature_lengths['targets'] + (
      feature_lengths['inputs'] + prompt_length if decoder_only else 0)
  activations = activation_bytes(config, micro_batch, encoder_length, decoder_length, mesh,
                                 rules, kernels_trainable=kernels_trainable)
  return DryRunReport(
      topology=topology, mesh_shape=dict(mesh.shape), model=name, batch_size=batch_size,
      accumulation_steps=accumulation_steps, encoder_length=encoder_length,
      decoder_length=decoder_length, params=_group(plans),
      frozen_bytes=frozen, trainable_bytes=trainable, gradient_bytes=trainable,
      optimizer_bytes=optimizer_bytes, activation_bytes=activations,
      usable_fraction=usable_fraction)


def plan(run: RunSettings, topology: Union[None, str, pt.Topology] = None) -> DryRunReport:
  """`ptj train --dry_run`: the plan of the model, batch and optimiser `run` configures."""
  opt = run.optimizer
  lengths = run.data.task_feature_lengths
  if run.data.pack_lengths:  # The worst case: one packed row per example, prompts inside R.
    packed = run.data.pack_lengths
    lengths = {'inputs': packed['inputs'] - run.model.method.added_positions,
               'targets': packed['targets']}
  return dry_run(run.model.config, run.model.method, run.data.batch_size,
                 lengths, run.num_partitions, topology,
                 optimizer=opt.optimizer(learning_rate=opt.learning_rate),
                 trainable_rules=run.trainable_rules, accumulation_steps=opt.accumulation_steps)


def activation_bytes(config: t5.T5Config, batch_size: int, encoder_length: int,
                     decoder_length: int, mesh: pt.AnyMesh, rules: pt.Rules = pt.LOGICAL_RULES,
                     *, kernels_trainable: bool = False) -> dict[str, int]:
  """Per-device bytes of the activations a train step keeps, by term.

  No rematerialisation: every layer's forward values that its backward pass
  reads stay live until then. Prompt tuning still back-propagates through
  every layer (the prompt is the encoder's input), but with frozen kernels a
  projection `x @ W` needs no `x` for its backward (only `W`). Per layer, in
  the activation dtype `a` (bfloat16: 2 bytes) unless said otherwise:

  * each RMS norm's input, the residual stream [b, len, emb];
  * attention: q, k, v [b, len, heads*head_dim]; for the softmax
    [b, heads, q, k]: three float32 arrays (biased logits, exponentials,
    probabilities) and the probabilities in `a` for the value product;
  * MLP [b, len, mlp]: each activation's input, each non-linear one's output
    too, and their product.

  With trainable kernels (model tuning) each projection's input is kept too.
  Per stack, also: the attention bias [b, heads, q, k] (float32), the encoder
  output, the float32 logits [b, targets, vocab] three times (logits,
  softmax, gradient), and as working space the largest attention logits and
  their gradient (2 x [b, heads, L, L] float32).

  These counts match XLA's buffer assignment for the compiled train step
  (`compile().memory_analysis()`, T5.1.1-base in float32 on CPU: per encoder
  layer 773 MiB estimated vs 770 measured, the whole step 10.1 GiB vs 9.8);
  fused softmax kernels on TPU/GPU keep less, so the estimate errs on the
  safe side.

  Each tensor is sharded by its logical axes (partitioning.ACTIVATION_AXES):
  batch over `data`; heads, MLP and vocabulary over `model`; the embedding
  dimension is replicated, so 1-D model parallelism does not shrink the
  residual stream.
  """
  a = jnp.dtype(config.dtype).itemsize
  heads, joined = config.num_heads, config.num_heads * config.head_dim
  b, enc, dec = batch_size, encoder_length, decoder_length

  def size(kind: str, *shape: int) -> int:
    axes = pt.ACTIVATION_AXES[kind]
    sharding = pt.logical_sharding(mesh, shape, axes, rules)
    return math.prod(sharding.shard_shape(shape))

  mlp_saved = (len(config.mlp_activations) + 1
               + sum(act != 'linear' for act in config.mlp_activations))

  def attention(q_len: int, kv_len: int) -> int:
    """Bytes of one attention sub-block (with its norm) kept for backward."""
    kv = 2 * size('projected_heads', b, kv_len, joined)
    saved = (size('residual', b, q_len, config.emb_dim) * a
             + (size('projected_heads', b, q_len, joined) + kv) * a
             + size('attention_weights', b, heads, q_len, kv_len) * (3 * FLOAT32 + a))
    if kernels_trainable:
      normed = size('residual', b, q_len, config.emb_dim)
      saved += (normed + size('projected_heads', b, q_len, joined)) * a
    return saved

  def mlp(length: int) -> int:
    """Bytes of one MLP sub-block (with its norm) kept for backward."""
    saved = (size('residual', b, length, config.emb_dim) * a
             + mlp_saved * size('mlp_hidden', b, length, config.mlp_dim) * a)
    if kernels_trainable:
      saved += (size('residual', b, length, config.emb_dim)
                + size('mlp_hidden', b, length, config.mlp_dim)) * a
    return saved

  encoder_layer = attention(enc, enc) + mlp(enc)
  # No cross-attention without an encoder (a decoder-only LM: encoder_length 0).
  decoder_layer = attention(dec, dec) + (attention(dec, enc) if enc else 0) + mlp(dec)
  return {
      'encoder layers': config.num_encoder_layers * encoder_layer,
      'decoder layers': config.num_decoder_layers * decoder_layer,
      'attention biases': FLOAT32 * (size('attention_weights', b, heads, enc, enc)
                                     + size('attention_weights', b, heads, dec, dec)),
      'encoder output': size('residual', b, enc, config.emb_dim) * a,
      'logits': 3 * FLOAT32 * size('logits', b, dec, config.vocab_size),
      'working space': 2 * FLOAT32 * size('attention_weights', b, heads, enc or dec,
                                          enc or dec),
  }


@functools.lru_cache(maxsize=4)
def _abstract_params(config: t5.T5Config, method: Method) -> dict[str, Any]:
  """The parameter tree as ShapeDtypeStructs (nothing allocated)."""
  model = models.build(config, method)
  variables = jax.eval_shape(
      lambda rng: model.init(rng, **models.dummy_inputs(model), enable_dropout=False),
      jax.ShapeDtypeStruct((2,), jnp.uint32))
  return variables['params']


def _base_optimizer(optimizer: Union[str, optax.GradientTransformation]
                    ) -> optax.GradientTransformation:
  if not isinstance(optimizer, str):
    return optimizer
  if optimizer == 'adafactor':
    return optim.adafactor()
  if optimizer == 'adam':
    return optax.adam(1e-3)
  raise ValueError(f"Unknown optimizer {optimizer!r}: expected 'adafactor', 'adam' "
                   f'or an optax.GradientTransformation.')


def _shard_bytes(shape: Sequence[int], dtype: Any, sharding: jax.sharding.NamedSharding) -> int:
  return math.prod(sharding.shard_shape(tuple(shape))) * jnp.dtype(dtype).itemsize


def _group(plans: list[tuple]) -> tuple[ParamPlan, ...]:
  """Merges parameters that differ only in their layer index."""
  groups: dict[tuple, int] = collections.OrderedDict()
  for path, shape, dtype, spec, nbytes, trainable in plans:
    key = (re.sub(r'layers_\d+', 'layers_*', path), tuple(shape), dtype, spec, nbytes, trainable)
    groups[key] = groups.get(key, 0) + 1
  return tuple(ParamPlan(path, count, shape, dtype, spec, nbytes, trainable)
               for (path, shape, dtype, spec, nbytes, trainable), count in groups.items())


def _spec_str(spec: jax.sharding.PartitionSpec) -> str:
  return '(' + ', '.join('-' if s is None else str(s) for s in spec) + ')'


def _gib(n: int) -> str:
  if n and n < 2**27:
    return f'{n / 2**20:.1f} MiB'
  return f'{n / 2**30:.2f} GiB'


def _mib(n: int) -> str:
  return f'{n / 2**20:.1f} MiB'
