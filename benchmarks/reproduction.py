"""The paper's findings re-measured on the project's own mini T5 (docs/reproduction.md).

One command runs the miniature study. Every run is an ordinary `ptj train` in
its own MODEL_DIR under OUT/runs, so an interrupted study resumes where it
stopped (a finished run is skipped, an interrupted one resumes its checkpoint):

  python -m benchmarks.reproduction --out /tmp/study            # the study
  python -m benchmarks.reproduction --out /tmp/quick --quick    # every part, few steps

On SST-2 (GLUE dev for the numbers) and two SuperGLUE tasks (validation split
for the numbers), rank classification accuracy over the label words, it measures:
- prompt tuning vs model tuning (all weights) of the same frozen model;
- the frozen model: LM-adapted vs span corruption only (and random weights);
- prompt length {1, 5, 20, 100};
- prompt initialisation {random uniform, sampled vocabulary, class labels};
- a 5-prompt ensemble (five seeds of the default run) vs its members;
- the share of trained prompt vectors whose nearest vocabulary pieces include a
  class label (`ptj neighbors`), against random vectors.
Results: OUT/results.json, OUT/reproduction_tables.md (the results, and each of the
paper's claims with its measured difference and verdict) and OUT/reproduction.png
(`--docs` also writes docs/figures/reproduction.png).
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
PRETRAINED = os.path.join(REPO, 'prompt_tuning_jax', 'pretrained', 't5_mini')
# The frozen models; 'random' is the same architecture with random weights (the baseline).
CHECKPOINTS = {'lm_adapted': os.path.join(PRETRAINED, 'lm_adapted'),
               'span_corruption': os.path.join(PRETRAINED, 'span_corruption'),
               'random': 'None'}
PROMPT_FILE = 'encoder.prompt.prompt.prompt'  # the prompt's file in a numpy checkpoint
METRIC = 'rank_classification/accuracy'


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task of the study: its seqio name, input length and label words."""
  name: str
  inputs_length: int
  labels: tuple[str, ...]


