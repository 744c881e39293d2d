"""The standalone eval run: a trained prompt (or PROMPT_FILE) on the task; `ptj eval`, `python -m`.

  python -m prompt_tuning_jax.eval --gin.MODEL_DIR=/tmp/smoke --gin.CHECKPOINT_STEP=best

Without --gin_file it reads MODEL_DIR/config.gin, the configuration the
training run saved. Metrics go to MODEL_DIR/metrics.jsonl, TensorBoard and
MODEL_DIR/eval/summary.txt.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Optional, Sequence

import jax

from prompt_tuning_jax import config
from prompt_tuning_jax import distributed
from prompt_tuning_jax import evaluation
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import storage
from prompt_tuning_jax.settings import RunSettings

logger = logging.getLogger('prompt_tuning_jax')

EVAL_SUBDIR = 'eval'


def evaluate(run: RunSettings, *, save_config: Optional[Callable[[str], None]] = None
             ) -> dict[str, float]:
  """Evaluates CHECKPOINT_STEP of MODEL_DIR (or PROMPT_FILE) on EVAL_SPLIT; returns the metrics.

  `save_config(directory)` records the configuration in MODEL_DIR/eval.
  """
  s = run_setup.setup(run)
  run_setup.check_sources(s, trained=True)  # Before the eval data are read.
  task_name, settings = run.data.mixture_or_task_name, run.evaluation
  evaluator = evaluation.Evaluator(run.model, task_name, s.lengths, settings,
                                   class_labels=run.prompt.class_labels, mesh=s.mesh,
                                   length_buckets=run.data.length_buckets,
                                   task_index=s.task_index, target_sentinel=s.target_sentinel,
                                   packing=run_setup.packing(s, training=False))
  params, step = run_setup.trained_params(s)
  source = run.prompt.file if step is None else f'{run.model_dir} step {step}'
  step = step or 0
  primary = jax.process_index() == 0
  eval_dir = os.path.join(run.model_dir, EVAL_SUBDIR)
  if primary and save_config is not None:
    save_config(eval_dir)
  logger.info('Evaluating %s on %s:%s.', source, task_name, settings.split)
  writer = logging_utils.MetricsWriter(run.model_dir, enabled=primary)
  metrics, _ = evaluation.evaluate_and_record(evaluator, params, step, writer,
                                              logging_utils.Progress(0, 0))
  writer.close()
  if primary:
    lines = [f'# {source} on {task_name}:{settings.split}',
             *evaluation.summary_lines(metrics, step)]
    storage.append(os.path.join(eval_dir, 'summary.txt'),
                   ''.join(f'{x}\n' for x in lines).encode())
  return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj eval`; returns the exit status."""
  parser = config.gin_parser('eval', "evaluate MODEL_DIR's checkpoint (or PROMPT_FILE) on the "
                             'task')

  def run(args: argparse.Namespace, configuration: config.Configuration) -> int:
    del args  # No flags besides the configuration's.
    distributed.initialize()
    with distributed.peer_failures():
      metrics = evaluate(configuration.settings, save_config=configuration.save)
    print('\n'.join(['Eval metrics:'] + [f'  {k}: {v:.4g}' for k, v in sorted(metrics.items())]),
          flush=True)
    return 0

  return config.run_command('eval', parser, argv, run)


if __name__ == '__main__':
  sys.exit(main())
