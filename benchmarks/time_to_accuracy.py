"""Time to accuracy: our prompt tuning vs PEFT's, same pretrained frozen model, same task.

  python -m benchmarks.time_to_accuracy --steps 600 --eval_every 100 --json tta.json --png tta.png
  python -m benchmarks.time_to_accuracy --task smoke_transfer --steps 300 --eval_every 50 \
    --json tta_smoke.json

`--task sst2` (default; GLUE SST-2 from `../shared`; the mini model stays near chance there)
or `--task smoke_transfer` (`smoke_sentiment_transfer`, the README's main run, generated
offline: its dev reviews use adjectives no training review has, so the mini model learns it
only through what it knows about words: where time to accuracy is measured).
`--pack_inputs R --pack_targets D` trains our side with PACK_LENGTHS (packed rows, a
prompt per example) instead of one example a row.

Both sides prompt-tune the shipped pretrained mini T5 (`t5_mini`, LM-adapted;
`--checkpoint` for another T5X checkpoint of that shape) on the task's train split, with
the same prompt length, the same initial prompt (our
class-label init, copied into PEFT's prompt embedding), batch size and
examples, and evaluate by rank classification over the label words on the
same dev examples every `eval_every` steps. Each side uses its own
standard recipe:

- ours: `runs/prompt_finetune.gin`'s Adafactor, lr 0.3 constant, length-bucketed
  batches (LENGTH_BUCKETS='pow2'), the run built by `config.configure` as
  `ptj train` builds it;
- PEFT: `T5ForConditionalGeneration.from_pretrained` on our `save_hf` export,
  `PromptTuningConfig` (SEQ_2_SEQ_LM), AdamW lr 3e-2 with linear decay and no
  warm-up (PEFT's seq2seq prompt-tuning example), `DataCollatorForSeq2Seq`
  padding to the longest example, the examples in our seeded order.

Dropout is 0 on both sides (t5_mini was pre-trained without it). The clock
counts training only (data, compilation and steps; evaluation excluded). The
report: each side's curve (train seconds, step, accuracy), its final and best
accuracy, the target (`--target_fraction` of the best final accuracy of either
side) and the seconds each side needed to reach it, and the load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Optional, Sequence

import numpy as np

from benchmarks import common
from benchmarks import workload

MODULE = 'benchmarks.time_to_accuracy'
TASKS = {'sst2': 'glue_sst2_v002', 'smoke_transfer': 'smoke_sentiment_transfer'}
LENGTHS = {'inputs': 128, 'targets': 8}
PEFT_LEARNING_RATE = 3e-2


def pretrained_dir() -> str:
  return os.path.join(common.REPO_ROOT, 'prompt_tuning_jax', 'pretrained', 't5_mini')


def _env(payload: dict) -> None:
  """The task environment and `ptj`'s XLA flags for this CPU kind (before JAX starts)."""
  from prompt_tuning_jax import cpu_flags  # pylint: disable=g-import-not-at-top
  os.environ['PTJ_VOCAB'] = payload['vocab']
  os.environ.setdefault('PTJ_GLUE_DIR', os.path.join(payload['shared'], 'data', 'glue'))
  cpu_flags.apply_defaults()


def _configure(payload: dict, model_dir: str):
  """The run as `ptj train` would build it from the gin files and flags."""
  from prompt_tuning_jax import config  # pylint: disable=g-import-not-at-top
  bindings = [f"MIXTURE_OR_TASK_NAME = '{payload['task']}'", f"MODEL_DIR = '{model_dir}'",
              f"INITIAL_CHECKPOINT_PATH = '{payload['checkpoint']}'",
              f"get_vocabulary.path = '{payload['vocab']}'",
              f'TASK_FEATURE_LENGTHS = {LENGTHS}', f"BATCH_SIZE = {payload['batch']}",
              f"PROMPT_LENGTH = {payload['prompt_len']}", "PROMPT_INIT = 'class_labels'",
              'DROPOUT_RATE = 0.0', f"SEED = {payload['seed']}", "LENGTH_BUCKETS = 'pow2'"]
  if payload.get('pack_lengths'):
    bindings.append(f"PACK_LENGTHS = {payload['pack_lengths']}")
  if payload.get('decay'):  # linearly to 0 over the run, as PEFT's recipe decays
    bindings += ['LEARNING_RATE = @optax.linear_schedule()',
                 f"optax.linear_schedule.init_value = {payload['learning_rate']}",
                 'optax.linear_schedule.end_value = 0.0',
                 f"optax.linear_schedule.transition_steps = {payload['steps']}"]
  else:
    bindings.append(f"LEARNING_RATE = {payload['learning_rate']}")
  return config.configure('train', ['models/t5_mini.gin', 'runs/prompt_finetune.gin'],
                          bindings).settings


