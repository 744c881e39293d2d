"""The paper's Fig. 3c on the mini T5: span corruption only, span + sentinel, LM-adapted.

  python -m benchmarks.fig3c --out /tmp/fig3c            # 2 tasks x 3 frozen models x 3 seeds

Three frozen models, all shipped in the package: the span-corruption checkpoint
of t5_mini (`span_only`), the same with TARGET_SENTINEL on (`span_sentinel`:
every target starts with <extra_id_0>, as in the span-corruption objective;
predictions are stripped of it), and the LM-adapted checkpoint (`lm_adapted`).
Two tasks, seeds 0, 1, 2:
- `sst2`: the miniature study's recipe (`benchmarks.reproduction`) at P=100:
  class-label init, Adafactor 0.03 decaying linearly to 0 over 600 steps,
  batch 32, rank classification of the 872 dev sentences;
- `smoke`: `smoke_sentiment_transfer` with `runs/smoke_pretrained.gin` (P=50,
  0.3 decaying to 0, 600 steps of batch 16; 200 held-out-word reviews).
Each number is the eval at the last step. After training, `ptj eval` also
decodes the same split greedily (exact match of the decoded label): what the
paper's span-corruption models fail at. Every run is a `ptj train` in
OUT/runs/<name>, resumable; a finished run is skipped. Writes OUT/results.json
and OUT/fig3c.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from benchmarks import reproduction

# The study's own helpers: running ptj, its environment, statistics and formats.
_ptj, _env, _stats, _combination, _fmt, _percent = (  # pylint: disable=protected-access
    reproduction._ptj, reproduction._env, reproduction._stats, reproduction._combination,
    reproduction._fmt, reproduction._percent)

# arm -> (checkpoint, TARGET_SENTINEL)
ARMS = {'span_only': ('span_corruption', False), 'span_sentinel': ('span_corruption', True),
        'lm_adapted': ('lm_adapted', False)}
ARM_TITLES = {'span_only': 'span corruption only', 'span_sentinel': 'span + sentinel',
              'lm_adapted': 'LM-adapted'}
TASKS = ('sst2', 'smoke')
SEEDS = (0, 1, 2)
SST2_PROMPT_LENGTH = 100
SMOKE_RUN_FILE = 'runs/smoke_pretrained.gin'
DECODE_FILE = 'decode.json'


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run: a task, an arm, a seed."""
  task: str
  arm: str
  seed: int

  @property
  def study_run(self) -> reproduction.Run:
    """The SST-2 run, as the miniature study names and configures it."""
    model, sentinel = ARMS[self.arm]
    return reproduction.Run('sst2', model=model, prompt_length=SST2_PROMPT_LENGTH,
                            seed=self.seed, sentinel=sentinel)

  @property
  def name(self) -> str:
    if self.task == 'sst2':
      return self.study_run.name
    return f'smoke-{self.arm}-s{self.seed}'


def cells(tasks: Sequence[str] = TASKS, seeds: Sequence[int] = SEEDS,
          arms: Sequence[str] = tuple(ARMS)) -> list[Cell]:
  """Every run, task by task, seed by seed, the arms side by side."""
  return [Cell(task, arm, seed) for task in tasks for seed in seeds for arm in arms]


def smoke_flags(cell: Cell, model_dir: str, checkpoints: dict[str, str]) -> list[str]:
  """The `ptj train` arguments of a smoke-task run: the README's run, another frozen model."""
  model, sentinel = ARMS[cell.arm]
  return ([f'--gin_file={SMOKE_RUN_FILE}', f'--gin.MODEL_DIR={model_dir}',
           f'--gin.SEED={cell.seed}', f'--gin.INITIAL_CHECKPOINT_PATH={checkpoints[model]}']
          + (['--gin.TARGET_SENTINEL=True'] if sentinel else []))


def run_cell(cell: Cell, out: str, env: dict[str, str], checkpoints: dict[str, str],
             setting: reproduction.Setting) -> dict[str, Any]:
  """Trains (or resumes, or skips) one run and decodes its eval split; its result record."""
  if cell.task == 'sst2':
    result = reproduction.run_one(cell.study_run, setting, out, env, checkpoints)
  else:
    model_dir = os.path.join(out, 'runs', cell.name)
    done = os.path.join(model_dir, 'result.json')
    if os.path.exists(done):
      with open(done) as f:
        result = json.load(f)
    else:
      os.makedirs(model_dir, exist_ok=True)
      tick = time.time()
      _ptj(['train', *smoke_flags(cell, model_dir, checkpoints)], env,
           os.path.join(model_dir, 'study.log'))
      curve = reproduction.eval_curve(model_dir)
      result = {'name': cell.name, 'model_dir': model_dir, 'curve': curve,
                'accuracy': curve[-1][1] if curve else None,
                'seconds': round(time.time() - tick, 1)}
      with open(done, 'w') as f:
        json.dump(result, f, indent=1)
  return {**result, **dataclasses.asdict(cell), 'decode_accuracy': decode_accuracy(
      result['model_dir'], env)}


