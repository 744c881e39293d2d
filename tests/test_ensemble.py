"""Prompt ensembling: hand-computed vote/average, and one batched model pass for K members."""
from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from flax import linen as nn

from conftest import naive_greedy, small_config
from prompt_tuning_jax import scoring
from prompt_tuning_jax.many_prompts import ensemble
from prompt_tuning_jax.many_prompts.bank import PromptBank
from prompt_tuning_jax.models import PromptedT5

# A config of its own: the jitted functions trace afresh here, so the interceptor sees the
# program's encode calls (a cached compilation would run without tracing).
CONFIG = small_config(mlp_dim=24, num_decoder_layers=1)
MEMBERS = ('seed0', 'seed1', 'seed2')


def test_majority_vote_by_hand():
  # Members x examples. Example 3 is a 1-1-1 tie: member 0's label wins.
  # Example 4 is a tie between 'b' (members 1, 3) and 'a' (members 0, 2): member 0's 'a' wins.
  members = [['pos', 'neg', 'neg', 'x', 'a'],
             ['pos', 'pos', 'neg', 'y', 'b'],
             ['neg', 'pos', 'neg', 'z', 'a'],
             ['neg', 'pos', 'pos', 'x', 'b']]
  assert ensemble.majority_vote(members[:3]) == ['pos', 'pos', 'neg', 'x', 'a']
  assert ensemble.majority_vote(members) == ['pos', 'pos', 'neg', 'x', 'a']
  assert ensemble.majority_vote([[1, 0], [0, 0], [1, 1]]) == [1, 0]
  with pytest.raises(ValueError, match='different numbers'):
    ensemble.majority_vote([[1, 2], [1]])


def test_vote_and_average_disagree_as_computed_by_hand():
  # One example, labels (A, B), three members' log-likelihoods.
  # Votes: A, A, B -> A. Means: A = (-0.6 - 0.6 - 5.0) / 3 = -2.0667,
  # B = (-0.8 - 0.8 - 0.01) / 3 = -0.5367 -> B.
  scores = np.array([[[-0.6, -0.8]], [[-0.6, -0.8]], [[-5.0, -0.01]]], np.float32)
  labels = scores.argmax(-1)
  assert ensemble.majority_vote(labels.tolist()) == [0]
  pick, mean = ensemble.average_scores(scores)
  assert pick.tolist() == [1]
  np.testing.assert_allclose(mean, [[-6.2 / 3, -1.61 / 3]], rtol=1e-6)
  # Ties in the mean go to the lowest label index.
  assert ensemble.average_scores(np.zeros((2, 1, 3)))[0].tolist() == [0]


def test_evaluate_reports_members_and_ensembles():
  def accuracy(targets, predictions):
    return {'accuracy': 100.0 * np.mean([t == p for t, p in zip(targets, predictions)])}
  report = ensemble.evaluate(
      ['pos', 'neg', 'neg', 'pos'],
      {'m0': ['pos', 'neg', 'pos', 'pos'], 'm1': ['neg', 'neg', 'neg', 'neg']},
      {'vote': ['pos', 'neg', 'neg', 'neg']}, accuracy)
  assert report == {'member/m0': {'accuracy': 75.0}, 'member/m1': {'accuracy': 50.0},
                    'members_mean': {'accuracy': 62.5}, 'ensemble/vote': {'accuracy': 75.0}}


def _vote_by_hand(member_predictions):
  """Majority vote written out: most votes wins; a tie goes to the lowest-indexed member's pick."""
  votes = []
  for i in range(len(member_predictions[0])):
    column = [member[i] for member in member_predictions]
    tally = {}
    for prediction in column:
      tally[prediction] = tally.get(prediction, 0) + 1
    best = max(tally.values())
    for prediction in column:  # members in order: the first with the top count wins
      if tally[prediction] == best:
        votes.append(prediction)
        break
  return votes


def _mean_argmax_by_hand(member_scores):
  """Argmax of the members' mean log-likelihood; ties to the lowest label index."""
  k, b, n_labels = np.shape(member_scores)
  picks = []
  for i in range(b):
    means = [sum(float(member_scores[m][i][j]) for m in range(k)) / k for j in range(n_labels)]
    picks.append(next(j for j in range(n_labels) if means[j] == max(means)))
  return picks


