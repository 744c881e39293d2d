"""Workload benchmark: prompt tuning on real task examples, ours (fixed / bucketed) vs PEFT.

  python -m benchmarks.workload --tasks sst2,rte --steps 8 --rounds 2 --json workload.json

Real data, not random tokens: the first `steps` x `batch` training examples
of SST-2 and RTE (`../shared`, in our seeded order) and the real T5
vocabulary (`../shared/vocab/t5/spiece.model`), T5.1.1-small shape with random
weights, prompt 100, batch 32, AdamW over the prompt on every side. Five sides,
each in its own fresh process, alternated round by round:

- `ours_fixed`: `data.train_batches` with LENGTH_BUCKETS=None: every batch
  padded to TASK_FEATURE_LENGTHS (512 + 16), as T5X and the original do;
- `ours_bucketed`: LENGTH_BUCKETS=--buckets, by default 'pow2' (inputs 16, 32, .., 512;
  targets 4, 8, 16); 'step16' cuts inputs at multiples of 16;
- `ours_packed`: PACK_LENGTHS={'inputs': --pack_inputs, 'targets': --pack_targets}: each
  batch's examples (bucketed as above) packed into rows, every example with its own copy of
  the prompt (`data.pack_batch`); the rows must hold the prompt plus 512 input tokens;
- `peft`: PEFT's standard recipe: the same example texts tokenised by
  `transformers.T5Tokenizer` from the same spiece.model, `DataCollatorForSeq2Seq`
  padding each batch to its longest example, batches in the same random order;
- `peft_grouped`: the same with the examples grouped by length the way ours
  are (sorted within the window, batches in random order), as
  `group_by_length` does.

The bucketed side groups within a window of `steps` batches (the library's
default is `data.WINDOW_BATCHES`), so every side trains on exactly the same
examples. Reported per side: examples/s over the timed steps (data loading
included, compilation excluded and reported as `compile_s`), padded input
positions per example (the prompt's 100 not counted, nor a packed row's prompt slots),
real input tokens per
example, peak RSS. `--eval` adds rank classification over SST-2 dev, fixed vs bucketed vs
packed (PACK_LENGTHS from --pack_inputs/--pack_targets, as `ptj eval` packs it:
`scoring.rank_classify_packed`) in batches of --eval_batch (examples/s, compile seconds,
encoder positions per example, prompts included). Our sides run with the XLA flags
`ptj` sets on this CPU kind when XLA_FLAGS is unset (`cpu_flags.py`; reported as
`xla_flags`). Nothing here asserts a timing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Optional, Sequence

import numpy as np

from benchmarks import common

MODULE = 'benchmarks.workload'
TASKS = {'sst2': 'glue_sst2_v002', 'rte': 'super_glue_rte_v102'}
LENGTHS = {'inputs': 512, 'targets': 16}
# Packed batches' features besides MODEL_FEATURES that the train step reads.
PACKED_FEATURES = ('encoder_segment_ids', 'decoder_segment_ids', 'prompt_slots', 'task_index')
SIDES = ('ours_fixed', 'ours_bucketed', 'ours_packed', 'peft', 'peft_grouped')


def shared_dir() -> str:
  return os.path.join(os.path.dirname(common.REPO_ROOT), 'shared')


def _task_env(shared: str) -> None:
  os.environ.setdefault('PTJ_VOCAB', os.path.join(shared, 'vocab', 't5', 'spiece.model'))
  os.environ.setdefault('PTJ_GLUE_DIR', os.path.join(shared, 'data', 'glue'))
  os.environ.setdefault('PTJ_SUPERGLUE_DIR', os.path.join(shared, 'data', 'super_glue'))


# ------------------------------------------------------------ workers


def _ours_env(payload: dict) -> str:
  """The task environment and `ptj`'s XLA flags for this CPU kind (before JAX starts)."""
  from prompt_tuning_jax import cpu_flags  # pylint: disable=g-import-not-at-top
  _task_env(payload['shared'])
  cpu_flags.apply_defaults()
  return os.environ.get('XLA_FLAGS', '')