def decode_accuracy(model_dir: str, env: dict[str, str]) -> Optional[float]:
  """Greedy-decoding accuracy of the run's last checkpoint (`ptj eval`, once)."""
  done = os.path.join(model_dir, DECODE_FILE)
  if not os.path.exists(done):
    _ptj(['eval', f'--gin.MODEL_DIR={model_dir}', "--gin.EVAL_METHODS=('decode',)",
          '--gin.BEST_METRIC=None'], env, os.path.join(model_dir, 'study.log'))
    accuracy = None
    with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
      for line in f:
        record = json.loads(line)
        if record.get('split', '').startswith('eval/') and 'accuracy' in record:
          accuracy = record['accuracy']
    with open(done, 'w') as f:
      json.dump({'accuracy': accuracy}, f)
  with open(done) as f:
    return json.load(f)['accuracy']


# ------------------------------------------------------------------ summary


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
  """{task: {arm: {metric: mean/std/n and the seeds' values}}}."""
  out: dict[str, Any] = {}
  for r in results:
    arm = out.setdefault(r['task'], {}).setdefault(r['arm'], {'rank': [], 'decode': []})
    arm['rank'].append(r['accuracy'])
    arm['decode'].append(r['decode_accuracy'])
  return {task: {arm: {metric: {**_stats(values), 'values': values}
                       for metric, values in metrics.items()}
                 for arm, metrics in arms.items()} for task, arms in out.items()}


def comparisons(summary: dict[str, Any]) -> list[reproduction.Claim]:
  """The paper's Fig. 3c directions, with standard errors from the seeds."""
  pairs = [('LM adaptation beats span corruption only (Fig. 3c)', 'lm_adapted', 'span_only'),
           ('the sentinel helps the span-corruption model (Fig. 3c)', 'span_sentinel',
            'span_only'),
           ('LM adaptation beats span + sentinel (Fig. 3c)', 'lm_adapted', 'span_sentinel')]
  claims = []
  for task, arms in summary.items():
    for metric in ('rank', 'decode'):
      for claim, higher, lower in pairs:
        if higher not in arms or lower not in arms:
          continue
        a, b = arms[higher][metric], arms[lower][metric]
        difference, noise = _combination([(1.0, a), (-1.0, b)])
        if difference is not None:
          claims.append(reproduction.Claim(f'{claim}, {metric}', task, a['mean'], b['mean'],
                                           noise))
  return claims


def table(summary: dict[str, Any]) -> str:
  """Markdown: a row per task and metric, a column per arm (mean ± std, then each seed)."""
  metric_titles = {'rank': 'rank classification', 'decode': 'greedy decoding (exact match)'}
  lines = ['| task | eval | ' + ' | '.join(ARM_TITLES.values()) + ' |',
           '|---|---|' + '---|' * len(ARMS)]
  for task, arms in summary.items():
    for metric, title in metric_titles.items():
      cells_text = []
      for arm in ARMS:
        if arm not in arms:
          cells_text.append('not run')
          continue
        stat = arms[arm][metric]
        seeds = ' / '.join(_percent(v) for v in stat['values'])
        cells_text.append(f'{_fmt(stat)}: {seeds}')
      lines.append(f'| {task} | {title} | ' + ' | '.join(cells_text) + ' |')
  lines += ['', '| claim | task | measured | against | difference (± s.e.) | verdict |',
            '|---|---|---|---|---|---|']
  for c in comparisons(summary):
    noise = '' if c.noise is None else f' ± {c.noise:.1f}'
    lines.append(f'| {c.claim} | {c.task} | {c.higher:.1f} | {c.lower:.1f} | '
                 f'{c.difference:+.1f}{noise} | {c.verdict} |')
  return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='directory of the runs and results (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(reproduction.REPO), 'shared'),
                 help='the shared data directory (GLUE files)')
  p.add_argument('--tasks', default=','.join(TASKS), help=f'some of {TASKS}')
  p.add_argument('--seeds', default=','.join(map(str, SEEDS)))
  p.add_argument('--arms', default=','.join(ARMS),
                 help='some of the frozen models (two drivers may share OUT on disjoint runs)')
  args = p.parse_args(argv)
  tasks = [t for t in args.tasks.split(',') if t]
  arms = [a for a in args.arms.split(',') if a]
  if not set(tasks) <= set(TASKS) or not set(arms) <= set(ARMS):
    p.error(f'--tasks {args.tasks!r} / --arms {args.arms!r}: expected some of {TASKS} / '
            f'{tuple(ARMS)}')
  seeds = [int(s) for s in args.seeds.split(',') if s]
  env = _env(args.shared)
  os.makedirs(args.out, exist_ok=True)
  todo = cells(tasks, seeds, arms)
  results, tick = [], time.time()
  for i, cell in enumerate(todo, 1):
    result = run_cell(cell, args.out, env, reproduction.CHECKPOINTS, reproduction.Setting())
    results.append(result)
    print(f'[{i}/{len(todo)}] {cell.name}: rank {_percent(result["accuracy"])}, '
          f'decode {_percent(result["decode_accuracy"])} '
          f'({result["seconds"]}s; {time.time() - tick:.0f}s in all)', flush=True)
  summary = summarise(results)
  text = table(summary)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump({'runs': results, 'summary': summary}, f, indent=1)
  with open(os.path.join(args.out, 'fig3c.md'), 'w') as f:
    f.write(text)
  print(text)
  print(f'Wrote {args.out}/results.json and {args.out}/fig3c.md')
  return 0


if __name__ == '__main__':
  sys.exit(main())
