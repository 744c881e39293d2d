"""`ptj`: one command for the runs and the many-prompt tools; each command is its module's `main`.

  ptj train --gin_file=models/t5_1_1_base.gin --gin_file=runs/prompt_finetune.gin \\
      --gin.MIXTURE_OR_TASK_NAME=super_glue_rte_v102 --gin.MODEL_DIR=/tmp/rte

Each command module parses its own flags (`ptj <command> --help`) through
the configuration layer (`config.py`); `ptj --help` lists the commands and the
gin macros of the run file. Only the chosen command's module is imported.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from prompt_tuning_jax import config

COMMANDS = {
    'train': 'train (or resume) a prompt in MODEL_DIR',
    'eval': "evaluate MODEL_DIR's checkpoint (or PROMPT_FILE) on the task",
    'infer': 'write jsonl predictions for a task split or a jsonl file of inputs; with '
             '--prompt NAME=FILE (repeatable) and --input, each line names its prompt',
    'infer_mixed': 'ptj infer with --prompt flags: one frozen model, many prompts, each jsonl '
                   'line naming its prompt',
    'ensemble': 'score K prompts and their ensemble (majority vote / mean scores) in one pass',
    'neighbors': 'nearest vocabulary pieces of each prompt vector (text report + PNG)',
    'table': "the paper's domain-shift tables (Table 1: MRQA, Table 2: QQP <-> MRPC) from "
             "runs' eval metrics, prompt beside model tuning",
    'export': "write MODEL_DIR's checkpoint as a T5X checkpoint, a Hugging Face T5 or a PEFT "
              'prompt adapter (--format t5x|hf|peft --output DIR)',
}


def command_main(command: str) -> Callable[[Optional[Sequence[str]]], int]:
  """The `main(argv)` of a command's module (imported now: most import JAX and TensorFlow)."""
  # pylint: disable=g-import-not-at-top
  if command == 'train':
    from prompt_tuning_jax import train
    return train.main
  if command == 'eval':
    from prompt_tuning_jax import eval as eval_lib
    return eval_lib.main
  if command in ('infer', 'infer_mixed'):
    from prompt_tuning_jax import infer
    return infer.main
  if command == 'export':
    from prompt_tuning_jax import export
    return export.main
  if command == 'ensemble':
    from prompt_tuning_jax.many_prompts import ensemble
    return ensemble.main
  if command == 'table':
    from prompt_tuning_jax.analysis import tables
    return tables.main
  from prompt_tuning_jax.analysis import neighbors
  return neighbors.main


def usage() -> str:
  width = max(map(len, COMMANDS))
  commands = '\n'.join(f'  {name:<{width}}  {text}' for name, text in COMMANDS.items())
  return ('usage: ptj <command> [--gin_file=FILE ...] [--gin.NAME=VALUE ...] [flags]\n\n'
          'Soft-prompt tuning of frozen T5 models (JAX/Flax), configured with gin.\n\n'
          f'commands (ptj <command> --help):\n{commands}\n\n{config.macro_help()}\n\n'
          'config files: gin/models/*.gin (sizes), gin/runs/*.gin (prompt_finetune, '
          'model_finetune, eval, infer, smoke), gin/prompts/*.gin.\n\n'
          'smoke run: ptj train --gin_file=runs/smoke.gin --gin.MODEL_DIR=/tmp/ptj_smoke')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `ptj`; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(usage())
    return 0 if argv else 2
  if argv[0] not in COMMANDS:
    print(f'{usage()}\n\nptj: unknown command {argv[0]!r}', file=sys.stderr)
    return 2
  return command_main(argv[0])(argv[1:])


if __name__ == '__main__':
  sys.exit(main())
