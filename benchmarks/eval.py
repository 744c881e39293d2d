"""Evaluation benchmark: rank classification and sampling vs greedy decoding, mixed-task vs
per-prompt batches.

  python -m benchmarks.eval --sizes tiny,small --json eval.json
  python -m benchmarks.eval --sizes small --parts sampling   # sampling vs greedy only

Per size, in one fresh process (random weights, T5.1.1 shape, activations --dtype):
- rank classification (`scoring.rank_classify`: one encoder pass, all
  batch * num_labels label rows in one teacher-forced decoder pass) against
  greedy decoding (`decoding.greedy_decode`, cached) of `--decode_lens` tokens.
  A trained classifier emits its label then EOS, so decode length = label
  length (+ EOS) is greedy's fair case; random weights never emit EOS, so
  every greedy run decodes exactly its max length;
- mixed-task serving: `--tasks` prompts, one batch of `--batch` examples whose
  example i uses prompt i % tasks (`MethodInputs.prompts` per example), against one call
  per prompt, either padded to the full batch (a fixed-shape server: same
  compiled program, 1/tasks of the rows real) or with batch/tasks rows
  (a second compiled shape);
- sampling (`decoding.sample_decode`: temperature 1, and with top-k 40 or
  top-p 0.9, each row its own key) against greedy decoding of the same
  lengths: the price of a draw per step (top-k: `lax.top_k`; top-p: a bisection
  over the probabilities, `decoding.nucleus_floor`).
`--parts` picks among rank, mixed and sampling; greedy is always measured.
Every function is compiled once, before timing (compile time reported apart);
examples/s counts real examples.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Sequence

from benchmarks import common

MODULE = 'benchmarks.eval'
PARTS = ('rank', 'mixed', 'sampling')
# The samplers timed against greedy decoding: name -> decoding.sample_decode arguments.
SAMPLERS = {'sample': {}, 'top_k40': {'top_k': 40}, 'top_p0.9': {'top_p': 0.9}}


# ------------------------------------------------------------ worker (JAX only)


def _compile(fn, *args):
  """-> (compiled, seconds to lower and compile)."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _timed(compiled, args, payload: dict, examples: int, calls: int = 1) -> dict:
  """Times `calls` calls of `compiled(*args)` as one unit; examples/s over `examples`."""
  import jax  # pylint: disable=g-import-not-at-top

  def run():
    for _ in range(calls):
      jax.block_until_ready(compiled(*args))

  timing = common.time_calls(run, payload['warmup'], payload['steps'])
  return {'median_s': timing['median_s'], 'examples_per_s': examples / timing['median_s'],
          'calls': calls}


