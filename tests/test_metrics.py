"""Metrics and postprocessors of the tasks: hand-computed cases, and
scikit-learn / scipy where they define the same quantity."""

import numpy as np
import pytest


from prompt_tuning_jax.tasks import metrics
from prompt_tuning_jax.tasks import postprocessors

sklearn_metrics = pytest.importorskip('sklearn.metrics')
scipy_stats = pytest.importorskip('scipy.stats')


def _random_labels(seed, n=200, classes=2, invalid=0.1):
  rng = np.random.default_rng(seed)
  targets = rng.integers(0, classes, n)
  predictions = rng.integers(0, classes, n)
  predictions[rng.random(n) < invalid] = postprocessors.INVALID
  return targets, predictions


def _opposite_if_invalid(targets, predictions):
  return np.where(predictions < 0, 1 - targets, predictions)


# ------------------------------------------------------------- hand-made


def test_accuracy_counts_invalid_as_wrong():
  assert metrics.accuracy([0, 1, 1, 0], [0, 1, -1, 1]) == {'accuracy': 50.0}


def test_binary_f1_by_hand():
  # tp=2, fp=1, fn=1 -> F1 = 4 / (4 + 2) = 2/3; an invalid prediction of a
  # positive target is a false negative.
  result = metrics.f1_and_accuracy([1, 1, 0, 1, 0], [1, 1, 1, -1, 0])
  assert result['f1'] == pytest.approx(200 / 3)
  assert result['accuracy'] == pytest.approx(60.0)


def test_cb_macro_f1_by_hand():
  # Per class F1: entailment 2/3, contradiction 1, neutral 0.
  targets = [0, 0, 1, 2]
  predictions = [0, 2, 1, -1]
  result = metrics.macro_f1_and_accuracy(targets, predictions)
  assert result['macro_f1'] == pytest.approx(100 * (2 / 3 + 1 + 0) / 3)
  assert result['accuracy'] == pytest.approx(50.0)


def test_mcc_by_hand_and_degenerate():
  # tp=1 tn=1 fp=1 fn=1 -> 0; all correct -> 100; constant -> 0.
  assert metrics.matthews_corrcoef([1, 0, 0, 1], [1, 0, 1, 0]) == {'mcc': 0.0}
  assert metrics.matthews_corrcoef([1, 0], [1, 0]) == {'mcc': 100.0}
  assert metrics.matthews_corrcoef([1, 1], [1, 1]) == {'mcc': 0.0}


def test_correlations_degenerate_are_zero():
  assert metrics.pearson_and_spearman([1.0, 2.0], [3.0, 3.0]) == {
      'pearson': 0.0, 'spearman': 0.0}


# ------------------------------------------------------ against libraries


@pytest.mark.parametrize('seed', range(3))
def test_binary_f1_matches_sklearn(seed):
  targets, predictions = _random_labels(seed)
  expected = sklearn_metrics.f1_score(
      targets, _opposite_if_invalid(targets, predictions))
  assert metrics.f1_binary(targets, predictions) == pytest.approx(expected)


@pytest.mark.parametrize('seed', range(3))
def test_macro_f1_matches_sklearn(seed):
  targets, predictions = _random_labels(seed, classes=3)
  expected = sklearn_metrics.f1_score(targets, predictions, labels=[0, 1, 2],
                                      average='macro')
  assert metrics.f1_macro(targets, predictions, [0, 1, 2]) == pytest.approx(
      expected)


@pytest.mark.parametrize('seed', range(3))
def test_mcc_matches_sklearn(seed):
  targets, predictions = _random_labels(seed)
  expected = sklearn_metrics.matthews_corrcoef(
      targets, _opposite_if_invalid(targets, predictions))
  assert metrics.matthews(targets, predictions) == pytest.approx(expected)


def test_correlations_match_scipy():
  rng = np.random.default_rng(0)
  targets = rng.uniform(0, 5, 100)
  predictions = targets + rng.normal(0, 1, 100)
  result = metrics.pearson_and_spearman(targets, predictions)
  assert result['pearson'] == pytest.approx(
      100 * scipy_stats.pearsonr(targets, predictions)[0])
  assert result['spearman'] == pytest.approx(
      100 * scipy_stats.spearmanr(targets, predictions)[0])