def _ours_train(payload: dict) -> dict:
  """Our data pipeline and train step on the task's first examples."""
  xla_flags = _ours_env(payload)
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import PromptedT5, T5Config  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.settings import DataSettings  # pylint: disable=g-import-not-at-top

  data.import_task_modules()
  steps, batch_size = payload['steps'], payload['batch']
  pack_lengths = payload.get('pack_lengths')
  settings = DataSettings(payload['task'], LENGTHS, batch_size, seed=payload['seed'],
                          module=None, length_buckets=payload['buckets'],
                          pack_lengths=pack_lengths)
  packing = pack_lengths and data.Packing(pack_lengths, payload['prompt_len'])
  tick = time.perf_counter()
  batches = data.train_batches(settings, window_batches=steps, packing=packing)
  first = next(batches)
  first_batch_s = time.perf_counter() - tick
  model = PromptedT5(T5Config(**payload['shape'], dropout_rate=0.0),
                     prompt_length=payload['prompt_len'])
  one = {k: first[k][:1] for k in ('encoder_input_tokens', 'decoder_input_tokens',
                                   'decoder_target_tokens')}
  params = common.random_params(model, one['encoder_input_tokens'],
                                one['decoder_input_tokens'], one['decoder_target_tokens'])
  rules = optim.PROMPT_TUNING_RULES
  trainable, frozen = optim.partition(params, rules)
  tx = optim.partitioned_optimizer(params, optax.adamw(payload['learning_rate']), rules)
  del params
  state = train_step_lib.init_train_state(trainable, frozen, tx)
  step = jax.jit(train_step_lib.make_train_step(model, tx), donate_argnums=(0,))
  compiled, compile_s, seconds = {}, 0.0, []
  real_inputs = positions = 0
  batch = first
  for i in range(steps):
    start = time.perf_counter()
    if i:
      batch = next(batches)
    feed = {k: batch[k] for k in data.MODEL_FEATURES + PACKED_FEATURES if k in batch}
    key = (feed['encoder_input_tokens'].shape, feed['decoder_target_tokens'].shape)
    if key not in compiled:
      tock = time.perf_counter()
      compiled[key] = step.lower(state, frozen, feed).compile()
      compile_s += time.perf_counter() - tock
      start += time.perf_counter() - tock
    state, metrics = compiled[key](state, frozen, feed)
    jax.block_until_ready(metrics)
    seconds.append(time.perf_counter() - start)
    slots = int((feed[data.PROMPT_SLOTS] >= 0).sum()) if packing else 0
    real_inputs += int((feed['encoder_input_tokens'] > 0).sum()) - slots
    positions += feed['encoder_input_tokens'].size - slots
  examples = steps * batch_size
  return {'examples_per_s': examples / sum(seconds), 'median_step_s': statistics.median(seconds),
          'compile_s': compile_s, 'shapes': len(compiled), 'first_batch_s': first_batch_s,
          'input_positions_per_example': positions / examples,
          'real_input_tokens_per_example': real_inputs / examples,
          'peak_rss_mib': common.process_peak_rss_mib(), 'backend': jax.default_backend(),
          'xla_flags': xla_flags}


def _peft_train(payload: dict) -> dict:
  """PEFT prompt tuning with DataCollatorForSeq2Seq on the same example texts."""
  import torch  # pylint: disable=g-import-not-at-top
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from benchmarks import peft_peer  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(payload['seed'])
  tokenizer = t5_tokenizer(payload['vocab'])
  features = []
  for inputs, targets in payload['texts']:
    encoded = tokenizer(inputs, max_length=LENGTHS['inputs'], truncation=True)
    encoded['labels'] = tokenizer(text_target=targets, max_length=LENGTHS['targets'],
                                  truncation=True)['input_ids']
    features.append(dict(encoded))
  steps, batch_size = payload['steps'], payload['batch']
  order = np.arange(len(features))
  if payload['grouped']:  # group_by_length's idea: sorted by length within the window
    lengths = [len(f['input_ids']) for f in features]
    order = np.argsort(lengths, kind='stable')
    batches = order.reshape(steps, batch_size)
    order = batches[np.random.default_rng(payload['seed']).permutation(steps)].reshape(-1)
  model = transformers.T5ForConditionalGeneration(peft_peer.hf_config(payload['shape']))
  model = peft.get_peft_model(model, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=payload['prompt_len']))
  model.train()
  collator = transformers.DataCollatorForSeq2Seq(tokenizer, padding='longest',
                                                 label_pad_token_id=-100)
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=payload['learning_rate'])
  seconds, real_inputs, positions, first_step_s = [], 0, 0, None
  for i in range(steps):
    start = time.perf_counter()
    batch = collator([features[j] for j in order[i * batch_size:(i + 1) * batch_size]])
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds.append(time.perf_counter() - start)
    real_inputs += int(batch['attention_mask'].sum())
    positions += batch['input_ids'].numel()
    if first_step_s is None:
      first_step_s = seconds[-1]
  examples = steps * batch_size
  return {'examples_per_s': examples / sum(seconds), 'median_step_s': statistics.median(seconds),
          'first_step_s': first_step_s, 'input_positions_per_example': positions / examples,
          'real_input_tokens_per_example': real_inputs / examples,
          'peak_rss_mib': common.process_peak_rss_mib(),
          'torch_threads': torch.get_num_threads()}