def rank_classify_repeated(model, params, encoder_input_tokens, label_token_ids):
  """The earlier rank classification, kept as a baseline: the encoded input is
  repeated once per label (one decoder row per example x label), so every decoder
  layer recomputes cross-attention keys/values per label. `scoring.rank_classify`
  packs all labels into one row per example instead. Returns scores [b, labels].
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import decoding, scoring  # pylint: disable=g-import-not-at-top
  encoded, encoder_valid = decoding.encode(model, params, encoder_input_tokens)
  b, n = encoded.shape[0], label_token_ids.shape[0]
  targets = jnp.tile(label_token_ids, (b, 1))  # [b * labels, d]
  logits = model.apply({'params': params}, jnp.repeat(encoded, n, axis=0),
                       jnp.repeat(encoder_valid, n, axis=0), scoring.shift_right(targets),
                       targets, method=model.decode)
  return scoring.token_log_likelihoods(logits, targets).sum(-1).reshape(b, n)


def _measure(payload: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import decoding, scoring  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import PromptedT5, T5Config  # pylint: disable=g-import-not-at-top

  if payload['kind'] != 'eval':
    raise ValueError(f'{MODULE} worker: unknown measurement kind {payload["kind"]!r}')
  workload = common.Workload(**payload['workload'])
  b, tasks, num_labels = workload.batch, payload['tasks'], payload['num_labels']
  if b % tasks:
    raise ValueError(f'--batch {b} must be a multiple of --tasks {tasks}.')
  config = T5Config(**payload['shape'], dtype=jnp.dtype(payload['dtype']), dropout_rate=0.0)
  model = PromptedT5(config, prompt_length=workload.prompt_len)
  tokens = common.random_batch(workload, config.vocab_size, payload['seed'])
  inputs = jnp.asarray(tokens['encoder_input_tokens'])  # [b, t]
  params = common.random_params(model, inputs[:1], tokens['decoder_input_tokens'][:1],
                                tokens['decoder_target_tokens'][:1], seed=payload['seed'])
  rng = np.random.RandomState(payload['seed'] + 1)
  # Labels of `label_len` pieces plus EOS, as `scoring.encode_labels` makes them.
  labels = np.concatenate([rng.randint(2, config.vocab_size, (num_labels, payload['label_len'])),
                           np.ones((num_labels, 1))], axis=1).astype(np.int32)
  labels = jnp.asarray(labels)  # [num_labels, label_len + 1]
  result = {'backend': jax.default_backend(), 'label_tokens_with_eos': int(labels.shape[1])}
  parts = payload['parts']

  if 'rank' in parts:
    rank = functools.partial(scoring.rank_classify, model)
    rank_c, result['rank_compile_s'] = _compile(rank, params, inputs, labels)
    result['rank'] = _timed(rank_c, (params, inputs, labels), payload, b)
    result['rank']['flops'] = float(_flops(rank_c))
    repeated_c, result['rank_repeated_compile_s'] = _compile(
        functools.partial(rank_classify_repeated, model), params, inputs, labels)
    result['rank_repeated'] = _timed(repeated_c, (params, inputs, labels), payload, b)
    result['rank_repeated']['flops'] = float(_flops(repeated_c))
    result['rank_repeated']['max_abs_score_diff'] = float(jnp.max(jnp.abs(
        repeated_c(params, inputs, labels) - rank_c(params, inputs, labels)[1])))
  result['greedy'] = {}
  for length in payload['decode_lens']:
    greedy = functools.partial(decoding.greedy_decode, model, max_decode_length=length)
    greedy_c, compile_s = _compile(greedy, params, inputs)
    timing = _timed(greedy_c, (params, inputs), payload, b)
    # Random weights rarely emit EOS; this says how many positions were decoded.
    decoded = jnp.sum(greedy_c(params, inputs)[0] > 0, axis=1)
    result['greedy'][str(length)] = dict(timing, compile_s=compile_s,
                                         mean_decoded_tokens=float(jnp.mean(decoded)))

  if 'sampling' in parts:
    keys = decoding.example_keys(payload['seed'], np.arange(b))  # each row its own key
    result['sampling'] = {}
    for name, options in SAMPLERS.items():
      for length in payload['decode_lens']:
        sample = functools.partial(decoding.sample_decode, model, max_decode_length=length,
                                   **options)
        sample_c, compile_s = _compile(sample, params, inputs, keys)
        timing = _timed(sample_c, (params, inputs, keys), payload, b)
        decoded = jnp.sum(sample_c(params, inputs, keys)[0] > 0, axis=1)
        result['sampling'][f'{name}/{length}'] = dict(
            timing, compile_s=compile_s, mean_decoded_tokens=float(jnp.mean(decoded)))
  if 'mixed' in parts:
    _measure_mixed(payload, model, params, inputs, labels, result)
  return result


def _measure_mixed(payload: dict, model, params, inputs, labels, result: dict) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import scoring  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.methods import MethodInputs  # pylint: disable=g-import-not-at-top
  b, tasks, prompt_len = inputs.shape[0], payload['tasks'], model.method.length
  # Mixed-task serving: `tasks` prompts; example i uses prompt i % tasks.
  bank = jax.random.uniform(jax.random.PRNGKey(7), (tasks, prompt_len, model.config.emb_dim),
                            minval=-0.5, maxval=0.5)  # [tasks, P, emb]
  task_of = np.arange(b) % tasks
  mask = jnp.ones((b, prompt_len), bool)

  def rank_prompted(params, inputs, labels, prompts, prompt_mask):
    return scoring.rank_classify(model, params, inputs, labels,
                                 method_inputs=MethodInputs(prompts, prompt_mask))

  mixed_c, result['mixed_compile_s'] = _compile(
      rank_prompted, params, inputs, labels, bank[task_of], mask)
  result['mixed'] = _timed(mixed_c, (params, inputs, labels, bank[task_of], mask), payload, b)
  # One call per prompt at the full batch shape: the same compiled program.
  per_task_full = jnp.broadcast_to(bank[0], (b,) + bank.shape[1:])
  result['per_prompt_full_batch'] = _timed(
      mixed_c, (params, inputs, labels, per_task_full, mask), payload, b, calls=tasks)
  small = b // tasks
  small_args = (params, inputs[:small], labels,
                jnp.broadcast_to(bank[0], (small,) + bank.shape[1:]), mask[:small])
  small_c, result['per_prompt_small_compile_s'] = _compile(rank_prompted, *small_args)
  result['per_prompt_small_batch'] = _timed(small_c, small_args, payload, b, calls=tasks)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost['flops']


# ------------------------------------------------------------ driver


def run(args: argparse.Namespace) -> dict:
  machine = common.machine_info()
  workload = common.Workload(args.batch, args.input_len, args.prompt_len, args.label_len + 1)
  rows = []
  for size in args.sizes:
    payload = {'kind': 'eval', 'shape': common.model_shape(size), 'workload': vars(workload),
               'dtype': args.dtype, 'tasks': args.tasks, 'num_labels': args.num_labels,
               'label_len': args.label_len, 'decode_lens': args.decode_lens,
               'warmup': args.warmup, 'steps': args.steps, 'seed': args.seed,
               'parts': args.parts}
    result = common.run_worker(MODULE, payload)
    row = {'size': size, 'raw': result}
    for key, name in [('rank', 'rank'), ('rank_repeated', 'rank_repeated'), ('mixed', 'mixed'),
                      ('per_prompt_full_batch', 'per_prompt_full'),
                      ('per_prompt_small_batch', 'per_prompt_small')]:
      if key in result:
        row[f'{name}_examples_per_s'] = result[key]['examples_per_s']
    if 'mixed' in result:
      row['mixed_over_per_prompt_full'] = (row['mixed_examples_per_s']
                                           / row['per_prompt_full_examples_per_s'])
      row['mixed_over_per_prompt_small'] = (row['mixed_examples_per_s']
                                            / row['per_prompt_small_examples_per_s'])
    for length, greedy in result['greedy'].items():
      speed = row[f'greedy{length}_examples_per_s'] = greedy['examples_per_s']
      for name in ('rank', 'rank_repeated'):
        if f'{name}_examples_per_s' in row:
          row[f'{name}_over_greedy{length}'] = row[f'{name}_examples_per_s'] / speed
    for key, sampled in result.get('sampling', {}).items():
      name, length = key.split('/')
      row[f'{name}{length}_examples_per_s'] = sampled['examples_per_s']
      row[f'{name}_over_greedy{length}'] = (sampled['examples_per_s']
                                            / row[f'greedy{length}_examples_per_s'])
    print(f'[{size}] ' + ', '.join(f'{k} {v:.2f}' for k, v in row.items()
                                   if k.endswith('examples_per_s')), file=sys.stderr, flush=True)
    rows.append(row)
  machine['load_average_end'] = [round(x, 2) for x in os.getloadavg()]
  return {'benchmark': 'eval', 'command': 'python -m benchmarks.eval ' + ' '.join(args.argv),
          'machine': machine, 'workload': vars(workload), 'dtype': args.dtype,
          'tasks': args.tasks, 'num_labels': args.num_labels, 'label_len': args.label_len,
          'decode_lens': args.decode_lens, 'parts': args.parts, 'rows': rows}


def format_report(report: dict) -> str:
  parts = report.get('parts', PARTS)
  columns = [('size', 'size', 's')]
  if 'rank' in parts:
    columns += [('rank-classify ex/s', 'rank_examples_per_s', '.2f'),
                ('rank, labels repeated (earlier) ex/s', 'rank_repeated_examples_per_s', '.2f')]
  for length in report['decode_lens']:
    columns.append((f'greedy {length} tok ex/s', f'greedy{length}_examples_per_s', '.2f'))
    if 'rank' in parts:
      columns += [(f'rank/greedy {length}', f'rank_over_greedy{length}', '.2f'),
                  (f'repeated/greedy {length}', f'rank_repeated_over_greedy{length}', '.2f')]
  if 'mixed' in parts:
    columns += [('mixed batch ex/s', 'mixed_examples_per_s', '.2f'),
                ('per-prompt full-batch ex/s', 'per_prompt_full_examples_per_s', '.2f'),
                ('per-prompt small-batch ex/s', 'per_prompt_small_examples_per_s', '.2f'),
                ('mixed/per-prompt full', 'mixed_over_per_prompt_full', '.2f'),
                ('mixed/per-prompt small', 'mixed_over_per_prompt_small', '.2f')]
  tables = [common.format_table(report['rows'], columns)]
  if 'sampling' in parts:
    sampling = [('size', 'size', 's')]
    for length in report['decode_lens']:
      sampling.append((f'greedy {length} tok ex/s', f'greedy{length}_examples_per_s', '.2f'))
      for name in SAMPLERS:
        sampling += [(f'{name} {length} tok ex/s', f'{name}{length}_examples_per_s', '.2f'),
                     (f'{name}/greedy', f'{name}_over_greedy{length}', '.2f')]
    tables.append(common.format_table(report['rows'], sampling))
  m, w = report['machine'], report['workload']
  return '\n'.join([
      f"{m['date_utc']} UTC, {m['cpu_model']} x{m['cpu_count']}, load {m['load_average']} "
      f"-> {m['load_average_end']}",
      f"batch {w['batch']}, {w['input_len']} input + {w['prompt_len']} prompt tokens, "
      f"{report['num_labels']} labels of {report['label_len']} piece(s) + EOS, "
      f"{report['tasks']} prompts in the mixed batch, activations {report['dtype']}", '',
      '\n\n'.join(tables)])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f'python -m {MODULE}', description=__doc__.split('\n')[0])
  csv = lambda s: [x for x in s.split(',') if x]
  parser.add_argument('--sizes', type=csv, default=['tiny', 'small'])
  parser.add_argument('--batch', type=int, default=24, help='a multiple of --tasks')
  parser.add_argument('--input_len', type=int, default=256)
  parser.add_argument('--prompt_len', type=int, default=100)
  parser.add_argument('--num_labels', type=int, default=3)
  parser.add_argument('--label_len', type=int, default=1, help='pieces per label, EOS excluded')
  parser.add_argument('--decode_lens', type=lambda s: [int(x) for x in csv(s)], default=[2, 8],
                      help='greedy max decode lengths to measure (label + EOS is the fair one)')
  parser.add_argument('--tasks', type=int, default=3, help='prompts in the mixed batch')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--parts', type=csv, default=list(PARTS),
                      help=f'what to measure besides greedy decoding: some of {PARTS}')
  parser.add_argument('--json', default=None, help="write the full report here ('-': stdout)")
  args = parser.parse_args(argv)
  if not set(args.parts) <= set(PARTS):
    parser.error(f'--parts {args.parts}: expected some of {PARTS}')
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
