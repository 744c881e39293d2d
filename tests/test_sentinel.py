"""TARGET_SENTINEL: targets that start with <extra_id_0>, on a tiny model and on t5_mini.

What must hold: the training targets are the task's with the sentinel id in
front; decoded predictions lose a leading sentinel before the task's
postprocessor and metrics; rank classification scores every label with the
sentinel in front. The references are computed here from full teacher-forced
forward passes (no decoding or scoring code).
"""
from __future__ import annotations

import dataclasses
import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf
from conftest import small_config

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import config
from prompt_tuning_jax import data
from prompt_tuning_jax import decoding
from prompt_tuning_jax import evaluation
from prompt_tuning_jax import inference
from prompt_tuning_jax import pretrained
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import sentinel
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.many_prompts.bank import PromptBank
from prompt_tuning_jax.models import PromptedT5, T5, get_config
from prompt_tuning_jax.settings import DataSettings, EvalSettings
from prompt_tuning_jax.tasks import smoke

# The tiny case: the smoke reviews over bytes, with one extra id (the sentinel, 259).
VOCAB = seqio.ByteVocabulary(extra_ids=1)
SENTINEL = VOCAB.vocab_size - 1
TASK = 'ptj_test_sentinel_smoke'
smoke.register(TASK, smoke.LABELS, VOCAB)
MODEL = PromptedT5(small_config(vocab_size=VOCAB.vocab_size), prompt_length=3)
LENGTHS = {'inputs': 64, 'targets': 4}
NUM_EXAMPLES = 12
MINI_SENTINEL = 8099  # t5_mini: 8,000 pieces + 100 extra ids, <extra_id_0> the last


@pytest.fixture(scope='module')
def mini_vocabulary():
  return seqio.SentencePieceVocabulary(pretrained.path('t5_mini/spiece.model'), extra_ids=100)


@pytest.fixture
def mini_tasks(restore_ptj_global_state):
  """The tasks' vocabulary is t5_mini's (as models/t5_mini.gin binds it)."""
  gin.bind_parameter('get_vocabulary.path', pretrained.path('t5_mini/spiece.model'))


def random_params(model, seed=0):
  """Embedding and prompt ~ N(0, 1), kernels ~ N(0, 1 / fan-in), norm scales 1."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), *[jnp.ones((1, 2), jnp.int32)] * 3, enable_dropout=False))['params']
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    if len(leaf.shape) == 1:
      return jnp.ones(leaf.shape, jnp.float32)
    std = 1.0 if path[-1].key in ('embedding', 'prompt') else leaf.shape[0] ** -0.5
    return jnp.asarray(rng.normal(0.0, std, leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def mini_params(model, checkpoint='t5_mini/span_corruption'):
  dummy = jnp.ones((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, dummy, dummy,
                                             enable_dropout=False))['params']
  return checkpoints.merge_params(shapes, checkpoints.load_t5x(pretrained.path(checkpoint)))


@functools.partial(jax.jit, static_argnames=('model',))
def _log_probs(model, params, tokens, decoder_inputs, targets):
  logits = model.apply({'params': params}, tokens, decoder_inputs, targets, enable_dropout=False)
  return jax.nn.log_softmax(logits, axis=-1)


def sequence_scores(model, params, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Summed log p(targets) [b] (0 = padding), from one full teacher-forced forward pass."""
  decoder_inputs = np.pad(targets[:, :-1], ((0, 0), (1, 0)))
  log_probs = np.asarray(_log_probs(model, params, jnp.asarray(tokens),
                                    jnp.asarray(decoder_inputs), jnp.asarray(targets)), np.float64)
  picked = np.take_along_axis(log_probs, targets[:, :, None], axis=-1)[:, :, 0]
  return (picked * (targets > 0)).sum(-1)


def examples_of(name, vocabulary, split='validation', count=NUM_EXAMPLES, input_length=64):
  examples, _ = inference.examples_from_task(name, split, {'inputs': input_length,
                                                           'targets': 4}, count)
  assert all(ex.tokens[-1] == vocabulary.eos_id for ex in examples)
  return examples


