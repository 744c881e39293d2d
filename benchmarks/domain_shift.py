"""Domain shift on the mini model, in the spirit of the paper's Table 1 (docs/reproduction.md).

Prompt tuning and model tuning of the shipped `t5_mini`, each trained in one domain and
evaluated zero-shot in another, the target's examples shown in the source task's input
format and label words (`tasks/transfer.py`):

  SST-2 (real film-review sentences)  ->  the smoke task's held-out-word reviews (generated)
  the smoke task's reviews            ->  SST-2 dev

Every run is an ordinary `ptj train` in its own MODEL_DIR under OUT/runs, then one `ptj eval`
of its last step on the direction's zero-shot mixture (the source's validation split and the
target rendered as the source), rank classification over the source's label words. A
finished run is skipped, an interrupted one resumes:

  python -m benchmarks.domain_shift --out /tmp/shift                  # 2 x 2 x 3 seeds
  python -m benchmarks.domain_shift --out /tmp/shift --seeds 0 --jobs 1

Writes OUT/results.json and OUT/domain_shift.md: in-domain and out-of-domain accuracy side
by side (mean ± std over the seeds), the drop, and the paper's claim (the prompt loses less)
with the difference of the drops and its standard error.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC = 'rank_classification/accuracy'
STEPS = 600
# Long enough for every SST-2 sentence as a review (the smoke runs train at 32).
EVAL_LENGTHS = "{'inputs': 64, 'targets': 8}"


@dataclasses.dataclass(frozen=True)
class Direction:
  """Train on `source_task`, evaluate `zero_shot` (source validation + target as source)."""
  key: str
  source_task: str
  target_task: str  # the target rendered as the source (a task of `zero_shot`)
  zero_shot: str
  label: str  # 'SST-2 -> smoke reviews'
  prompt_flags: tuple[str, ...]  # the prompt-tuning recipe (after the common flags)
  model_flags: tuple[str, ...]  # the model-tuning recipe


def _schedule(rate: float) -> tuple[str, ...]:
  """The rate decaying linearly to 0 over the run (docs/reproduction.md: at a constant rate
  the final prompt is a lottery)."""
  return ('--gin.LEARNING_RATE=@optax.linear_schedule()',
          f'--gin.optax.linear_schedule.init_value={rate}',
          '--gin.optax.linear_schedule.end_value=0.0',
          f'--gin.optax.linear_schedule.transition_steps={STEPS}')


# SST-2: the recipe of docs/reproduction.md's study (P=100: its best prompt length).
_SST2 = ('--gin_file=models/t5_mini.gin', '--gin.MIXTURE_OR_TASK_NAME=glue_sst2_v002',
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}", '--gin.BATCH_SIZE=32',
         '--gin.DROPOUT_RATE=0.0', '--gin.EVAL_BATCH_SIZE=32')
# The smoke task: the README's main run (runs/smoke_pretrained.gin: P=50, batch 16).
_SMOKE = ('--gin_file=models/t5_mini.gin',
          '--gin.MIXTURE_OR_TASK_NAME=smoke_sentiment_transfer',
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}", '--gin.BATCH_SIZE=16',
          '--gin.LENGTH_BUCKETS=None', '--gin.DROPOUT_RATE=0.0', '--gin.EVAL_BATCH_SIZE=50')

DIRECTIONS = (
    Direction('sst2_to_smoke', 'glue_sst2_v002', 'smoke_sentiment_transfer_from_sst2',
              'smoke_sentiment_transfer_from_sst2_zeroshot', 'SST-2 -> smoke reviews',
              ('--gin_file=runs/prompt_finetune.gin', *_SST2, '--gin.PROMPT_LENGTH=100',
               '--gin.PROMPT_INIT=class_labels', *_schedule(0.03)),
              ('--gin_file=runs/model_finetune.gin', *_SST2, *_schedule(1e-3))),
    Direction('smoke_to_sst2', 'smoke_sentiment_transfer', 'glue_sst2_from_smoke_v002',
              'glue_sst2_from_smoke_zeroshot_v002', 'smoke reviews -> SST-2',
              ('--gin_file=runs/smoke_pretrained.gin',),
              ('--gin_file=runs/model_finetune.gin', *_SMOKE, *_schedule(1e-3))),
)


@dataclasses.dataclass(frozen=True)
class Run:
  direction: str
  tuning: str  # 'prompt' | 'model'
  seed: int

  @property
  def name(self) -> str:
    return f'{self.direction}-{self.tuning}-s{self.seed}'


def direction(key: str) -> Direction:
  return next(d for d in DIRECTIONS if d.key == key)


def plan(seeds: Sequence[int]) -> list[Run]:
  return [Run(d.key, tuning, seed) for d in DIRECTIONS for tuning in ('prompt', 'model')
          for seed in seeds]


def train_flags(run: Run, model_dir: str) -> list[str]:
  """The `ptj train` arguments of a run: its recipe, one eval and one checkpoint at the end."""
  d = direction(run.direction)
  recipe = d.prompt_flags if run.tuning == 'prompt' else d.model_flags
  return [*recipe, f'--gin.MODEL_DIR={model_dir}', f'--gin.SEED={run.seed}',
          f'--gin.TRAIN_STEPS={STEPS}', f'--gin.EVAL_PERIOD={STEPS}',
          f'--gin.CHECKPOINT_PERIOD={STEPS}', '--gin.KEEP_CHECKPOINTS=1',
          '--gin.LOG_PERIOD=100', "--gin.EVAL_METHODS=('rank_classification',)",
          '--gin.BEST_METRIC=None']


def eval_flags(run: Run, model_dir: str) -> list[str]:
  """The `ptj eval` arguments: the last step on the direction's zero-shot mixture."""
  return [f'--gin.MODEL_DIR={model_dir}',
          f'--gin.MIXTURE_OR_TASK_NAME={direction(run.direction).zero_shot}',
          f'--gin.TASK_FEATURE_LENGTHS={EVAL_LENGTHS}', f'--gin.CHECKPOINT_STEP={STEPS}',
          "--gin.EVAL_METHODS=('rank_classification',)", '--gin.BEST_METRIC=None']


