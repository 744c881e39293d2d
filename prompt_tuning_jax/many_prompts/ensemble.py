"""Prompt ensembling (paper §6): K prompts for one task on one frozen model, in ONE pass.

The batch holds every input K times, once per member prompt, member-major:
row k * b + i is input i with member k's prompt. One call of the model (via
the mixed-prompt functions) serves all members; the results are then split
per member and combined:
- `majority_vote` over decoded labels (the paper's method). Ties go to the
  tied label predicted by the lowest-indexed member (the first member, in the
  order given, whose prediction is among the most voted).
- `average_scores` (rank classification): the mean over members of the label
  log-likelihoods, then argmax; ties go to the lowest label index.
`evaluate` reports the metrics of every member and of each combination;
`evaluate_ensemble` is the run (`ptj ensemble`): the members and the ensemble
on the task's EVAL_SPLIT, with the frozen model of a run's configuration.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import seqio

from prompt_tuning_jax import config
from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import inference
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import scoring
from prompt_tuning_jax import sentinel as sentinel_lib
from prompt_tuning_jax.errors import DataError, UsageError
from prompt_tuning_jax.many_prompts import mixed
from prompt_tuning_jax.many_prompts.bank import PromptBank, parse_bank_spec
from prompt_tuning_jax.settings import DECODE, RANK_CLASSIFICATION, RunSettings

MetricFn = Callable[[Sequence[Any], Sequence[Any]], Mapping[str, float]]


def repeat_for_members(encoder_input_tokens: np.ndarray, members: Sequence[str]
                      ) -> tuple[np.ndarray, list[str]]:
  """Inputs [b, t] -> ([K * b, t] member-major, the K * b prompt names)."""
  if not members:
    raise ValueError('An ensemble needs at least one member prompt.')
  tokens = np.asarray(encoder_input_tokens)
  b = tokens.shape[0]
  return np.tile(tokens, (len(members), 1)), [m for m in members for _ in range(b)]


def majority_vote(member_predictions: Sequence[Sequence[Hashable]]) -> list[Hashable]:
  """[K][b] predictions -> [b] most common prediction per example.

  Ties: the tied prediction of the lowest-indexed member wins.
  """
  if not member_predictions:
    raise ValueError('majority_vote needs at least one member.')
  lengths = {len(p) for p in member_predictions}
  if len(lengths) != 1:
    raise ValueError(f'Members predicted different numbers of examples: {sorted(lengths)}.')
  votes = []
  for column in zip(*member_predictions):
    counts = collections.Counter(column)
    most = max(counts.values())
    votes.append(next(p for p in column if counts[p] == most))
  return votes


def average_scores(member_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Label log-likelihoods [K, b, L] -> (argmax of the mean [b], the mean [b, L])."""
  member_scores = np.asarray(member_scores, np.float32)
  if member_scores.ndim != 3:
    raise ValueError(f'member_scores must be [members, batch, labels], got {member_scores.shape}.')
  mean = member_scores.mean(axis=0)
  return np.argmax(mean, axis=1).astype(np.int32), mean


@dataclasses.dataclass
class RankEnsemble:
  """Rank-classification results of every member and of the ensemble."""
  members: tuple[str, ...]
  member_labels: np.ndarray  # [K, b] label index
  member_scores: np.ndarray  # [K, b, L] label log-likelihoods
  vote: np.ndarray  # [b] majority vote over member_labels
  average: np.ndarray  # [b] argmax of the mean scores
  average_scores: np.ndarray  # [b, L]


@dataclasses.dataclass
class DecodeEnsemble:
  """Greedy-decoding results of every member and their majority vote."""
  members: tuple[str, ...]
  member_tokens: np.ndarray  # [K, b, max_decode_length]
  member_scores: np.ndarray  # [K, b] summed log-probabilities of the decoded tokens
  member_texts: Optional[list[list[str]]]  # [K][b], when a decode_fn was given
  vote: list[Any]  # [b] majority vote over texts (or token tuples without decode_fn)


