"""GLUE / SuperGLUE, SQuAD-style QA and summarization metrics.

Metric functions have seqio's signature `fn(targets, predictions) -> {name:
value}` (rank classification: `fn(targets, scores)`) and, like T5, report
percentages (x100). Predictions come from the postprocessors: an invalid
prediction is -1 and always counts as wrong; in binary F1 and MCC it counts as
the opposite of the target. numpy and scipy, and Google's `rouge-score` for ROUGE.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats

MetricFn = Callable[..., dict[str, float]]


def _arrays(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
  return np.asarray(targets), np.asarray(predictions)


def _binary(targets, predictions) -> tuple[np.ndarray, np.ndarray]:
  """Integer 0/1 arrays; a prediction that is not 0/1 becomes 1 - target."""
  t, p = _arrays(targets, predictions)
  t, p = t.astype(int), p.astype(int)
  return t, np.where((p == 0) | (p == 1), p, 1 - t)


def _safe_ratio(numerator: float, denominator: float) -> float:
  return float(numerator / denominator) if denominator else 0.0


# ------------------------------------------------------- plain definitions


def accuracy_score(targets, predictions) -> float:
  """Fraction of predictions equal to their target."""
  t, p = _arrays(targets, predictions)
  return float(np.mean(t == p)) if t.size else 0.0


def f1_binary(targets, predictions) -> float:
  """F1 of the positive class 1 (invalid predictions: opposite of target)."""
  t, p = _binary(targets, predictions)
  tp = np.sum((t == 1) & (p == 1))
  return _safe_ratio(2 * tp, np.sum(t == 1) + np.sum(p == 1))


def f1_macro(targets, predictions, labels: Sequence[int]) -> float:
  """Unweighted mean of the per-class F1 over `labels`.

  A prediction outside `labels` is a miss of its target's class.
  """
  t, p = _arrays(targets, predictions)
  scores = [_safe_ratio(2 * np.sum((t == c) & (p == c)),
                        np.sum(t == c) + np.sum(p == c)) for c in labels]
  return float(np.mean(scores))


def matthews(targets, predictions) -> float:
  """Matthews correlation coefficient (binary; invalid: opposite of target).

  0 when undefined (a constant column), as scikit-learn.
  """
  t, p = _binary(targets, predictions)
  tp = np.sum((t == 1) & (p == 1))
  tn = np.sum((t == 0) & (p == 0))
  fp = np.sum((t == 0) & (p == 1))
  fn = np.sum((t == 1) & (p == 0))
  denominator = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return _safe_ratio(float(tp) * tn - float(fp) * fn, denominator)


def _correlation(fn, targets, predictions) -> float:
  """A scipy correlation; 0 when undefined (constant inputs or < 2 points)."""
  t, p = _arrays(targets, predictions)
  if t.size < 2 or np.all(t == t[0]) or np.all(p == p[0]):
    return 0.0
  return float(fn(t.astype(float), p.astype(float)).statistic)


def pearson(targets, predictions) -> float:
  return _correlation(scipy.stats.pearsonr, targets, predictions)


def spearman(targets, predictions) -> float:
  return _correlation(scipy.stats.spearmanr, targets, predictions)


def group_exact_match(targets, predictions, groups: Sequence[Hashable]) -> float:
  """Fraction of groups whose predictions all equal their targets."""
  all_right: dict[Hashable, bool] = {}
  for target, prediction, group in zip(targets, predictions, groups):
    all_right[group] = all_right.get(group, True) and target == prediction
  return _safe_ratio(sum(all_right.values()), len(all_right))


def gender_parity_score(predictions, pairs: Sequence[Hashable]) -> float:
  """Fraction of pairs whose predictions agree (and are valid labels)."""
  by_pair = collections.defaultdict(list)
  for prediction, pair in zip(predictions, pairs):
    by_pair[pair].append(prediction)
  agree = [len(set(preds)) == 1 and preds[0] >= 0 for preds in by_pair.values()]
  return _safe_ratio(sum(agree), len(agree))


def normalize_answer(text: str) -> str:
  """SQuAD normalisation: lower case, no punctuation/articles, single spaces."""
  text = ''.join(ch for ch in text.lower() if ch not in string.punctuation)
  text = re.sub(r'\b(a|an|the)\b', ' ', text)
  return ' '.join(text.split())


def token_f1(prediction: str, gold: str) -> float:
  """SQuAD token F1 of two answers, after `normalize_answer`."""
  predicted = normalize_answer(prediction).split()
  expected = normalize_answer(gold).split()
  common = sum((collections.Counter(predicted)
                & collections.Counter(expected)).values())
  if not common:
    return 0.0
  precision, recall = common / len(predicted), common / len(expected)
  return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: Iterable[str]) -> tuple[float, float]:
  """(max exact match, max token F1) of a prediction over its gold answers."""
  golds = list(golds)
  em = max(float(normalize_answer(prediction) == normalize_answer(g))
           for g in golds)
  f1 = max(token_f1(prediction, g) for g in golds)
  return em, f1


# ------------------------------------------------------ seqio metric fns


def _percent(values: Mapping[str, float]) -> dict[str, float]:
  return {name: 100 * value for name, value in values.items()}


def accuracy(targets, predictions) -> dict[str, float]:
  """{'accuracy'}."""
  return _percent({'accuracy': accuracy_score(targets, predictions)})


def f1_and_accuracy(targets, predictions) -> dict[str, float]:
  """{'f1', 'accuracy'} of a binary task (MRPC, QQP)."""
  return _percent({'f1': f1_binary(targets, predictions),
                   'accuracy': accuracy_score(targets, predictions)})


def macro_f1_and_accuracy(targets, predictions,
                          num_classes: int = 3) -> dict[str, float]:
  """{'macro_f1', 'accuracy'} (CB: macro F1 over its 3 classes)."""
  return _percent({
      'macro_f1': f1_macro(targets, predictions, range(num_classes)),
      'accuracy': accuracy_score(targets, predictions)})


def matthews_corrcoef(targets, predictions) -> dict[str, float]:
  """{'mcc'} (CoLA, AX-b)."""
  return _percent({'mcc': matthews(targets, predictions)})


def pearson_and_spearman(targets, predictions) -> dict[str, float]:
  """{'pearson', 'spearman'} (STS-B)."""
  return _percent({'pearson': pearson(targets, predictions),
                   'spearman': spearman(targets, predictions)})


def _values(items: Sequence[Mapping[str, Any]]) -> list[Any]:
  return [item['value'] for item in items]


def multirc(targets, predictions) -> dict[str, float]:
  """{'f1a': F1 over all answer options, 'em': exact match per question}.

  Items are {'group': (paragraph, question), 'value': 0/1/-1}.
  """
  t, p = _values(targets), _values(predictions)
  return _percent({
      'f1a': f1_binary(t, p),
      'em': group_exact_match(t, p, [item['group'] for item in targets])})


def axg(targets, predictions) -> dict[str, float]:
  """{'accuracy', 'gender_parity'}; items are {'group': pair, 'value'}."""
  t, p = _values(targets), _values(predictions)
  pairs = [item['group'] for item in targets]
  return _percent({'accuracy': accuracy_score(t, p),
                   'gender_parity': gender_parity_score(p, pairs)})


def record(targets, predictions) -> dict[str, float]:
  """{'em', 'f1'}: max over gold answers, averaged over queries.

  Each query counts once (the task repeats it per gold answer); queries
  without gold answers are skipped.
  """
  scores = {}
  for target, prediction in zip(targets, predictions):
    if target['answers'] and target['group'] not in scores:
      scores[target['group']] = best_over_golds(prediction['value'],
                                                target['answers'])
  if not scores:
    return {'em': 0.0, 'f1': 0.0}
  em, f1 = np.mean(list(scores.values()), axis=0)
  return _percent({'em': float(em), 'f1': float(f1)})


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """{'em', 'f1'}: each prediction's best exact match and token F1 over its gold answers
  (SQuAD normalisation), averaged over the examples. Targets are each example's answers."""
  if not targets:
    return {'em': 0.0, 'f1': 0.0}
  em, f1 = np.mean([best_over_golds(p, golds) for golds, p in zip(targets, predictions)],
                   axis=0)
  return _percent({'em': float(em), 'f1': float(f1)})


ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeLsum')