def _ptj(args: Sequence[str], env: dict[str, str], log_path: str) -> None:
  with open(log_path, 'a') as log:
    log.write(f'\n$ ptj {" ".join(args)}\n')
    log.flush()
    code = subprocess.call(['ptj', *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                           cwd=REPO)
  if code:
    raise RuntimeError(f'ptj {args[0]} failed (exit {code}); see {log_path}')


def run_one(run: Run, out: str, env: dict[str, str]) -> dict[str, Any]:
  """Trains (or resumes, or skips) one run and evaluates it; returns its result record."""
  model_dir = os.path.join(out, 'runs', run.name)
  done = os.path.join(model_dir, 'result.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  os.makedirs(model_dir, exist_ok=True)
  log = os.path.join(model_dir, 'domain_shift.log')
  tick = time.time()
  if not os.path.isdir(os.path.join(model_dir, 'checkpoints', str(STEPS))):  # else trained
    _ptj(['train', *train_flags(run, model_dir)], env, log)
  _ptj(['eval', *eval_flags(run, model_dir)], env, log)
  result = {**dataclasses.asdict(run), 'name': run.name, 'model_dir': model_dir,
            **accuracies(run, model_dir), 'seconds': round(time.time() - tick, 1)}
  with open(done, 'w') as f:
    json.dump(result, f, indent=1)
  return result


def accuracies(run: Run, model_dir: str) -> dict[str, float]:
  """{'in_domain', 'out_of_domain'}: the run's last-step accuracies on its source's validation
  split and on the target shown as the source."""
  # Imported here: the driver process itself needs no JAX.
  from prompt_tuning_jax.analysis import tables  # pylint: disable=g-import-not-at-top
  d = direction(run.direction)
  evals = tables.eval_metrics(model_dir, STEPS)
  return {'in_domain': evals[d.source_task][1][METRIC],
          'out_of_domain': evals[d.target_task][1][METRIC]}


# ------------------------------------------------------------------ summary


def _stats(values: Sequence[float]) -> dict[str, Any]:
  """Mean, population std and count (the study's convention: docs/reproduction.md)."""
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def _difference(higher: dict[str, Any], lower: dict[str, Any]
                ) -> tuple[float, Optional[float]]:
  """higher - lower of two cells' means, and its standard error (None with one seed a side;
  the population std / sqrt(n - 1) is a mean's standard error)."""
  value = higher['mean'] - lower['mean']
  if min(higher['n'], lower['n']) < 2:
    return value, None
  return value, float(np.sqrt(higher['std'] ** 2 / (higher['n'] - 1)
                              + lower['std'] ** 2 / (lower['n'] - 1)))


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Per direction and tuning: in domain, out of domain and the drop (per seed), mean ± std;
  with both tunings, the paper's comparisons: out-of-domain accuracy, prompt - model (its
  Table 1's Δ), and the drop, model - prompt (positive: the prompt loses less)."""
  out = {}
  for d in DIRECTIONS:
    cells = {}
    for tuning in ('prompt', 'model'):
      runs = [r for r in results if r['direction'] == d.key and r['tuning'] == tuning]
      if runs:
        cells[tuning] = {
            'in_domain': _stats([r['in_domain'] for r in runs]),
            'out_of_domain': _stats([r['out_of_domain'] for r in runs]),
            'drop': _stats([r['in_domain'] - r['out_of_domain'] for r in runs])}
    if len(cells) == 2:
      prompt, model = cells['prompt'], cells['model']
      cells['out_of_domain_prompt_minus_model'] = _difference(prompt['out_of_domain'],
                                                              model['out_of_domain'])
      cells['drop_model_minus_prompt'] = _difference(model['drop'], prompt['drop'])
    out[d.key] = cells
  return out


def _fmt(stat: dict[str, Any]) -> str:
  if stat['n'] == 1:
    return f'{stat["mean"]:.1f} (n=1)'
  return f'{stat["mean"]:.1f} ± {stat["std"]:.1f} (n={stat["n"]})'


def _fmt_difference(value: float, error: Optional[float]) -> str:
  return f'{value:+.1f}' if error is None else f'{value:+.1f} ± {error:.1f}'


def verdict(value: float, error: Optional[float]) -> str:
  """Whether the prompt lost less (the drop difference > 0), and if that is noise."""
  text = 'the prompt loses less' if value > 0 else 'the prompt loses as much or more'
  if error is None:
    return text + ' (one run a side: no error bar)'
  return text + (', within noise' if abs(value) < 2 * error else '')


def table(summary: dict[str, Any]) -> str:
  """Markdown: per direction and tuning, in domain, out of domain and the drop; then per
  direction the two comparisons and the verdict on the paper's claim."""
  lines = ['| train -> zero-shot eval | tuning | in domain | out of domain | drop |',
           '|---|---|---|---|---|']
  for d in DIRECTIONS:
    for tuning in ('prompt', 'model'):
      cell = summary[d.key].get(tuning)
      if cell:
        lines.append(f'| {d.label} | {tuning} | {_fmt(cell["in_domain"])} | '
                     f'{_fmt(cell["out_of_domain"])} | {_fmt(cell["drop"])} |')
  lines += ['', '| direction | out of domain, prompt - model (± s.e.) | drop, model - prompt '
            '(± s.e.) | the prompt loses less? |', '|---|---|---|---|']
  for d in DIRECTIONS:
    cells = summary[d.key]
    if 'drop_model_minus_prompt' in cells:
      drop = cells['drop_model_minus_prompt']
      lines.append(f'| {d.label} | '
                   f'{_fmt_difference(*cells["out_of_domain_prompt_minus_model"])} | '
                   f'{_fmt_difference(*drop)} | {verdict(*drop)} |')
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='results directory (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(REPO), 'shared'),
                 help='the shared data directory (GLUE SST-2 files)')
  p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  p.add_argument('--jobs', type=int, default=2, help='runs at once')
  args = p.parse_args(argv)
  env = dict(os.environ)
  env.setdefault('PTJ_GLUE_DIR', os.path.join(args.shared, 'data', 'glue'))
  runs = sorted(plan(args.seeds), key=lambda r: r.seed)  # every cell's first seed first
  tick = time.time()
  results = []
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    futures = {pool.submit(run_one, run, args.out, env): run for run in runs}
    for future in concurrent.futures.as_completed(futures):
      result = future.result()
      results.append(result)
      print(f'[{len(results)}/{len(runs)}] {result["name"]}: in domain '
            f'{result["in_domain"]:.1f}, out of domain {result["out_of_domain"]:.1f} '
            f'({result["seconds"]}s; {time.time() - tick:.0f}s so far)', flush=True)
  summary = summarise(results)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'runs': sorted(results, key=lambda r: r['name']), 'summary': summary}, f,
              indent=1)
  text = table(summary)
  with open(os.path.join(args.out, 'domain_shift.md'), 'w') as f:
    f.write(text + '\n')
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
