"""The paper's findings re-measured on the project's own mini T5 (docs/reproduction.md).

One command runs the miniature study; every run is an ordinary `ptj train` in
its own MODEL_DIR under OUT/runs, so an interrupted study resumes where it
stopped (finished runs are skipped, an interrupted one resumes its checkpoint):

  python -m benchmarks.reproduction --out /tmp/study                 # the full study
  python -m benchmarks.reproduction --out /tmp/study_quick --quick   # every part, fast

What it measures, on SST-2 (GLUE dev for the numbers) and two SuperGLUE tasks
(validation split for the numbers), rank classification accuracy:
- prompt tuning vs model tuning (all weights) of the same frozen model;
- the frozen model: span corruption only vs LM-adapted;
- prompt length {1, 5, 20, 100};
- prompt initialisation {random uniform, sampled vocabulary, class labels};
- a 5-prompt ensemble (five seeds of the default run) vs its members;
- the share of trained prompt vectors whose nearest vocabulary pieces include a
  class label (`ptj neighbors`).
Results: OUT/results.json, OUT/reproduction.md, OUT/*.png (`--docs` also
writes docs/reproduction.md and docs/figures/).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(REPO, 'prompt_tuning_jax', 'pretrained', 't5_mini')
# The frozen models; 'random' is the same architecture with random weights (the baseline).
CHECKPOINTS = {'lm_adapted': os.path.join(PRETRAINED, 'lm_adapted'),
               'span_corruption': os.path.join(PRETRAINED, 'span_corruption'),
               'random': 'None'}
PROMPT_FILE = 'encoder.prompt.prompt.prompt'
METRIC = 'rank_classification/accuracy'


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task of the study: its seqio name, lengths and the split its numbers come from."""
  key: str
  name: str
  inputs_length: int
  labels: tuple[str, ...]


