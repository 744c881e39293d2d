"""The standalone infer run: jsonl predictions; `ptj infer` and `python -m`.

  python -m prompt_tuning_jax.infer --gin.MODEL_DIR=/tmp/smoke --gin.INFER_SPLIT=test

Inputs are a task split (INFER_SPLIT) or a jsonl file (INFER_INPUT_FILE);
the output goes to MODEL_DIR/inference/<name>_<step>.jsonl unless
INFER_OUTPUT_FILE is set. With `--prompt NAME=FILE` flags it is mixed-task
inference (the paper's Figure 2): one frozen model, a bank of prompts, each
input line naming its prompt, every batch one model call.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Callable, Mapping, Optional, Sequence

import jax

from prompt_tuning_jax import config
from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import distributed
from prompt_tuning_jax import inference
from prompt_tuning_jax import run_setup
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.many_prompts import mixed
from prompt_tuning_jax.many_prompts.bank import PromptBank, parse_bank_spec
from prompt_tuning_jax.settings import METHODS, RANK_CLASSIFICATION, RunSettings

logger = logging.getLogger('prompt_tuning_jax')

INFERENCE_SUBDIR = 'inference'


def infer(run: RunSettings, *, prompt_files: Optional[Mapping[str, str]] = None,
          label_words: Optional[Mapping[str, Sequence[str]]] = None,
          save_config: Optional[Callable[[str], None]] = None) -> str:
  """Writes predictions as jsonl; returns the output path.

  Decoding follows the eval settings (DECODER, BEAM_SIZE, EVAL_BATCH_SIZE).
  With `prompt_files` ({name: prompt file}) every line of the input file names
  its prompt; for rank classification a prompt's labels are `label_words[name]`,
  else those of the task of that name, else the run task's.
  """
  s = run_setup.setup(run)
  settings, task_name = run.inference, run.data.mixture_or_task_name
  named_prompts = prompt_files is not None
  if named_prompts:
    mixed.check_model(run.model)
  run_setup.check_sources(s, trained=not named_prompts,  # Before the examples are read.
                          task_data=not settings.input_file)
  if named_prompts and not settings.input_file:
    raise UsageError('Mixed-task inference (--prompt) reads the inputs from a file whose lines '
                     'name their prompt: pass --input FILE.jsonl.')
  if settings.input_file:
    records = inference.read_input_file(settings.input_file)[:settings.num_examples or None]
    examples, truncated = inference.examples_from_records(
        records, s.vocabularies['inputs'], s.lengths['inputs'], named_prompts=named_prompts)
    name = os.path.splitext(os.path.basename(settings.input_file))[0]
  else:
    examples, truncated = inference.examples_from_task(task_name, settings.split, s.lengths,
                                                       settings.num_examples)
    name = f'{task_name}_{settings.split}'
  inference.log_truncated(truncated, len(examples), s.lengths['inputs'])
  if not named_prompts:
    examples = inference.resolve_tasks(
        examples, s.task_index, source=settings.input_file or f'{task_name}:{settings.split}',
        required=s.method.task_index(list(s.task_index)) is not None)
  task_words = data_lib.label_words(task_name, run.prompt.class_labels)
  if named_prompts:
    bank = PromptBank.from_files(prompt_files, emb_dim=run.model.config.emb_dim)
    params, suffix = run_setup.frozen_params_without_prompt(s), 'mixed'
    words = {n: (label_words or {}).get(n) or data_lib.label_words(n) or task_words
             for n in bank.names}
    source = f'{len(bank)} prompts'
  else:
    bank, words = None, task_words
    params, step = run_setup.trained_params(s)
    suffix = 'prompt_file' if step is None else f'step{step}'
    source = run.prompt.file if step is None else f'{run.model_dir} step {step}'
  logger.info('Predicting %d examples with %s (%s).', len(examples), source, settings.method)
  ev = run.evaluation
  records = inference.predict(
      run.model, params, examples, s.vocabularies['targets'], input_length=s.lengths['inputs'],
      max_decode_length=s.lengths['targets'], batch_size=ev.batch_size, method=settings.method,
      decoder=ev.decoder, beam_size=ev.beam_size, alpha=ev.alpha,
      label_words=words if settings.method == RANK_CLASSIFICATION else None, bank=bank,
      length_buckets=(run.data.length_buckets or {}).get('inputs'),
      task_index=None if named_prompts else s.task_index)
  output_dir = os.path.join(run.model_dir, INFERENCE_SUBDIR)
  output_file = settings.output_file or os.path.join(output_dir, f'{name}_{suffix}.jsonl')
  if jax.process_index() == 0:
    if save_config is not None:
      save_config(output_dir)
    inference.write_jsonl(output_file, records)
  logger.info('Wrote %d predictions to %s.', len(records), output_file)
  return output_file


def _parse_labels(specs: Sequence[str]) -> dict[str, list[str]]:
  labels = {}
  for spec in specs:
    name, _, words = spec.partition('=')
    if not name or not words:
      raise UsageError(f'--labels {spec!r}: expected NAME=word1,word2.')
    labels[name] = [w.strip() for w in words.split(',') if w.strip()]
  return labels


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj infer` (and `ptj infer_mixed`); returns the exit status."""
  parser = config.gin_parser(
      'infer', 'write jsonl predictions for a task split or a jsonl file of inputs; with '
      '--prompt NAME=FILE (repeatable) and --input, each line names its prompt (mixed-task '
      'inference)')
  parser.add_argument('--prompt', action='append', metavar='NAME=FILE',
                      help='a prompt of the bank (repeatable): mixed-task inference, each input '
                      'line naming its prompt in a "prompt" (or "task") field')
  parser.add_argument('--input', help='the jsonl input file (INFER_INPUT_FILE)')
  parser.add_argument('--output', help='the jsonl output file (INFER_OUTPUT_FILE)')
  parser.add_argument('--method', choices=METHODS, help='INFER_METHOD')
  parser.add_argument('--labels', action='append', default=[], metavar='NAME=w1,w2',
                      help='rank classification: label words of a prompt (repeatable; default: '
                      "the labels of the task of that name, else those of the run's task)")

  def run(args: argparse.Namespace, configuration: config.Configuration) -> int:
    settings = configuration.settings
    flags = {'input_file': args.input, 'output_file': args.output, 'method': args.method}
    settings = dataclasses.replace(settings, inference=dataclasses.replace(
        settings.inference, **{k: v for k, v in flags.items() if v}))
    distributed.initialize()
    with distributed.peer_failures():
      path = infer(settings, prompt_files=parse_bank_spec(args.prompt) if args.prompt else None,
                   label_words=_parse_labels(args.labels), save_config=configuration.save)
    print(f'Predictions: {path}', flush=True)
    return 0

  return config.run_command('infer', parser, argv, run)


if __name__ == '__main__':
  sys.exit(main())
