"""Summarization tasks (XSum, CNN/DailyMail) on small local jsonl files written here, and
ROUGE checked on rouge-score's own reference examples (its rouge_scorer_test.py)."""
from __future__ import annotations

import json

import pytest
import seqio
import tensorflow as tf

from prompt_tuning_jax.tasks import metrics
from prompt_tuning_jax.tasks import sources
from prompt_tuning_jax.tasks import summarization
from prompt_tuning_jax.tasks import vocab

XSUM_VALIDATION = [
    {'document': 'The council met on Monday.\nIt agreed   a new budget.', 'summary':
     'A council agreed a budget.'},
    {'document': 'Rain fell all week.', 'summary': 'It rained.'},
]


def _jsonl(rows):
  return ''.join(json.dumps(row) + '\n' for row in rows)


@pytest.fixture(autouse=True)
def summarization_dir(tmp_path, monkeypatch):
  for task_dir in ('xsum', 'cnn_dailymail'):
    for split in ('train', 'validation', 'test'):
      path = tmp_path / task_dir / f'{split}.jsonl'
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(_jsonl(XSUM_VALIDATION), encoding='utf-8')
  byte_vocabulary = seqio.ByteVocabulary()
  monkeypatch.setenv('PTJ_SUMMARIZATION_DIR', str(tmp_path))
  monkeypatch.setattr(vocab, 'get_vocabulary', lambda *a, **k: byte_vocabulary)
  return tmp_path


def _examples(name, split='validation'):
  task = seqio.get_mixture_or_task(name)
  return list(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())


def _text(ex, feature):
  return ex[f'{feature}_pretokenized'].decode('utf-8')


def test_t5s_summarize_format():
  assert [(_text(ex, 'inputs'), _text(ex, 'targets')) for ex in _examples('xsum_v110')] == [
      ('summarize: The council met on Monday. It agreed a new budget.',
       'A council agreed a budget.'),
      ('summarize: Rain fell all week.', 'It rained.')]
  assert _text(_examples('taskless_cnn_dailymail_v340')[1], 'inputs') == 'Rain fell all week.'


def test_the_task_scores_decoded_summaries_with_rouge():
  task = seqio.get_mixture_or_task('xsum_v110')
  examples = _examples('xsum_v110')
  targets = [task.postprocess_fn(_text(ex, 'targets'), example=ex, is_target=True)
             for ex in examples]
  predictions = [task.postprocess_fn(p, example=ex) for p, ex in
                 zip([b'A council agreed a budget.', b'Snow fell.'], examples)]
  (metric,) = task.predict_metric_fns
  results = metric(targets, predictions)
  # Example 1 equals its reference (1.0 each); example 2 shares nothing (0.0).
  assert results == pytest.approx({'rouge1': 50.0, 'rouge2': 50.0, 'rougeLsum': 50.0})


@pytest.mark.parametrize('lines, message', [
    (['{"document": "a", "summary": "b"}', '{"document": "a"}'], ":2: missing field 'summary'"),
    (['{"document": "a", "summary": ["b"]}'], ":1: field 'summary' is not text"),
    (['{"document": "a", "summary": "b"}', '', '{"document": '], ':3: invalid JSON'),
])
def test_malformed_line_names_file_and_line(summarization_dir, lines, message):
  (summarization_dir / 'xsum' / 'validation.jsonl').write_text('\n'.join(lines) + '\n')
  source = seqio.get_mixture_or_task('xsum_v110').source
  with pytest.raises(sources.TaskDataError, match='xsum/validation.jsonl' + message):
    source.local.read_split('validation')


def test_tfds_cnn_dailymail_fields_become_document_and_summary(monkeypatch):
  class FakeTfds:
    def __init__(self, tfds_name, splits):
      self.tfds_name = tfds_name

    def get_dataset(self, split, shuffle, seed, shard_info):
      assert (self.tfds_name, split) == ('cnn_dailymail:3.4.0', 'test')
      return tf.data.Dataset.from_tensor_slices(
          {'article': ['An article.'], 'highlights': ['A highlight.'], 'id': ['x']})

  monkeypatch.delenv('PTJ_SUMMARIZATION_DIR')
  monkeypatch.setattr(seqio, 'TfdsDataSource', FakeTfds)
  # The offline check of a real TFDS builder is tested in test_glue_tasks.py.
  monkeypatch.setattr(sources.BenchmarkSource, 'check_available', lambda self: None)
  source = summarization.summarization_source(
      'cnn_dailymail', 'cnn_dailymail:3.4.0', {'document': 'article', 'summary': 'highlights'})
  (ex,) = source.get_dataset('test', shuffle=False).as_numpy_iterator()
  assert ex == {'document': b'An article.', 'summary': b'A highlight.'}


# ---------------------------------------------------------------------- ROUGE
# rouge-score's own test cases (rouge_scorer_test.py: testRouge1, testRouge2,
# testRougeLConsecutive, testRougeEmpty, testRougeLSumSentenceSplitting), through our metric:
# target, prediction -> F-measures (x100).


@pytest.mark.parametrize('target, prediction, expected', [
    # rouge1: P 1, R 1/3 -> F 1/2; no bigram in the prediction.
    ('testing one two', 'testing', {'rouge1': 50.0, 'rouge2': 0.0, 'rougeLsum': 50.0}),
    # rouge2: P 1, R 1/2 -> F 2/3; rouge1 and the LCS: P 1, R 2/3 -> F 4/5.
    ('testing one two', 'testing one', {'rouge1': 80.0, 'rouge2': 200 / 3, 'rougeLsum': 80.0}),
    ('testing one two', '', {'rouge1': 0.0, 'rouge2': 0.0, 'rougeLsum': 0.0}),
])
def test_rouge_on_rouge_scores_reference_examples(target, prediction, expected):
  assert metrics.rouge([target], [prediction]) == pytest.approx(expected)


def test_rouge_lsum_splits_sentences_as_t5():
  """rouge-score's sentence-splitting case: two sentences in the other order score 1.0 when
  each is a line, 0.5 as one line. T5 (and `metrics.rouge`) make ' . ' a line break."""
  target, prediction = 'First sentence . Second sentence .', 'Second sentence . First sentence .'
  assert metrics.rouge([target], [prediction])['rougeLsum'] == pytest.approx(100.0)
  assert metrics.rouge([target.replace(' .', '.')], [prediction.replace(' .', '.')])[
      'rougeLsum'] == pytest.approx(50.0)
  # No stemming, as T5: 'tested' is not 'testing'.
  assert metrics.rouge(['testing'], ['tested'])['rouge1'] == 0.0
  assert metrics.rouge(['testing'], ['tested'], use_stemmer=True)['rouge1'] == 100.0


def test_rouge_is_the_mean_over_examples():
  assert metrics.rouge(['testing one two', 'testing one two'], ['testing', 'testing one two']
                       ) == pytest.approx({'rouge1': 75.0, 'rouge2': 50.0, 'rougeLsum': 75.0})
