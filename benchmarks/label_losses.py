"""Training losses over the label set against token cross-entropy, on the shipped t5_mini.

  python -m benchmarks.label_losses --out /tmp/losses [--jobs 2] [--tasks sst2 smoke]

For each LOSS and task: the learning rate chosen from LEARNING_RATES by the
final dev accuracy of seed 0, then SEEDS at that rate. SST-2 uses the study's
recipe (benchmarks/reproduction.py: 600 steps, the rate decaying linearly to 0,
batch 32, dropout 0, inputs cut at 64 tokens, rank classification of all 872
dev sentences) at P=100; the smoke transfer task the README's main run
(runs/smoke_pretrained.gin: P=50, batch 16, 600 steps, 200 validation reviews).
Every run is an ordinary `ptj train` in its own MODEL_DIR
(OUT/<task>/<loss>/lr<rate>/runs/<name>): rerunning resumes or skips. Writes
OUT/results.json and OUT/label_losses.md: each loss's sweep, its seeds
(mean ± population std), the paired difference against token
cross-entropy seed by seed (mean ± its standard error) and, per seed, the
exact McNemar p-value of the two runs' predictions on the same dev examples
(`ptj infer` with rank classification of each final checkpoint).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks import reproduction

LOSSES = ('token_cross_entropy', 'sequence_cross_entropy', 'perceptron', 'hinge')
LEARNING_RATES = (0.01, 0.03, 0.1)
SEEDS = (0, 1, 2)
SST2_PROMPT_LENGTH = 100
SMOKE_STEPS = 600


def sst2_setting(loss: str, rate: float) -> reproduction.Setting:
  return dataclasses.replace(reproduction.Setting(), loss=loss, prompt_learning_rate=rate,
                             default_prompt_length=SST2_PROMPT_LENGTH, evals_per_run=1)


def smoke_flags(loss: str, rate: float, seed: int, model_dir: str) -> list[str]:
  """The README's main run (runs/smoke_pretrained.gin) with another loss, rate and seed."""
  flags = ['--gin_file=runs/smoke_pretrained.gin', f'--gin.MODEL_DIR={model_dir}',
           f'--gin.SEED={seed}', f'--gin.optax.linear_schedule.init_value={rate}',
           f'--gin.EVAL_PERIOD={SMOKE_STEPS}', f'--gin.CHECKPOINT_PERIOD={SMOKE_STEPS}',
           '--gin.BEST_METRIC=None']
  return flags + ([f'--gin.LOSS={loss}'] if loss != 'token_cross_entropy' else [])


def run(task: str, loss: str, rate: float, seed: int, out: str, env: dict[str, str]
        ) -> dict[str, Any]:
  """One run (trained, resumed or read back): its final accuracy and curve."""
  directory = os.path.join(out, task, loss, f'lr{rate}')
  if task == 'sst2':
    result = reproduction.run_one(
        reproduction.Run('sst2', prompt_length=SST2_PROMPT_LENGTH, seed=seed),
        sst2_setting(loss, rate), directory, env, dict(reproduction.CHECKPOINTS))
  else:
    model_dir = os.path.join(directory, 'runs', f'smoke-s{seed}')
    done = os.path.join(model_dir, 'result.json')
    if not os.path.exists(done):
      os.makedirs(model_dir, exist_ok=True)
      tick = time.time()
      reproduction._ptj(['train', *smoke_flags(loss, rate, seed, model_dir)], env,  # pylint: disable=protected-access
                        os.path.join(model_dir, 'study.log'))
      curve = reproduction.eval_curve(model_dir)
      with open(done, 'w') as f:
        json.dump({'model_dir': model_dir, 'accuracy': curve[-1][1], 'curve': curve,
                   'seconds': round(time.time() - tick, 1)}, f, indent=1)
    with open(done) as f:
      result = json.load(f)
  return {'task': task, 'loss': loss, 'rate': rate, 'seed': seed,
          'accuracy': result['accuracy'], 'seconds': result['seconds'],
          'model_dir': result['model_dir'],
          'train': _last_train_record(result['model_dir'])}


def _last_train_record(model_dir: str) -> dict[str, float]:
  """The last train log record: loss, token or rank accuracy, prompt and embedding norms."""
  records = [r for r in _records(model_dir) if r.get('split') == 'train']
  keep = ('loss', 'accuracy', 'rank_accuracy', 'prompt_norm', 'embedding_norm')
  return {k: v for k, v in (records[-1] if records else {}).items() if k in keep}


def _records(model_dir: str) -> list[dict]:
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]


def correct_predictions(model_dir: str, env: dict[str, str]) -> list[bool]:
  """Whether the final checkpoint's rank-classification prediction of each dev example is
  right, in the examples' order (`ptj infer`, written once into MODEL_DIR/inference)."""
  out = os.path.join(model_dir, 'inference', 'rank_validation.jsonl')
  if not os.path.exists(out):
    reproduction._ptj(['infer', f'--gin.MODEL_DIR={model_dir}',  # pylint: disable=protected-access
                       '--gin.INFER_METHOD=rank_classification', '--gin.INFER_SPLIT=validation',
                       f'--gin.INFER_OUTPUT_FILE={out}'], env,
                      os.path.join(model_dir, 'study.log'))
  with open(out) as f:
    return [r['prediction'] == r['target'] for r in map(json.loads, f)]


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
  """Exact (binomial) two-sided McNemar test of two classifiers on the same examples."""
  only_a = sum(x and not y for x, y in zip(a, b, strict=True))
  only_b = sum(y and not x for x, y in zip(a, b, strict=True))
  n = only_a + only_b
  tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n if n else 1.0
  return {'only_first': only_a, 'only_second': only_b, 'p': min(1.0, 2 * tail)}


