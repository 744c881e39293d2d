"""The paper's domain-shift tables from the metrics runs wrote: `ptj table`.

  ptj table mrqa --prompt DIR [--prompt DIR ...] [--model DIR ...]
  ptj table qqp_mrpc --prompt QQP_DIR --prompt MRPC_DIR --model ... --method rank_classification

Each DIR is a training run (MODEL_DIR) whose `metrics.jsonl` holds the evals of a table's
tasks, e.g. from `ptj eval --gin.MIXTURE_OR_TASK_NAME=squad_to_mrqa_v001`. A row takes, from
each run that has its task, that task's last eval (or the one at `--step`); several runs of a
side (seeds) give mean ± std. Prompt tuning is shown beside model tuning when model runs are
given, with the difference (prompt - model), as the paper's Table 1:

  | Dataset | Domain | Model EM | Model F1 | Prompt EM | Prompt F1 | Δ EM | Δ F1 |
  |---|---|---|---|---|---|---|---|
  | SQuAD | Wiki | 84.1 ± 0.3 | 91.0 ± 0.2 | 83.2 ± 0.4 | 90.6 ± 0.1 | -0.9 | -0.4 |
  | TextbookQA | Book | ... |
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from prompt_tuning_jax import config
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax.errors import UsageError

TASKLESS_PREFIX = 'taskless_'
RANK_CLASSIFICATION = 'rank_classification'
EVAL_SPLIT_PREFIX = 'eval/'


@dataclasses.dataclass(frozen=True)
class Row:
  label: str
  domain: str  # '' in a table without a domain column
  task: str  # the task whose metrics fill the row (its `taskless_` variant does too)


@dataclasses.dataclass(frozen=True)
class Layout:
  title: str
  first_column: str
  rows: tuple[Row, ...]
  metrics: tuple[str, ...]  # metric names as the tasks report them
  headers: tuple[str, ...]  # how the table names them

  @property
  def has_domain(self) -> bool:
    return any(row.domain for row in self.rows)


def _mrqa_rows() -> tuple[Row, ...]:
  # The task names are the ones `tasks/qa.py` registers (not imported here: it loads seqio).
  return (Row('SQuAD', 'Wiki', 'mrqa_squad_v001'),
          Row('TextbookQA', 'Book', 'mrqa_textbookqa_v001'),
          Row('BioASQ', 'Bio', 'mrqa_bioasq_v001'),
          Row('RACE', 'Exam', 'mrqa_race_v001'),
          Row('RE', 'Wiki', 'mrqa_relation_extraction_v001'),
          Row('DuoRC', 'Movie', 'mrqa_duorc_v001'),
          Row('DROP', 'Wiki', 'mrqa_drop_v001'))


LAYOUTS = {
    'mrqa': Layout('Table 1: trained on SQuAD, evaluated zero-shot on MRQA 2019 out of domain',
                   'Dataset', _mrqa_rows(), ('em', 'f1'), ('EM', 'F1')),
    'qqp_mrpc': Layout(
        'Table 2: zero-shot transfer between QQP and MRPC', 'Train -> Eval',
        (Row('QQP -> QQP', '', 'glue_qqp_v002'),
         Row('QQP -> MRPC', '', 'glue_mrpc_from_qqp_v002'),
         Row('MRPC -> MRPC', '', 'glue_mrpc_v002'),
         Row('MRPC -> QQP', '', 'glue_qqp_from_mrpc_v002')),
        ('accuracy', 'f1'), ('Accuracy', 'F1')),
    'sentiment': Layout(
        'Domain shift at mini scale: real (SST-2) and generated (smoke) film reviews',
        'Train -> Eval',
        (Row('SST-2 -> SST-2', '', 'glue_sst2_v002'),
         Row('SST-2 -> smoke reviews', '', 'smoke_sentiment_transfer_from_sst2'),
         Row('smoke reviews -> smoke reviews', '', 'smoke_sentiment_transfer'),
         Row('smoke reviews -> SST-2', '', 'glue_sst2_from_smoke_v002')),
        ('accuracy',), ('Accuracy',)),
}


def eval_metrics(model_dir: str, step: Optional[int] = None
                 ) -> dict[str, tuple[int, dict[str, float]]]:
  """{task: (step, metrics)} of a run: each task's last eval record, or its last at `step`."""
  if not os.path.isfile(os.path.join(model_dir, logging_utils.METRICS_FILE)):
    raise UsageError(f'{model_dir} has no {logging_utils.METRICS_FILE}: not a run directory '
                     '(MODEL_DIR), or nothing evaluated yet.')
  found = {}
  for record in logging_utils.read_metrics(model_dir):
    split = record.get('split', '')
    if split.startswith(EVAL_SPLIT_PREFIX) and (step is None or record['step'] == step):
      values = {k: v for k, v in record.items() if k not in ('step', 'split')}
      found[split[len(EVAL_SPLIT_PREFIX):]] = (int(record['step']), values)
  return found