def t5_tokenizer(spiece_model: str):
  """`transformers`' T5 tokenizer of a SentencePiece model (from_pretrained converts it;
  the constructor of transformers 5 does not read a model file)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix='ptj_tokenizer_') as tmp:
    os.symlink(os.path.abspath(spiece_model), os.path.join(tmp, 'spiece.model'))
    return transformers.T5Tokenizer.from_pretrained(tmp, extra_ids=100)


def _ours_eval(payload: dict) -> dict:
  """Rank classification over a split, batches fixed or cut to buckets, or (`pack_lengths`)
  each bucketed batch packed into rows as `ptj eval` packs them (host packing timed too)."""
  xla_flags = _ours_env(payload)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import inference  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import scoring  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models import PromptedT5, T5Config  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.settings import DataSettings  # pylint: disable=g-import-not-at-top

  data.import_task_modules()
  task = payload['task']
  settings = DataSettings(task, LENGTHS, payload['batch'], seed=0, module=None,
                          length_buckets=payload['buckets'])
  buckets = (settings.length_buckets or {}).get('inputs')
  examples, _ = inference.examples_from_task(task, 'validation', LENGTHS,
                                             payload.get('num_examples'))
  vocab = data.task_vocabularies(task)['targets']
  label_ids = jnp.asarray(scoring.encode_labels(vocab, data.label_words(task)))
  model = PromptedT5(T5Config(**payload['shape'], dropout_rate=0.0),
                     prompt_length=payload['prompt_len'])
  one = jnp.ones((1, 1), jnp.int32)
  params = common.random_params(model, one, one, one)
  packing = payload.get('pack_lengths') and data.Packing(payload['pack_lengths'],
                                                        payload['prompt_len'])

  def rank(rows, tokens):
    """-> (the compiled shape's key, the scores); packs the batch's real rows first."""
    if packing is None:
      return tokens.shape, scoring.jit_rank_classify(model, params, jnp.asarray(tokens),
                                                     label_ids)
    real = tokens[:len(rows)]
    packed, members = data.pack_encoder_rows(real, np.zeros(len(real), np.int32), packing)
    members = max(len(m) for m in members)
    key = (packed['encoder_input_tokens'].shape, members)
    return key, scoring.jit_rank_classify_packed(
        model, params, {k: jnp.asarray(v) for k, v in packed.items()}, label_ids,
        members=members)

  compile_s, seconds, shapes, positions = 0.0, 0.0, set(), 0
  for rows, tokens in inference.padded_batches(examples, payload['batch'], LENGTHS['inputs'],
                                               buckets):
    tick = time.perf_counter()
    key, scores = rank(rows, tokens)
    jax.block_until_ready(scores)
    if key not in shapes:  # jit compiled on the first call of a shape: timed again
      shapes.add(key)
      compile_s += time.perf_counter() - tick
      tick = time.perf_counter()
      key, scores = rank(rows, tokens)
      jax.block_until_ready(scores)
    seconds += time.perf_counter() - tick
    rows_by_length = key[0] if packing else (key[0], key[1] + payload['prompt_len'])
    positions += int(np.prod(rows_by_length))
  return {'examples_per_s': len(examples) / seconds, 'seconds': seconds,
          'compile_s_incl_first_call': compile_s, 'shapes': len(shapes),
          'encoder_positions_per_example': positions / len(examples),
          'examples': len(examples), 'peak_rss_mib': common.process_peak_rss_mib(),
          'xla_flags': xla_flags}


def _measure(payload: dict) -> dict:
  kind = payload['kind']
  if kind == 'ours_train':
    return _ours_train(payload)
  if kind == 'peft_train':
    return _peft_train(payload)
  if kind == 'ours_eval':
    return _ours_eval(payload)
  raise ValueError(f'{MODULE} worker: unknown measurement kind {kind!r}')


# ------------------------------------------------------------ driver


def example_texts(task: str, count: int, seed: int, shared: str) -> list[tuple[str, str]]:
  """(inputs, targets) texts of the first `count` training examples in our seeded order."""
  _task_env(shared)
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  data.import_task_modules()
  provider = data.get_mixture_or_task(task)
  ds = provider.get_dataset(None, split='train', shuffle=True, seed=seed, num_epochs=None,
                            trim_output_features=False)
  texts = []
  for ex in ds.take(count).as_numpy_iterator():
    texts.append((ex['inputs_pretokenized'].decode('utf-8'),
                  ex['targets_pretokenized'].decode('utf-8')))
  return texts


def payloads(args: argparse.Namespace, task: str, shape: dict, texts) -> dict[str, dict]:
  """The payload of each side for one task."""
  common_fields = {'task': task, 'shape': shape, 'steps': args.steps, 'batch': args.batch,
                   'prompt_len': args.prompt_len, 'seed': args.seed,
                   'learning_rate': args.learning_rate, 'shared': args.shared}
  vocab = os.path.join(args.shared, 'vocab', 't5', 'spiece.model')
  return {
      'ours_fixed': {**common_fields, 'kind': 'ours_train', 'buckets': None},
      'ours_bucketed': {**common_fields, 'kind': 'ours_train', 'buckets': args.buckets},
      'ours_packed': {**common_fields, 'kind': 'ours_train', 'buckets': args.buckets,
                      'pack_lengths': {'inputs': args.pack_inputs,
                                       'targets': args.pack_targets}},
      'peft': {**common_fields, 'kind': 'peft_train', 'grouped': False, 'texts': texts,
               'vocab': vocab},
      'peft_grouped': {**common_fields, 'kind': 'peft_train', 'grouped': True, 'texts': texts,
                       'vocab': vocab},
  }


def _median_row(results: Sequence[dict]) -> dict:
  row = dict(results[0])
  for key in ('examples_per_s', 'median_step_s'):
    values = [r[key] for r in results if key in r]
    if values:
      row[key] = statistics.median(values)
  row['rounds'] = len(results)
  row['examples_per_s_all'] = [r['examples_per_s'] for r in results]
  return row


def run(args: argparse.Namespace, worker=common.run_worker) -> dict:
  """Every side of every task, alternated round by round; returns the JSON-able report."""
  shape = common.model_shape(args.size)
  report = {'machine': common.machine_info(), 'settings': {
      k: v for k, v in vars(args).items() if k not in ('json',)}, 'tasks': {}}
  sides = [s for s in SIDES if s in args.sides]
  for key in args.tasks:
    task = TASKS[key]
    texts = example_texts(task, args.steps * args.batch, args.seed, args.shared)
    plan = payloads(args, task, shape, texts)
    results: dict[str, list] = {side: [] for side in sides}
    for round_index in range(args.rounds):
      for side in (sides if round_index % 2 == 0 else sides[::-1]):
        results[side].append(worker(MODULE, plan[side]))
        print(f'{key} round {round_index + 1} {side}: '
              f'{results[side][-1]["examples_per_s"]:.2f} ex/s', file=sys.stderr, flush=True)
    rows = {side: _median_row(values) for side, values in results.items()}
    report['tasks'][key] = {'task': task, 'sides': rows, 'ratios': ratios(rows)}
  if args.eval:
    rows = {}
    pack_lengths = {'inputs': args.pack_inputs, 'targets': args.pack_targets}
    for buckets, name, packed in ((None, 'fixed', None), (args.buckets, 'bucketed', None),
                                  (args.buckets, 'packed', pack_lengths)):
      rows[name] = worker(MODULE, {'kind': 'ours_eval', 'task': TASKS['sst2'], 'shape': shape,
                                   'batch': args.eval_batch, 'prompt_len': args.prompt_len,
                                   'buckets': buckets, 'shared': args.shared,
                                   'num_examples': args.eval_examples, 'pack_lengths': packed})
    fixed = rows['fixed']['examples_per_s']
    report['eval_sst2_dev'] = {
        **rows, 'bucketed_over_fixed': rows['bucketed']['examples_per_s'] / fixed,
        'packed_over_fixed': rows['packed']['examples_per_s'] / fixed,
        'packed_over_bucketed': (rows['packed']['examples_per_s']
                                 / rows['bucketed']['examples_per_s'])}
  return report


def ratios(rows: dict[str, dict]) -> dict[str, float]:
  """examples/s of ours bucketed over each other side (when both ran)."""
  out = {}
  if 'ours_bucketed' not in rows:
    return out
  ours = rows['ours_bucketed']['examples_per_s']
  for side in ('ours_fixed', 'peft', 'peft_grouped'):
    if side in rows:
      out[f'bucketed_over_{side}'] = ours / rows[side]['examples_per_s']
  if 'ours_packed' in rows:
    packed = rows['ours_packed']['examples_per_s']
    for side in ('ours_bucketed', 'peft', 'peft_grouped'):
      if side in rows:
        out[f'packed_over_{side}'] = packed / rows[side]['examples_per_s']
  return out


COLUMNS = [('side', 'side', 's'), ('examples/s', 'examples_per_s', '.2f'),
           ('median step s', 'median_step_s', '.2f'), ('compile s', 'compile_s', '.1f'),
           ('shapes', 'shapes', 'd'), ('input positions/ex', 'input_positions_per_example', '.1f'),
           ('real input tokens/ex', 'real_input_tokens_per_example', '.1f'),
           ('peak RSS MiB', 'peak_rss_mib', '.0f')]


def format_report(report: dict) -> str:
  lines = []
  for key, entry in report['tasks'].items():
    rows = [{'side': side, **row} for side, row in entry['sides'].items()]
    lines += [f'### {key} ({entry["task"]})', '', common.format_table(rows, COLUMNS), '']
    lines += [f'- {name}: {value:.2f}x' for name, value in entry['ratios'].items()] + ['']
  if 'eval_sst2_dev' in report:
    entry = report['eval_sst2_dev']
    lines.append(f'SST-2 dev rank classification: fixed {entry["fixed"]["examples_per_s"]:.1f} '
                 f'ex/s, bucketed {entry["bucketed"]["examples_per_s"]:.1f} ex/s '
                 f'({entry["bucketed_over_fixed"]:.2f}x), packed '
                 f'{entry["packed"]["examples_per_s"]:.1f} ex/s ({entry["packed_over_fixed"]:.2f}x'
                 f' fixed, {entry["packed_over_bucketed"]:.2f}x bucketed); encoder positions/ex '
                 + ', '.join(f'{name} {entry[name]["encoder_positions_per_example"]:.0f}'
                             for name in ('fixed', 'bucketed', 'packed')))
  return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f'python -m {MODULE}', description=__doc__.split('\n')[0])
  parser.add_argument('--tasks', default='sst2,rte', type=lambda s: [t for t in s.split(',') if t],
                      help="training tasks ('': none, e.g. with --eval alone)")
  parser.add_argument('--sides', default=','.join(SIDES), type=lambda s: s.split(','))
  parser.add_argument('--size', default='small', choices=tuple(common.SIZES))
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--prompt_len', type=int, default=100)
  parser.add_argument('--buckets', default='pow2',
                      help="LENGTH_BUCKETS of the bucketed and packed sides ('pow2', 'step16', ..)")
  parser.add_argument('--pack_inputs', type=int, default=None,
                      help='ours_packed: encoder row length, prompts included (default: '
                           'prompt_len + 512, the least that holds every example)')
  parser.add_argument('--pack_targets', type=int, default=32,
                      help='ours_packed: decoder row length (at least 16)')
  parser.add_argument('--steps', type=int, default=8,
                      help='timed steps per side (also the bucketing window)')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--learning_rate', type=float, default=0.3)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--eval', action='store_true', help='also SST-2 dev rank classification')
  parser.add_argument('--eval_examples', type=int, default=None)
  parser.add_argument('--eval_batch', type=int, default=32,
                      help='--eval: examples a batch (packed: packed into rows of '
                           '--pack_inputs)')
  parser.add_argument('--shared', default=shared_dir())
  parser.add_argument('--json', default=None, help="write the report here ('-': stdout)")
  args = parser.parse_args(argv)
  if args.pack_inputs is None:
    args.pack_inputs = args.prompt_len + LENGTHS['inputs']
  for key in args.tasks:
    if key not in TASKS:
      parser.error(f'--tasks: unknown {key!r}; known: {", ".join(TASKS)}')
  for side in args.sides:
    if side not in SIDES:
      parser.error(f'--sides: unknown {side!r}; known: {", ".join(SIDES)}')
  return args


def main(argv: Sequence[str]) -> None:
  if common.worker_main(argv, _measure):
    return
  args = parse_args(argv)
  if not os.path.isdir(args.shared):
    raise SystemExit(f'{args.shared} not found: the benchmark reads SST-2, RTE and the T5 '
                     'vocabulary from ../shared (or --shared).')
  report = run(args)
  print(format_report(report))
  if args.json:
    common.write_json(args.json, report)


if __name__ == '__main__':
  main(sys.argv[1:])