def padded(examples, length=64) -> np.ndarray:
  tokens = np.zeros((len(examples), length), np.int32)
  for i, ex in enumerate(examples):
    tokens[i, :len(ex.tokens)] = ex.tokens
  return tokens


# ------------------------------------------------------------------ the sentinel id


def test_the_sentinel_is_extra_id_0_and_a_vocabulary_without_one_is_refused(mini_vocabulary):
  assert sentinel.sentinel_id(mini_vocabulary) == MINI_SENTINEL
  assert mini_vocabulary.encode('<extra_id_0>') == [MINI_SENTINEL]
  assert sentinel.sentinel_id(VOCAB) == SENTINEL == 259
  with pytest.raises(UsageError, match="of 'smoke' has no extra ids"):
    sentinel.sentinel_id(seqio.ByteVocabulary(), "'smoke'")


def test_a_run_without_extra_ids_stops_at_setup(restore_ptj_global_state):
  run = config.configure('train', ['runs/smoke.gin'], ["MODEL_DIR = '/tmp/unused'",
                                                        'TARGET_SENTINEL = True']).settings
  with pytest.raises(UsageError, match="TARGET_SENTINEL: the targets vocabulary of "
                     "'smoke_sentiment' has no extra ids"):
    run_setup.setup(run)
  with pytest.raises(UsageError, match='TARGET_SENTINEL must be True or False'):
    dataclasses.replace(run.data, target_sentinel='yes')


def test_prefix_and_strip():
  labels = np.array([[5, 1, 0], [6, 7, 1]])
  np.testing.assert_array_equal(sentinel.prefix_labels(labels, 9),
                                [[9, 5, 1, 0], [9, 6, 7, 1]])
  np.testing.assert_array_equal(sentinel.prefix_targets(np.array([[5, 1], [0, 0]]), 9),
                                [[9, 5, 1], [0, 0, 0]])
  decoded = np.array([[9, 5, 9, 1], [5, 9, 1, 0], [9, 1, 0, 0]])
  np.testing.assert_array_equal(sentinel.strip_leading(decoded, 9),
                                [[5, 9, 1, 0], [5, 9, 1, 0], [1, 0, 0, 0]])
  np.testing.assert_array_equal(sentinel.strip_leading(decoded[None], 9)[0],
                                sentinel.strip_leading(decoded, 9))


# ------------------------------------------------------------------ training targets


@pytest.mark.parametrize('task, expected_sentinel', [
    (TASK, SENTINEL), (smoke.TRANSFER_TASK_NAME, MINI_SENTINEL)])
def test_training_targets_are_the_tasks_with_the_sentinel_first(task, expected_sentinel,
                                                                 mini_tasks):
  settings = DataSettings(task, {'inputs': 64, 'targets': 6}, 8, 0, None, None)
  plain = next(data.train_batches(settings))
  prefixed = next(data.train_batches(dataclasses.replace(settings, target_sentinel=True)))
  np.testing.assert_array_equal(prefixed['encoder_input_tokens'], plain['encoder_input_tokens'])
  targets = plain['decoder_target_tokens']
  assert (targets[:, -1] == 0).all()  # nothing cut by the extra token
  np.testing.assert_array_equal(prefixed['decoder_target_tokens'],
                                np.concatenate([np.full((8, 1), expected_sentinel),
                                                targets[:, :-1]], axis=1))
  np.testing.assert_array_equal(prefixed['decoder_input_tokens'][:, 1],
                                np.full(8, expected_sentinel))
  # The sentinel is a target token like the label's: it is trained on.
  np.testing.assert_array_equal(prefixed['decoder_loss_weights'].sum(1),
                                plain['decoder_loss_weights'].sum(1) + 1)


# ------------------------------------------------------------------ rank classification