TASKS = {
    'sst2': TaskSpec('glue_sst2_v002', 64, ('negative', 'positive')),
    'rte': TaskSpec('super_glue_rte_v102', 128, ('entailment', 'not_entailment')),
    'cb': TaskSpec('super_glue_cb_v102', 160, ('entailment', 'contradiction', 'neutral')),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the study."""
  task: str
  model: str = 'lm_adapted'        # the frozen checkpoint (a key of CHECKPOINTS)
  tuning: str = 'prompt'           # 'prompt' | 'model' (all weights, no prompt)
  prompt_length: int = 20
  init: str = 'class_labels'
  seed: int = 0
  sentinel: bool = False           # TARGET_SENTINEL: targets start with <extra_id_0>

  @property
  def name(self) -> str:
    model = self.model + ('-sentinel' if self.sentinel else '')
    if self.tuning == 'model':
      return f'{self.task}-{model}-model_tuning-s{self.seed}'
    return f'{self.task}-{model}-p{self.prompt_length}-{self.init}-s{self.seed}'


@dataclasses.dataclass(frozen=True)
class Setting:
  """How much of the study to run, and the training recipe of every run."""
  steps: int = 600                           # with the rate decaying linearly to 0
  eval_examples: Optional[int] = None        # None: the whole split
  batch_size: int = 32
  main_seeds: tuple[int, ...] = (0, 1, 2)    # seeds of every SST-2 run
  other_seeds: tuple[int, ...] = (0,)        # seeds of the SuperGLUE runs
  ensemble_size: int = 5
  tasks: tuple[str, ...] = ('sst2', 'rte', 'cb')
  # Tasks that compare the method and the frozen model (model tuning, span corruption
  # only, random weights) besides the default prompt; None: every task.
  comparison_tasks: Optional[tuple[str, ...]] = None
  # Tasks that also run the prompt lengths, the initialisers and the ensemble.
  ablation_tasks: tuple[str, ...] = ('sst2',)
  evals_per_run: int = 3                     # evaluations during a run (the last at its end)
  prompt_lengths: tuple[int, ...] = (1, 5, 20, 100)
  inits: tuple[str, ...] = ('random_uniform', 'sampled_vocab', 'class_labels')
  default_prompt_length: int = 20
  # The best of 0.03 / 0.1 / 0.3 on the shipped t5_mini (docs/reproduction.md); the
  # paper's 0.3 is relative to T5's much larger embedding rows.
  prompt_learning_rate: float = 0.03
  model_learning_rate: float = 1e-3
  dropout_rate: float = 0.0                  # t5_mini was pre-trained without dropout
  loss: str = 'token_cross_entropy'          # LOSS of every run (benchmarks/label_losses.py)

  def compares(self, task: str) -> bool:
    return self.comparison_tasks is None or task in self.comparison_tasks


# Every part on SST-2, the default prompt on the SuperGLUE tasks, one eval a run:
# 9 runs (docs/reproduction.md has its time).
QUICK = Setting(steps=150, eval_examples=200, main_seeds=(0,), ensemble_size=2,
                prompt_lengths=(1, 20), inits=('random_uniform', 'class_labels'),
                comparison_tasks=('sst2',), evals_per_run=1)
TINY = dataclasses.replace(QUICK, steps=2, eval_examples=8, batch_size=4, tasks=('sst2',),
                           prompt_lengths=(2,), default_prompt_length=2, evals_per_run=2)


def study_runs(setting: Setting) -> list[Run]:
  """Every run of the study, each once (a run shared by two comparisons is listed once)."""
  runs: list[Run] = []

  def add(run: Run) -> None:
    if run not in runs:
      runs.append(run)
  for task in setting.tasks:
    base = Run(task, prompt_length=setting.default_prompt_length)
    ablations = task in setting.ablation_tasks
    for seed in setting.main_seeds if task == 'sst2' else setting.other_seeds:
      add(dataclasses.replace(base, seed=seed))
      if ablations:
        for length in setting.prompt_lengths:
          add(dataclasses.replace(base, prompt_length=length, seed=seed))
        for init in setting.inits:
          add(dataclasses.replace(base, init=init, seed=seed))
      if setting.compares(task):
        for model in ('span_corruption', 'random'):
          add(dataclasses.replace(base, model=model, seed=seed))
        add(dataclasses.replace(base, tuning='model', seed=seed))
    if ablations:
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
  prompt = run.tuning == 'prompt'
  eval_period = max(setting.steps // setting.evals_per_run, 1)
  flags = [
      '--gin_file=models/t5_mini.gin',
      f'--gin_file=runs/{"prompt" if prompt else "model"}_finetune.gin',
      f'--gin.MIXTURE_OR_TASK_NAME={task.name}', f'--gin.MODEL_DIR={model_dir}',
      f'--gin.INITIAL_CHECKPOINT_PATH={checkpoints[run.model]}',
      f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {task.inputs_length}, 'targets': 8}}",
      f'--gin.TRAIN_STEPS={setting.steps}', f'--gin.BATCH_SIZE={setting.batch_size}',
      f'--gin.SEED={run.seed}', f'--gin.DROPOUT_RATE={setting.dropout_rate}',
      # Linear decay to 0: at a constant rate the final prompt is a lottery
      # (docs/reproduction.md, "A constant rate makes the final prompt a lottery").
      '--gin.LEARNING_RATE=@optax.linear_schedule()',
      '--gin.optax.linear_schedule.init_value='
      f'{setting.prompt_learning_rate if prompt else setting.model_learning_rate}',
      '--gin.optax.linear_schedule.end_value=0.0',
      f'--gin.optax.linear_schedule.transition_steps={setting.steps}',
      f'--gin.EVAL_PERIOD={eval_period}',
      f'--gin.CHECKPOINT_PERIOD={eval_period}', '--gin.KEEP_CHECKPOINTS=1',
      f'--gin.LOG_PERIOD={max(setting.steps // 10, 1)}',
      "--gin.EVAL_METHODS=('rank_classification',)", '--gin.BEST_METRIC=None',
      f'--gin.EVAL_BATCH_SIZE={max(setting.batch_size, 32)}',
      f'--gin.NUM_EVAL_EXAMPLES={setting.eval_examples}',
  ]
  if setting.loss != 'token_cross_entropy':
    flags.append(f'--gin.LOSS={setting.loss}')
  if prompt:
    flags += [f'--gin.PROMPT_LENGTH={run.prompt_length}',
              f'--gin.PROMPT_INIT={prompt_init(run, task.name)}']
  if run.sentinel:
    flags.append('--gin.TARGET_SENTINEL=True')
  return flags


def prompt_init(run: Run, task_name: str) -> str:
  """The run's initialiser; class-label init of a prompt shorter than the task's label
  words (P=1 of a two-class task) falls back to sampled vocabulary, as the paper fills
  the rows class labels do not reach (`ptj` itself refuses the combination)."""
  from prompt_tuning_jax import tasks  # pylint: disable=g-import-not-at-top
  if run.init == 'class_labels' and run.prompt_length < len(tasks.label_words(task_name)):
    return 'sampled_vocab'
  return run.init


def eval_curve(model_dir: str) -> list[tuple[int, float]]:
  """(step, accuracy) of every eval record in MODEL_DIR/metrics.jsonl (last write wins)."""
  curve = {}
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    for line in f:
      record = json.loads(line)
      if record.get('split', '').startswith('eval/') and METRIC in record:
        curve[record['step']] = record[METRIC]
  return sorted(curve.items())


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
  curve = eval_curve(model_dir)
  result = {**dataclasses.asdict(run), 'name': run.name, 'model_dir': model_dir,
            'accuracy': curve[-1][1] if curve else None, 'curve': curve,
            'seconds': round(time.time() - tick, 1),
            'prompt_file': (os.path.join(model_dir, 'numpy_checkpoints',
                                         f'checkpoint_{setting.steps}', PROMPT_FILE)
                            if run.tuning == 'prompt' else None)}
  with open(done, 'w') as f:
    json.dump(result, f, indent=1)
  return result


def run_ensemble(members: list[dict[str, Any]], out: str, env: dict[str, str]) -> dict[str, Any]:
  """`ptj ensemble` (rank classification) of the members' prompts, on the first's run."""
  target = os.path.join(out, 'ensembles', f'{members[0]["task"]}.json')
  if not os.path.exists(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    args = ['ensemble', f'--gin.MODEL_DIR={members[0]["model_dir"]}',
            '--method', 'rank_classification', '--output', target]
    for member in members:
      args += ['--prompt', f's{member["seed"]}={member["prompt_file"]}']
    _ptj(args, env, target + '.log')
  with open(target) as f:
    return json.load(f)['metrics']


def run_neighbors(member: dict[str, Any], out: str, env: dict[str, str],
                  checkpoints: dict[str, str], vocabulary: str) -> dict[str, Any]:
  """`ptj neighbors` of a trained prompt against the frozen model's embedding."""
  directory = os.path.join(out, 'neighbors', member['name'])
  target = os.path.join(directory, 'neighbors.json')
  if not os.path.exists(target):
    _ptj(['neighbors', '--prompt', member['prompt_file'], '--checkpoint',
          checkpoints[member['model']], '--vocab', vocabulary,
          '--labels', ','.join(TASKS[member['task']].labels), '--top_k', '5',
          '--output_dir', directory], env, os.path.join(out, 'neighbors.log'))
  with open(target) as f:
    return json.load(f)['summary']


# ------------------------------------------------------------------ summary


def _stats(values: Sequence[Optional[float]]) -> dict[str, Any]:
  values = [v for v in values if v is not None]
  if not values:
    return {'mean': None, 'std': None, 'n': 0}
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def summarise(results: list[dict[str, Any]], setting: Setting) -> dict[str, Any]:
  """Mean ± std over the seeds of each comparison, per task."""
  def pick(task: str, **fields: Any) -> dict[str, Any]:
    wanted = {'model': 'lm_adapted', 'tuning': 'prompt',
              'prompt_length': setting.default_prompt_length, 'init': 'class_labels', **fields}
    if wanted['tuning'] == 'model':
      del wanted['prompt_length'], wanted['init']
    seeds = setting.main_seeds if task == 'sst2' else setting.other_seeds
    return _stats([r['accuracy'] for r in results
                   if r['task'] == task and r['seed'] in seeds
                   and all(r[k] == v for k, v in wanted.items())])
  return {task: {
      'prompt_tuning': pick(task),
      'model_tuning': pick(task, tuning='model'),
      'span_corruption': pick(task, model='span_corruption'),
      'random_weights': pick(task, model='random'),
      'prompt_length': {str(n): pick(task, prompt_length=n) for n in setting.prompt_lengths},
      'init': {i: pick(task, init=i) for i in setting.inits},
  } for task in setting.tasks}


@dataclasses.dataclass(frozen=True)
class Claim:
  """One of the paper's directions on one task: `higher` should be >= `lower`."""
  claim: str
  task: str
  higher: float
  lower: float
  noise: Optional[float] = None  # standard error of the difference; None: one seed / one run

  @property
  def difference(self) -> float:
    return self.higher - self.lower

  @property
  def verdict(self) -> str:
    """'held' / 'not held' / 'tied' (equal means), 'within noise' when under two standard
    errors."""
    verdict = ('held' if self.difference > 0 else 'not held' if self.difference < 0
               else 'tied')
    if self.noise is None:
      return verdict + ' (one run a side: no error bar)'
    if abs(self.difference) < 2 * self.noise:
      return verdict + ', within noise'
    return verdict


def _combination(terms: Sequence[tuple[float, dict[str, Any]]]
                 ) -> tuple[Optional[float], Optional[float]]:
  """sum(coef * mean) over (coef, stat) and its standard error (None if a term has one seed)."""
  if any(stat['mean'] is None for _, stat in terms):
    return None, None
  value = sum(coef * stat['mean'] for coef, stat in terms)
  if any(stat['n'] < 2 for _, stat in terms):
    return value, None
  # The summary's std is the population std: std / sqrt(n - 1) is the mean's standard error.
  return value, float(np.sqrt(sum((coef * stat['std']) ** 2 / (stat['n'] - 1)
                                  for coef, stat in terms)))


def claims(report: dict[str, Any]) -> list[Claim]:
  """The paper's directions, each as measured on every task that ran it."""
  out = []
  for task, s in report['summary'].items():
    def compare(claim: str, higher: dict[str, Any], lower: dict[str, Any]) -> None:
      difference, noise = _combination([(1.0, higher), (-1.0, lower)])
      if difference is not None:
        out.append(Claim(claim, task, higher['mean'], lower['mean'], noise))
    compare('at small scale model tuning beats prompt tuning (Fig. 1)',
            s['model_tuning'], s['prompt_tuning'])
    compare('LM adaptation helps prompt tuning over span corruption only (Fig. 3c)',
            s['prompt_tuning'], s['span_corruption'])
    compare('check, not in the paper: a pretrained frozen model beats random weights',
            s['prompt_tuning'], s['random_weights'])
    inits = s['init']
    if {'class_labels', 'random_uniform'} <= set(inits):
      compare('class-label init beats random uniform at small scale (Fig. 3b)',
              inits['class_labels'], inits['random_uniform'])
    if {'sampled_vocab', 'random_uniform'} <= set(inits):
      compare('sampled-vocabulary init beats random uniform at small scale (Fig. 3b)',
              inits['sampled_vocab'], inits['random_uniform'])
    lengths = sorted(s['prompt_length'], key=int)
    default = str(report['setting']['default_prompt_length'])
    if len(lengths) >= 3 and lengths[0] != default and lengths[-1] != default:
      first, last = s['prompt_length'][lengths[0]], s['prompt_length'][lengths[-1]]
      middle = s['prompt_length'][default]
      # gain(first -> default) - gain(default -> last) = 2 middle - first - last
      difference, noise = _combination([(2.0, middle), (-1.0, first), (-1.0, last)])
      if difference is not None:
        out.append(Claim(f'gains flatten with length: P={lengths[0]}->{default} gains at least '
                         f'{default}->{lengths[-1]} (Fig. 3a)', task,
                         middle['mean'] - first['mean'], last['mean'] - middle['mean'], noise))
    ensemble = report['ensembles'].get(task, {})
    members = _stats([v['accuracy'] for k, v in ensemble.items() if k.startswith('member/')])
    if 'ensemble/vote' in ensemble and members['n']:
      member_mean, noise = _combination([(1.0, members)])
      out.append(Claim(f"a {members['n']}-prompt ensemble beats the mean of its members "
                       '(Table 3)', task, ensemble['ensemble/vote']['accuracy'],
                       member_mean, noise))
    neighbours = report['neighbors'].get(task, {})
    if 'label_share' in neighbours:
      out.append(Claim("class labels among a trained prompt's nearest neighbours, "
                       'more than for random vectors (Sec. 7), share in %', task,
                       100 * neighbours['label_share'], 100 * neighbours['random_label_share']))
  return out


def claims_table(report: dict[str, Any]) -> str:
  """The paper's claims beside what the study measured, as a markdown table."""
  lines = ['| claim (the paper) | task | measured | against | difference (± s.e.) | verdict |',
           '|---|---|---|---|---|---|']
  for c in claims(report):
    error = '' if c.noise is None else f' ± {c.noise:.1f}'
    lines.append(f'| {c.claim} | {c.task} | {_percent(c.higher)} | {_percent(c.lower)} | '
                 f'{c.difference:+.1f}{error} | {c.verdict} |')
  return '\n'.join(lines) + '\n'


def _fmt(stat: dict[str, Any]) -> str:
  if stat['mean'] is None:
    return 'n/a'
  return f"{stat['mean']:.1f} ± {stat['std']:.1f} (n={stat['n']})"


def _percent(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'{value:.1f}'


def tables(report: dict[str, Any]) -> str:
  """The study's results as markdown tables."""
  lines = ['| task | prompt tuning, LM-adapted | prompt tuning, span corruption only '
           '| prompt tuning, random weights | model tuning '
           '| ensemble vote / average (member mean) | label share of neighbours (random) |',
           '|---|---|---|---|---|---|---|']
  for task, s in report['summary'].items():
    ensemble = report['ensembles'].get(task, {})
    vote = ensemble.get('ensemble/vote', {}).get('accuracy')
    average = ensemble.get('ensemble/average', {}).get('accuracy')
    member_mean = ensemble.get('members_mean', {}).get('accuracy')
    neighbours = report['neighbors'].get(task, {})
    share = neighbours.get('label_share')
    random_share = neighbours.get('random_label_share')
    lines.append(
        f"| {task} | {_fmt(s['prompt_tuning'])} | {_fmt(s['span_corruption'])} | "
        f"{_fmt(s['random_weights'])} | {_fmt(s['model_tuning'])} | "
        f'{_percent(vote)} / {_percent(average)} ({_percent(member_mean)}) | '
        f"{'n/a' if share is None else f'{share:.0%} ({random_share:.0%})'} |")
  lengths, inits = report['setting']['prompt_lengths'], report['setting']['inits']
  lines += ['', '| task | ' + ' | '.join(f'P={n}' for n in lengths) + ' | '
            + ' | '.join(f'init {i}' for i in inits) + ' |',
            '|---|' + '---|' * (len(lengths) + len(inits))]
  for task, s in report['summary'].items():
    lines.append(f'| {task} | ' + ' | '.join(_fmt(s['prompt_length'][str(n)]) for n in lengths)
                 + ' | ' + ' | '.join(_fmt(s['init'][i]) for i in inits) + ' |')
  return '\n'.join(lines) + '\n'


def plot(report: dict[str, Any], path: str) -> None:
  """Three panels shaped like the paper's Fig. 3: length, initialisation, frozen model."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  kinds = {'random_weights': 'prompt,\nrandom weights',
           'span_corruption': 'prompt,\nspan corruption', 'prompt_tuning': 'prompt,\nLM-adapted',
           'model_tuning': 'model tuning,\nLM-adapted'}
  for task, s in report['summary'].items():
    def draw(ax, xs, stats, label=task):
      ax.errorbar(xs, [st['mean'] if st['mean'] is not None else np.nan for st in stats],
                  yerr=[st['std'] or 0 for st in stats], marker='o', capsize=3, label=label)
    lengths = sorted(s['prompt_length'], key=int)
    draw(axes[0], [int(n) for n in lengths], [s['prompt_length'][n] for n in lengths])
    draw(axes[1], range(len(s['init'])), list(s['init'].values()))
    draw(axes[2], range(len(kinds)), [s[k] for k in kinds])
  axes[0].set_xscale('log')
  axes[0].set_xlabel('prompt length')
  inits = report['setting']['inits']
  axes[1].set_xticks(range(len(inits)), [i.replace('_', ' ') for i in inits])
  axes[1].set_xlabel('prompt initialisation')
  axes[2].set_xticks(range(len(kinds)), list(kinds.values()))
  axes[2].set_xlabel('frozen model / method')
  for ax in axes:
    ax.set_ylabel('accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle("t5_mini (3.4M parameters): the paper's Fig. 3 ablations at mini scale")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='study directory (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(REPO), 'shared'),
                 help='the shared data directory (GLUE and SuperGLUE files)')
  size = p.add_mutually_exclusive_group()
  size.add_argument('--quick', action='store_true', help='every part, few steps')
  size.add_argument('--tiny', action='store_true', help='a test-sized run of the driver')
  p.add_argument('--checkpoint', action='append', default=[], metavar='NAME=PATH',
                 help=f'another frozen checkpoint for one of {sorted(CHECKPOINTS)}')
  p.add_argument('--vocab', default=os.path.join(PRETRAINED, 'spiece.model'),
                 help="the frozen model's vocabulary (for the neighbours)")
  p.add_argument('--docs', action='store_true', help='also write docs/figures/reproduction.png')
  p.add_argument('--loss', default=Setting.loss,
                 help='LOSS of every run (token_cross_entropy, sequence_cross_entropy, ...)')
  p.add_argument('--prompt_lr', type=float, default=Setting.prompt_learning_rate,
                 help='initial learning rate of the prompt runs (decays linearly to 0)')
  p.add_argument('--tasks', nargs='+', choices=sorted(TASKS),
                 help="only these tasks (default: the setting's)")
  p.add_argument('--seeds', nargs='+', type=int,
                 help="seeds of the SST-2 runs (default: the setting's; the ensemble keeps "
                      'its own seeds)')
  p.add_argument('--jobs', type=int, default=1, help='runs at a time')
  args = p.parse_args(argv)
  setting = dataclasses.replace(TINY if args.tiny else QUICK if args.quick else Setting(),
                                loss=args.loss, prompt_learning_rate=args.prompt_lr)
  if args.tasks:
    setting = dataclasses.replace(setting, tasks=tuple(args.tasks))
  if args.seeds:
    setting = dataclasses.replace(setting, main_seeds=tuple(args.seeds))
  checkpoints = dict(CHECKPOINTS)
  for spec in args.checkpoint:
    name, _, path = spec.partition('=')
    if name not in CHECKPOINTS or not path:
      p.error(f'--checkpoint {spec!r}: expected NAME=PATH with NAME in {sorted(CHECKPOINTS)}')
    checkpoints[name] = path
  env = _env(args.shared)
  os.makedirs(args.out, exist_ok=True)
  runs = study_runs(setting)
  tick = time.time()

  def train(run: Run) -> dict[str, Any]:
    result = run_one(run, setting, args.out, env, checkpoints)
    print(f'{run.name}: accuracy {_percent(result["accuracy"])} '
          f'({result["seconds"]}s; study {time.time() - tick:.0f}s)', flush=True)
    return result
  with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
    results = list(pool.map(train, runs))
  report = {'setting': dataclasses.asdict(setting), 'checkpoints': checkpoints,
            'runs': results, 'summary': summarise(results, setting),
            'ensembles': {}, 'neighbors': {}}
  for task in (t for t in setting.tasks if t in setting.ablation_tasks):
    members = [r for r in results if r['task'] == task and r['tuning'] == 'prompt'
               and r['model'] == 'lm_adapted' and r['init'] == 'class_labels'
               and r['prompt_length'] == setting.default_prompt_length
               and r['seed'] < setting.ensemble_size]
    report['ensembles'][task] = run_ensemble(members, args.out, env)
    report['neighbors'][task] = run_neighbors(members[0], args.out, env, checkpoints, args.vocab)
  report['claims'] = [{**dataclasses.asdict(c), 'difference': c.difference,
                        'verdict': c.verdict} for c in claims(report)]
  with open(os.path.join(args.out, 'results.json'), 'w') as f:
    json.dump(report, f, indent=1)
  text = tables(report) + '\n' + claims_table(report)
  with open(os.path.join(args.out, 'reproduction_tables.md'), 'w') as f:
    f.write(text)
  figures = [os.path.join(args.out, 'reproduction.png')]
  if args.docs:
    figures.append(os.path.join(REPO, 'docs', 'figures', 'reproduction.png'))
  for path in figures:
    plot(report, path)
  print(text)
  print(f'Wrote {args.out}/results.json, reproduction_tables.md, ' + ', '.join(figures))
  return 0


if __name__ == '__main__':
  sys.exit(main())