# ------------------------------------------------------------ group metrics


def _grouped(groups, values):
  return [{'group': g, 'value': v} for g, v in zip(groups, values)]


def test_multirc_f1a_and_exact_match():
  groups = [(0, 0), (0, 0), (0, 0), (0, 1), (0, 1), (1, 2)]
  targets = _grouped(groups, [1, 0, 1, 0, 1, 1])
  predictions = _grouped(groups, [1, 0, 1, 1, 1, -1])
  result = metrics.multirc(targets, predictions)
  # Question (0,0) all right; (0,1) one wrong; (1,2) invalid -> wrong.
  assert result['em'] == pytest.approx(100 / 3)
  # Over all 6 options: tp=3, fp=1, fn=1 -> F1 = 6/8.
  assert result['f1a'] == pytest.approx(75.0)


def test_squad_normalisation_and_token_f1():
  assert metrics.normalize_answer('The  Eiffel-Tower!') == 'eiffeltower'
  assert metrics.normalize_answer('a cat and AN apple') == 'cat and apple'
  # pred tokens {new, york, city}, gold {new, york}: P=2/3, R=1 -> F1=0.8.
  assert metrics.token_f1('New York City', 'new york') == pytest.approx(0.8)
  assert metrics.token_f1('Paris', 'London') == 0.0


def test_record_max_over_golds_once_per_query():
  targets = [
      {'group': (0, 0), 'answers': ['Barack Obama', 'Obama']},
      {'group': (0, 0), 'answers': ['Barack Obama', 'Obama']},  # 2nd copy.
      {'group': (0, 1), 'answers': ['the United States']},
      {'group': (1, 2), 'answers': ['Paris']},
  ]
  predictions = [
      {'group': (0, 0), 'value': 'obama'},
      {'group': (0, 0), 'value': 'obama'},
      {'group': (0, 1), 'value': 'United States of America'},
      {'group': (1, 2), 'value': 'London'},
  ]
  result = metrics.record(targets, predictions)
  # EM: 1, 0, 0. F1: 1; {united, states, of, america} vs {united, states}:
  # P=1/2, R=1 -> 2/3; 0.
  assert result['em'] == pytest.approx(100 / 3)
  assert result['f1'] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_axg_gender_parity():
  pairs = [0, 0, 1, 1, 2, 2]
  targets = _grouped(pairs, [0, 0, 1, 1, 0, 0])
  predictions = _grouped(pairs, [0, 0, 1, 0, -1, -1])
  result = metrics.axg(targets, predictions)
  assert result['accuracy'] == pytest.approx(50.0)
  assert result['gender_parity'] == pytest.approx(100 / 3)


def test_rank_classification_picks_best_scored_candidate():
  def candidate(key, gold, word):
    return {'key': key, 'target': gold, 'prediction': word}

  targets = [candidate(0, 1, 0), candidate(0, 1, 1),
             candidate(1, 0, 0), candidate(1, 0, 1)]
  scores = [-3.0, -1.0, -2.0, -0.5]
  rank = metrics.RankClassification([metrics.accuracy])
  assert rank(targets, scores) == {'accuracy': 50.0}


# --------------------------------------------------------- postprocessors


def test_invalid_predictions_never_raise():
  words = ('entailment', 'not_entailment')
  assert postprocessors.classification('entailment', label_words=words) == 0
  assert postprocessors.classification(' not_entailment ',
                                       label_words=words) == 1
  for text in ('', 'Entailment', '<unk>', 'entailment entailment'):
    assert postprocessors.classification(text, label_words=words) == -1
  assert postprocessors.to_float('3.8') == pytest.approx(3.8)
  assert postprocessors.to_float('three') == -1.0
  assert postprocessors.to_float('nan') == -1.0


@pytest.mark.parametrize('prediction, referent, expected', [
    ('the cup', 'the cup', True),
    ('Cup', 'the cup', True),
    ('fuzzy bunny', 'bunny', True),
    ('bunny', 'fuzzy bunny', True),
    ('Bob', "Bob's hat", False),
    ('the bottle', 'the cup', False),
])
def test_wsc_referent_rule(prediction, referent, expected):
  assert postprocessors.names_referent(prediction, referent) is expected