def _sentence_lines(summary: str) -> str:
  """A newline after each ' . ' (T5's preparation): rougeLsum scores sentence by sentence."""
  return summary.replace(' . ', ' .\n')


def rouge(targets: Sequence[str], predictions: Sequence[str], *,
          use_stemmer: bool = False) -> dict[str, float]:
  """{'rouge1', 'rouge2', 'rougeLsum'}: the mean F-measure over the examples, by Google's
  `rouge-score` (T5's settings: no stemming, sentences split at ' . ' for rougeLsum).

  T5 reports the middle of a bootstrap over the examples, which moves with the random
  resampling; the plain mean here is its expectation and is deterministic.
  """
  # Imported on use: it imports nltk (seconds), which no other task needs.
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
  scores = [scorer.score(target=_sentence_lines(t), prediction=_sentence_lines(p))
            for t, p in zip(targets, predictions)]
  return _percent({key: float(np.mean([s[key].fmeasure for s in scores])) if scores else 0.0
                   for key in ROUGE_TYPES})


class RankClassification:
  """Scores -> predicted labels -> the task's own metrics.

  Targets come from `postprocessors.rank_target`: one per candidate label
  word, with the example's `key`, the gold `target` and the candidate as a
  `prediction`. For each example the best-scored candidate is the prediction.
  """

  def __init__(self, metric_fns: Sequence[MetricFn]):
    self.metric_fns = tuple(metric_fns)

  def __call__(self, targets, scores) -> dict[str, float]:
    best: dict[Any, tuple[float, Any, Any]] = {}
    for target, score in zip(targets, scores):
      key = target['key']
      if key not in best or score > best[key][0]:
        best[key] = (float(score), target['target'], target['prediction'])
    gold = [target for _, target, _ in best.values()]
    chosen = [prediction for _, _, prediction in best.values()]
    results = {}
    for fn in self.metric_fns:
      results.update(fn(gold, chosen))
    return results
