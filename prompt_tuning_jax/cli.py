"""`ptj train|eval|infer`: gin files and bindings in, a run out (T5X's habits, without T5X).

  ptj train --gin_file=models/t5_1_1_base.gin --gin_file=runs/prompt_finetune.gin \\
      --gin.MIXTURE_OR_TASK_NAME=super_glue_rte_v102 --gin.MODEL_DIR=/tmp/rte

Parsing order: --gin_file files in the order given, then the --gin.NAME=VALUE
bindings. A VALUE that is not a Python/gin literal is taken as a string, so
`--gin.MODEL_DIR=/tmp/rte` and `--gin.MODEL_DIR="'/tmp/rte'"` are the same.
`ptj eval` / `ptj infer` without --gin_file read MODEL_DIR/config.gin, the
configuration the training run saved.
"""
from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import sys
from typing import Optional, Sequence

# Documented in `ptj --help`; defaults live in gin/runs/prompt_finetune.gin.
MACROS = {
    'MODEL_DIR': 'where checkpoints, logs, metrics and config.gin go (required)',
    'MIXTURE_OR_TASK_NAME': 'seqio task or mixture (required)',
    'MIXTURE_OR_TASK_MODULE': 'module(s) to import that register the task',
    'TASK_FEATURE_LENGTHS': "{'inputs': 512, 'targets': 16}; longer examples are cut (counted)",
    'INITIAL_CHECKPOINT_PATH': 'frozen model: T5X or Hugging Face checkpoint; None = random',
    'BATCH_SIZE': 'global batch size (divisible by the data-parallel devices)',
    'TRAIN_STEPS': 'number of training steps',
    'LEARNING_RATE': 'Adafactor learning rate (0.3 for prompts)',
    'PROMPT_LENGTH': 'number of prompt vectors (100)',
    'PROMPT_INIT': 'random_uniform | sampled_vocab | class_labels | from_text',
    'CLASS_LABELS': 'label words for class-label init and rank classification',
    'PROMPT_FILE': '.npy prompt: initial value (train) or the prompt to use (eval/infer)',
    'EVAL_PERIOD': 'steps between evaluations (None: none during training)',
    'CHECKPOINT_PERIOD': 'steps between checkpoints',
    'KEEP_CHECKPOINTS': 'checkpoints kept (+ the best by BEST_METRIC)',
    'LOG_PERIOD': 'steps between log lines',
    'SEED': 'data order, prompt init and dropout',
    'DROPOUT_RATE': 'dropout in the frozen model',
    'ACCUMULATION_STEPS': 'gradient accumulation micro-batches per step',
    'NUM_PARTITIONS': 'model-parallel devices (the rest split the batch)',
    'TRAINABLE_RULES': "regexes of trained parameters ('.*prompt.*')",
    'EVAL_SPLIT': 'split evaluated (validation)',
    'EVAL_METHODS': "('decode', 'rank_classification')",
    'DECODER': 'greedy | beam',
    'BEAM_SIZE': 'beams for DECODER=beam',
    'EVAL_BATCH_SIZE': 'batch size of eval and infer',
    'NUM_EVAL_EXAMPLES': 'evaluate only the first N examples',
    'BEST_METRIC': 'metric whose best checkpoint is kept (accuracy)',
    'CHECKPOINT_STEP': "eval/infer: 'latest' | 'best' | a step",
    'INFER_INPUT_FILE': 'infer: jsonl of {"inputs": ...}; None = the task split',
    'INFER_SPLIT': 'infer: split predicted without INFER_INPUT_FILE',
    'INFER_OUTPUT_FILE': 'infer: output jsonl (default under MODEL_DIR/inference)',
    'INFER_METHOD': 'infer: decode | rank_classification',
    'INFER_NUM_EXAMPLES': 'infer: only the first N examples',
}

# Bindings that may change when a run in MODEL_DIR is resumed.
RESUMABLE = re.compile(
    r'(TRAIN_STEPS|MODEL_DIR|EVAL_\w+|CHECKPOINT_\w+|KEEP_CHECKPOINTS|LOG_PERIOD|'
    r'NUM_EVAL_EXAMPLES|BEST_METRIC|DECODER|BEAM_SIZE|INFER_\w+|'
    r'(EvalSettings|evaluate|infer)\.\w+|'
    r'train\.(train_steps|eval_period|checkpoint_period|keep_checkpoints|log_period|'
    r'eval_settings|model_dir))')

