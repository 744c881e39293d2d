"""Command-line entry points of the analysis tools (wired into `ptj` by cli.py).

  ptj neighbors  --prompt FILE (--checkpoint DIR | --hf_checkpoint DIR | --embedding_npy FILE
                                | --model_dir RUN_DIR)
                 [--vocab SPM] [--labels a,b] [--top_k 5] --output_dir DIR
  ptj ensemble   --prompt NAME=FILE --prompt NAME=FILE ... [--method rank_classification]
                 <run configuration: --gin_file ... --gin.NAME=VALUE, as for `ptj eval`>
  ptj infer_mixed --prompt NAME=FILE ... --input FILE.jsonl [--output FILE.jsonl]
                 <run configuration, as for `ptj eval`>

`ensemble` and `infer_mixed` take the frozen model, its checkpoint and the task
from the same gin configuration `ptj eval` reads (a training run's
MODEL_DIR/config.gin, or model + run files); the prompts come from --prompt.
Every entry point returns a process exit status; user mistakes are reported
in one line without a traceback (PTJ_DEBUG=1 shows it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import numpy as np

from prompt_tuning_jax.analysis import ensemble as ensemble_lib
from prompt_tuning_jax.analysis import mixed
from prompt_tuning_jax.analysis.prompt_bank import PromptBank, parse_bank_spec

logger = logging.getLogger('prompt_tuning_jax')

DEFAULT_VOCAB = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'
PROMPT_PATH = 'encoder/prompt/prompt/prompt'
PROMPT_KEYS = ('prompt', 'task')  # infer_mixed: the field naming an input line's prompt
RANK, DECODE = 'rank_classification', 'decode'


# ------------------------------------------------------------------ neighbors


def neighbors_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='ptj neighbors',
      description='Nearest vocabulary pieces of each prompt token (cosine against the frozen '
      'embedding table), with a random-vector baseline; writes neighbors.txt, .png and .json.')
  p.add_argument('--prompt', required=True,
                 help='prompt file [P, H]: .npy or the original suffix-less numpy file')
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument('--checkpoint', help='T5X checkpoint dir (local or gs://); only '
                      'token_embedder/embedding is read')
  source.add_argument('--hf_checkpoint', help='Hugging Face T5 checkpoint dir (safetensors)')
  source.add_argument('--embedding_npy', help='a saved [vocab, H] embedding table (.npy)')
  source.add_argument('--model_dir', help="a training run's MODEL_DIR: the table of its frozen "
                      'model, built as `ptj eval` builds it (its checkpoint, or its seeded random '
                      'init)')
  p.add_argument('--vocab', default=DEFAULT_VOCAB,
                 help='SentencePiece model decoding ids to pieces (default: the T5 vocabulary on '
                 'GCS; local or gs://); "byte" for seqio.ByteVocabulary; "none" shows ids')
  p.add_argument('--extra_ids', type=int, default=100, help="seqio extra ids after the vocab's "
                 'pieces (T5: 100)')
  p.add_argument('--labels', default='',
                 help='comma-separated class-label words, e.g. "positive,negative"')
  p.add_argument('--top_k', type=int, default=5)
  p.add_argument('--seed', type=int, default=0, help='seed of the random baseline')
  p.add_argument('--output_dir', required=True)
  return p


def neighbors_main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj neighbors`; returns the exit status."""
  args = neighbors_parser().parse_args(argv)

  def run() -> str:
    from prompt_tuning_jax import checkpoints  # pylint: disable=g-import-not-at-top
    from prompt_tuning_jax.analysis import neighbors  # pylint: disable=g-import-not-at-top
    prompt = checkpoints.load_prompt(args.prompt)
    if args.model_dir:
      table, table_source = run_embedding(args.model_dir), f'{args.model_dir} (frozen model)'
    else:
      table, table_source = neighbors.load_embedding(
          checkpoint=args.checkpoint, embedding_npy=args.embedding_npy,
          hf_checkpoint=args.hf_checkpoint)
    if prompt.shape[1] != table.shape[1]:
      raise ValueError(f'The prompt {args.prompt} is {prompt.shape}, the embedding table of '
                       f'{table_source} is {table.shape}: their widths differ (wrong model size?).')
    vocabulary = piece_vocabulary(args.vocab, args.extra_ids)
    labels = [w.strip() for w in args.labels.split(',') if w.strip()]
    report = neighbors.analyze(prompt, table, vocabulary=vocabulary, labels=labels,
                               top_k=args.top_k, seed=args.seed, source=args.prompt)
    paths = neighbors.write_report(report, args.output_dir)
    summary = report.summary()
    lines = [f'{args.prompt} {tuple(prompt.shape)} vs {table_source} {tuple(table.shape)}',
             f'  mean top-1 cosine: prompt {summary["mean_top1_cosine"]:.4f}, '
             f'random {summary["random_mean_top1_cosine"]:.4f}']
    if labels:
      lines.append(f'  rows with a label in the top {args.top_k}: prompt '
                   f'{summary["label_share"]:.1%}, random {summary["random_label_share"]:.1%}')
    lines += [f'  {kind}: {path}' for kind, path in paths.items()]
    return '\n'.join(lines)

  return _run_reporting('neighbors', run)