def ensemble_rank_classify(model: Any, params: Any, bank: PromptBank, members: Sequence[str],
                           encoder_input_tokens: np.ndarray, label_token_ids: np.ndarray, *,
                           normalize: bool = False) -> RankEnsemble:
  """Rank classification by K member prompts in one batched call of K * b rows."""
  b = np.shape(encoder_input_tokens)[0]
  tokens, names = repeat_for_members(encoder_input_tokens, members)
  labels, scores = mixed.mixed_rank_classify(model, params, bank, names, tokens,
                                             label_token_ids, normalize=normalize)
  k = len(members)
  member_labels = labels.reshape(k, b)
  member_scores = scores.reshape(k, b, -1)
  average, mean = average_scores(member_scores)
  return RankEnsemble(tuple(members), member_labels, member_scores,
                      np.asarray(majority_vote(member_labels.tolist()), np.int32), average, mean)


def ensemble_greedy_decode(model: Any, params: Any, bank: PromptBank, members: Sequence[str],
                           encoder_input_tokens: np.ndarray, *, max_decode_length: int,
                           eos_id: int = 1, decode_fn: Optional[Callable[[list[int]], str]] = None,
                           target_sentinel: Optional[int] = None) -> DecodeEnsemble:
  """Greedy decoding by K member prompts in one batched call, then a majority vote.

  `decode_fn` maps a token list (up to, without, EOS) to text, e.g. a seqio
  vocabulary's `decode`; votes are over those texts. Without it votes are
  over token tuples. A leading `target_sentinel` (TARGET_SENTINEL) is stripped
  from the decoded tokens first.
  """
  b = np.shape(encoder_input_tokens)[0]
  tokens, names = repeat_for_members(encoder_input_tokens, members)
  out, scores = mixed.mixed_greedy_decode(model, params, bank, names, tokens,
                                          max_decode_length=max_decode_length, eos_id=eos_id)
  k = len(members)
  member_tokens = np.asarray(out).reshape(k, b, -1)
  if target_sentinel is not None:
    member_tokens = sentinel_lib.strip_leading(member_tokens, target_sentinel)
  sequences = [[_until_eos(row, eos_id) for row in member] for member in member_tokens]
  texts = [[decode_fn(s) for s in member] for member in sequences] if decode_fn else None
  vote = majority_vote(texts if texts is not None else
                       [[tuple(s) for s in member] for member in sequences])
  return DecodeEnsemble(tuple(members), member_tokens, np.asarray(scores).reshape(k, b),
                        texts, vote)


def _until_eos(tokens: np.ndarray, eos_id: int) -> list[int]:
  out = []
  for t in tokens.tolist():
    if t == eos_id or t == 0:
      break
    out.append(t)
  return out


def evaluate(targets: Sequence[Any], member_predictions: Mapping[str, Sequence[Any]],
             ensemble_predictions: Mapping[str, Sequence[Any]], metric_fn: MetricFn
            ) -> dict[str, dict[str, float]]:
  """Metrics of each member and each ensemble combination.

  Returns:
    {'member/<name>': metrics, ..., 'ensemble/<method>': metrics, ...,
     'members_mean': the mean of each metric over the members}.
  """
  report: dict[str, dict[str, float]] = {}
  for name, predictions in member_predictions.items():
    report[f'member/{name}'] = dict(metric_fn(targets, predictions))
  if member_predictions:
    keys = set.intersection(*(set(report[f'member/{n}']) for n in member_predictions))
    report['members_mean'] = {
        key: float(np.mean([report[f'member/{n}'][key] for n in member_predictions]))
        for key in sorted(keys)}
  for method, predictions in ensemble_predictions.items():
    report[f'ensemble/{method}'] = dict(metric_fn(targets, predictions))
  return report


# ------------------------------------------------------------------ the run


def _task_metric_fn(task: seqio.Task) -> MetricFn:
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