TASKS = {
    'sst2': TaskSpec('sst2', 'glue_sst2_v002', 64, ('negative', 'positive')),
    'rte': TaskSpec('rte', 'super_glue_rte_v102', 128, ('entailment', 'not_entailment')),
    'cb': TaskSpec('cb', 'super_glue_cb_v102', 160, ('entailment', 'contradiction', 'neutral')),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the study."""
  task: str
  model: str = 'lm_adapted'        # the frozen checkpoint
  tuning: str = 'prompt'           # 'prompt' | 'model' (all weights, no prompt)
  prompt_length: int = 20
  init: str = 'class_labels'
  seed: int = 0

  @property
  def name(self) -> str:
    if self.tuning == 'model':
      return f'{self.task}-{self.model}-model_tuning-s{self.seed}'
    return f'{self.task}-{self.model}-p{self.prompt_length}-{self.init}-s{self.seed}'


@dataclasses.dataclass(frozen=True)
class Setting:
  """How much of the study to run."""
  steps: int = 1500
  eval_examples: Optional[int] = None   # None: the whole split
  batch_size: int = 32
  main_seeds: tuple[int, ...] = (0, 1, 2)   # seeds of every SST-2 variant
  other_seeds: tuple[int, ...] = (0,)       # seeds of the SuperGLUE variants
  ensemble_size: int = 5
  tasks: tuple[str, ...] = ('sst2', 'rte', 'cb')
  prompt_lengths: tuple[int, ...] = (1, 5, 20, 100)
  inits: tuple[str, ...] = ('random_uniform', 'sampled_vocab', 'class_labels')
  default_prompt_length: int = 20


QUICK = Setting(steps=60, eval_examples=100, main_seeds=(0,), other_seeds=(0,), ensemble_size=2,
                prompt_lengths=(1, 20), inits=('random_uniform', 'class_labels'))
TINY = dataclasses.replace(QUICK, steps=4, eval_examples=8, batch_size=4, tasks=('sst2',),
                           prompt_lengths=(1, 2), default_prompt_length=2)


def study_runs(setting: Setting) -> list[Run]:
  """Every run of the study, each once (a run shared by two comparisons is listed once)."""
  runs: list[Run] = []

  def add(run):
    if run not in runs:
      runs.append(run)
  for task in setting.tasks:
    seeds = setting.main_seeds if task == 'sst2' else setting.other_seeds
    base = Run(task, prompt_length=setting.default_prompt_length)
    for seed in seeds:
      for length in setting.prompt_lengths:
        add(dataclasses.replace(base, prompt_length=length, seed=seed))
      for init in setting.inits:
        add(dataclasses.replace(base, init=init, seed=seed))
      add(dataclasses.replace(base, model='span_corruption', seed=seed))
      add(dataclasses.replace(base, model='random', seed=seed))
      add(dataclasses.replace(base, tuning='model', seed=seed))
    for seed in range(setting.ensemble_size):  # ensemble members: seeds of the default run
      add(dataclasses.replace(base, seed=seed))
  return runs


# ------------------------------------------------------------------ running


def _env(shared: str) -> dict[str, str]:
  env = dict(os.environ)
  env.setdefault('PTJ_GLUE_DIR', os.path.join(shared, 'data', 'glue'))
  env.setdefault('PTJ_SUPERGLUE_DIR', os.path.join(shared, 'data', 'super_glue'))
  return env


def train_flags(run: Run, setting: Setting, model_dir: str,
                checkpoints: dict[str, str]) -> list[str]:
  """The `ptj train` arguments of a run."""
  task = TASKS[run.task]
  run_file = 'runs/model_finetune.gin' if run.tuning == 'model' else 'runs/prompt_finetune.gin'
  flags = [
      '--gin_file=models/t5_mini.gin', f'--gin_file={run_file}',
      f'--gin.MIXTURE_OR_TASK_NAME={task.name}', f'--gin.MODEL_DIR={model_dir}',
      f'--gin.INITIAL_CHECKPOINT_PATH={checkpoints[run.model]}',
      f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {task.inputs_length}, 'targets': 8}}",
      f'--gin.TRAIN_STEPS={setting.steps}', f'--gin.BATCH_SIZE={setting.batch_size}',
      f'--gin.SEED={run.seed}', f'--gin.EVAL_PERIOD={setting.steps}',
      f'--gin.CHECKPOINT_PERIOD={max(setting.steps // 4, 1)}', '--gin.KEEP_CHECKPOINTS=1',
      f'--gin.LOG_PERIOD={max(setting.steps // 10, 1)}',
      "--gin.EVAL_METHODS=('rank_classification',)", '--gin.BEST_METRIC=None',
      f'--gin.EVAL_BATCH_SIZE={max(setting.batch_size, 8)}',
      f'--gin.NUM_EVAL_EXAMPLES={setting.eval_examples}',
  ]
  if run.tuning == 'prompt':
    flags += [f'--gin.PROMPT_LENGTH={run.prompt_length}', f'--gin.PROMPT_INIT={run.init}']
  return flags


def final_eval(model_dir: str) -> dict[str, float]:
  """The metrics of the last eval record in MODEL_DIR/metrics.jsonl."""
  last = {}
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record.get('split', '').startswith('eval/'):
        last = record
  return last


def _ptj(args: Sequence[str], env: dict[str, str], log_path: str) -> None:
  with open(log_path, 'a') as log:
    log.write(f'\n$ ptj {" ".join(args)}\n')
    log.flush()
    code = subprocess.call(['ptj', *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                           cwd=REPO)
  if code:
    raise RuntimeError(f'ptj {args[0]} failed (exit {code}); see {log_path}')


def run_one(run: Run, setting: Setting, out: str, env: dict[str, str],
            checkpoints: dict[str, str]) -> dict[str, Any]:
  """Trains (or resumes, or skips when finished) one run; returns its result record."""
  model_dir = os.path.join(out, 'runs', run.name)
  done = os.path.join(model_dir, 'result.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  os.makedirs(model_dir, exist_ok=True)
  tick = time.time()
  _ptj(['train', *train_flags(run, setting, model_dir, checkpoints)], env,
       os.path.join(model_dir, 'study.log'))
  metrics = final_eval(model_dir)
  task = TASKS[run.task]
  result = {**dataclasses.asdict(run), 'name': run.name, 'model_dir': model_dir,
            'accuracy': metrics.get(METRIC), 'seconds': round(time.time() - tick, 1),
            'prompt_file': (os.path.join(model_dir, 'numpy_checkpoints',
                                         f'checkpoint_{setting.steps}', PROMPT_FILE)
                            if run.tuning == 'prompt' else None),
            'task_name': task.name}
  with open(done, 'w') as f:
    json.dump(result, f, indent=1)
  return result


def run_ensemble(members: list[dict[str, Any]], setting: Setting, out: str,
                 env: dict[str, str]) -> dict[str, Any]:
  """`ptj ensemble` (rank classification) over the members' prompts, on the first's run."""
  target = os.path.join(out, 'ensembles', f'{members[0]["task"]}.json')
  if not os.path.exists(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    args = ['ensemble', f'--gin.MODEL_DIR={members[0]["model_dir"]}',
            '--method', 'rank_classification', '--output', target]
    for m in members:
      args += ['--prompt', f's{m["seed"]}={m["prompt_file"]}']
    _ptj(args, env, target + '.log')
  with open(target) as f:
    return json.load(f)


def run_neighbors(member: dict[str, Any], out: str, env: dict[str, str],
                  checkpoints: dict[str, str], vocabulary: str) -> dict[str, Any]:
  """`ptj neighbors` of a trained prompt against the frozen model's embedding."""
  directory = os.path.join(out, 'neighbors', member['name'])
  target = os.path.join(directory, 'neighbors.json')
  if not os.path.exists(target):
    labels = ','.join(TASKS[member['task']].labels)
    _ptj(['neighbors', '--prompt', member['prompt_file'], '--checkpoint',
          checkpoints[member['model']], '--vocab', vocabulary, '--labels', labels,
          '--top_k', '5', '--output_dir', directory], env, os.path.join(out, 'neighbors.log'))
  with open(target) as f:
    return json.load(f)['summary']


# ------------------------------------------------------------------ summary


def _stats(values: list[Optional[float]]) -> dict[str, Any]:
  values = [v for v in values if v is not None]
  if not values:
    return {'mean': None, 'std': None, 'n': 0}
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def summarise(results: list[dict[str, Any]], setting: Setting) -> dict[str, Any]:
  """Mean ± std over seeds of each comparison, per task."""
  def pick(task, **fields):
    base = {'model': 'lm_adapted', 'tuning': 'prompt',
            'prompt_length': setting.default_prompt_length, 'init': 'class_labels'}
    base.update(fields)
    keys = base.keys()
    return _stats([r['accuracy'] for r in results if r['task'] == task
                   and all(r[k] == base[k] for k in keys)
                   and r['seed'] in (setting.main_seeds if task == 'sst2'
                                     else setting.other_seeds)])
  summary = {}
  for task in setting.tasks:
    summary[task] = {
        'prompt_tuning': pick(task),
        'model_tuning': _stats([r['accuracy'] for r in results
                                if r['task'] == task and r['tuning'] == 'model']),
        'span_corruption': pick(task, model='span_corruption'),
        'random_weights': pick(task, model='random'),
        'prompt_length': {str(n): pick(task, prompt_length=n) for n in setting.prompt_lengths},
        'init': {i: pick(task, init=i) for i in setting.inits},
    }
  return summary


def _fmt(stat: dict[str, Any]) -> str:
  if stat['mean'] is None:
    return 'n/a'
  return f"{stat['mean']:.1f} ± {stat['std']:.1f} (n={stat['n']})"


def _plot(report: dict[str, Any], path: str) -> None:
  """Three panels shaped like the paper's Fig. 3: length, initialisation, pre-training."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  summary = report['summary']
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for task, s in summary.items():
    lengths = sorted(s['prompt_length'], key=int)
    means = [s['prompt_length'][n]['mean'] for n in lengths]
    stds = [s['prompt_length'][n]['std'] or 0 for n in lengths]
    axes[0].errorbar([int(n) for n in lengths], means, yerr=stds, marker='o', capsize=3,
                     label=task)
    inits = list(s['init'])
    axes[1].errorbar(range(len(inits)), [s['init'][i]['mean'] for i in inits],
                     yerr=[s['init'][i]['std'] or 0 for i in inits], marker='o', capsize=3,
                     label=task)
    axes[1].set_xticks(range(len(inits)), [i.replace('_', ' ') for i in inits])
    kinds = ['span_corruption', 'prompt_tuning', 'model_tuning']
    axes[2].errorbar(range(3), [s[k]['mean'] for k in kinds],
                     yerr=[s[k]['std'] or 0 for k in kinds], marker='o', capsize=3, label=task)
    axes[2].set_xticks(range(3), ['prompt, span-only', 'prompt, LM-adapted',
                                  'model tuning'])
  axes[0].set_xscale('log')
  axes[0].set_xlabel('prompt length')
  axes[1].set_xlabel('prompt initialisation')
  axes[2].set_xlabel('frozen model / method')
  for ax in axes:
    ax.set_ylabel('accuracy (rank classification, %)')
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle('t5_mini (4.6M parameters): the paper\'s Fig. 3 ablations at mini scale')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_pretraining(stages: dict[str, str], path: str, batch_size: int = 32) -> dict[str, Any]:
  """Loss per target token against (real) tokens seen, one curve per stage's MODEL_DIR.

  Returns each stage's last loss and its mean throughput (tokens/s).
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4))
  figures = {}
  offset = 0
  for stage, model_dir in stages.items():
    records = [json.loads(line) for line in open(os.path.join(model_dir, 'metrics.jsonl'))]
    train = {r['step']: r for r in records if r.get('split') == 'train'}  # last write wins
    steps = sorted(train)
    per_step = (np.median([train[s]['tokens_per_second'] / train[s]['examples_per_second']
                           for s in steps]) * batch_size) if steps else 0.0
    x = [offset + s * per_step / 1e6 for s in steps]
    ax.plot(x, [train[s]['loss'] for s in steps], label=stage)
    offset = x[-1] if x else offset
    figures[stage] = {'steps': steps[-1] if steps else 0,
                      'loss': train[steps[-1]]['loss'] if steps else None,
                      'tokens_per_second': float(np.median([train[s]['tokens_per_second']
                                                            for s in steps])) if steps else None}
  ax.set_xlabel('tokens seen (millions)')
  ax.set_ylabel('loss per target token')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return figures