def piece_vocabulary(spec: str, extra_ids: int = 100):
  """--vocab: a SentencePiece model path, 'byte' (seqio.ByteVocabulary) or 'none'."""
  from prompt_tuning_jax.analysis import neighbors  # pylint: disable=g-import-not-at-top
  if spec.lower() == 'none':
    return None
  if spec.lower() == 'byte':
    import seqio  # pylint: disable=g-import-not-at-top
    return neighbors.SeqioPieces(seqio.ByteVocabulary(), 'byte')
  return neighbors.PieceVocabulary(spec, extra_ids=extra_ids)


# ------------------------------------------------------------------ run configuration


@dataclasses.dataclass
class RunConfig:
  """What `ptj eval` would use: the frozen model, its weights' source, the task."""
  model: Any
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  initial_checkpoint_path: Optional[str]
  model_dir: str
  mixture_or_task_module: Any = None
  seed: int = 0
  prompt: Any = None  # trainer.PromptSettings (class_labels)
  eval_settings: Any = None  # evaluation.EvalSettings (split, batch_size, num_examples)


def _gin_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--gin_file', action='append', default=[],
                      help='gin files of the run (as for `ptj eval`); none: MODEL_DIR/config.gin')
  parser.add_argument('--gin_search_paths', default='')


def read_run_config(gin_files: Sequence[str], gin_args: Sequence[str],
                    search_paths: str = '') -> RunConfig:
  """Parses the gin configuration `ptj eval` would parse and returns its run settings.

  `gin_args` are the --gin.NAME=VALUE arguments. The settings are read through
  the run files' macros (MODEL, MIXTURE_OR_TASK_NAME, ...), so a saved
  MODEL_DIR/config.gin works as well as model + run files.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import cli  # pylint: disable=g-import-not-at-top
  _, bindings = cli.split_bindings(gin_args)
  cli.configure('eval', gin_files, bindings, search_paths.split(','))
  if 'analysis.run_config' not in _registered:
    gin.external_configurable(RunConfig, 'run_config', module='analysis')
    _registered.add('analysis.run_config')
  macros = {'model': 'MODEL', 'mixture_or_task_name': 'MIXTURE_OR_TASK_NAME',
            'task_feature_lengths': 'TASK_FEATURE_LENGTHS',
            'initial_checkpoint_path': 'INITIAL_CHECKPOINT_PATH', 'model_dir': 'MODEL_DIR',
            'mixture_or_task_module': 'MIXTURE_OR_TASK_MODULE', 'seed': 'SEED'}
  lines = [f'analysis.run_config.{field} = %{macro}' for field, macro in macros.items()]
  lines += ['analysis.run_config.prompt = @trainer.PromptSettings()',
            'analysis.run_config.eval_settings = @evaluation.EvalSettings()']
  try:
    gin.parse_config(lines)
    return gin.get_configurable('analysis.run_config')()
  except (ValueError, KeyError) as e:
    raise cli.UsageError(f'gin: the configuration lacks a run setting ({e}); pass a run '
                         'file, e.g. --gin_file=runs/eval.gin.') from e


_registered: set[str] = set()


def _frozen_params(run: RunConfig) -> tuple[Any, dict]:
  """(trainer.Setup, frozen params without the learned prompt) for a run configuration."""
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import trainer  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import tree  # pylint: disable=g-import-not-at-top
  s = trainer.setup(run.model, run.mixture_or_task_name, run.task_feature_lengths,
                    mixture_or_task_module=run.mixture_or_task_module, seed=run.seed)
  flat = tree.flatten(trainer.load_frozen(s, run.initial_checkpoint_path))
  flat.pop(PROMPT_PATH, None)  # Replaced by the bank's prompts in every call.
  return s, jax.device_put(tree.unflatten(flat))


def run_embedding(model_dir: str) -> np.ndarray:
  """The frozen embedding table [V, H] of the run saved in MODEL_DIR (its config.gin)."""
  from prompt_tuning_jax.checkpoints import tree  # pylint: disable=g-import-not-at-top
  _, params = _frozen_params(read_run_config([], [f'--gin.MODEL_DIR={model_dir}']))
  return np.asarray(tree.flatten(params)['token_embedder/embedding'], np.float32)


def _task(name: str, modules: Any = None):
  import seqio  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  data.import_task_modules(modules)
  task = data.get_mixture_or_task(name)
  if not isinstance(task, seqio.Task):
    raise ValueError(f'{name!r} is a mixture; `ptj ensemble` evaluates one task: pass '
                     '--gin.MIXTURE_OR_TASK_NAME=<task>.')
  return task


def _padded_batches(token_lists: Sequence[Sequence[int]], batch_size: int, length: int):
  """(start, n, tokens [batch_size, length]) with the last batch zero-padded."""
  for start in range(0, len(token_lists), batch_size):
    chunk = token_lists[start:start + batch_size]
    tokens = np.zeros((batch_size, length), np.int32)
    for row, ids in enumerate(chunk):
      tokens[row, :len(ids)] = ids
    yield start, len(chunk), tokens


def task_metric_fn(task) -> Callable[[Sequence[str], Sequence[str]], dict[str, float]]:
  """Text targets/predictions -> the task's predict metrics (after its postprocessor)."""
  def metric_fn(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    post = task.postprocess_fn
    t = [post(x, example=None, is_target=True) for x in targets]
    p = [post(x, example=None, is_target=False) for x in predictions]
    out: dict[str, float] = {}
    for fn in task.predict_metric_fns:
      for key, value in fn(t, p).items():
        out[key] = float(getattr(value, 'value', value))
    return out
  return metric_fn


# ------------------------------------------------------------------ ensemble


def ensemble_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='ptj ensemble',
      description='Prompt ensembling (paper §6): K prompts of one task on the frozen model in '
      'one batched pass per batch; reports every member and the ensemble (majority vote over '
      'predicted labels; with rank classification also the average of label log-likelihoods). '
      'The model, checkpoint and task come from the gin configuration, as for `ptj eval`.')
  p.add_argument('--prompt', action='append', required=True, metavar='NAME=FILE',
                 help='a member prompt (repeatable; NAME= is optional)')
  p.add_argument('--method', choices=(RANK, DECODE), default=RANK,
                 help='rank_classification: vote + score average; decode: vote over greedy '
                 'decodes')
  p.add_argument('--output', help='metrics json (default MODEL_DIR/ensemble/<task>_<split>.json)')
  _gin_arguments(p)
  return p