def _built(payload: dict):
  """(run, setup, flat params with the initial prompt), built as `ptj train` builds them."""
  _env(payload)
  from prompt_tuning_jax import run_setup  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import tree as tree_lib  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix='ptj_tta_') as model_dir:
    run = _configure(payload, model_dir)
    s = run_setup.setup(run, batch_size=run.data.batch_size)
    return run, s, tree_lib.flatten(run_setup.build_params(s))


def _prepare(payload: dict) -> dict:
  """Our initial prompt (.npy) and the frozen model as a Hugging Face directory."""
  from prompt_tuning_jax.checkpoints import tree as tree_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import hf  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models.prompted import PROMPT_PATH  # pylint: disable=g-import-not-at-top
  run, _, flat = _built(payload)
  prompt = np.asarray(flat.pop(PROMPT_PATH), np.float32)
  np.save(payload['prompt_file'], prompt)
  hf.save_hf(tree_lib.unflatten(flat), run.model.config, payload['hf_dir'])
  return {'prompt_shape': list(prompt.shape)}


def _dev_examples(task: str, count: Optional[int]):
  from prompt_tuning_jax import inference  # pylint: disable=g-import-not-at-top
  examples, _ = inference.examples_from_task(task, 'validation', LENGTHS, count)
  return examples


def _ours(payload: dict) -> dict:
  """Our train step and rank classification, timed; the curve."""
  run, s, flat = _built(payload)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import inference  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import run_setup  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import scoring  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import tree as tree_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.models.prompted import PROMPT_PATH  # pylint: disable=g-import-not-at-top

  task = payload['task']
  flat[PROMPT_PATH] = np.load(payload['prompt_file'])  # the prompt PEFT starts from too
  params = tree_lib.unflatten(flat)
  opt = run.optimizer
  trainable, frozen = optim.partition(params, run.trainable_rules)
  tx = optim.partitioned_optimizer(params, opt.optimizer(learning_rate=opt.learning_rate),
                                   run.trainable_rules)
  state = train_step_lib.init_train_state(trainable, frozen, tx)
  step_fn = jax.jit(train_step_lib.make_train_step(run.model, tx), donate_argnums=(0,))
  examples = _dev_examples(task, payload['eval_examples'])
  targets = [ex.extra['target'] for ex in examples]
  words = data.label_words(task)
  label_ids = jnp.asarray(scoring.encode_labels(s.vocabularies['targets'], words))
  buckets = run.data.length_buckets['inputs']

  def accuracy(state) -> float:
    merged = optim.merge(state.trainable, frozen)
    predictions = [None] * len(examples)
    for rows, tokens in inference.padded_batches(examples, 64, LENGTHS['inputs'], buckets):
      best, _ = jax.device_get(scoring.jit_rank_classify(run.model, merged,
                                                         jnp.asarray(tokens), label_ids))
      for i, b in zip(rows, best):
        predictions[i] = words[b]
    return 100.0 * float(np.mean([p == t for p, t in zip(predictions, targets)]))

  curve = [{'step': 0, 'train_seconds': 0.0, 'accuracy': accuracy(state)}]
  batches = data.train_batches(run.data, task_index=s.task_index,
                               packing=run_setup.packing(s))
  compiled, seconds = {}, 0.0
  for step in range(1, payload['steps'] + 1):
    start = time.perf_counter()
    batch = {k: v for k, v in next(batches).items() if k != data.TRUNCATED}
    key = (batch['encoder_input_tokens'].shape, batch['decoder_target_tokens'].shape)
    if key not in compiled:
      compiled[key] = step_fn.lower(state, frozen, batch).compile()
    state, metrics = compiled[key](state, frozen, batch)
    jax.block_until_ready(metrics)
    seconds += time.perf_counter() - start
    if step % payload['eval_every'] == 0 or step == payload['steps']:
      curve.append({'step': step, 'train_seconds': seconds, 'accuracy': accuracy(state),
                    'loss': float(metrics['loss'])})
  return {'curve': curve, 'shapes': len(compiled)}


