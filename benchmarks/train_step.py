"""Train-step benchmark: our prompt-tuning step against PEFT's and the matmul limit.

  python -m benchmarks.train_step --sizes tiny,small --peer --json results.json

For each size (T5.1.1 shapes, random weights) it measures, each in its own
fresh process:
- our prompt-tuning step (forward + backward + AdamW update, jitted once,
  state donated): median seconds after warm-up, examples/s, tokens/s, compile
  time, FLOPs of the compiled step (XLA cost analysis), achieved FLOP/s as a
  fraction of the dense matmul FLOP/s measured in the same run, peak memory;
- the full fine-tuning step's FLOPs (compiled, not run unless --time_full);
- optional variants (--variants) that change one thing each;
- with --peer, PEFT prompt tuning on the same shapes and batch
  (`benchmarks.peft_peer`), and the ratios ours/peer.

Tokens/s counts real tokens (inputs + targets), not prompt positions.
Nothing here asserts a timing: targets are printed, never enforced.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks import common

# Each variant changes one thing relative to the base run (flags --dtype etc.).
VARIANTS: dict[str, dict[str, Any]] = {
    'bf16_activations': {'dtype': 'bfloat16'},
    # Frozen weights stored in bfloat16 (activations keep --dtype).
    'bf16_weights': {'weights_dtype': 'bfloat16'},
    'bf16': {'dtype': 'bfloat16', 'weights_dtype': 'bfloat16'},
    'fused_attention': {'fused_attention': True},
    'one_hot_embed': {'one_hot_embed': True},
    'no_donation': {'donate': False},
    # Proposals measured from outside the model: the whole forward under
    # `jax.checkpoint` with a policy (see `RematModel`).
    'remat_dots': {'remat': 'dots_with_no_batch_dims_saveable'},
    'remat_nothing': {'remat': 'nothing_saveable'},
    # XLA CPU's default scheduler favours concurrency over memory.
    'xla_memory_scheduler': {'xla_flags': '--xla_cpu_enable_concurrency_optimized_scheduler=false'},
    # Dots through XLA's own emitters / Eigen instead of YNNPACK / XNNPACK fusions.
    'xla_no_ynn': {'xla_flags': '--xla_cpu_experimental_ynn_fusion_type='},
    'xla_no_xnnpack': {'xla_flags': '--xla_cpu_use_xnnpack=false'},
    'xla_no_ynn_memory_scheduler': {
        'xla_flags': ('--xla_cpu_experimental_ynn_fusion_type= '
                      '--xla_cpu_enable_concurrency_optimized_scheduler=false')},
    # The CPU as 2 XLA devices, the batch split over them (data parallelism, as
    # `ptj` does with a mesh): two thunk executors instead of one.
    'host_devices_2': {'data_parallel': 2,
                       'xla_flags': '--xla_force_host_platform_device_count=2'},
    'host_devices_2_no_ynn': {'data_parallel': 2,
                              'xla_flags': ('--xla_force_host_platform_device_count=2 '
                                            '--xla_cpu_experimental_ynn_fusion_type=')},
}

MODULE = 'benchmarks.train_step'


# ------------------------------------------------------------ worker (JAX only)


class RematModel:
  """Wraps a flax module so that `apply` runs under `jax.checkpoint(policy=...)`.

  Only `apply` is used by `train_step.make_train_step`. With
  'dots_with_no_batch_dims_saveable' the backward pass keeps the projection and
  MLP matmul outputs and recomputes attention scores, softmax and elementwise
  work; 'nothing_saveable' recomputes the whole forward. This measures remat
  policies without a model change (per-layer `nn.remat` would be the library
  version).
  """

  def __init__(self, model, policy_name: str):
    import jax  # pylint: disable=g-import-not-at-top
    self.model = model
    self.policy = getattr(jax.checkpoint_policies, policy_name)

  def apply(self, variables, *args, enable_dropout: bool = False, rngs=None, **kwargs):
    import jax  # pylint: disable=g-import-not-at-top

    def forward(variables, *args):
      return self.model.apply(variables, *args, enable_dropout=enable_dropout, rngs=rngs,
                              **kwargs)

    return jax.checkpoint(forward, policy=self.policy)(variables, *args)


def _measure_matmul(payload: dict) -> dict:
  return common.jax_matmul_flops_per_s(payload['n'], payload['dtype'])


def _measure_train(payload: dict) -> dict:
  """Builds, compiles and times one train step; the only JAX code that runs timed."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import PromptedT5, T5Config  # pylint: disable=g-import-not-at-top

  rss_after_import = common.current_rss_mib()
  workload = common.Workload(**payload['workload'])
  config = T5Config(**payload['shape'], dtype=jnp.dtype(payload['dtype']), dropout_rate=0.0,
                    fused_attention=payload['fused_attention'],
                    one_hot_embed=payload['one_hot_embed'])
  model = PromptedT5(config, prompt_length=workload.prompt_len)
  batch = {k: jnp.asarray(v) for k, v in
           common.random_batch(workload, config.vocab_size, payload['seed']).items()}

  params = common.random_params(model, batch['encoder_input_tokens'][:1],
                                batch['decoder_input_tokens'][:1],
                                batch['decoder_target_tokens'][:1], seed=payload['seed'])
  rules = optim.PROMPT_TUNING_RULES if payload['tuning'] == 'prompt' else optim.MODEL_TUNING_RULES
  trainable, frozen = optim.partition(params, rules)
  del params
  if payload['weights_dtype'] != 'float32':
    frozen = jax.tree.map(lambda x: x.astype(payload['weights_dtype']), frozen)
  tx = optim.partitioned_optimizer(optim.merge(trainable, frozen),
                                   optax.adamw(payload['learning_rate']), rules)
  state = train_step_lib.init_train_state(trainable, frozen, tx)
  if payload.get('data_parallel', 1) > 1:  # batch rows over devices, the rest replicated
    from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
    mesh = Mesh(np.array(jax.devices()[:payload['data_parallel']]), ('data',))
    replicated = NamedSharding(mesh, PartitionSpec())
    state, frozen = jax.device_put((state, frozen), replicated)
    batch = jax.device_put(batch, NamedSharding(mesh, PartitionSpec('data')))
  stepped_model = RematModel(model, payload['remat']) if payload.get('remat') else model
  step = jax.jit(train_step_lib.make_train_step(stepped_model, tx, loss_normalization='mean'),
                 donate_argnums=(0,) if payload['donate'] else ())

  start = time.perf_counter()
  compiled = step.lower(state, frozen, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  result = {'compile_s': compile_s, 'flops_per_step': float(cost['flops']),
            'xla_temp_mib': memory.temp_size_in_bytes / 2**20 if memory else None,
            'backend': jax.default_backend(), 'rss_after_import_mib': rss_after_import}

  if payload['steps'] > 0:
    holder = {'state': state}
    del state

    def run_step():
      # The compiled executable cannot retrace: one compile for the whole run.
      holder['state'], metrics = compiled(holder['state'], frozen, batch)
      jax.block_until_ready((holder['state'], metrics))

    result.update(common.time_calls(run_step, payload['warmup'], payload['steps']))
    result.update(common.throughput(result['median_s'], workload))
    result['flops_per_s'] = result['flops_per_step'] / result['median_s']
  result['peak_rss_mib'] = common.process_peak_rss_mib(result)
  stats = jax.devices()[0].memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    result['device_peak_mib'] = stats['peak_bytes_in_use'] / 2**20
  if payload['steps'] > 0 and payload.get('profile'):
    with tempfile.TemporaryDirectory(prefix='ptj_profile_') as trace_dir:
      ops = common.profile_ops(run_step, payload['profile'], trace_dir)
    result['profile'] = common.summarise_profile(ops, compiled.as_text())
  return result


def _measure(payload: dict) -> dict:
  kind = payload['kind']
  if kind == 'matmul':
    return _measure_matmul(payload)
  if kind == 'train':
    return _measure_train(payload)
  raise ValueError(f'{MODULE} worker: unknown measurement kind {kind!r}')


# ------------------------------------------------------------ driver


def train_payload(args: argparse.Namespace, shape: dict, tuning: str, steps: int,
                  overrides: Optional[dict] = None) -> dict:
  payload = {
      'kind': 'train', 'shape': shape, 'workload': vars(workload_of(args)),
      'dtype': args.dtype, 'weights_dtype': 'float32', 'fused_attention': False,
      'one_hot_embed': False, 'donate': True, 'tuning': tuning, 'warmup': args.warmup,
      'steps': steps, 'learning_rate': args.learning_rate, 'seed': args.seed,
  }
  payload.update(overrides or {})
  return payload


def workload_of(args: argparse.Namespace) -> common.Workload:
  return common.Workload(args.batch, args.input_len, args.prompt_len, args.target_len)


def peer_payload(args: argparse.Namespace, shape: dict) -> dict:
  return {'kind': 'train', 'shape': shape, 'workload': vars(workload_of(args)),
          'warmup': args.warmup, 'steps': args.steps, 'learning_rate': args.learning_rate,
          'seed': args.seed, 'count_flops': args.peer_flops}


def _utilisation(row: dict, limit: Optional[float]) -> None:
  if limit and row.get('flops_per_s'):
    row['mfu'] = row['flops_per_s'] / limit


def run(args: argparse.Namespace) -> dict:
  """Runs every requested measurement; returns the JSON-able report."""
  for name in args.variants:
    if name not in VARIANTS:
      raise ValueError(f'Unknown variant {name!r}; known: {", ".join(VARIANTS)}')
  machine = common.machine_info()
  dtypes = {args.dtype} | {VARIANTS[v].get('dtype', args.dtype) for v in args.variants}
  limits = {d: common.run_worker(MODULE, {'kind': 'matmul', 'n': args.matmul_n, 'dtype': d})
            for d in sorted(dtypes)}
  if args.peer:
    limits['torch_float32'] = common.run_worker(
        'benchmarks.peft_peer', {'kind': 'matmul', 'n': args.matmul_n})

  rows, comparisons = [], []
  for size in args.sizes:
    shape = common.model_shape(size)
    # Ours and the peer alternate for --rounds rounds; each keeps its fastest
    # round (other load on the machine only ever adds time).
    base = peer = None
    for round_index in range(args.rounds):
      overrides = {'profile': args.profile if round_index == 0 else 0}
      base = _fastest(base, dict(
          common.run_worker(MODULE, train_payload(args, shape, 'prompt', args.steps, overrides)),
          size=size, impl='ours', variant=args.dtype, tuning='prompt'))
      if args.peer:
        peer = _fastest(peer, dict(
            common.run_worker('benchmarks.peft_peer', peer_payload(args, shape)),
            size=size, impl='peft', variant='float32', tuning='prompt'))
    _utilisation(base, limits[args.dtype]['flops_per_s'])
    rows.append(base)
    for name in args.variants:
      overrides = dict(VARIANTS[name])
      xla_flags = overrides.pop('xla_flags', '')
      row = dict(common.run_worker(MODULE, train_payload(args, shape, 'prompt', args.steps,
                                                         overrides), xla_flags=xla_flags),
                 size=size, impl='ours', variant=name, tuning='prompt')
      _utilisation(row, limits[overrides.get('dtype', args.dtype)]['flops_per_s'])
      rows.append(row)
      _progress(row)
    full = dict(common.run_worker(
        MODULE, train_payload(args, shape, 'full', args.steps if args.time_full else 0)),
                size=size, impl='ours', variant=args.dtype, tuning='full')
    _utilisation(full, limits[args.dtype]['flops_per_s'])
    rows.append(full)
    _progress(full)
    comparison = {'size': size,
                  'prompt_over_full_flops': base['flops_per_step'] / full['flops_per_step']}
    if args.peer:
      _utilisation(peer, limits['torch_float32']['flops_per_s'])
      rows.append(peer)
      comparison.update({
          'step_time_ours_over_peft': base['median_s'] / peer['median_s'],
          'speedup_vs_peft': peer['median_s'] / base['median_s'],
          # Other load on a shared machine only adds time: the fastest steps compare
          # the two sides closest to an idle machine.
          'speedup_vs_peft_fastest_step': peer['min_s'] / base['min_s'],
          'examples_per_s_ours_over_peft': base['examples_per_s'] / peer['examples_per_s'],
          'tokens_per_s_ours_over_peft': base['tokens_per_s'] / peer['tokens_per_s'],
          'peak_rss_ours_over_peft': base['peak_rss_mib'] / peer['peak_rss_mib'],
          'timed_peak_rss_ours_over_peft': (base.get('timed_peak_rss_mib', 0)
                                            / peer.get('timed_peak_rss_mib', float('inf'))),
      })
      if peer.get('flops_per_step'):
        comparison['flops_ours_over_peft'] = base['flops_per_step'] / peer['flops_per_step']
    comparisons.append(comparison)

  machine['load_average_end'] = [round(x, 2) for x in os.getloadavg()]
  return {'benchmark': 'train_step', 'command': 'python -m benchmarks.train_step ' +
          ' '.join(args.argv), 'machine': machine, 'workload': vars(workload_of(args)),
          'dtype': args.dtype, 'matmul_limit': limits, 'rows': rows,
          'comparisons': comparisons}


def _fastest(kept: Optional[dict], row: dict) -> dict:
  """The faster of two rounds' rows, with every round's median and the first profile."""
  _progress(row)
  if kept is None:
    return dict(row, round_medians_s=[row['median_s']])
  medians = kept['round_medians_s'] + [row['median_s']]
  profile = kept.get('profile')
  best = kept if kept['median_s'] <= row['median_s'] else row
  best = dict(best, round_medians_s=medians)
  if profile:
    best['profile'] = profile
  return best


def _progress(row: dict) -> None:
  step = f"{row['median_s']:.3f} s/step" if 'median_s' in row else 'compile only'
  print(f"[{row['size']}] {row['impl']} {row['tuning']} {row['variant']}: {step}, "
        f"peak RSS {row['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)


ROW_COLUMNS = (
    ('size', 'size', 's'), ('impl', 'impl', 's'), ('tuning', 'tuning', 's'),
    ('variant', 'variant', 's'), ('s/step (median)', 'median_s', '.3f'),
    ('fastest step s', 'min_s', '.3f'),
    ('examples/s', 'examples_per_s', '.2f'), ('tokens/s', 'tokens_per_s', '.0f'),
    ('GFLOP/step', 'gflops', '.1f'), ('GFLOP/s', 'gflops_per_s', '.1f'),
    ('of matmul limit', 'mfu', '.0%'), ('compile s', 'compile_s', '.1f'),
    ('peak RSS MiB', 'peak_rss_mib', '.0f'),
    ('peak RSS in timed steps MiB', 'timed_peak_rss_mib', '.0f'),
    ('XLA temp MiB', 'xla_temp_mib', '.0f'),
)
COMPARISON_COLUMNS = (
    ('size', 'size', 's'), ('speed-up vs PEFT (median step)', 'speedup_vs_peft', '.2f'),
    ('speed-up vs PEFT (fastest step)', 'speedup_vs_peft_fastest_step', '.2f'),
    ('examples/s ours/PEFT', 'examples_per_s_ours_over_peft', '.2f'),
    ('tokens/s ours/PEFT', 'tokens_per_s_ours_over_peft', '.2f'),
    ('peak RSS ours/PEFT', 'peak_rss_ours_over_peft', '.2f'),
    ('timed-steps peak RSS ours/PEFT', 'timed_peak_rss_ours_over_peft', '.2f'),
    ('FLOPs ours/PEFT', 'flops_ours_over_peft', '.2f'),
    ('FLOPs prompt/full step', 'prompt_over_full_flops', '.2f'),
)


def format_report(report: dict) -> str:
  rows = []
  for row in report['rows']:
    row = dict(row)
    if row.get('flops_per_step'):
      row['gflops'] = row['flops_per_step'] / 1e9
    if row.get('flops_per_s'):
      row['gflops_per_s'] = row['flops_per_s'] / 1e9
    rows.append(row)
    if row.get('device_peak_mib'):
      row['peak_rss_mib'] = row['device_peak_mib']
  m = report['machine']
  limits = ', '.join(f"{k}: {v['flops_per_s'] / 1e9:.1f} GFLOP/s" for k, v in
                     report['matmul_limit'].items())
  w = report['workload']
  profiles = [_format_profile(row) for row in report['rows'] if row.get('profile')]
  return '\n'.join([
      f"{m['date_utc']} UTC, {m['cpu_model']} x{m['cpu_count']}, load {m['load_average']} "
      f"-> {m['load_average_end']}, versions {m['versions']}",
      f"batch {w['batch']}, {w['input_len']} input + {w['prompt_len']} prompt tokens, "
      f"{w['target_len']} targets, activations {report['dtype']}",
      f'matmul limit ({report["matmul_limit"][report["dtype"]]["n"]}^3): {limits}', '',
      common.format_table(rows, ROW_COLUMNS), '',
      common.format_table(report['comparisons'], COMPARISON_COLUMNS)] + profiles)


def _format_profile(row: dict) -> str:
  profile = row['profile']
  shares = ', '.join(f'{k} {v:.0%}' for k, v in profile['share'].items()
                     if not k.startswith('part/') and v >= 0.005)
  parts = ', '.join(f'{k[5:]} {v:.0%}' for k, v in profile['share'].items()
                    if k.startswith('part/') and v >= 0.02)
  top = [{'op': o['op'], 'kind': o['kind'], 'ms': 1e3 * o['s'], 'share': o['share'],
          'source': o['source']} for o in profile['top_ops']]
  return '\n'.join([
      '', f"profile of {row['size']} {row['impl']} {row['tuning']} {row['variant']}: "
      f"{profile['wall_s_per_call']:.3f} s/step wall, {profile['op_s_per_call']:.3f} s summed "
      f"over ops (threads overlap)", f'by kind: {shares}', f'by model part: {parts}', '',
      common.format_table(top, (('op', 'op', 's'), ('kind', 'kind', 's'), ('ms/step', 'ms', '.1f'),
                                ('share', 'share', '.1%'), ('source', 'source', 's')))])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.train_step',
                                   description=__doc__.split('\n')[0])
  csv = lambda s: [x for x in s.split(',') if x]
  parser.add_argument('--sizes', type=csv, default=['tiny', 'small'],
                      help=f'comma-separated, of: {", ".join(common.SIZES)}')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--input_len', type=int, default=256)
  parser.add_argument('--prompt_len', type=int, default=100)
  parser.add_argument('--target_len', type=int, default=8)
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps after compiling')
  parser.add_argument('--steps', type=int, default=5, help='timed steps (median reported)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'),
                      help='activation dtype of the base run')
  parser.add_argument('--variants', type=csv, default=[],
                      help=f'extra runs, comma-separated, of: {", ".join(VARIANTS)}')
  parser.add_argument('--time_full', action='store_true',
                      help='also time the full fine-tuning step (else compile it for FLOPs)')
  parser.add_argument('--peer', action='store_true', help='also run PEFT and print ratios')
  parser.add_argument('--rounds', type=int, default=1,
                      help='alternate ours and the peer this many times; keep each fastest')
  parser.add_argument('--peer_flops', action='store_true',
                      help="count PEFT's FLOPs with torch's FlopCounterMode (one extra step)")
  parser.add_argument('--profile', type=int, default=0,
                      help='profile this many extra steps of the base run (where time goes)')
  parser.add_argument('--learning_rate', type=float, default=0.3)
  parser.add_argument('--matmul_n', type=int, default=2048, help='size of the matmul limit')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default=None, help="write the full report here ('-': stdout)")
  args = parser.parse_args(argv)
  args.argv = list(argv)
  return args


def main(argv: Sequence[str]) -> None:
  if common.worker_main(argv, _measure):
    return
  args = parse_args(argv)
  report = run(args)
  print(format_report(report))
  if args.json:
    common.write_json(args.json, report)


if __name__ == '__main__':
  main(sys.argv[1:])