@pytest.fixture(scope='module')
def tiny():
  params = random_params(MODEL, seed=1)  # a seed whose rankings are mixed
  examples = examples_of(TASK, VOCAB)
  tokens = padded(examples)
  labels = {}
  for word in smoke.LABELS:  # [sentinel, label bytes, EOS] for every example
    row = [SENTINEL, *VOCAB.encode(word), VOCAB.eos_id]
    labels[word] = sequence_scores(MODEL, params, tokens, np.tile(row, (len(examples), 1)))
  plain = {w: sequence_scores(MODEL, params, tokens,
                              np.tile([*VOCAB.encode(w), 1], (len(examples), 1)))
           for w in smoke.LABELS}
  return dict(params=params, examples=examples, tokens=tokens, label_scores=labels,
              plain_scores=plain)


def reference_rank(scores):
  words = list(scores)
  return [words[i] for i in np.argmax(np.stack([scores[w] for w in words]), axis=0)]


def test_rank_classification_scores_the_prefixed_labels(tiny):
  ranked = reference_rank(tiny['label_scores'])
  assert set(ranked) == set(smoke.LABELS)  # both labels predicted
  assert ranked != reference_rank(tiny['plain_scores'])  # the sentinel changes the ranking
  records = inference.predict(MODEL, tiny['params'], tiny['examples'], VOCAB, input_length=64,
                              max_decode_length=4, batch_size=5, method='rank_classification',
                              label_words=smoke.LABELS, target_sentinel=SENTINEL)
  assert [r['prediction'] for r in records] == ranked
  for word in smoke.LABELS:
    np.testing.assert_allclose([r['label_scores'][word] for r in records],
                               tiny['label_scores'][word], atol=1e-4, rtol=0)
  # Mixed-task batches: the model's prompt as a bank entry gives the same scores.
  bank = PromptBank({'p': np.asarray(tiny['params']['encoder']['prompt']['prompt']['prompt'])})
  named = [dataclasses.replace(ex, prompt='p') for ex in tiny['examples']]
  mixed = inference.predict(MODEL, tiny['params'], named, VOCAB, input_length=64,
                            max_decode_length=4, batch_size=5, method='rank_classification',
                            label_words=smoke.LABELS, bank=bank, target_sentinel=SENTINEL)
  for r, m in zip(records, mixed):
    assert m['prediction'] == r['prediction']
    np.testing.assert_allclose(list(m['label_scores'].values()),
                               list(r['label_scores'].values()), atol=1e-5, rtol=0)


def tiny_evaluator(sentinel_id, methods=('rank_classification',), targets=4):
  settings = EvalSettings('validation', methods, 'greedy', 1, 5, NUM_EXAMPLES, None)
  return evaluation.Evaluator(MODEL, TASK, {'inputs': 64, 'targets': targets}, settings,
                              target_sentinel=sentinel_id)


def test_the_evaluator_ranks_prefixed_labels_and_reports_plain_ones(tiny):
  targets = [ex.extra['target'] for ex in tiny['examples']]
  ranked = reference_rank(tiny['label_scores'])
  metrics = tiny_evaluator(SENTINEL).evaluate(tiny['params'], step=1)
  expected = smoke.accuracy(targets, ranked)['accuracy']
  assert 0 < expected < 100
  assert metrics[f'{TASK}/rank_classification/accuracy'] == pytest.approx(expected)