def run_ensemble(run: RunConfig, members: Mapping[str, str], method: str = RANK
                ) -> dict[str, Any]:
  """Evaluates the members and the ensemble on the run's task and EVAL_SPLIT."""
  from prompt_tuning_jax import evaluation, inference  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import scoring  # pylint: disable=g-import-not-at-top
  task = _task(run.mixture_or_task_name, run.mixture_or_task_module)
  settings = run.eval_settings
  s, params = _frozen_params(run)
  bank = PromptBank.from_files(members, emb_dim=run.model.config.emb_dim)
  names = list(bank.names)
  examples = inference.examples_from_task(run.mixture_or_task_name, settings.split, s.lengths,
                                          settings.num_examples)
  if not examples:
    raise ValueError(f'{run.mixture_or_task_name}:{settings.split} has no examples.')
  targets = [ex['extra'].get('target') for ex in examples]
  if any(t is None for t in targets):
    raise ValueError(f'{run.mixture_or_task_name}:{settings.split} has no targets to score.')
  vocabulary = s.vocabularies['targets']
  member_predictions = {name: [] for name in names}
  ensemble_predictions: dict[str, list[str]] = {'vote': []}
  if method == RANK:
    words = evaluation.label_words(run.mixture_or_task_name, run.prompt.class_labels)
    if not words:
      raise ValueError(f'{run.mixture_or_task_name} has no label words for rank '
                       'classification: set CLASS_LABELS, or use --method decode.')
    label_ids = scoring.encode_labels(vocabulary, words)
    ensemble_predictions['average'] = []
  batches = _padded_batches([ex['tokens'] for ex in examples], settings.batch_size,
                            s.lengths['inputs'])
  for _, n, tokens in batches:
    if method == RANK:
      result = ensemble_lib.ensemble_rank_classify(run.model, params, bank, names, tokens,
                                                   label_ids)
      for name, labels in zip(names, result.member_labels):
        member_predictions[name] += [words[i] for i in labels[:n]]
      ensemble_predictions['vote'] += [words[i] for i in result.vote[:n]]
      ensemble_predictions['average'] += [words[i] for i in result.average[:n]]
    else:
      result = ensemble_lib.ensemble_greedy_decode(
          run.model, params, bank, names, tokens, max_decode_length=s.lengths['targets'],
          decode_fn=lambda ids: vocabulary.decode(ids))
      for name, texts in zip(names, result.member_texts):
        member_predictions[name] += texts[:n]
      ensemble_predictions['vote'] += result.vote[:n]
  metrics = ensemble_lib.evaluate(targets, member_predictions, ensemble_predictions,
                                  task_metric_fn(task))
  return {'task': run.mixture_or_task_name, 'split': settings.split, 'method': method,
          'num_examples': len(examples), 'members': dict(members), 'metrics': metrics}