def _peft(payload: dict) -> dict:
  """PEFT prompt tuning of the same model from the same prompt; the curve."""
  import torch  # pylint: disable=g-import-not-at-top
  import peft  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(payload['seed'])
  tokenizer = workload.t5_tokenizer(payload['vocab'])
  prompt = torch.from_numpy(np.load(payload['prompt_file']))
  model = transformers.T5ForConditionalGeneration.from_pretrained(payload['hf_dir'],
                                                                  dropout_rate=0.0)
  model = peft.get_peft_model(model, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=prompt.shape[0],
      num_transformer_submodules=1))  # rows [P, 2P) of PEFT's default are never used
  with torch.no_grad():
    model.prompt_encoder.default.embedding.weight.copy_(prompt)
  steps, batch_size = payload['steps'], payload['batch']
  features = []
  for inputs, targets in payload['texts'][:steps * batch_size]:
    encoded = dict(tokenizer(inputs, max_length=LENGTHS['inputs'], truncation=True))
    encoded['labels'] = tokenizer(text_target=targets, max_length=LENGTHS['targets'],
                                  truncation=True)['input_ids']
    features.append(encoded)
  collator = transformers.DataCollatorForSeq2Seq(tokenizer, padding='longest',
                                                 label_pad_token_id=-100)
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=PEFT_LEARNING_RATE)
  schedule = transformers.get_linear_schedule_with_warmup(optimizer, 0, steps)
  dev = payload['dev_texts']
  words = payload['label_words']
  label_ids = [tokenizer(text_target=w)['input_ids'] for w in words]

  def accuracy() -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
      for start in range(0, len(dev), 64):
        chunk = dev[start:start + 64]
        encoded = tokenizer([t for t, _ in chunk], max_length=LENGTHS['inputs'],
                            truncation=True, padding='longest', return_tensors='pt')
        scores = []
        for ids in label_ids:
          labels = torch.tensor([ids] * len(chunk))
          logits = model(**encoded, labels=labels).logits  # [b, len(ids), vocab]
          log_probs = torch.log_softmax(logits.float(), -1)
          scores.append(log_probs.gather(-1, labels[..., None])[..., 0].sum(-1))
        best = torch.stack(scores, -1).argmax(-1).tolist()
        correct += sum(words[b] == target for b, (_, target) in zip(best, chunk))
    model.train()
    return 100.0 * correct / len(dev)

  curve = [{'step': 0, 'train_seconds': 0.0, 'accuracy': accuracy()}]
  seconds = 0.0
  for step in range(1, steps + 1):
    start = time.perf_counter()
    batch = collator(features[(step - 1) * batch_size:step * batch_size])
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    seconds += time.perf_counter() - start
    if step % payload['eval_every'] == 0 or step == steps:
      curve.append({'step': step, 'train_seconds': seconds, 'accuracy': accuracy(),
                    'loss': float(loss)})
  return {'curve': curve, 'torch_threads': torch.get_num_threads()}


def _measure(payload: dict) -> dict:
  kind = payload['kind']
  if kind == 'prepare':
    return _prepare(payload)
  if kind == 'ours':
    return _ours(payload)
  if kind == 'peft':
    return _peft(payload)
  raise ValueError(f'{MODULE} worker: unknown measurement kind {kind!r}')


# ------------------------------------------------------------ driver


def seconds_to(curve: Sequence[dict], target: float) -> Optional[float]:
  """Train seconds at the first evaluation at or above `target` (None: never)."""
  return next((p['train_seconds'] for p in curve if p['accuracy'] >= target), None)


def summarise(curves: dict[str, list], fraction: float) -> dict:
  finals = {side: curve[-1]['accuracy'] for side, curve in curves.items()}
  target = fraction * max(finals.values())
  out = {'target_accuracy': target, 'final_accuracy': finals,
         'best_accuracy': {s: max(p['accuracy'] for p in c) for s, c in curves.items()},
         'seconds_to_target': {s: seconds_to(c, target) for s, c in curves.items()},
         'train_seconds': {s: c[-1]['train_seconds'] for s, c in curves.items()}}
  ours, theirs = out['seconds_to_target'].get('ours'), out['seconds_to_target'].get('peft')
  if ours and theirs:
    out['speedup_to_target'] = theirs / ours
  out['speedup_per_step'] = out['train_seconds']['peft'] / out['train_seconds']['ours']
  return out


