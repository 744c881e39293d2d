"""Prompts that travel, measured on the mini T5s (docs/reproduction.md, "Prompts that travel").

  python -m benchmarks.travel --out /tmp/travel            # every part, resumable
  python -m benchmarks.travel --out /tmp/travel --part recycling   # one part
  python -m benchmarks.travel --out /tmp/travel --part recycling --recycling_tasks smoke

Three follow-ups of prompt tuning, each as ordinary `ptj` commands (every run its own
MODEL_DIR under OUT/runs: rerun the command to resume; finished runs are skipped):
- recycling (Lester et al., 2022): prompts trained on one frozen model, moved to another by
  `ptj recycle`, scored zero-shot (`ptj ensemble`) against the target's own prompts and
  untrained class-label / random-uniform prompts; then trained on the target from the
  recycled value, against class-label init, to count the steps the recycled start saves.
  The pairs: the shipped span-corruption and LM-adapted t5_mini (the same frozen embedding
  table: every recycler is the identity there), and the first and second t5_mini (different
  embeddings; the first version is read from git history, commit 1266848's parent);
- SPoT (Vu et al., 2022): a library of source prompts on several tasks, `ptj spot` ranks
  them for SST-2 and the smoke task, and each target trains from every source, from
  class-label init, and (3 seeds) from the best-ranked source;
- Wayward prompts (Khashabi et al., 2022): the smoke task with the prompt held near a
  discrete text (WAYWARD_WEIGHT > 0) against the plain prompt from the same text, the text's
  read-back by nearest neighbours (`ptj neighbors --text`) and the accuracy;
- spot_small (not in 'all'): SPoT cut to a 3-prompt library and zero-shot transfer.
`--finished_only` trains nothing: recycling and Wayward measure the runs that finished.
Results: OUT/travel_<part>.json and OUT/travel_tables.md (the tables of every part run so far).
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


from benchmarks import reproduction

REPO = reproduction.REPO
PRETRAINED = reproduction.PRETRAINED
VOCAB = os.path.join(PRETRAINED, 'spiece.model')
PROMPT_FILE = reproduction.PROMPT_FILE
METRIC = reproduction.METRIC
# The first t5_mini (random embedding, trained with the rest), replaced by the shipped
# second version in this commit: its parent still ships it.
FIRST_VERSION_COMMIT = '1266848^'
FIRST_VERSION_PATH = 'prompt_tuning_jax/pretrained/t5_mini'
SEEDS = (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a task trains: the gin files and bindings of its runs (the rate decays to 0)."""
  task: str
  files: tuple[str, ...]
  bindings: tuple[str, ...]
  prompt_length: int
  eval_period: int


def _prompt_recipe(task: str, inputs_length: int, *, steps: int = 600, eval_period: int = 200,
                   learning_rate: float = 0.03) -> Recipe:
  """The SST-2 recipe of docs/reproduction.md (P=100, lr 0.03 -> 0, batch 32, dropout 0)."""
  return Recipe(task, ('models/t5_mini.gin', 'runs/prompt_finetune.gin'), (
      f'MIXTURE_OR_TASK_NAME={task}',
      f"TASK_FEATURE_LENGTHS={{'inputs': {inputs_length}, 'targets': 8}}",
      f'TRAIN_STEPS={steps}', 'BATCH_SIZE=32', 'DROPOUT_RATE=0.0',
      'LEARNING_RATE=@optax.linear_schedule()',
      f'optax.linear_schedule.init_value={learning_rate}', 'optax.linear_schedule.end_value=0.0',
      f'optax.linear_schedule.transition_steps={steps}',
      "EVAL_METHODS=('rank_classification',)", 'LOG_PERIOD=50', 'EVAL_BATCH_SIZE=64'),
      100, eval_period)


def _smoke_recipe(*, steps: int = 600, prompt_length: int = 50, eval_period: int = 50) -> Recipe:
  """The README's smoke run (runs/smoke_pretrained.gin: lr 0.3 -> 0 over the run, batch 16)."""
  return Recipe('smoke_sentiment_transfer', ('runs/smoke_pretrained.gin',),
                (f'TRAIN_STEPS={steps}',), prompt_length, eval_period)