def ensemble_main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj ensemble`; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  own, gin_args = _split_gin_args(argv)
  args = ensemble_parser().parse_args(own)

  def run() -> str:
    members = parse_bank_spec(args.prompt)
    run_config = read_run_config(args.gin_file, gin_args, args.gin_search_paths)
    result = run_ensemble(run_config, members, args.method)
    output = args.output or os.path.join(
        run_config.model_dir, 'ensemble', f'{result["task"]}_{result["split"]}.json')
    _write_json(output, result)
    return '\n'.join(format_ensemble(result) + [f'  written to {output}'])

  return _run_reporting('ensemble', run)


def format_ensemble(result: Mapping[str, Any]) -> list[str]:
  lines = [f'{result["task"]}:{result["split"]} ({result["num_examples"]} examples, '
           f'{result["method"]}, {len(result["members"])} members)']
  for key, values in result['metrics'].items():
    lines.append(f'  {key:<24} ' + '  '.join(f'{k} {v:.2f}' for k, v in sorted(values.items())))
  return lines


# ------------------------------------------------------------------ mixed-task inference


def read_mixed_records(path: str) -> list[dict[str, Any]]:
  """jsonl lines, each with the input text (`inputs`) and its prompt's name (`prompt` or `task`)."""
  from prompt_tuning_jax import inference  # pylint: disable=g-import-not-at-top
  records = inference.read_input_file(path)
  for number, record in enumerate(records, 1):
    if not any(isinstance(record.get(k), str) for k in PROMPT_KEYS):
      raise ValueError(f'{path}: record {number} names no prompt: give each line a "prompt" (or '
                       f'"task") field naming one of the --prompt entries.')
  return records


def prompt_name(record: Mapping[str, Any]) -> str:
  return next(record[k] for k in PROMPT_KEYS if isinstance(record.get(k), str))


def mixed_predict(model: Any, params: Any, bank: PromptBank, examples: Sequence[Mapping[str, Any]],
                  names: Sequence[str], vocabulary: Any, *, input_length: int,
                  max_decode_length: int, batch_size: int, method: str = DECODE,
                  label_words: Optional[Mapping[str, Sequence[str]]] = None
                  ) -> list[dict[str, Any]]:
  """Predictions for examples that each name their prompt; one model call per batch.

  Args:
    examples: `inference.examples_from_records` output (`input`, `tokens`, `extra`).
    names: the prompt of each example.
    method: 'decode' (greedy) or 'rank_classification' with `label_words`
      {prompt name: words} (each example picks among its prompt's labels).

  Returns:
    One record per example: index, input, prompt, prediction, score (and
    label_scores for rank classification), plus the example's other fields.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import scoring  # pylint: disable=g-import-not-at-top
  if len(names) != len(examples):
    raise ValueError(f'{len(names)} prompt names for {len(examples)} examples.')
  if method == RANK:
    missing = sorted({n for n in names if not (label_words or {}).get(n)})
    if missing:
      raise ValueError(f'Rank classification needs label words for prompt(s) {missing}.')
    label_ids = {n: scoring.encode_labels(vocabulary, label_words[n]) for n in set(names)}
  elif method != DECODE:
    raise ValueError(f'method must be {DECODE!r} or {RANK!r}, got {method!r}.')
  records = []
  batches = _padded_batches([ex['tokens'] for ex in examples], batch_size, input_length)
  for start, n, tokens in batches:
    batch_names = list(names[start:start + n]) + [names[start]] * (batch_size - n)
    if method == RANK:
      best, scores = mixed.mixed_rank_classify(model, params, bank, batch_names, tokens,
                                               label_ids)
      outputs = []
      for name, b, row in zip(batch_names[:n], best[:n], scores[:n]):
        words = label_words[name]
        outputs.append({'prediction': words[b], 'score': float(row[b]),
                        'label_scores': {w: float(v) for w, v in zip(words, row)}})
    else:
      predicted, scores = jax.device_get(mixed.mixed_greedy_decode(
          model, params, bank, batch_names, tokens, max_decode_length=max_decode_length))
      outputs = [{'prediction': vocabulary.decode([int(t) for t in row if t != 0]),
                  'score': float(score)} for row, score in zip(predicted[:n], scores[:n])]
    for offset, output in enumerate(outputs):
      ex = examples[start + offset]
      records.append({'index': start + offset, 'input': ex['input'],
                      'prompt': batch_names[offset], **output, **ex['extra']})
  return records


def infer_mixed_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='ptj infer_mixed',
      description='Mixed-task inference (paper Figure 2): one frozen model, a bank of prompts, '
      'each input line naming its prompt ("prompt" or "task" field); every batch is one model '
      'call. The model and checkpoint come from the gin configuration, as for `ptj infer`.')
  p.add_argument('--prompt', action='append', required=True, metavar='NAME=FILE',
                 help='a prompt of the bank (repeatable)')
  p.add_argument('--input', required=True,
                 help='jsonl: {"prompt": NAME, "inputs": TEXT} a line (other fields are kept)')
  p.add_argument('--output', help='jsonl predictions (default MODEL_DIR/inference/<input>_mixed'
                 '.jsonl)')
  p.add_argument('--method', choices=(DECODE, RANK), default=DECODE)
  p.add_argument('--labels', action='append', default=[], metavar='NAME=w1,w2',
                 help='rank classification: label words of a prompt (repeatable; default: the '
                 'labels of the seqio task of that name, else those of the run\'s task)')
  _gin_arguments(p)
  return p


def run_infer_mixed(run: RunConfig, prompts: Mapping[str, str], input_file: str,
                    output_file: Optional[str] = None, method: str = DECODE,
                    labels: Optional[Mapping[str, Sequence[str]]] = None) -> str:
  """Writes mixed-prompt predictions for `input_file`; returns the output path."""
  from prompt_tuning_jax import evaluation, inference  # pylint: disable=g-import-not-at-top
  s, params = _frozen_params(run)
  bank = PromptBank.from_files(prompts, emb_dim=run.model.config.emb_dim)
  records = read_mixed_records(input_file)
  names = [prompt_name(r) for r in records]
  for number, name in enumerate(names, 1):
    if name not in bank:
      raise ValueError(f'{input_file}: record {number} names prompt {name!r}; the --prompt '
                       f'entries are {list(bank.names)}.')
  stripped = [{k: v for k, v in r.items() if k not in PROMPT_KEYS} for r in records]
  vocabulary = s.vocabularies['inputs']
  examples, truncated = inference.examples_from_records(stripped, vocabulary, s.lengths['inputs'])
  if truncated:
    logger.warning('%d of %d inputs were truncated to %d tokens.', truncated, len(examples),
                   s.lengths['inputs'])
  words = dict(labels or {})
  if method == RANK:
    # Prompts named after a task use its labels; the others the run task's labels.
    default = evaluation.label_words(run.mixture_or_task_name, run.prompt.class_labels)
    for name in set(names) - set(words):
      found = evaluation.label_words(name) or default
      if found:
        words[name] = found
  out = mixed_predict(run.model, params, bank, examples, names, s.vocabularies['targets'],
                      input_length=s.lengths['inputs'], max_decode_length=s.lengths['targets'],
                      batch_size=run.eval_settings.batch_size, method=method, label_words=words)
  output_file = output_file or os.path.join(
      run.model_dir, 'inference', os.path.splitext(os.path.basename(input_file))[0] + '_mixed.jsonl')
  inference.write_jsonl(output_file, out)
  return output_file


def infer_mixed_main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj infer_mixed`; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  own, gin_args = _split_gin_args(argv)
  args = infer_mixed_parser().parse_args(own)

  def run() -> str:
    labels = {}
    for spec in args.labels:
      name, _, words = spec.partition('=')
      if not name or not words:
        raise ValueError(f'--labels {spec!r}: expected NAME=word1,word2.')
      labels[name] = [w.strip() for w in words.split(',') if w.strip()]
    run_config = read_run_config(args.gin_file, gin_args, args.gin_search_paths)
    path = run_infer_mixed(run_config, parse_bank_spec(args.prompt), args.input, args.output,
                           args.method, labels)
    return f'Predictions: {path}'

  return _run_reporting('infer_mixed', run)


# ------------------------------------------------------------------ shared


def _split_gin_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(own arguments, --gin.NAME=VALUE / --gin.NAME VALUE arguments)."""
  own, gin_args = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--gin.'):
      gin_args.append(arg)
      if '=' not in arg and i + 1 < len(argv):
        gin_args.append(argv[i + 1])
        i += 1
    else:
      own.append(arg)
    i += 1
  return own, gin_args


def _write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1, ensure_ascii=False)


def _run_reporting(command: str, fn: Callable[[], str]) -> int:
  """Runs fn, prints its summary; user errors become one line and status 1."""
  from prompt_tuning_jax.checkpoints import CheckpointError  # pylint: disable=g-import-not-at-top
  try:
    print(fn(), flush=True)
    return 0
  except (ValueError, KeyError, FileNotFoundError, CheckpointError) as e:
    if os.environ.get('PTJ_DEBUG'):
      raise
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    print(f'ptj {command}: error: {message}\n(set PTJ_DEBUG=1 for the traceback)',
          file=sys.stderr)
    return 1