def plot(curves: dict[str, list], summary: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for side, curve in curves.items():
    ax.plot([p['train_seconds'] for p in curve], [p['accuracy'] for p in curve], marker='o',
            label=side)
  ax.axhline(summary['target_accuracy'], color='grey', linestyle='--', label='target')
  ax.set_xlabel('training seconds (evaluation excluded)')
  ax.set_ylabel(f"{summary['task']} dev accuracy (%)")
  ax.set_title(f"Prompt tuning t5_mini on {summary['task']}: time to accuracy")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def run(args: argparse.Namespace, worker=common.run_worker) -> dict:
  with tempfile.TemporaryDirectory(prefix='ptj_tta_') as tmp:
    task = TASKS[args.task]
    base = {'task': task, 'checkpoint': args.checkpoint, 'vocab': args.vocab, 'shared': args.shared,
            'batch': args.batch, 'prompt_len': args.prompt_len, 'seed': args.seed,
            'learning_rate': args.learning_rate, 'decay': args.decay, 'steps': args.steps,
            'eval_every': args.eval_every, 'eval_examples': args.eval_examples,
            'prompt_file': os.path.join(tmp, 'prompt.npy'), 'hf_dir': os.path.join(tmp, 'hf'),
            'pack_lengths': args.pack_inputs and {'inputs': args.pack_inputs,
                                                  'targets': args.pack_targets}}
    prepared = worker(MODULE, {**base, 'kind': 'prepare'})
    os.environ['PTJ_VOCAB'] = args.vocab  # the example texts (any vocabulary gives them)
    texts = workload.example_texts(task, args.steps * args.batch, args.seed, args.shared)
    from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
    dev = [(ex.input, ex.extra['target']) for ex in _dev_examples(task, args.eval_examples)]
    peft_payload = {**base, 'kind': 'peft', 'texts': texts, 'dev_texts': dev,
                    'label_words': data.label_words(task)}
    curves: dict[str, list] = {}
    order = ['ours', 'peft'] if args.first == 'ours' else ['peft', 'ours']
    for side in order:
      tick = time.time()
      result = worker(MODULE, peft_payload if side == 'peft' else {**base, 'kind': 'ours'})
      curves[side] = result['curve']
      print(f'{side}: final accuracy {result["curve"][-1]["accuracy"]:.1f} after '
            f'{result["curve"][-1]["train_seconds"]:.1f}s of training '
            f'({time.time() - tick:.0f}s wall)', file=sys.stderr, flush=True)
  summary = summarise(curves, args.target_fraction)
  return {'machine': common.machine_info(), 'load_average_end': list(os.getloadavg()),
          'task': TASKS[args.task],
          'settings': {k: v for k, v in vars(args).items() if k not in ('json', 'png')},
          'prompt_shape': prepared['prompt_shape'], 'curves': curves, **summary}


def format_report(report: dict) -> str:
  lines = [f"target: {report['target_accuracy']:.1f}% (of the best final accuracy)"]
  for side in report['curves']:
    reached = report['seconds_to_target'][side]
    lines.append(f"{side}: final {report['final_accuracy'][side]:.1f}%, best "
                 f"{report['best_accuracy'][side]:.1f}%, {report['train_seconds'][side]:.1f}s "
                 f"of training, target reached after "
                 f"{'never' if reached is None else f'{reached:.1f}s'}")
  if 'speedup_to_target' in report:
    lines.append(f"ours reaches the target {report['speedup_to_target']:.2f}x faster")
  lines.append(f"training time per step, PEFT / ours: {report['speedup_per_step']:.2f}x")
  return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f'python -m {MODULE}', description=__doc__.split('\n')[0])
  parser.add_argument('--task', choices=tuple(TASKS), default='sst2')
  parser.add_argument('--pack_inputs', type=int, default=None,
                      help='ours: PACK_LENGTHS inputs row length (prompts included); None: '
                           'one example a row')
  parser.add_argument('--pack_targets', type=int, default=16,
                      help='ours: PACK_LENGTHS targets row length')
  parser.add_argument('--checkpoint', default=os.path.join(pretrained_dir(), 'lm_adapted'))
  parser.add_argument('--vocab', default=os.path.join(pretrained_dir(), 'spiece.model'))
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--eval_every', type=int, default=100)
  parser.add_argument('--eval_examples', type=int, default=None, help='None: all 872')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--prompt_len', type=int, default=20)
  parser.add_argument('--learning_rate', type=float, default=0.3, help='ours (Adafactor)')
  parser.add_argument('--decay', action='store_true',
                      help='ours: the rate decays linearly to 0 (default: constant, the paper)')
  parser.add_argument('--target_fraction', type=float, default=0.9)
  parser.add_argument('--first', choices=('ours', 'peft'), default='ours')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--shared', default=workload.shared_dir())
  parser.add_argument('--json', default=None)
  parser.add_argument('--png', default=None)
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  if common.worker_main(argv, _measure):
    return
  args = parse_args(argv)
  if args.task == 'sst2' and not os.path.isdir(args.shared):
    raise SystemExit(f'{args.shared} not found: the benchmark reads SST-2 from ../shared '
                     '(or --shared).')
  report = run(args)
  print(format_report(report))
  if args.json:
    common.write_json(args.json, report)
  if args.png:
    plot(report['curves'], report, args.png)


if __name__ == '__main__':
  main(sys.argv[1:])
