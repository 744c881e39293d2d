"""The evaluator's numbers against predictions computed here, without the code under test.

A tiny prompted T5 (random weights, the byte vocabulary) is evaluated on a
mixture of two tasks registered by this module. The reference predictions
come from one table per example: the log-probabilities of every 2-token
output, from teacher-forced forward passes of the whole model (no cache, no
decoding code). Greedy, beam and rank-classification predictions, and the
targets' log-likelihoods, are read off that table; the metrics computed from
them must equal what `evaluation.Evaluator` reports.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf
from conftest import small_config

from prompt_tuning_jax import data
from prompt_tuning_jax import evaluation
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import scoring
from prompt_tuning_jax.models import PromptedT5
from prompt_tuning_jax.settings import EvalSettings
from prompt_tuning_jax.tasks import registry
from prompt_tuning_jax.tasks import smoke

VOCAB = seqio.ByteVocabulary()
LABELS = ('+', '-')
LABELS_TASK, GENERATED_TASK = 'ptj_test_eval_labels', 'ptj_test_eval_generated'
MIXTURE = 'ptj_test_eval_mixture'
LENGTHS = {'inputs': 64, 'targets': 2}  # every output is 2 tokens: the table is exhaustive
NUM_EXAMPLES = 10  # per task; EVAL_BATCH_SIZE 4 leaves a padded last batch
ALPHA = 0.6
MODEL = PromptedT5(small_config(vocab_size=VOCAB.vocab_size), prompt_length=3)


def f1_of_plus(targets, predictions):
  """F1 (percent) of the label '+'; any other prediction counts as '-'."""
  tp = sum(t == p == '+' for t, p in zip(targets, predictions))
  fp = sum(p == '+' != t for t, p in zip(targets, predictions))
  fn = sum(t == '+' != p for t, p in zip(targets, predictions))
  return {'f1': 100.0 * 2 * tp / max(2 * tp + fp + fn, 1)}


def mean_log_likelihood(targets, scores):
  del targets
  return {'mean_log_likelihood': float(np.mean(scores))}


def _postprocess(text, example=None, is_target=False):
  del example, is_target
  return text.decode('utf-8', errors='ignore') if isinstance(text, bytes) else text


def _register(name, examples, metric_fns, labels=None):
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)

  def dataset(split, shuffle_files=False, seed=None):
    del split, shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices({k: [ex[k] for ex in examples]
                                               for k in ('inputs', 'targets')})

  splits = ('train', 'validation')
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset, splits=splits),
      preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features={k: seqio.Feature(VOCAB, add_eos=True) for k in ('inputs', 'targets')},
      postprocess_fn=_postprocess, metric_fns=metric_fns)
  registry.record_task(registry.TaskInfo(name, labels, _postprocess, None, False))


def encoder_tokens(texts):
  """What the task pipeline feeds the encoder: bytes + EOS, zero padded."""
  rows = [list(VOCAB.encode(t))[:LENGTHS['inputs'] - 1] + [1] for t in texts]
  return np.array([r + [0] * (LENGTHS['inputs'] - len(r)) for r in rows], np.int32)


@jax.jit
def _log_prob_table(params, tokens):
  """[b, V] log p(first token) and [b, V, V] log p(second token | first), teacher forced."""
  vocab = MODEL.config.vocab_size
  first = jnp.arange(vocab)
  decoder_inputs = jnp.stack([jnp.zeros_like(first), first], axis=1)  # [V, 2]

  def one(row):
    inputs = jnp.broadcast_to(row, (vocab, row.shape[0]))
    logits = MODEL.apply({'params': params}, inputs, decoder_inputs,
                         jnp.ones_like(decoder_inputs), enable_dropout=False)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return log_probs[0, 0], log_probs[:, 1]

  return jax.lax.map(one, tokens)


class Reference:
  """Predictions and scores of each example, read off its exhaustive 2-token table."""

  def __init__(self, params, texts):
    self.first, self.second = map(np.asarray, _log_prob_table(params, encoder_tokens(texts)))

  def sequence_log_prob(self, i, tokens):
    """Summed log-probability of `tokens` up to and including the first EOS."""
    total = self.first[i, tokens[0]]
    if tokens[0] != 1 and len(tokens) > 1:
      total += self.second[i, tokens[0], tokens[1]]
    return float(total)

  def greedy(self, i):
    t1 = int(self.first[i].argmax())
    return [t1] if t1 == 1 else [t1, int(self.second[i, t1].argmax())]

  def beam(self, i):
    """The best output under T5's length penalty, over all V + V^2 outputs."""
    penalty = lambda n: ((5.0 + n) / 6.0) ** ALPHA
    candidates = {(1,): self.first[i, 1] / penalty(1)}
    both = (self.first[i][:, None] + self.second[i]) / penalty(2)
    both[1] = -np.inf  # EOS first is the 1-token output above
    t1, t2 = np.unravel_index(both.argmax(), both.shape)
    candidates[(int(t1), int(t2))] = both[t1, t2]
    return list(max(candidates, key=candidates.get))

  def rank(self, i):
    scores = [self.sequence_log_prob(i, list(VOCAB.encode(w)) + [1]) for w in LABELS]
    return LABELS[int(np.argmax(scores))]