def test_a_leading_sentinel_is_stripped_before_the_metrics(tiny, monkeypatch):
  """The decoder made to emit the sentinel, then what it decodes unchanged: the metrics with
  TARGET_SENTINEL equal those of the unchanged decoder without it."""
  jit_decode = decoding.jit_decode
  outputs = []

  def sentinel_first(model, params, tokens, *, max_decode_length, **kwargs):
    decoded, scores = jit_decode(model, params, tokens, max_decode_length=max_decode_length - 1,
                                 **kwargs)
    decoded = jnp.concatenate([jnp.full((decoded.shape[0], 1), SENTINEL), decoded], axis=1)
    outputs.append(np.asarray(decoded))
    return decoded, scores

  # Targets the unchanged greedy decoder gets right for some examples only.
  plain = np.asarray(jit_decode(MODEL, tiny['params'], jnp.asarray(tiny['tokens']),
                                max_decode_length=2)[0])
  texts = [VOCAB.decode([int(t) for t in row if t]) for row in plain]
  expected = tiny_evaluator(None, ('decode',), targets=2).evaluate(tiny['params'], step=1)
  monkeypatch.setattr(decoding, 'jit_decode', sentinel_first)
  stripped = tiny_evaluator(SENTINEL, ('decode',), targets=3).evaluate(tiny['params'], step=1)
  unstripped = tiny_evaluator(None, ('decode',), targets=3).evaluate(tiny['params'], step=1)
  assert all((o[:, 0] == SENTINEL).all() for o in outputs)
  key = f'{TASK}/accuracy'
  assert stripped == expected
  targets = [ex.extra['target'] for ex in tiny['examples']]
  assert expected[key] == smoke.accuracy(targets, texts)['accuracy']
  assert unstripped[key] != expected[key] or expected[key] == 0


# ------------------------------------------------------------------ the shipped t5_mini


def test_span_corruption_t5_mini_decodes_the_sentinel_and_predictions_lose_it(
    mini_vocabulary, mini_tasks):
  model = T5(get_config('t5_mini'))
  params = mini_params(model)
  examples = examples_of(smoke.TRANSFER_TASK_NAME, mini_vocabulary, count=6, input_length=32)
  tokens = padded(examples, 32)
  raw = np.asarray(decoding.jit_greedy_decode(model, params, jnp.asarray(tokens),
                                              max_decode_length=6)[0])
  assert (raw[:, 0] == MINI_SENTINEL).all()  # what span corruption taught it
  # The evaluator's predictions (the tokens seqio decodes for the postprocessor).
  settings = EvalSettings('validation', ('decode',), 'greedy', 1, 4, 6, None)
  evaluator = evaluation.Evaluator(model, smoke.TRANSFER_TASK_NAME, {'inputs': 32, 'targets': 6},
                                   settings, target_sentinel=MINI_SENTINEL)
  ds = tf.data.Dataset.from_tensor_slices((np.arange(6), {
      'encoder_input_tokens': tokens, 'decoder_target_tokens': np.zeros((6, 6), np.int32)}))
  predicted = dict(evaluator.predict_fn(params, smoke.TRANSFER_TASK_NAME)(ds))
  for i, row in enumerate(raw):
    expected = evaluation._after_eos_zeroed(sentinel.strip_leading(row, MINI_SENTINEL))  # pylint: disable=protected-access
    np.testing.assert_array_equal(predicted[i], expected)
  # Infer: the text of the tokens after the sentinel.
  records = inference.predict(model, params, examples, mini_vocabulary, input_length=32,
                              max_decode_length=6, batch_size=4, target_sentinel=MINI_SENTINEL)
  for record, row in zip(records, raw):
    assert record['prediction'] == mini_vocabulary.decode([int(t) for t in row[1:] if t])
    assert not record['prediction'].startswith('<extra_id_0>')


def test_t5_mini_rank_classification_scores_the_prefixed_labels(mini_vocabulary, mini_tasks):
  model = T5(get_config('t5_mini'))
  params = mini_params(model)
  examples = examples_of(smoke.TRANSFER_TASK_NAME, mini_vocabulary, count=6, input_length=32)
  tokens = padded(examples, 32)
  records = inference.predict(model, params, examples, mini_vocabulary, input_length=32,
                              max_decode_length=6, batch_size=4, method='rank_classification',
                              label_words=smoke.WORD_LABELS, target_sentinel=MINI_SENTINEL)
  for word in smoke.WORD_LABELS:
    row = [MINI_SENTINEL, *mini_vocabulary.encode(word), 1]
    assert len(row) == 3  # each label word is one piece
    expected = sequence_scores(model, params, tokens, np.tile(row, (len(examples), 1)))
    np.testing.assert_allclose([r['label_scores'][word] for r in records], expected,
                               atol=1e-4, rtol=0)