def write_report(report: dict[str, Any], out: str, docs: Optional[str] = None) -> list[str]:
  """OUT/reproduction.md and OUT/reproduction.png (and their copies under docs/)."""
  lines = ['| task | prompt tuning (LM-adapted) | model tuning | prompt tuning (span only) '
           '| ensemble (vote / average) | member mean | label share of neighbours |',
           '|---|---|---|---|---|---|---|']
  for task, s in report['summary'].items():
    ensemble = report['ensembles'].get(task, {}).get('metrics', {})
    members = [v.get('accuracy') for k, v in ensemble.items() if k.startswith('member')]
    neighbours = report['neighbors'].get(task, {})
    vote = ensemble.get('ensemble/vote', {}).get('accuracy')
    average = ensemble.get('ensemble/average', {}).get('accuracy')
    lines.append(f"| {task} | {_fmt(s['prompt_tuning'])} | {_fmt(s['model_tuning'])} | "
                 f"{_fmt(s['span_corruption'])} | {vote} / {average} | "
                 f"{np.mean(members) if members else None} | "
                 f"{neighbours.get('label_share')} (random {neighbours.get('random_label_share')}) |")
  lines += ['', '| task | ' + ' | '.join(f'P={n}' for n in report['setting']['prompt_lengths'])
            + ' | ' + ' | '.join(report['setting']['inits']) + ' |',
            '|---|' + '---|' * (len(report['setting']['prompt_lengths'])
                                + len(report['setting']['inits']))]
  for task, s in report['summary'].items():
    lines.append(f'| {task} | ' + ' | '.join(_fmt(v) for v in s['prompt_length'].values())
                 + ' | ' + ' | '.join(_fmt(v) for v in s['init'].values()) + ' |')
  paths = [os.path.join(out, 'reproduction_tables.md'), os.path.join(out, 'reproduction.png')]
  with open(paths[0], 'w') as f:
    f.write('\n'.join(lines) + '\n')
  _plot(report, paths[1])
  if docs:
    os.makedirs(os.path.join(docs, 'docs', 'figures'), exist_ok=True)
    target = os.path.join(docs, 'docs', 'figures', 'reproduction.png')
    _plot(report, target)
    paths.append(target)
  return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='study directory (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(REPO), 'shared'),
                 help='the shared data directory (SST-2, SuperGLUE)')
  p.add_argument('--quick', action='store_true', help='every part, few steps (~20 min)')
  p.add_argument('--tiny', action='store_true', help='a test-sized run of the driver')
  p.add_argument('--checkpoint', action='append', default=[],
                 help='NAME=PATH: use another frozen checkpoint (lm_adapted, span_corruption)')
  p.add_argument('--vocab', default=os.path.join(PRETRAINED, 'spiece.model'))
  p.add_argument('--docs', action='store_true', help='also write docs/reproduction.md')
  args = p.parse_args(argv)
  setting = TINY if args.tiny else QUICK if args.quick else Setting()
  checkpoints = dict(CHECKPOINTS)
  checkpoints.update(dict(spec.split('=', 1) for spec in args.checkpoint))
  env = _env(args.shared)
  os.makedirs(args.out, exist_ok=True)
  runs = study_runs(setting)
  results = []
  tick = time.time()
  for i, run in enumerate(runs, 1):
    result = run_one(run, setting, args.out, env, checkpoints)
    results.append(result)
    print(f'[{i}/{len(runs)}] {run.name}: accuracy {result["accuracy"]} '
          f'({result["seconds"]}s; study {time.time() - tick:.0f}s)', flush=True)
  report = {'setting': dataclasses.asdict(setting), 'runs': results,
            'summary': summarise(results, setting), 'ensembles': {}, 'neighbors': {}}
  for task in setting.tasks:
    members = [r for r in results if r['task'] == task and r['tuning'] == 'prompt'
               and r['model'] == 'lm_adapted' and r['init'] == 'class_labels'
               and r['prompt_length'] == setting.default_prompt_length
               and r['seed'] < setting.ensemble_size]
    report['ensembles'][task] = run_ensemble(members, setting, args.out, env)
    report['neighbors'][task] = run_neighbors(members[0], args.out, env, checkpoints, args.vocab)
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(report, f, indent=1)
  paths = write_report(report, args.out, docs=REPO if args.docs else None)
  print('Wrote ' + ', '.join(paths))
  return 0


if __name__ == '__main__':
  sys.exit(main())