COMMANDS = {
    'train': 'train (or resume) a prompt in MODEL_DIR',
    'eval': "evaluate MODEL_DIR's checkpoint (or PROMPT_FILE) on the task",
    'infer': 'write jsonl predictions for a task split or a jsonl file of inputs; with '
             '--prompt NAME=FILE (repeatable) and --input, each line names its prompt '
             '(= ptj infer_mixed)',
}

# Subcommands with their own parsers (prompt_tuning_jax/analysis/commands.py).
ANALYSIS_COMMANDS = {
    'infer_mixed': 'one frozen model, many prompts: each jsonl line names its prompt',
    'ensemble': 'score K prompts and their ensemble (majority vote / mean scores) in one pass',
    'neighbors': "nearest vocabulary pieces of each prompt vector (text report + PNG)",
}


class UsageError(ValueError):
  """A command-line or configuration mistake, reported without a traceback."""


def _macro_help() -> str:
  width = max(len(k) for k in MACROS)
  lines = [f'  {name:<{width}}  {text}' for name, text in MACROS.items()]
  return ('gin macros (set with --gin.NAME=VALUE; defaults in gin/runs/prompt_finetune.gin):\n'
          + '\n'.join(lines) + '\n\nconfig files: gin/models/*.gin (sizes), gin/runs/*.gin '
          '(prompt_finetune, model_finetune, eval, infer, smoke), gin/prompts/*.gin.')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='ptj', formatter_class=argparse.RawDescriptionHelpFormatter,
      description='Soft-prompt tuning of frozen T5 models (JAX/Flax), configured with gin.',
      epilog=_macro_help() + '\n\nsmoke run: ptj train --gin_file=runs/smoke.gin '
      '--gin.MODEL_DIR=/tmp/ptj_smoke')
  sub = parser.add_subparsers(dest='command',
                              metavar='{' + ','.join([*COMMANDS, *ANALYSIS_COMMANDS]) + '}')
  for name, text in ANALYSIS_COMMANDS.items():
    sub.add_parser(name, help=f'{text} (ptj {name} --help)', add_help=False)
  for name, text in COMMANDS.items():
    p = sub.add_parser(name, help=text, description=text, epilog=_macro_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--gin_file', action='append', default=[],
                   help='gin file (repeatable), looked up in the current directory, then in '
                   '--gin_search_paths and the installed gin/ directory')
    p.add_argument('--gin_search_paths', default='',
                   help='comma-separated directories searched for gin files and includes')
    p.add_argument('--gin.NAME=VALUE', dest='unused', action='append', metavar='',
                   help='a gin binding, e.g. --gin.BATCH_SIZE=16 (repeatable)')
    p.add_argument('--print_config', action='store_true',
                   help='print the effective configuration and exit')
    if name == 'train':
      p.add_argument('--override_model_dir_config', action='store_true',
                     help='resume even though MODEL_DIR holds a run with another configuration')
      p.add_argument('--dry_run', action='store_true',
                     help='print the mesh, every parameter\'s sharding and the memory per '
                     'device, then exit without allocating the model')
      p.add_argument('--topology', default=None,
                     help="dry run on a declared topology instead of the visible devices, "
                     "e.g. v3-32, 8xA100-80GB (see partitioning.declared_topology)")
  return parser