def text(tokens):
  return _postprocess(VOCAB.decode(tokens))


def accuracy(targets, predictions):
  return smoke.accuracy(targets, predictions)['accuracy']


def random_params():
  """Embedding and prompt ~ N(0, 1), kernels ~ N(0, 1 / fan-in), norm scales 1.

  Larger than flax's initialisers: the outputs then depend on the input enough
  that the rank predictions are mixed.
  """
  shapes = jax.eval_shape(lambda: MODEL.init(
      jax.random.PRNGKey(0), *[jnp.ones((1, 2), jnp.int32)] * 3, enable_dropout=False))['params']
  rng = np.random.RandomState(0)

  def fill(path, leaf):
    if len(leaf.shape) == 1:
      return jnp.ones(leaf.shape, jnp.float32)
    std = 1.0 if path[-1].key in ('embedding', 'prompt') else leaf.shape[0] ** -0.5
    return jnp.asarray(rng.normal(0.0, std, leaf.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope='module')
def case():
  """Params, the two tasks' examples and their reference predictions; registers the tasks."""
  params = random_params()
  labelled = smoke.generate('validation')[:NUM_EXAMPLES]
  generated = smoke.generate('test')[:NUM_EXAMPLES]
  ref_labelled = Reference(params, [ex['inputs'] for ex in labelled])
  ref_generated = Reference(params, [ex['inputs'] for ex in generated])
  # Targets the model gets right only when the evaluator decodes as the references do:
  # every third is the greedy output, the next the beam output, the next neither.
  for i, ex in enumerate(generated):
    ex['targets'] = [text(ref_generated.greedy(i)), text(ref_generated.beam(i)), 'xx'][i % 3]
  _register(LABELS_TASK, labelled, [smoke.accuracy, f1_of_plus, mean_log_likelihood], LABELS)
  _register(GENERATED_TASK, generated, [smoke.accuracy])
  if MIXTURE in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(MIXTURE)
  seqio.MixtureRegistry.add(MIXTURE, [LABELS_TASK, GENERATED_TASK], default_rate=1.0)
  return dict(params=params, labelled=labelled, generated=generated, ref_labelled=ref_labelled,
              ref_generated=ref_generated)


def evaluator(decoder='greedy', beam_size=1, methods=('decode', 'rank_classification'),
              length_buckets=None, packing=None, batch_size=4):
  settings = EvalSettings(split='validation', methods=methods, decoder=decoder,
                          beam_size=beam_size, batch_size=batch_size, num_examples=None,
                          best_metric='accuracy', alpha=ALPHA)
  return evaluation.Evaluator(MODEL, MIXTURE, LENGTHS, settings, length_buckets=length_buckets,
                              packing=packing)


def test_greedy_rank_and_score_metrics_equal_the_references(case):
  labelled, generated = case['labelled'], case['generated']
  ref_l, ref_g = case['ref_labelled'], case['ref_generated']
  targets_l = [ex['targets'] for ex in labelled]
  targets_g = [ex['targets'] for ex in generated]
  greedy_l = [text(ref_l.greedy(i)) for i in range(NUM_EXAMPLES)]
  greedy_g = [text(ref_g.greedy(i)) for i in range(NUM_EXAMPLES)]
  ranked = [ref_l.rank(i) for i in range(NUM_EXAMPLES)]
  target_scores = [ref_l.sequence_log_prob(i, list(VOCAB.encode(t)) + [1])
                   for i, t in enumerate(targets_l)]
  # The references are not degenerate: some right, some wrong, both labels predicted.
  assert 0 < accuracy(targets_g, greedy_g) < 100 and 0 < accuracy(targets_l, ranked) < 100
  assert set(ranked) == set(LABELS)

  metrics = evaluator().evaluate(case['params'], step=7)
  expected = {
      f'{LABELS_TASK}/accuracy': accuracy(targets_l, greedy_l),
      f'{LABELS_TASK}/f1': f1_of_plus(targets_l, greedy_l)['f1'],
      f'{LABELS_TASK}/mean_log_likelihood': float(np.mean(target_scores)),
      f'{LABELS_TASK}/rank_classification/accuracy': accuracy(targets_l, ranked),
      f'{LABELS_TASK}/rank_classification/f1': f1_of_plus(targets_l, ranked)['f1'],
      # The rank evaluator computes every metric of the task, its score metric too.
      f'{LABELS_TASK}/rank_classification/mean_log_likelihood': float(np.mean(target_scores)),
      f'{GENERATED_TASK}/accuracy': accuracy(targets_g, greedy_g),
  }
  assert metrics.keys() == expected.keys()
  for key, value in expected.items():
    assert metrics[key] == pytest.approx(value, abs=1e-4), key  # log-likelihoods: ~1e-6 apart
  # The checkpoint-selection value: the metric averaged over the tasks that report it.
  assert evaluation.selection_value(metrics, 'accuracy') == pytest.approx(
      (expected[f'{LABELS_TASK}/accuracy'] + expected[f'{GENERATED_TASK}/accuracy']) / 2)


def test_length_buckets_give_the_same_metrics(case, monkeypatch):
  """Examples batched by length, cut to buckets: the metrics of the fixed-shape eval."""
  shapes = []
  jit_rank = scoring.jit_rank_classify

  def recording(model, params, tokens, label_ids, **kwargs):
    shapes.append(tokens.shape[1])
    return jit_rank(model, params, tokens, label_ids, **kwargs)

  monkeypatch.setattr(scoring, 'jit_rank_classify', recording)
  fixed = evaluator().evaluate(case['params'], step=7)
  assert set(shapes) == {LENGTHS['inputs']}
  shapes.clear()
  # Sorted inputs are 25..50, 52..55, 55..56 tokens: three shapes.
  bucketed = evaluator(length_buckets={'inputs': (50, 55, 64), 'targets': (2,)}).evaluate(
      case['params'], step=7)
  assert shapes == [50, 55, 64], shapes
  assert bucketed.keys() == fixed.keys()
  for key, value in fixed.items():
    assert bucketed[key] == pytest.approx(value, abs=1e-4), key


def test_packed_rank_classification_gives_the_same_predictions_and_metrics(case, monkeypatch):
  """PACK_LENGTHS: rank classification on packed rows (several examples and prompts a row)
  predicts every example's label as one example a row does, so the metrics are equal."""
  members = []
  jit_packed = scoring.jit_rank_classify_packed

  def recording(model, params, rows, label_ids, **kwargs):
    members.append(kwargs['members'])
    return jit_packed(model, params, rows, label_ids, **kwargs)

  monkeypatch.setattr(scoring, 'jit_rank_classify_packed', recording)
  results = []
  # Two examples a row: here rows that pair examples ranked '+' and '-', so a mix-up shows.
  for packing in (None, data.Packing({'inputs': 2 * (3 + 64), 'targets': 2}, 3)):
    ev = evaluator(methods=('rank_classification',), packing=packing, batch_size=8)
    predictions = {}
    rank_fn = ev.rank_fn

    def recorded(*args, rank_fn=rank_fn, predictions=predictions):
      predict = rank_fn(*args)

      def run(ds):
        out = predict(ds)
        predictions.update((i, tuple(row)) for i, row in out)
        return out
      return run

    ev.rank_fn = recorded
    results.append((ev.evaluate(case['params'], step=7), predictions))
  (one_a_row, expected), (packed, predicted) = results
  assert max(members) == 2  # rows held several examples
  assert len(expected) == NUM_EXAMPLES and predicted == expected
  assert len(set(expected.values())) == 2  # both labels predicted: a mix-up would show
  assert packed == one_a_row


def test_beam_eval_equals_the_exhaustive_best_output(case):
  ref = case['ref_generated']
  targets = [ex['targets'] for ex in case['generated']]
  beam = [text(ref.beam(i)) for i in range(NUM_EXAMPLES)]
  greedy = [text(ref.greedy(i)) for i in range(NUM_EXAMPLES)]
  assert beam != greedy  # else this test could not tell beam search from greedy
  # A beam as wide as the vocabulary keeps every first token: beam search is then exact.
  metrics = evaluator('beam', MODEL.config.vocab_size, methods=('decode',)).evaluate(
      case['params'], step=7)
  assert metrics[f'{GENERATED_TASK}/accuracy'] == pytest.approx(accuracy(targets, beam))
  assert accuracy(targets, beam) != accuracy(targets, greedy)


# The eval results of each step of a 4-step run: the mean over the two tasks is best at
# step 2, neither task's own best is step 2, and the last step is not the best.
SCHEDULE = {1: (90.0, 10.0), 2: (60.0, 60.0), 3: (10.0, 95.0), 4: (50.0, 50.0)}


def test_best_checkpoint_by_the_mixture_mean_and_eval_at_best_or_step(
    case, tmp_path, monkeypatch, capsys, restore_ptj_global_state):
  from prompt_tuning_jax import eval as eval_lib  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import train  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import prompt_io  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import train_state  # pylint: disable=g-import-not-at-top
  del case  # registers the mixture
  evaluated = {}  # step -> the prompt the evaluator was given

  def scheduled_evaluate(self, params, step):
    del self
    evaluated[step] = np.asarray(params['encoder']['prompt']['prompt']['prompt'])
    labels, generated = SCHEDULE[step]
    return {f'{LABELS_TASK}/accuracy': labels, f'{GENERATED_TASK}/accuracy': generated,
            f'{LABELS_TASK}/rank_classification/accuracy': 100.0 - generated}

  monkeypatch.setattr(evaluation.Evaluator, 'evaluate', scheduled_evaluate)
  model_dir = str(tmp_path)
  assert train.main([
      '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}',
      f'--gin.MIXTURE_OR_TASK_NAME={MIXTURE}', '--gin.TRAIN_STEPS=4', '--gin.EVAL_PERIOD=1',
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 2}", '--gin.BATCH_SIZE=4',
      '--gin.PROMPT_LENGTH=2', '--gin.KEEP_CHECKPOINTS=1', "--gin.BEST_METRIC='accuracy'",
      '--gin.models.get_config.emb_dim=16', '--gin.models.get_config.head_dim=4',
      '--gin.models.get_config.mlp_dim=32']) == 0
  prompts = {s: prompt_io.load_prompt(train_state.prompt_file(model_dir, s)) for s in SCHEDULE}
  for step, prompt in prompts.items():
    np.testing.assert_array_equal(evaluated.pop(step), prompt)  # each eval saw its step
    assert not any(np.array_equal(prompt, prompts[s]) for s in SCHEDULE if s != step)
  with open(tmp_path / train_state.BEST_CHECKPOINT_FILE) as f:
    assert json.load(f) == {'step': 2, 'metric': 'accuracy', 'value': 60.0,
                            'prompt_file': train_state.prompt_file(model_dir, 2)}
  checkpointer = train_state.TrainStateCheckpointer(model_dir, read_only=True)
  assert checkpointer.all_steps() == [2, 4]  # the latest, and the best kept beyond KEEP=1
  checkpointer.close()

  for step_flag, step in [('best', 2), ('4', 4), (None, 4)]:
    flags = [f'--gin.MODEL_DIR={model_dir}'] + (
        [f'--gin.CHECKPOINT_STEP={step_flag}'] if step_flag else [])
    assert eval_lib.main(flags) == 0
    np.testing.assert_array_equal(evaluated.pop(step), prompts[step])
    assert f'eval step {step} |' in open(tmp_path / 'eval' / 'summary.txt').read().splitlines()[-1]
  assert eval_lib.main([f'--gin.MODEL_DIR={model_dir}', '--gin.CHECKPOINT_STEP=3']) == 1
  assert 'No checkpoint of step 3' in capsys.readouterr().err and not evaluated