# Crafted member log-likelihoods [K=3, b=4, L=3] and the hand-computed ensembles:
#  ex 0: picks 0, 1, 1 -> vote 1; means (-2.5, -1.167, -3.0) -> 1.
#  ex 1: picks 0, 0, 2 -> vote 0; means (-3.067, -9.0, -0.7) -> 2 (vote and average disagree).
#  ex 2: picks 1, 0, 2 (three-way tie) -> member 0's 1; means (-2.0, -2.333, -1.667) -> 2.
#  ex 3: picks 0, 1, 0 -> vote 0; means all -1.5 (tie) -> lowest label, 0.
CRAFTED_SCORES = np.array([
    [[-1.0, -2.0, -3.0], [-0.1, -9.0, -1.0], [-3.0, -1.0, -2.0], [-1.0, -2.0, -1.5]],
    [[-1.5, -1.0, -3.0], [-0.1, -9.0, -1.0], [-1.0, -3.0, -2.0], [-2.0, -1.0, -1.5]],
    [[-5.0, -0.5, -3.0], [-9.0, -9.0, -0.1], [-2.0, -3.0, -1.0], [-1.5, -1.5, -1.5]]], np.float32)


def test_rank_ensemble_vote_and_average_on_crafted_member_scores(monkeypatch):
  k, b, _ = CRAFTED_SCORES.shape

  def fake_mixed_rank_classify(model, params, bank, names, tokens, label_token_ids, normalize):
    assert list(names) == [m for m in MEMBERS for _ in range(b)]  # member-major rows
    scores = CRAFTED_SCORES.reshape(k * b, -1)
    return scores.argmax(-1), scores

  monkeypatch.setattr(ensemble.mixed, 'mixed_rank_classify', fake_mixed_rank_classify)
  result = ensemble.ensemble_rank_classify(None, None, None, MEMBERS, np.zeros((b, 5), np.int32),
                                           np.zeros((3, 2), np.int32))
  assert result.member_labels.tolist() == [[0, 0, 1, 0], [1, 0, 0, 1], [1, 2, 2, 0]]
  assert result.vote.tolist() == [1, 0, 1, 0] == _vote_by_hand(result.member_labels.tolist())
  assert result.average.tolist() == [1, 2, 2, 0] == _mean_argmax_by_hand(CRAFTED_SCORES)
  np.testing.assert_allclose(result.average_scores[:2], [[-2.5, -3.5 / 3, -3.0],
                                                         [-9.2 / 3, -9.0, -2.1 / 3]], rtol=1e-6)


@pytest.fixture(scope='module')
def setup():
  model = PromptedT5(CONFIG, prompt_length=4)
  ones = np.ones((1, 4), np.int32)
  params = jax.jit(lambda rng: model.init(rng, ones, ones, ones, enable_dropout=False))(
      jax.random.PRNGKey(0))['params']
  rng = np.random.RandomState(0)
  bank = PromptBank({m: 2.0 * rng.randn(4, CONFIG.emb_dim).astype(np.float32) for m in MEMBERS})
  inputs = rng.randint(3, CONFIG.vocab_size, (5, 7)).astype(np.int32)
  inputs[:, -1] = 1
  inputs[3, 4:] = 0
  return model, params, bank, inputs


class _EncodeCounter:
  """Records the batch size of every model `encode` call (an nn.intercept_methods interceptor).

  Under jit it runs while tracing, so it counts the encoder passes in the compiled program.
  PromptedT5.encode calls T5.encode through super(): only the outermost call counts.
  """

  def __init__(self):
    self.batches = []
    self._depth = 0

  def __call__(self, next_fun, args, kwargs, context):
    if context.method_name != 'encode':
      return next_fun(*args, **kwargs)
    if self._depth == 0:
      self.batches.append(args[0].shape[0])
    self._depth += 1
    try:
      return next_fun(*args, **kwargs)
    finally:
      self._depth -= 1