SPOT_STEPS = 300
RECIPES = {
    # Recycling (600 steps): the smoke run (P=50) and SST-2 (P=100).
    'smoke': _smoke_recipe(),
    'sst2': _prompt_recipe('glue_sst2_v002', 64, eval_period=600),  # one eval: the end
    # SPoT (300 steps, one prompt shape: P=100): the library's tasks, two of them targets.
    'spot_smoke': _smoke_recipe(steps=SPOT_STEPS, prompt_length=100, eval_period=SPOT_STEPS),
    'spot_sst2': _prompt_recipe('glue_sst2_v002', 64, steps=SPOT_STEPS, eval_period=SPOT_STEPS),
    'spot_rte': _prompt_recipe('super_glue_rte_v102', 128, steps=SPOT_STEPS,
                               eval_period=SPOT_STEPS),
    'spot_cb': _prompt_recipe('super_glue_cb_v102', 160, steps=SPOT_STEPS,
                              eval_period=SPOT_STEPS),
    'spot_copa': _prompt_recipe('super_glue_copa_v102', 64, steps=SPOT_STEPS,
                                eval_period=SPOT_STEPS),
    'spot_wic': _prompt_recipe('super_glue_wic_v102', 64, steps=SPOT_STEPS,
                               eval_period=SPOT_STEPS),
    # SPoT cut to what a shared 2-core machine carries (part spot_small, P=50, 100 steps).
    'spot50_sst2': _prompt_recipe('glue_sst2_v002', 64, steps=100, eval_period=100),
    'spot50_copa': _prompt_recipe('super_glue_copa_v102', 64, steps=100, eval_period=100),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One `ptj train` run: a recipe on a frozen model from an initial prompt."""
  recipe: str
  model: str = 'lm_adapted'
  seed: int = 0
  init: str = 'class_labels'        # a PROMPT_INIT, or the name of `prompt_file`'s origin
  prompt_file: Optional[str] = None
  extra: tuple[str, ...] = ()       # more gin bindings
  prompt_length: Optional[int] = None  # None: the recipe's

  @property
  def name(self) -> str:
    return f'{self.recipe}-{self.model}-{self.init}-s{self.seed}'


def checkpoints(out: str) -> dict[str, str]:
  """The frozen models: the shipped pair and the first version (extracted from git)."""
  first = os.path.join(out, 'models', 'first_version')
  if not os.path.exists(os.path.join(first, 'lm_adapted', 'checkpoint')):
    os.makedirs(first, exist_ok=True)
    archive = subprocess.run(['git', 'archive', FIRST_VERSION_COMMIT, FIRST_VERSION_PATH],
                             cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', first, '--strip-components=3'], input=archive,
                   check=True)
  permuted = os.path.join(out, 'models', 'permuted_lm_adapted')
  if not os.path.exists(os.path.join(permuted, 'checkpoint')):
    permute_model(os.path.join(PRETRAINED, 'lm_adapted'), permuted)
  return {'lm_adapted': os.path.join(PRETRAINED, 'lm_adapted'),
          'span_corruption': os.path.join(PRETRAINED, 'span_corruption'),
          'first_lm_adapted': os.path.join(first, 'lm_adapted'),
          'permuted_lm_adapted': permuted}


def signed_permutation(width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(perm, signs): x S has component j = signs[j] * x[perm[j]]."""
  rng = np.random.default_rng(seed)
  return rng.permutation(width), rng.choice(np.array([-1.0, 1.0]), width)


def permute_model(source: str, path: str, seed: int = 0) -> None:
  """Writes `source` (a T5X checkpoint) in a residual space whose dimensions are permuted
  and sign-flipped (a signed permutation S): the same function (RMS norms and the tied
  output commute with S), but an embedding table E S. The recycling control: a prompt p of
  `source` is the prompt p S here, a linear map of its rows that `v2v-lin` can recover.

  E -> E S, norm scales permuted, kernels reading the residual stream S^T W, kernels writing
  it W S; the relative-position biases are unchanged.
  """
  from prompt_tuning_jax import checkpoints as ckpt  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.checkpoints import tree  # pylint: disable=import-outside-toplevel
  flat = tree.flatten(ckpt.load_t5x(source))
  perm, signs = signed_permutation(flat['token_embedder/embedding'].shape[1], seed)
  out = {}
  for name, value in flat.items():
    value = np.asarray(value)
    dtype, x = value.dtype, value.astype(np.float32)  # bfloat16: the signs and order are exact
    kind = '/'.join(name.split('/')[-2:])
    if name == 'token_embedder/embedding' or kind in ('out/kernel', 'wo/kernel'):
      x = x[:, perm] * signs
    elif kind.split('/')[0] in ('query', 'key', 'value', 'wi_0', 'wi_1', 'wi'):
      x = x[perm, :] * signs[:, None]
    elif name.endswith('/scale'):
      x = x[perm]
    elif not name.endswith('relpos_bias/rel_embedding'):
      raise ValueError(f'permute_model: no rule for {name}')
    out[name] = x.astype(dtype)
  ckpt.save_t5x(tree.unflatten(out), path)


def train_args(run: Run, model_dir: str, models: dict[str, str]) -> list[str]:
  """The `ptj train` arguments of a run."""
  recipe = RECIPES[run.recipe]
  bindings = [*recipe.bindings, f'MODEL_DIR={model_dir}',
              f'INITIAL_CHECKPOINT_PATH={models[run.model]}', f'SEED={run.seed}',
              f'PROMPT_LENGTH={run.prompt_length or recipe.prompt_length}',
              f'EVAL_PERIOD={recipe.eval_period}', f'CHECKPOINT_PERIOD={recipe.eval_period}',
              'KEEP_CHECKPOINTS=1', 'BEST_METRIC=None', *run.extra]
  if run.prompt_file:
    bindings.append(f'PROMPT_FILE={run.prompt_file}')
  elif not any(b.startswith('PROMPT_INIT=') for b in run.extra):
    bindings.append(f'PROMPT_INIT={run.init}')
  return [*(f'--gin_file={f}' for f in recipe.files), *(f'--gin.{b}' for b in bindings)]


def _ptj(args: Sequence[str], env: dict[str, str], log_path: str) -> None:
  reproduction._ptj(args, env, log_path)  # pylint: disable=protected-access


def run_one(run: Run, out: str, env: dict[str, str], models: dict[str, str]) -> dict[str, Any]:
  """Trains (or resumes, or skips when finished) one run; its final accuracy and curve."""
  model_dir = os.path.join(out, 'runs', run.name)
  done = os.path.join(model_dir, 'result.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  os.makedirs(model_dir, exist_ok=True)
  tick = time.time()
  _ptj(['train', *train_args(run, model_dir, models)], env, os.path.join(model_dir, 'travel.log'))
  curve = reproduction.eval_curve(model_dir)
  steps = max(step for step, _ in curve)
  result = {**dataclasses.asdict(run), 'name': run.name, 'model_dir': model_dir,
            'accuracy': curve[-1][1], 'curve': curve, 'seconds': round(time.time() - tick, 1),
            'prompt_file': os.path.join(model_dir, 'numpy_checkpoints', f'checkpoint_{steps}',
                                        PROMPT_FILE)}
  with open(done, 'w') as f:
    json.dump(result, f, indent=1)
  return result


def run_all(runs: Sequence[Run], out: str, env: dict[str, str], models: dict[str, str],
            jobs: int, finished_only: bool = False) -> dict[Run, dict[str, Any]]:
  """Every run (`jobs` at a time); their results by run. `finished_only`: trains nothing,
  the results of the runs that finished (the others are said to be cut)."""
  tick = time.time()
  if finished_only:
    done = [run for run in runs
            if os.path.exists(os.path.join(out, 'runs', run.name, 'result.json'))]
    for run in runs:
      if run not in done:
        print(f'{run.name}: not run (cut)', flush=True)
    runs = done

  def one(run: Run) -> dict[str, Any]:
    result = run_one(run, out, env, models)
    print(f'{run.name}: {result["accuracy"]:.1f} ({result["seconds"]}s; '
          f'{time.time() - tick:.0f}s)', flush=True)
    return result
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    return dict(zip(runs, pool.map(one, runs)))


def initial_prompt(run: Run, out: str, models: dict[str, str]) -> str:
  """The prompt file of a run's initial prompt (untrained), built as `ptj train` builds it."""
  path = os.path.join(out, 'initial', f'{run.name}.npy')
  if not os.path.exists(path):
    from prompt_tuning_jax import checkpoints as ckpt  # pylint: disable=import-outside-toplevel
    from prompt_tuning_jax import config  # pylint: disable=import-outside-toplevel
    from prompt_tuning_jax import run_setup  # pylint: disable=import-outside-toplevel
    from prompt_tuning_jax.checkpoints import tree  # pylint: disable=import-outside-toplevel
    args = train_args(run, os.path.join(out, 'initial', run.name), models)
    files, bindings = config.split_bindings(args)
    settings = config.configure('train', [f.split('=', 1)[1] for f in files], bindings).settings
    params = run_setup.build_params(run_setup.setup(settings))
    ckpt.save_prompt(path, tree.flatten(params)['encoder/prompt/prompt/prompt'])
  return path


def ensemble_accuracies(model_dir: str, members: dict[str, str], output: str,
                        env: dict[str, str], bindings: Sequence[str] = ()) -> dict[str, float]:
  """Rank-classification accuracy of each member prompt on the run's task and frozen model
  (`ptj ensemble`: every member in one batched pass)."""
  if not os.path.exists(output):
    os.makedirs(os.path.dirname(output), exist_ok=True)
    args = ['ensemble', f'--gin.MODEL_DIR={model_dir}', *bindings, '--method',
            'rank_classification', '--output', output]
    for name, path in members.items():
      args += ['--prompt', f'{name}={path}']
    _ptj(args, env, output + '.log')
  with open(output) as f:
    metrics = json.load(f)['metrics']
  return {name: metrics[f'member/{name}']['accuracy'] for name in members}


def _stats(values: Sequence[Optional[float]]) -> dict[str, Any]:
  return reproduction._stats(values)  # pylint: disable=protected-access


def _fmt(stat: dict[str, Any]) -> str:
  if stat['mean'] is None:
    return 'n/a'
  return f"{stat['mean']:.1f} ± {stat['std']:.1f}" + (f" (n={stat['n']})" if stat['n'] != 3 else '')


# ------------------------------------------------------------------ recycling

# (source, target) frozen models: the shipped pair (one frozen embedding table) and the
# first version against the shipped LM-adapted model (different tables).
PAIRS = (('span_corruption', 'lm_adapted'), ('lm_adapted', 'span_corruption'),
         ('first_lm_adapted', 'lm_adapted'), ('lm_adapted', 'first_lm_adapted'),
         ('lm_adapted', 'permuted_lm_adapted'))
# The control (`permute_model`): the LM-adapted model's function in a permuted space. Its own
# trained prompts are the LM-adapted ones mapped exactly; none is trained on it.
CONTROL = 'permuted_lm_adapted'
RECYCLING_TASKS = ('smoke', 'sst2')
# The first version carries little on SST-2 (49.7%, docs/reproduction.md): one seed there.
FIRST_VERSION_SST2_SEEDS = (0,)
RECYCLERS = ('v2v-lin', 'v2v-nn')


def _seeds(recipe: str, model: str) -> tuple[int, ...]:
  return FIRST_VERSION_SST2_SEEDS if (recipe, model) == ('sst2', 'first_lm_adapted') else SEEDS


def source_runs(tasks: Sequence[str] = RECYCLING_TASKS) -> list[Run]:
  """Prompts on each frozen model (recycling's sources, targets and step-0 baselines)."""
  return [Run(recipe, model, seed) for recipe in tasks
          for model in ('lm_adapted', 'span_corruption', 'first_lm_adapted')
          for seed in _seeds(recipe, model)]


def measured_tasks(sources: dict[Run, dict[str, Any]]) -> tuple[str, ...]:
  """The recycling tasks whose source runs all finished (all of them unless cut)."""
  return tuple(task for task in RECYCLING_TASKS
               if all(run in sources for run in source_runs() if run.recipe == task))


def recycle_prompts(sources: dict[Run, dict[str, Any]], out: str, models: dict[str, str]
                    ) -> dict[tuple, dict[str, Any]]:
  """Every source prompt recycled to each pair's target by each recycler (in this process:
  one fit per pair and recycler, `ptj recycle`'s functions); {(task, source, target,
  recycler, seed): {'file', 'r_squared', 'identical_tables'}}."""
  from prompt_tuning_jax import checkpoints as ckpt  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.analysis import neighbors  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.transfer import recycling  # pylint: disable=import-outside-toplevel
  vocabulary = neighbors.PieceVocabulary(VOCAB)
  ids = recycling.word_ids(vocabulary)
  tables = {name: neighbors.load_t5x_embedding(path) for name, path in models.items()}
  recycled = {}
  for source, target in PAIRS:
    for recycler in RECYCLERS:
      fitted = None
      for task in measured_tasks(sources):
        for seed in _seeds(task, source):
          key = (task, source, target, recycler, seed)
          path = os.path.join(out, 'recycled',
                              f'{task}-{source}-to-{target}-{recycler}-s{seed}.npy')
          if not os.path.exists(path):
            fitted = fitted or recycling.fit(tables[source], tables[target], ids, recycler)
            prompt = ckpt.load_prompt(sources[Run(task, source, seed)]['prompt_file'])
            ckpt.save_prompt(path, fitted(prompt))
            with open(path + '.json', 'w') as f:
              json.dump({'r_squared': fitted.r_squared, 'words': fitted.words,
                         'identical_tables': fitted.identical_tables}, f)
          with open(path + '.json') as f:
            recycled[key] = {'file': path, **json.load(f)}
  return recycled


def zero_shot(sources: dict[Run, dict[str, Any]], recycled: dict[tuple, dict[str, Any]],
              out: str, env: dict[str, str], models: dict[str, str]) -> dict[str, Any]:
  """Zero-shot accuracy on each target model: recycled and moved-as-is prompts, the target's
  own trained prompts, untrained class-label and random-uniform prompts."""
  table = {}
  for task in measured_tasks(sources):
    for target in ('lm_adapted', 'span_corruption', 'first_lm_adapted', CONTROL):
      members, bindings = {}, []
      if target == CONTROL:  # evaluated with an LM-adapted run's configuration
        bindings = [f'--gin.INITIAL_CHECKPOINT_PATH={models[CONTROL]}']
      else:
        for seed in _seeds(task, target):
          members[f'own-s{seed}'] = sources[Run(task, target, seed)]['prompt_file']
          for init in ('class_labels', 'random_uniform'):
            members[f'{init}-s{seed}'] = initial_prompt(Run(task, target, seed, init), out,
                                                        models)
      for source, pair_target in PAIRS:
        if pair_target != target:
          continue
        for seed in _seeds(task, source):
          members[f'{source}-as_is-s{seed}'] = sources[Run(task, source, seed)]['prompt_file']
          for recycler in RECYCLERS:
            entry = recycled[(task, source, target, recycler, seed)]
            if not entry['identical_tables']:  # identical tables: the as-is prompt
              members[f'{source}-{recycler}-s{seed}'] = entry['file']
      run_dir = sources[Run(task, 'lm_adapted' if target == CONTROL else target, 0)]['model_dir']
      table[f'{task}/{target}'] = ensemble_accuracies(
          run_dir, members, os.path.join(out, 'zero_shot', f'{task}-{target}.json'), env,
          bindings)
  return table


def steps_saved_runs(recycled: dict[tuple, dict[str, Any]]) -> list[Run]:
  """The smoke task on the LM-adapted model from recycled prompts (span corruption: the
  prompt as it is; the first version: v2v-lin), against its class-label runs."""
  return [Run('smoke', 'lm_adapted', seed, f'from-{source}-{recycler}',
              recycled[('smoke', source, 'lm_adapted', recycler, seed)]['file'])
          for source, recycler in (('span_corruption', 'v2v-lin'),
                                   ('first_lm_adapted', 'v2v-lin'))
          for seed in SEEDS]


def recycling_report(sources, recycled, zero, continued) -> dict[str, Any]:
  """The zero-shot table's cells (mean ± std over seeds), the fits, and the steps-saved
  curves (step 0: the zero-shot accuracy of the starting prompt)."""
  cells = {}
  for key, accuracies in zero.items():
    groups: dict[str, list[float]] = {}
    for name, accuracy in accuracies.items():
      groups.setdefault(name.rsplit('-s', 1)[0], []).append(accuracy)
    cells[key] = {group: _stats(values) for group, values in groups.items()}
  fits = {f'{source} -> {target}, {recycler}': next(
      v['r_squared'] for k, v in recycled.items() if k[1:4] == (source, target, recycler))
          for source, target in PAIRS for recycler in RECYCLERS}
  start = zero['smoke/lm_adapted']
  curves = {'class_labels': [[(0, start[f'class_labels-s{seed}'])]
                             + sources[Run('smoke', 'lm_adapted', seed)]['curve']
                             for seed in SEEDS]}
  for run, result in continued.items():
    source, recycler = _recycled_start(run)
    member = f'{source}-{recycler}' if f'{source}-{recycler}-s0' in start else f'{source}-as_is'
    curves.setdefault(run.init, []).append([(0, start[f'{member}-s{run.seed}'])]
                                           + result['curve'])
  # Steps saved: the first step within 2 points of class-label init's final mean accuracy.
  level = _stats([c[-1][1] for c in curves['class_labels']])['mean'] - 2.0
  steps = {init: [steps_to_reach(c, level) for c in runs] for init, runs in curves.items()}
  return {'tasks': measured_tasks(sources), 'zero_shot': cells, 'fits': fits,
          'curves': curves, 'level': level, 'steps_to_level': steps}


def _recycled_start(run: Run) -> tuple[str, str]:
  """(source model, recycler) of a steps-saved run ('from-<source>-<recycler>'; recycler
  names hold dashes)."""
  recycler = next(r for r in RECYCLERS if run.init.endswith(f'-{r}'))
  return run.init.removeprefix('from-').removesuffix(f'-{recycler}'), recycler


def steps_to_reach(curve: Sequence[tuple[int, float]], level: float) -> Optional[int]:
  """The first eval step at which the accuracy is at least `level`; None: never."""
  return next((step for step, accuracy in curve if accuracy >= level), None)


# ------------------------------------------------------------------ SPoT

# The library: each task's prompt trained from class labels, each with its own seed (the
# sampled-vocabulary rows of one seed are the same in every task's prompt).
SPOT_LIBRARY = {'spot_sst2': 10, 'spot_smoke': 11, 'spot_rte': 12, 'spot_cb': 13,
                'spot_copa': 14, 'spot_wic': 15}
SPOT_TARGETS = ('spot_sst2', 'spot_smoke')


def spot_library_runs() -> list[Run]:
  return [Run(task, seed=seed) for task, seed in SPOT_LIBRARY.items()]


def spot_rankings(library: dict[Run, dict[str, Any]], out: str, env: dict[str, str],
                  models: dict[str, str]) -> dict[str, Any]:
  """`ptj spot` for each target against the other tasks' prompts, each metric; and the same
  ranking of the untrained (initial) prompts: what the initialisation alone gives."""
  from prompt_tuning_jax import checkpoints as ckpt  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.transfer import spot  # pylint: disable=import-outside-toplevel
  rankings = {}
  for target in SPOT_TARGETS:
    target_run = Run(target, seed=SPOT_LIBRARY[target])
    sources = {task: library[Run(task, seed=seed)]['prompt_file']
               for task, seed in SPOT_LIBRARY.items() if task != target}
    initial = {task: initial_prompt(Run(task, seed=seed), out, models)
               for task, seed in SPOT_LIBRARY.items()}
    for metric in spot.METRICS:
      output = os.path.join(out, 'spot', f'{target}-{metric}.json')
      if not os.path.exists(output):
        args = ['spot', '--target', library[target_run]['prompt_file'], '--metric', metric,
                '--output', output]
        for name, path in sources.items():
          args += ['--source', f'{name}={path}']
        _ptj(args, env, output + '.log')
      with open(output) as f:
        trained = [(r['name'], r['similarity']) for r in json.load(f)['ranking']]
      untrained = spot.rank(ckpt.load_prompt(initial[target]),
                            {n: ckpt.load_prompt(initial[n]) for n in sources}, metric)
      rankings[f'{target}/{metric}'] = {'trained': trained, 'initial': untrained}
  return rankings


def spot_transfer_runs(library: dict[Run, dict[str, Any]], rankings: dict[str, Any]
                       ) -> list[Run]:
  """Each target: class-label init (3 seeds), every other task's prompt (seed 0), the best
  source by average-token similarity (3 seeds)."""
  runs = []
  for target in SPOT_TARGETS:
    runs += [Run(target, seed=seed) for seed in SEEDS]
    best = rankings[f'{target}/average_tokens']['trained'][0][0]
    for task, seed in SPOT_LIBRARY.items():
      if task != target:
        source = library[Run(task, seed=seed)]['prompt_file']
        for s in SEEDS if task == best else (0,):
          runs.append(Run(target, seed=s, init=f'spot-{task}', prompt_file=source))
  return runs


def spot_report(rankings, transfers: dict[Run, dict[str, Any]]) -> dict[str, Any]:
  report = {}
  for target in SPOT_TARGETS:
    results: dict[str, list[float]] = {}
    for run, result in transfers.items():
      if run.recipe == target:
        results.setdefault(run.init, []).append(result['accuracy'])
    report[target] = {'transfer': {init: _stats(v) for init, v in results.items()},
                      'rankings': {m: rankings[f'{target}/{m}'] for m in ('average_tokens',
                                                                          'per_token')}}
  return report


# SPoT cut (part spot_small): a library of three P=50 prompts on the LM-adapted model (SST-2
# and COPA, 100 steps, their own seeds; the smoke task: the recycling's seed-0 source, 600
# steps); each of the smoke task and SST-2 ranks the other two (`ptj spot`, both metrics),
# and every source prompt is scored zero-shot on it beside its own prompt and class-label
# init (3 seeds, untrained). No transfer training: the zero-shot start is what is measured.
SPOT_SMALL_LIBRARY = {'sst2': Run('spot50_sst2', seed=10, prompt_length=50),
                      'copa': Run('spot50_copa', seed=14, prompt_length=50),
                      'smoke': Run('smoke', seed=0)}
SPOT_SMALL_TARGETS = ('smoke', 'sst2')


def spot_small(library: dict[Run, dict[str, Any]], out: str, env: dict[str, str],
               models: dict[str, str]) -> dict[str, Any]:
  """Rankings and zero-shot accuracies of the cut SPoT part, per target."""
  from prompt_tuning_jax import checkpoints as ckpt  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.transfer import spot  # pylint: disable=import-outside-toplevel
  files = {task: library[run]['prompt_file'] for task, run in SPOT_SMALL_LIBRARY.items()}
  report = {}
  for target in SPOT_SMALL_TARGETS:
    target_run = SPOT_SMALL_LIBRARY[target]
    sources = {task: ckpt.load_prompt(f) for task, f in files.items() if task != target}
    rankings = {metric: spot.rank(ckpt.load_prompt(files[target]), sources, metric)
                for metric in spot.METRICS}
    members = {f'source-{task}': files[task] for task in sources}
    members['own'] = files[target]
    for seed in SEEDS:
      members[f'class_labels-s{seed}'] = initial_prompt(
          dataclasses.replace(target_run, seed=seed), out, models)
    accuracies = ensemble_accuracies(library[target_run]['model_dir'], members,
                                     os.path.join(out, 'spot_small', f'{target}.json'), env)
    report[target] = {
        'rankings': rankings,
        'zero_shot': {name: accuracies[name] for name in members if 'class_labels' not in name},
        'class_labels': _stats([accuracies[f'class_labels-s{seed}'] for seed in SEEDS]),
        'library_accuracy': {task: library[run]['accuracy']
                             for task, run in SPOT_SMALL_LIBRARY.items()}}
  return report


# ------------------------------------------------------------------ Wayward prompts

# The original's SST-2 task text (its wayward config), without its backquotes: 78 pieces of
# t5_mini's vocabulary, so the prompt has 78 rows.
WAYWARD_TEXT = ('Classify these movie reviews based on sentiment . Use 2 classes . One positive '
                '( for reviews that paint the movie in a favorable light ) and one negative '
                '( for reviews that make you not want to see the movie ) . Use the string '
                'positive for the positive class , the good movies , and use the string '
                'negative for the negative class , the bad movies .')
WAYWARD_LENGTH = 78
WAYWARD_WEIGHTS = (0.0, 0.01, 0.1)


def wayward_runs() -> list[Run]:
  """The smoke run from the text's embedding, held near it with each weight (0: plain)."""
  return [Run('smoke', seed=seed, init=f'wayward-w{weight:g}', prompt_length=WAYWARD_LENGTH,
              extra=("PROMPT_INIT='from_text'", f'settings.PromptSettings.text={WAYWARD_TEXT!r}',
                     f'WAYWARD_TEXT={WAYWARD_TEXT!r}', f'WAYWARD_WEIGHT={weight}'))
          for weight in WAYWARD_WEIGHTS for seed in SEEDS]


def wayward_report(results: dict[Run, dict[str, Any]], models: dict[str, str]) -> dict[str, Any]:
  """Accuracy and the read-back of the text (nearest pieces, `ptj neighbors --text`)."""
  from prompt_tuning_jax import checkpoints as ckpt  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.analysis import neighbors  # pylint: disable=import-outside-toplevel
  vocabulary = neighbors.PieceVocabulary(VOCAB)
  table = neighbors.load_t5x_embedding(models['lm_adapted'])
  ids = vocabulary.encode(WAYWARD_TEXT)
  report = {}
  for weight in WAYWARD_WEIGHTS:
    rows = [(result['accuracy'], neighbors.read_back(neighbors.nearest_neighbors(
        ckpt.load_prompt(result['prompt_file']), table, top_k=5, max_id=len(vocabulary))[1],
        ids, vocabulary)) for run, result in results.items() if run.init == f'wayward-w{weight:g}']
    if not rows:
      continue
    report[f'{weight:g}'] = {
        'accuracy': _stats([a for a, _ in rows]),
        'top1_read_back': _stats([100 * r['top1_accuracy'] for _, r in rows]),
        'top5_read_back': _stats([100 * r['topk_accuracy'] for _, r in rows]),
        'text_seed0': rows[0][1]['text']}
  return report


# ------------------------------------------------------------------ tables


def tables(report: dict[str, Any]) -> str:
  """The three measured tables, as markdown."""
  lines = []
  if 'recycling' in report:
    rec = report['recycling']
    lines += ['| task | source -> target | recycled v2v-lin | recycled v2v-nn | moved as is | '
              "target's own prompt | class-label init (untrained) | random init (untrained) |",
              '|---|---|---|---|---|---|---|---|']
    for task in rec['tasks']:
      for source, target in PAIRS:
        cells = rec['zero_shot'][f'{task}/{target}']
        lin, nn = (cells.get(f'{source}-{r}') for r in RECYCLERS)
        same = lin is None
        own, labels, uniform = (_fmt(cells[k]) if k in cells else 'n/a'
                                for k in ('own', 'class_labels', 'random_uniform'))
        lines.append(
            f'| {task} | {source} -> {target} | {"= as is" if same else _fmt(lin)} | '
            f'{"= as is" if same else _fmt(nn)} | {_fmt(cells[f"{source}-as_is"])} | '
            f'{own} | {labels} | {uniform} |')
    lines += ['', '| map | R^2 on its 3,749 word pairs |', '|---|---|']
    lines += [f'| {k} | {v:.3f} |' for k, v in rec['fits'].items()]
    steps = sorted({s for curves in rec['curves'].values() for c in curves for s, _ in c})
    shown = [s for s in steps if s in (0, 50, 100, 150, 200, 300, 400, 600)]
    lines += ['', '| smoke task on the LM-adapted model, start | '
              + ' | '.join(f'step {s}' for s in shown)
              + f" | steps to {rec['level']:.1f}% |", '|---|' + '---|' * (len(shown) + 1)]
    for start, curves in rec['curves'].items():
      by_step = {s: [dict(c).get(s) for c in curves] for s in shown}
      reached = ', '.join('never' if n is None else str(n) for n in rec['steps_to_level'][start])
      lines.append(f'| {start} | ' + ' | '.join(_fmt(_stats(by_step[s])) for s in shown)
                   + f' | {reached} |')
  if 'spot' in report:
    lines += ['', '| target | source (similarity: average tokens / per token; initial prompts) '
              '| accuracy after transfer |', '|---|---|---|']
    for target, r in report['spot'].items():
      average = dict(r['rankings']['average_tokens']['trained'])
      per_token = dict(r['rankings']['per_token']['trained'])
      initial = dict(r['rankings']['average_tokens']['initial'])
      for init, stat in sorted(r['transfer'].items(), key=lambda kv: -(kv[1]['mean'] or 0)):
        name = init.removeprefix('spot-')
        similarity = (f'{average[name]:+.3f} / {per_token[name]:+.3f}; {initial[name]:+.3f}'
                      if name in average else '(class-label init)')
        lines.append(f'| {target} | {name}: {similarity} | {_fmt(stat)} |')
  if 'spot_small' in report:
    lines += ['', '| target | source | similarity: average tokens | per token | zero-shot '
              'accuracy on the target |', '|---|---|---|---|---|']
    for target, r in report['spot_small'].items():
      per_token = dict(r['rankings']['per_token'])
      for name, average in r['rankings']['average_tokens']:
        lines.append(f"| {target} | {name} | {average:+.3f} | {per_token[name]:+.3f} | "
                     f"{r['zero_shot'][f'source-{name}']:.1f} |")
      lines.append(f"| {target} | class-label init (untrained) | | | "
                   f"{_fmt(r['class_labels'])} |")
      lines.append(f"| {target} | its own prompt | | | {r['zero_shot']['own']:.1f} |")
  if 'wayward' in report:
    lines += ['', '| WAYWARD_WEIGHT | accuracy | read-back: nearest piece right | in the top 5 '
              '| seed 0 reads |', '|---|---|---|---|---|']
    for weight, r in report['wayward'].items():
      lines.append(f"| {weight} | {_fmt(r['accuracy'])} | {_fmt(r['top1_read_back'])}% | "
                   f"{_fmt(r['top5_read_back'])}% | {r['text_seed0'][:80]} |")
  return '\n'.join(lines) + '\n'


PARTS = ('recycling', 'wayward', 'spot', 'spot_small')


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='results directory (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(REPO), 'shared'),
                 help='the shared data directory (GLUE and SuperGLUE files)')
  p.add_argument('--part', choices=(*PARTS, 'all'), default='all',
                 help='one part (parts may run at the same time, as separate processes)')
  p.add_argument('--jobs', type=int, default=1, help='training runs at a time')
  p.add_argument('--recycling_tasks', nargs='+', choices=RECYCLING_TASKS,
                 default=list(RECYCLING_TASKS),
                 help='recycling: train the source prompts of these tasks only')
  p.add_argument('--finished_only', action='store_true',
                 help='train nothing: recycling and wayward measure the runs that finished')
  args = p.parse_args(argv)
  env = reproduction._env(args.shared)  # pylint: disable=protected-access
  models = checkpoints(args.out)
  parts = PARTS[:3] if args.part == 'all' else (args.part,)
  for part in parts:
    if part == 'recycling':
      sources = run_all(source_runs(args.recycling_tasks), args.out, env, models, args.jobs,
                        args.finished_only)
      recycled = recycle_prompts(sources, args.out, models)
      zero = zero_shot(sources, recycled, args.out, env, models)
      continued = run_all(steps_saved_runs(recycled), args.out, env, models, args.jobs,
                          args.finished_only)
      result = recycling_report(sources, recycled, zero, continued)
    elif part == 'wayward':
      result = wayward_report(run_all(wayward_runs(), args.out, env, models, args.jobs,
                                      args.finished_only), models)
    elif part == 'spot_small':
      result = spot_small(run_all(list(SPOT_SMALL_LIBRARY.values()), args.out, env, models,
                                  args.jobs), args.out, env, models)
    else:
      library = run_all(spot_library_runs(), args.out, env, models, args.jobs)
      rankings = spot_rankings(library, args.out, env, models)
      transfers = run_all(spot_transfer_runs(library, rankings), args.out, env, models,
                          args.jobs)
      result = spot_report(rankings, transfers)
    with open(os.path.join(args.out, f'travel_{part}.json'), 'w') as f:
      json.dump(result, f, indent=1)
  # The tables of every part measured so far (parts may run as separate processes).
  report = {}
  for part in PARTS:
    path = os.path.join(args.out, f'travel_{part}.json')
    if os.path.exists(path):
      with open(path) as f:
        report[part] = json.load(f)
  text = tables(report)
  with open(os.path.join(args.out, 'travel_tables.md'), 'w') as f:
    f.write(text)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