def split_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--gin.NAME=VALUE` / `--gin.NAME VALUE` from the other arguments."""
  rest, bindings = [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--gin.'):
      body = arg[len('--gin.'):]
      if '=' in body:
        name, value = body.split('=', 1)
      elif i + 1 < len(argv):
        name, value = body, argv[i + 1]
        i += 1
      else:
        raise UsageError(f'{arg}: expected --gin.NAME=VALUE')
      bindings.append(f'{name} = {gin_value(value)}')
    else:
      rest.append(arg)
    i += 1
  return rest, bindings


def gin_value(value: str) -> str:
  """VALUE as gin text: literals and @/% references as they are, anything else a string."""
  text = value.strip()
  if text.startswith(('@', '%')):
    return text
  try:
    ast.literal_eval(text)
    return text
  except (ValueError, SyntaxError):
    return repr(value)


def resolve_file(name: str, search_paths: Sequence[str]) -> str:
  if os.path.isfile(name):
    return os.path.abspath(name)
  for directory in search_paths:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise UsageError(f'gin file {name!r} not found in the current directory or in '
                   f'{list(search_paths)}.')


def config_statements(text: str) -> dict[str, str]:
  """{'NAME' or 'configurable.param': value text} of a gin config string."""
  parts: dict[str, list[str]] = {}
  name = None
  for line in text.splitlines():
    if not line.strip() or line.lstrip().startswith('#'):
      continue
    if not line[0].isspace() and ' = ' in line:
      name, value = line.split(' = ', 1)
      name = name.strip()
      parts[name] = [value]
    elif name is not None:  # A continuation line of a long value.
      parts[name].append(line)
  # gin wraps long values with a trailing backslash; join the pieces without it.
  return {k: ' '.join(p.strip().rstrip('\\').strip() for p in v).strip()
          for k, v in parts.items()}


def config_differences(saved: str, current: str) -> list[str]:
  """Lines describing bindings that differ, except those a resumed run may change."""
  old, new = config_statements(saved), config_statements(current)
  diffs = []
  for key in sorted(old.keys() | new.keys()):
    if RESUMABLE.fullmatch(key.rsplit('/', 1)[-1]):
      continue
    if old.get(key) != new.get(key):
      diffs.append(f'  {key}: {old.get(key, "(unset)")} -> {new.get(key, "(unset)")}')
  return diffs


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
  """Turns on JAX's persistent compilation cache (returns its directory, or None).

  Compiling dominates short runs on CPU; with the cache, `ptj eval` after
  `ptj train`, a resumed run, or the same command again reuse the compiled
  programs. Directory: `path`, else $PTJ_COMPILATION_CACHE_DIR, else
  ~/.cache/prompt_tuning_jax/xla; 'none' turns it off. JAX's own
  JAX_COMPILATION_CACHE_DIR, when set, is left alone.
  """
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  path = path or os.environ.get('PTJ_COMPILATION_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'prompt_tuning_jax', 'xla')
  if path.lower() == 'none':
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return path


def _quiet_gin_path_errors() -> None:
  """gin logs 'Path not found' for each search path it tries before finding a file."""
  class _Filter(logging.Filter):
    def filter(self, record):
      return not str(record.msg).startswith('Path not found')
  logging.getLogger().addFilter(_Filter())


def configure(command: str, files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str]) -> str:
  """Parses the configuration; returns the effective config text."""
  import gin  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import config  # pylint: disable=g-import-not-at-top  (registers names)
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  data.import_task_modules()  # The tasks' configurables (get_vocabulary, local_data_dirs).
  paths = [p for p in search_paths if p] + [os.getcwd(), config.gin_dir()]
  for path in paths:
    gin.add_config_file_search_path(path)
  _quiet_gin_path_errors()
  gin.clear_config()
  files = [resolve_file(f, paths) for f in files]
  if not files and command in ('eval', 'infer'):
    gin.parse_config(list(bindings))
    model_dir = config.query_macro('MODEL_DIR')
    if not model_dir:
      raise UsageError(f'ptj {command} needs --gin.MODEL_DIR=DIR of a training run, '
                       'or --gin_file=... files (see runs/eval.gin).')
    saved = os.path.join(model_dir, 'config.gin')
    if not os.path.isfile(saved):
      raise UsageError(f'{saved} does not exist: MODEL_DIR holds no training run. Pass the '
                       'run\'s files instead, e.g. --gin_file=runs/eval.gin.')
    gin.clear_config()
    files = [saved]
  try:
    gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)
  except ValueError as e:
    raise UsageError(f'gin: {e}') from e
  check_required(command)
  return gin.config_str()


def check_required(command: str) -> None:
  import gin  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import config  # pylint: disable=g-import-not-at-top
  for name in ('MODEL_DIR', 'MIXTURE_OR_TASK_NAME'):
    if config.query_macro(name) in (None, ''):
      raise UsageError(f'{name} is not set: pass --gin.{name}=...')
  try:
    gin.query_parameter('models.get_config.name')
    gin.query_parameter('%INITIAL_CHECKPOINT_PATH')
  except ValueError:
    raise UsageError('No model size: add a model file, e.g. --gin_file=models/t5_1_1_base.gin '
                     '(see gin/models/).') from None
  try:
    gin.query_parameter(f'trainer.{ {"eval": "evaluate"}.get(command, command)}.model')
  except ValueError:
    raise UsageError('No run file: add e.g. --gin_file=runs/prompt_finetune.gin.') from None


def check_model_dir(model_dir: str, config_text: str, override: bool) -> None:
  """Refuses to resume a run in MODEL_DIR whose saved configuration differs."""
  saved_path = os.path.join(model_dir, 'config.gin')
  if not os.path.isfile(saved_path):
    return
  with open(saved_path) as f:
    diffs = config_differences(f.read(), config_text)
  if not diffs:
    return
  message = (f'MODEL_DIR {model_dir} holds a run with a different configuration:\n'
             + '\n'.join(diffs))
  if not override:
    raise UsageError(message + '\nUse another MODEL_DIR, or pass --override_model_dir_config '
                     'to resume it with the new configuration anyway.')
  logging.getLogger('prompt_tuning_jax').warning('%s\n(--override_model_dir_config given: '
                                                 'continuing)', message)


def _report(command: str, result) -> None:
  if command == 'train':
    lines = [f"Done: step {result['final_step']}.",
             f"  checkpoint:  {result['checkpoint_dir']}"]
    if result['prompt_file']:
      lines.append(f"  prompt file: {result['prompt_file']}")
    if result.get('best_step') is not None:
      lines.append(f"  best:        step {result['best_step']} "
                   f"({os.path.join(result['model_dir'], 'best_checkpoint.json')})")
    truncated = {k: int(v) for k, v in result.items() if k.startswith('truncated_') and v}
    if truncated:
      lines.append(f'  truncated:   {truncated} examples (longer than TASK_FEATURE_LENGTHS)')
    lines += [f"  metrics:     {result['metrics_file']}",
              f"  TensorBoard: tensorboard --logdir {result['tensorboard_dir']}",
              f"  config:      {os.path.join(result['model_dir'], 'config.gin')}"]
  elif command == 'eval':
    lines = ['Eval metrics:'] + [f'  {k}: {v:.4g}' for k, v in sorted(result.items())]
  else:
    lines = [f'Predictions: {result}']
  print('\n'.join(lines), flush=True)


def main(argv: Optional[Sequence[str]] = None, command: Optional[str] = None) -> int:
  """Entry point of `ptj` (and of `python -m prompt_tuning_jax.{train,eval,infer}`)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if command is not None:
    argv = [command] + argv
  if argv and argv[0] == 'infer' and any(a.split('=')[0] == '--prompt' for a in argv):
    argv[0] = 'infer_mixed'  # `ptj infer --prompt NAME=FILE ...`: a bank of prompts.
  if argv and argv[0] in ANALYSIS_COMMANDS:
    from prompt_tuning_jax.analysis import commands  # pylint: disable=g-import-not-at-top
    return getattr(commands, f'{argv[0]}_main')(argv[1:])
  parser = build_parser()
  try:
    rest, bindings = split_bindings(argv)
  except UsageError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)
  if args.command is None:
    parser.print_help()
    return 2
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from prompt_tuning_jax import logging_utils  # pylint: disable=g-import-not-at-top
  logging_utils.setup_logging()
  debug = bool(os.environ.get('PTJ_DEBUG'))
  enable_compilation_cache()
  try:
    config_text = configure(args.command, args.gin_file, bindings,
                            args.gin_search_paths.split(','))
    if args.print_config:
      print(config_text)
      return 0
    if getattr(args, 'dry_run', False):
      return _dry_run(args.topology)
    from prompt_tuning_jax import config  # pylint: disable=g-import-not-at-top
    from prompt_tuning_jax import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize()
    if args.command == 'train':
      check_model_dir(config.query_macro('MODEL_DIR'), config_text,
                      args.override_model_dir_config)
    result = config.RUNS[args.command](config_text=config_text)
  except KeyboardInterrupt:
    print(f'ptj {args.command}: interrupted', file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    if debug or not _is_user_error(e):
      raise
    message = re.sub(r'\n\s*In call to configurable .*', '', str(e))  # gin's addition
    print(f'ptj {args.command}: error: {message}\n(set PTJ_DEBUG=1 for the traceback)',
          file=sys.stderr)
    return 1
  _report(args.command, result)
  return 0


def _dry_run(topology: Optional[str]) -> int:
  """`ptj train --dry_run`: plan shardings and memory from the parsed gin config."""
  import gin  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import config, dry_run  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  report = dry_run.dry_run(
      model_config=gin.query_parameter('models.get_config.name'),
      prompt_length=config.query_macro('PROMPT_LENGTH', 0) or 0,
      batch_size=config.query_macro('BATCH_SIZE'),
      feature_lengths=config.query_macro('TASK_FEATURE_LENGTHS'),
      num_partitions=config.query_macro('NUM_PARTITIONS', 1),
      topology=topology,
      trainable_rules=config.query_macro('TRAINABLE_RULES', optim.PROMPT_TUNING_RULES),
      accumulation_steps=config.query_macro('ACCUMULATION_STEPS', 1))
  print(report, flush=True)
  return 0 if report.fits else 1


def _is_user_error(e: Exception) -> bool:
  from prompt_tuning_jax import trainer  # pylint: disable=g-import-not-at-top
  return isinstance(e, (UsageError, ValueError, FileNotFoundError, ImportError, KeyError,
                        trainer.DivergedError))


if __name__ == '__main__':
  sys.exit(main())