def test_rank_ensemble_is_one_batched_pass(setup):
  model, params, bank, inputs = setup
  labels = np.array([[5, 1, 0], [7, 8, 1], [9, 1, 0]], np.int32)
  counter = _EncodeCounter()
  with nn.intercept_methods(counter):
    result = ensemble.ensemble_rank_classify(model, params, bank, MEMBERS, inputs, labels)
  assert counter.batches == [len(MEMBERS) * inputs.shape[0]]  # one pass, K * b rows
  assert result.member_labels.shape == (3, 5) and result.member_scores.shape == (3, 5, 3)
  for k, member in enumerate(MEMBERS):  # member k's slice equals that prompt alone
    alone = params | {'encoder': params['encoder'] | {'prompt': {'prompt': {'prompt': bank[member]}}}}
    want_labels, want_scores = scoring.jit_rank_classify(model, alone, inputs, labels)
    np.testing.assert_array_equal(result.member_labels[k], np.asarray(want_labels))
    np.testing.assert_allclose(result.member_scores[k], np.asarray(want_scores), atol=1e-5)
  assert result.vote.tolist() == _vote_by_hand(result.member_labels.tolist())
  assert result.average.tolist() == _mean_argmax_by_hand(result.member_scores)


def test_decode_ensemble_is_one_batched_pass(setup):
  model, params, bank, inputs = setup
  counter = _EncodeCounter()
  with nn.intercept_methods(counter):
    result = ensemble.ensemble_greedy_decode(
        model, params, bank, MEMBERS, inputs, max_decode_length=3,
        decode_fn=lambda ids: ' '.join(map(str, ids)))
  assert counter.batches == [len(MEMBERS) * inputs.shape[0]]
  assert result.member_tokens.shape == (3, 5, 3) and result.member_scores.shape == (3, 5)
  assert len(result.member_texts) == 3 and len(result.vote) == 5
  for k, member in enumerate(MEMBERS):  # member k equals that prompt alone, decoded without cache
    alone = params | {'encoder': params['encoder'] | {'prompt': {'prompt': {'prompt': bank[member]}}}}
    want_tokens, want_scores = naive_greedy(model, alone, inputs, 3)
    np.testing.assert_array_equal(result.member_tokens[k], want_tokens, err_msg=member)
    np.testing.assert_allclose(result.member_scores[k], want_scores, atol=1e-5, rtol=0)
    want_texts = [' '.join(str(t) for t in itertools.takewhile(lambda t: t not in (0, 1), row))
                  for row in want_tokens.tolist()]  # a row ends at EOS (1) or padding (0)
    assert result.member_texts[k] == want_texts, member
  assert result.vote == _vote_by_hand(result.member_texts)
  # The members disagree here (measured: examples 0 and 2 are three-way ties, 1 and 4 are 2-1),
  # so the vote is not any single member's output.
  assert all(result.vote != member for member in result.member_texts)


def test_decode_ensemble_strips_a_leading_sentinel(setup):
  """TARGET_SENTINEL: a leading sentinel is dropped from every member's decode before the vote
  (here the sentinel is the id member 0 decodes first for example 0)."""
  model, params, bank, inputs = setup
  decode = lambda ids: ' '.join(map(str, ids))
  plain = ensemble.ensemble_greedy_decode(model, params, bank, MEMBERS, inputs,
                                          max_decode_length=3, decode_fn=decode)
  sentinel_id = int(plain.member_tokens[0, 0, 0])
  stripped = ensemble.ensemble_greedy_decode(model, params, bank, MEMBERS, inputs,
                                             max_decode_length=3, decode_fn=decode,
                                             target_sentinel=sentinel_id)
  starts = plain.member_tokens[:, :, 0] == sentinel_id
  assert starts.any() and not starts.all()
  want = np.where(starts[:, :, None], np.concatenate(
      [plain.member_tokens[:, :, 1:], np.zeros_like(plain.member_tokens[:, :, :1])], axis=2),
                  plain.member_tokens)
  np.testing.assert_array_equal(stripped.member_tokens, want)
  assert stripped.member_texts[0][0] == decode(
      list(itertools.takewhile(lambda t: t not in (0, 1), want[0, 0].tolist())))