def _parallel(jobs: int, calls: Sequence[tuple]) -> list[dict[str, Any]]:
  with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
    return list(pool.map(lambda args: run(*args), calls))


# ------------------------------------------------------------------ summary


def _stats(values: Sequence[float]) -> dict[str, Any]:
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def summarise(results: list[dict[str, Any]], tasks: Sequence[str],
              losses: Sequence[str]) -> dict[str, Any]:
  """Per task and loss: the sweep (seed 0), the chosen rate, the seeds, paired differences."""
  out = {}
  for task in tasks:
    out[task] = {}
    for loss in losses:
      mine = [r for r in results if r['task'] == task and r['loss'] == loss]
      sweep = {r['rate']: r['accuracy'] for r in mine if r['seed'] == 0}
      if not sweep:
        continue
      rate = max(sweep, key=lambda k: (sweep[k], -k))  # ties: the lower rate
      seeds = {r['seed']: r for r in mine if r['rate'] == rate}
      out[task][loss] = {'sweep': sweep, 'rate': rate,
                         'seeds': {s: r['accuracy'] for s, r in sorted(seeds.items())},
                         'stats': _stats([r['accuracy'] for r in seeds.values()]),
                         'train': {s: r['train'] for s, r in sorted(seeds.items())}}
    base = out[task].get('token_cross_entropy')
    for loss, entry in out[task].items():
      if base is None or loss == 'token_cross_entropy':
        continue
      paired = [entry['seeds'][s] - base['seeds'][s] for s in entry['seeds'] if s in base['seeds']]
      if paired:
        error = float(np.std(paired, ddof=1) / np.sqrt(len(paired))) if len(paired) > 1 else None
        entry['paired_difference'] = {'mean': float(np.mean(paired)), 'standard_error': error,
                                      'values': paired}
  return out


def table(summary: dict[str, Any]) -> str:
  """The results as markdown."""
  lines = ['| task | loss | seed 0 at lr 0.01 / 0.03 / 0.1 | chosen lr | seeds | mean ± std '
           '| paired difference vs token CE (± s.e.) | prompt norm (embedding), seed 0 |',
           '|---|---|---|---|---|---|---|---|']
  for task, losses in summary.items():
    for loss, e in losses.items():
      sweep = ' / '.join('—' if e['sweep'].get(r) is None else f"{e['sweep'][r]:.1f}"
                         for r in LEARNING_RATES)
      seeds = ' / '.join(f'{v:.1f}' for v in e['seeds'].values())
      paired = e.get('paired_difference')
      diff = '' if paired is None else f"{paired['mean']:+.1f}" + (
          '' if paired['standard_error'] is None else f" ± {paired['standard_error']:.1f}")
      train = e['train'].get(0, {})
      norm = (f"{train['prompt_norm']:.2f} ({train['embedding_norm']:.2f})"
              if 'prompt_norm' in train else '')
      tests = e.get('mcnemar', {})
      if tests:
        diff += ' (McNemar p ' + ' / '.join(f"{tests[s]['p']:.3f}" for s in sorted(tests)) + ')'
      lines.append(f"| {task} | {loss} | {sweep} | {e['rate']} | {seeds} | "
                   f"{e['stats']['mean']:.1f} ± {e['stats']['std']:.1f} | {diff} | {norm} |")
  return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='study directory (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(reproduction.REPO), 'shared'))
  p.add_argument('--tasks', nargs='+', default=['sst2', 'smoke'], choices=['sst2', 'smoke'])
  p.add_argument('--losses', nargs='+', default=list(LOSSES), choices=LOSSES)
  p.add_argument('--jobs', type=int, default=1, help='runs at a time')
  p.add_argument('--sweep_only', action='store_true', help='only the seed-0 rate sweep')
  p.add_argument('--mcnemar', action='store_true',
                 help='predict the dev split with each final checkpoint; McNemar per seed')
  args = p.parse_args(argv)
  env = reproduction._env(args.shared)  # pylint: disable=protected-access
  sweep = [(task, loss, rate, 0, args.out, env) for task in args.tasks for loss in args.losses
           for rate in LEARNING_RATES]
  results = _parallel(args.jobs, sweep)
  if not args.sweep_only:
    chosen = summarise(results, args.tasks, args.losses)
    seeds = [(task, loss, chosen[task][loss]['rate'], seed, args.out, env)
             for task in args.tasks for loss in args.losses for seed in SEEDS if seed]
    results += _parallel(args.jobs, seeds)
  summary = summarise(results, args.tasks, args.losses)
  if args.mcnemar:
    for task, losses in summary.items():
      base = losses.get('token_cross_entropy')
      for loss, entry in losses.items():
        if base is None or loss == 'token_cross_entropy':
          continue
        entry['mcnemar'] = {}
        for seed in set(entry['seeds']) & set(base['seeds']):
          dirs = [r['model_dir'] for r in results if r['task'] == task and r['seed'] == seed
                  and (r['loss'], r['rate']) in ((loss, entry['rate']),
                                                 ('token_cross_entropy', base['rate']))]
          ours, theirs = (correct_predictions(d, env) for d in sorted(
              dirs, key=lambda d: 'token_cross_entropy' in d))
          entry['mcnemar'][seed] = mcnemar(ours, theirs)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'runs': results, 'summary': summary}, f, indent=1)
  text = table(summary)
  with open(os.path.join(args.out, 'label_losses.md'), 'w') as f:
    f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
