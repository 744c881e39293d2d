"""Prompts that travel, measured on the mini T5s (docs/reproduction.md, "Prompts that travel").

  python -m benchmarks.travel --out /tmp/travel            # every part, resumable
  python -m benchmarks.travel --out /tmp/travel --part recycling   # one part

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
  read-back by nearest neighbours (`ptj neighbors --text`) and the accuracy.
Results: OUT/travel.json and OUT/travel_tables.md.
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
  """How a task trains: the gin files and bindings of its runs (600 steps, rate decays to 0)."""
  task: str
  files: tuple[str, ...]
  bindings: tuple[str, ...]
  prompt_length: int
  eval_period: int
  labels: tuple[str, ...] = ('negative', 'positive')


def _prompt_recipe(task: str, inputs_length: int, labels: tuple[str, ...], *,
                   learning_rate: float = 0.03, steps: int = 600, prompt_length: int = 100,
                   eval_period: int = 100) -> Recipe:
  """The SST-2 recipe of docs/reproduction.md (P=100, lr 0.03 -> 0, batch 32, dropout 0)."""
  return Recipe(task, ('models/t5_mini.gin', 'runs/prompt_finetune.gin'), (
      f'MIXTURE_OR_TASK_NAME={task}',
      f"TASK_FEATURE_LENGTHS={{'inputs': {inputs_length}, 'targets': 8}}",
      f'TRAIN_STEPS={steps}', 'BATCH_SIZE=32', 'DROPOUT_RATE=0.0',
      'LEARNING_RATE=@optax.linear_schedule()',
      f'optax.linear_schedule.init_value={learning_rate}', 'optax.linear_schedule.end_value=0.0',
      f'optax.linear_schedule.transition_steps={steps}',
      "EVAL_METHODS=('rank_classification',)", 'LOG_PERIOD=50', 'EVAL_BATCH_SIZE=64'),
      prompt_length, eval_period, labels)


RECIPES = {
    # The smoke run of the README (runs/smoke_pretrained.gin: P=50, lr 0.3 -> 0, batch 16).
    'smoke': Recipe('smoke_sentiment_transfer', ('runs/smoke_pretrained.gin',), (), 50, 50),
    'sst2': _prompt_recipe('glue_sst2_v002', 64, ('negative', 'positive')),
    # SPoT's library: the smoke task at P=100 (every prompt of a transfer has one shape).
    'smoke100': dataclasses.replace(
        Recipe('smoke_sentiment_transfer', ('runs/smoke_pretrained.gin',), (), 100, 50)),
    'rte': _prompt_recipe('super_glue_rte_v102', 128, ('entailment', 'not_entailment')),
    'cb': _prompt_recipe('super_glue_cb_v102', 160, ('entailment', 'contradiction', 'neutral')),
    'boolq': _prompt_recipe('super_glue_boolq_v102', 256, ('False', 'True')),
    'copa': _prompt_recipe('super_glue_copa_v102', 64, ('choice1', 'choice2')),
    'wic': _prompt_recipe('super_glue_wic_v102', 64, ('False', 'True')),
    'mrpc': _prompt_recipe('glue_mrpc_v002', 96, ('not_equivalent', 'equivalent')),
}


@dataclasses.dataclass(frozen=True)
class Run:
  """One `ptj train` run: a recipe on a frozen model from an initial prompt."""
  recipe: str
  model: str = 'lm_adapted'
  seed: int = 0
  init: str = 'class_labels'        # a PROMPT_INIT, or a name for `prompt_file`
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
  return {'lm_adapted': os.path.join(PRETRAINED, 'lm_adapted'),
          'span_corruption': os.path.join(PRETRAINED, 'span_corruption'),
          'first_lm_adapted': os.path.join(first, 'lm_adapted')}


def train_args(run: Run, model_dir: str, models: dict[str, str]) -> list[str]:
  recipe = RECIPES[run.recipe]
  length = run.prompt_length or recipe.prompt_length
  bindings = [*recipe.bindings, f'MODEL_DIR={model_dir}',
              f'INITIAL_CHECKPOINT_PATH={models[run.model]}', f'SEED={run.seed}',
              f'PROMPT_LENGTH={length}', f'EVAL_PERIOD={recipe.eval_period}',
              f'CHECKPOINT_PERIOD={recipe.eval_period}', 'KEEP_CHECKPOINTS=1',
              'BEST_METRIC=None', *run.extra]
  if run.prompt_file:
    bindings.append(f'PROMPT_FILE={run.prompt_file}')
  else:
    bindings.append(f'PROMPT_INIT={run.init}')
  return [*(f'--gin_file={f}' for f in recipe.files), *(f'--gin.{b}' for b in bindings)]


def run_one(run: Run, out: str, env: dict[str, str], models: dict[str, str]) -> dict[str, Any]:
  """Trains (or resumes, or skips when finished) one run; its final accuracy and curve."""
  model_dir = os.path.join(out, 'runs', run.name)
  done = os.path.join(model_dir, 'result.json')
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  os.makedirs(model_dir, exist_ok=True)
  tick = time.time()
  reproduction._ptj(['train', *train_args(run, model_dir, models)], env,  # pylint: disable=protected-access
                    os.path.join(model_dir, 'travel.log'))
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
            jobs: int) -> dict[Run, dict[str, Any]]:
  """Every run (`jobs` at a time); their results by run."""
  tick = time.time()

  def one(run: Run) -> dict[str, Any]:
    result = run_one(run, out, env, models)
    print(f'{run.name}: {result["accuracy"]:.1f} ({result["seconds"]}s; '
          f'{time.time() - tick:.0f}s)', flush=True)
    return result
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    return dict(zip(runs, pool.map(one, runs)))


# ------------------------------------------------------------------ the parts


def source_runs() -> list[Run]:
  """Prompts on each frozen model: smoke and SST-2, 3 seeds (recycling's sources and targets)."""
  return [Run(recipe, model, seed) for recipe in ('smoke', 'sst2')
          for model in ('lm_adapted', 'span_corruption', 'first_lm_adapted') for seed in SEEDS]


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', required=True, help='results directory (resumable)')
  p.add_argument('--shared', default=os.path.join(os.path.dirname(REPO), 'shared'),
                 help='the shared data directory (GLUE and SuperGLUE files)')
  p.add_argument('--part', choices=('sources', 'recycling', 'spot', 'wayward', 'all'),
                 default='all')
  p.add_argument('--jobs', type=int, default=1, help='runs at a time')
  args = p.parse_args(argv)
  env = reproduction._env(args.shared)  # pylint: disable=protected-access
  models = checkpoints(args.out)
  run_all(source_runs(), args.out, env, models, args.jobs)
  return 0


if __name__ == '__main__':
  sys.exit(main())