@pytest.mark.parametrize('best, value', [('rank_classification/accuracy', 60.0), ('f1', None)])
def test_a_best_metric_no_task_reports_is_said_not_ignored(tmp_path, caplog, best, value):
  class Reported:  # what the evaluation of a rank-classification-only run reports
    settings = EvalSettings(split='validation', methods=('rank_classification',),
                            decoder='greedy', beam_size=1, batch_size=4, num_examples=None,
                            best_metric=best, alpha=ALPHA)

    def evaluate(self, params, step):
      del params, step
      return {'a/rank_classification/accuracy': 50.0, 'b/rank_classification/accuracy': 70.0}

  caplog.set_level('INFO', logger='prompt_tuning_jax')
  metrics, selected = evaluation.evaluate_and_record(
      Reported(), None, 5, logging_utils.MetricsWriter(str(tmp_path)), logging_utils.Progress(5, 9))
  assert len(metrics) == 2 and selected == value
  said = [r.getMessage() for r in caplog.records if 'BEST_METRIC' in r.getMessage()]
  assert said == ([] if value else [
      "BEST_METRIC='f1' is not among the eval metrics ['rank_classification/accuracy']: no best "
      'checkpoint is kept. Set BEST_METRIC to one of them, or to None.'])


def test_sampled_predictions_are_the_examples_own_in_eval_and_infer(case):
  """Each example draws with its own key: eval's predictions do not depend on the batch
  size, and `inference.predict` (infer) draws the same for the same positions."""
  from prompt_tuning_jax import inference  # pylint: disable=g-import-not-at-top
  texts = [ex['inputs'] for ex in case['generated']]
  tokens = encoder_tokens(texts)
  ds = tf.data.Dataset.from_tensor_slices((np.arange(len(texts)), {
      'encoder_input_tokens': tokens,
      'decoder_target_tokens': np.zeros((len(texts), LENGTHS['targets']), np.int32)}))

  def eval_predictions(batch_size, seed):
    settings = EvalSettings(split='validation', methods=('decode',), decoder='sample',
                            beam_size=1, batch_size=batch_size, num_examples=None,
                            best_metric=None, temperature=2.0, sample_seed=seed)
    evaluator = evaluation.Evaluator(MODEL, GENERATED_TASK, LENGTHS, settings)
    predicted = evaluator.predict_fn(case['params'], GENERATED_TASK)(ds)
    return [text([int(t) for t in row if t]) for _, row in sorted(predicted, key=lambda p: p[0])]

  sampled = eval_predictions(4, seed=3)
  assert eval_predictions(3, seed=3) == sampled
  assert eval_predictions(4, seed=4) != sampled
  greedy = [text(case['ref_generated'].greedy(i)) for i in range(NUM_EXAMPLES)]
  assert sampled != greedy
  examples = [inference.Example(t, [int(x) for x in row if x], {}) for t, row in zip(texts, tokens)]
  records = inference.predict(MODEL, case['params'], examples, VOCAB,
                              input_length=LENGTHS['inputs'], max_decode_length=LENGTHS['targets'],
                              batch_size=5, decoder='sample', temperature=2.0, sample_seed=3)
  assert [_postprocess(r['prediction']) for r in records] == sampled