def row_value(runs: Mapping[str, Mapping[str, tuple[int, dict[str, float]]]], row: Row,
              metric: str, method: str) -> list[float]:
  """The metric of `row` in every run that evaluated its task (or its taskless variant)."""
  name = f'{RANK_CLASSIFICATION}/{metric}' if method == RANK_CLASSIFICATION else metric
  values = []
  for tasks in runs.values():
    for task in (row.task, TASKLESS_PREFIX + row.task):
      if task in tasks and name in tasks[task][1]:
        values.append(float(tasks[task][1][name]))
        break
  return values


def _cell(values: Sequence[float]) -> str:
  if not values:
    return '—'
  if len(values) == 1:
    return f'{values[0]:.1f}'
  return f'{np.mean(values):.1f} ± {np.std(values):.1f}'


def _difference(prompt: Sequence[float], model: Sequence[float]) -> str:
  if not prompt or not model:
    return '—'
  return f'{np.mean(prompt) - np.mean(model):+.1f}'


def format_table(layout: Layout, prompt_runs: Mapping[str, Mapping],
                 model_runs: Mapping[str, Mapping], method: str = 'decode') -> str:
  """The layout's Markdown table: prompt runs beside model runs (if any) and the difference.

  `*_runs`: {run directory: `eval_metrics(...)`}.
  """
  sides = ([('Model', model_runs)] if model_runs else []) + [('Prompt', prompt_runs)]
  header = [layout.first_column] + (['Domain'] if layout.has_domain else [])
  for side, _ in sides:
    header += [f'{side} {name}' for name in layout.headers]
  if model_runs:
    header += [f'Δ {name}' for name in layout.headers]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in layout.rows:
    values = {side: [row_value(runs, row, m, method) for m in layout.metrics]
              for side, runs in sides}
    cells = [row.label] + ([row.domain] if layout.has_domain else [])
    for side, _ in sides:
      cells += [_cell(v) for v in values[side]]
    if model_runs:
      cells += [_difference(p, m) for p, m in zip(values['Prompt'], values['Model'])]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _runs_note(side: str, runs: Mapping[str, Mapping]) -> list[str]:
  return [f'  {side}: {directory} (' + ', '.join(
      f'{task} step {step}' for task, (step, _) in sorted(tasks.items())) + ')'
          for directory, tasks in runs.items()]


def report(layout_name: str, prompt_dirs: Sequence[str], model_dirs: Sequence[str] = (),
           step: Optional[int] = None, method: str = 'decode') -> str:
  """The table of `layout_name` from the runs' metrics, with its title and where each came
  from."""
  layout = LAYOUTS[layout_name]
  prompt_runs = {d: eval_metrics(d, step) for d in prompt_dirs}
  model_runs = {d: eval_metrics(d, step) for d in model_dirs}
  tasks = {task for row in layout.rows for task in (row.task, TASKLESS_PREFIX + row.task)}
  if not any(tasks & set(run) for run in (*prompt_runs.values(), *model_runs.values())):
    raise UsageError(f'None of the runs has an eval of the tasks of {layout_name!r} '
                     f'({", ".join(row.task for row in layout.rows)})'
                     + (f' at step {step}' if step is not None else '') +
                     ': evaluate them first (ptj eval --gin.MODEL_DIR=DIR '
                     '--gin.MIXTURE_OR_TASK_NAME=...; README.md, "The paper\'s experiments").')
  unit = 'rank classification' if method == RANK_CLASSIFICATION else 'decoding'
  lines = [f'{layout.title} ({unit}; mean ± std over the runs of a side, Δ = prompt - model)',
           '', format_table(layout, prompt_runs, model_runs, method), '', 'Runs:']
  lines += _runs_note('prompt', prompt_runs) + _runs_note('model', model_runs)
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj table`; returns the exit status."""
  p = argparse.ArgumentParser(
      prog='ptj table', description="The paper's domain-shift tables (Table 1: MRQA, Table 2: "
      'QQP <-> MRPC; sentiment: the mini-scale measurement) from the eval metrics of runs.')
  p.add_argument('layout', choices=sorted(LAYOUTS))
  p.add_argument('--prompt', action='append', default=[], required=True, metavar='DIR',
                 help='a prompt-tuning run (MODEL_DIR); repeat for seeds or sources')
  p.add_argument('--model', action='append', default=[], metavar='DIR',
                 help='a model-tuning run (MODEL_DIR); repeat for seeds or sources')
  p.add_argument('--step', type=int, default=None,
                 help="the eval step to read (default: each task's last eval)")
  p.add_argument('--method', choices=('decode', RANK_CLASSIFICATION), default='decode',
                 help='which eval metrics to read: decoded predictions or rank classification')
  args = p.parse_args(argv)

  def run() -> int:
    print(report(args.layout, args.prompt, args.model, args.step, args.method))
    return 0

  return config.report_errors('table', run)
