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
`evaluate` reports the metrics of every member and of each combination.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Optional

import numpy as np

from prompt_tuning_jax.analysis import mixed
from prompt_tuning_jax.analysis.prompt_bank import PromptBank

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
                           eos_id: int = 1, decode_fn: Optional[Callable[[list[int]], str]] = None
                          ) -> DecodeEnsemble:
  """Greedy decoding by K member prompts in one batched call, then a majority vote.

  `decode_fn` maps a token list (up to, without, EOS) to text, e.g. a seqio
  vocabulary's `decode`; votes are over those texts. Without it votes are
  over token tuples.
  """
  b = np.shape(encoder_input_tokens)[0]
  tokens, names = repeat_for_members(encoder_input_tokens, members)
  out, scores = mixed.mixed_greedy_decode(model, params, bank, names, tokens,
                                          max_decode_length=max_decode_length, eos_id=eos_id)
  k = len(members)
  member_tokens = np.asarray(out).reshape(k, b, -1)
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