def evaluate_ensemble(run: RunSettings, members: Mapping[str, str],
                      method: str = RANK_CLASSIFICATION) -> dict[str, Any]:
  """Evaluates the member prompt files and their ensemble on the run's task and EVAL_SPLIT."""
  task_name, settings = run.data.mixture_or_task_name, run.evaluation
  s = run_setup.setup(run)
  task = data_lib.get_mixture_or_task(task_name)
  if not isinstance(task, seqio.Task):
    raise UsageError(f'{task_name!r} is a mixture; `ptj ensemble` evaluates one task: pass '
                     '--gin.MIXTURE_OR_TASK_NAME=<task>.')
  params = run_setup.frozen_params_without_prompt(s)
  bank = PromptBank.from_files(members, emb_dim=run.model.config.emb_dim)
  names = list(bank.names)
  examples, truncated = inference.examples_from_task(task_name, settings.split, s.lengths,
                                                     settings.num_examples)
  inference.log_truncated(truncated, len(examples), s.lengths['inputs'])
  targets = [ex.extra.get('target') for ex in examples]
  if not examples or any(t is None for t in targets):
    raise DataError(f'{task_name}:{settings.split} has no examples with targets to score.')
  vocabulary = s.vocabularies['targets']
  count = len(examples)
  member_predictions = {name: [None] * count for name in names}
  ensemble_predictions: dict[str, list] = {'vote': [None] * count}
  if method == RANK_CLASSIFICATION:
    words = data_lib.label_words(task_name, run.prompt.class_labels)
    if not words:
      raise UsageError(f'{task_name} has no label words for rank classification: set '
                       'CLASS_LABELS, or use --method decode.')
    label_ids = scoring.encode_labels(vocabulary, words)
    if s.target_sentinel is not None:
      label_ids = sentinel_lib.prefix_labels(label_ids, s.target_sentinel)
    ensemble_predictions['average'] = [None] * count

  def put(predictions: list, rows: np.ndarray, values: Sequence) -> None:
    for i, value in zip(rows, values):
      predictions[i] = value

  buckets = (run.data.length_buckets or {}).get('inputs')
  for rows, tokens in inference.padded_batches(examples, settings.batch_size,
                                               s.lengths['inputs'], buckets):
    n = len(rows)
    if method == RANK_CLASSIFICATION:
      result = ensemble_rank_classify(run.model, params, bank, names, tokens, label_ids)
      for name, labels in zip(names, result.member_labels):
        put(member_predictions[name], rows, [words[i] for i in labels[:n]])
      put(ensemble_predictions['vote'], rows, [words[i] for i in result.vote[:n]])
      put(ensemble_predictions['average'], rows, [words[i] for i in result.average[:n]])
    else:
      result = ensemble_greedy_decode(run.model, params, bank, names, tokens,
                                      max_decode_length=s.lengths['targets'],
                                      decode_fn=vocabulary.decode,
                                      target_sentinel=s.target_sentinel)
      for name, texts in zip(names, result.member_texts):
        put(member_predictions[name], rows, texts[:n])
      put(ensemble_predictions['vote'], rows, result.vote[:n])
  metrics = evaluate(targets, member_predictions, ensemble_predictions, _task_metric_fn(task))
  return {'task': task_name, 'split': settings.split, 'method': method,
          'num_examples': len(examples), 'members': dict(members), 'metrics': metrics}


def format_result(result: Mapping[str, Any]) -> list[str]:
  """Readable lines: the task, then the metrics of every member and combination."""
  lines = [f'{result["task"]}:{result["split"]} ({result["num_examples"]} examples, '
           f'{result["method"]}, {len(result["members"])} members)']
  for key, values in result['metrics'].items():
    lines.append(f'  {key:<24} ' + '  '.join(f'{k} {v:.2f}' for k, v in sorted(values.items())))
  return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj ensemble`; returns the exit status."""
  parser = config.gin_parser(
      'ensemble', 'Prompt ensembling (paper §6): K prompts of one task on the frozen model in '
      'one batched pass per batch; reports every member and the ensemble (majority vote over '
      'predicted labels; with rank classification also the average of label log-likelihoods). '
      'The model, checkpoint and task come from the gin configuration, as for `ptj eval`.')
  parser.add_argument('--prompt', action='append', required=True, metavar='NAME=FILE',
                      help='a member prompt (repeatable; NAME= is optional)')
  parser.add_argument('--method', choices=(RANK_CLASSIFICATION, DECODE),
                      default=RANK_CLASSIFICATION,
                      help='rank_classification: vote + score average; decode: vote over '
                      'greedy decodes')
  parser.add_argument('--output',
                      help='metrics json (default MODEL_DIR/ensemble/<task>_<split>.json)')

  def run(args: argparse.Namespace, configuration: config.Configuration) -> int:
    settings = configuration.settings
    result = evaluate_ensemble(settings, parse_bank_spec(args.prompt), args.method)
    output = args.output or os.path.join(settings.model_dir, 'ensemble',
                                         f'{result["task"]}_{result["split"]}.json')
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=1, ensure_ascii=False)
    print('\n'.join(format_result(result) + [f'  written to {output}']), flush=True)
    return 0

  return config.run_command('ensemble', parser, argv, run)


if __name__ == '__main__':
  sys.exit(main())
