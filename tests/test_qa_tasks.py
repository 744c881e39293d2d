"""MRQA 2019 (Table 1) on small synthetic files in the official MRQA layout, and SQuAD EM/F1.

The files are written here: `train/SQuAD.jsonl.gz`, `dev/<Dataset>.jsonl.gz`, each a header
object on line 1 and then one context per line with its `qas` (`answers`,
`detected_answers`, tokens), as the MRQA shared task ships them; their text is made up. A
byte vocabulary stands in for SentencePiece, so nothing here needs ../shared.
"""
from __future__ import annotations

import gzip
import json

import pytest
import seqio
import tensorflow as tf

from prompt_tuning_jax import data
from prompt_tuning_jax.tasks import formats
from prompt_tuning_jax.tasks import metrics
from prompt_tuning_jax.tasks import qa
from prompt_tuning_jax.tasks import sources
from prompt_tuning_jax.tasks import vocab


def _qa(qid, question, answers):
  return {'qid': qid, 'question': question, 'answers': answers,
          'question_tokens': [[w, 0] for w in question.split()],
          'detected_answers': [{'text': answers[0], 'char_spans': [[0, len(answers[0]) - 1]],
                                'token_spans': [[0, 0]]}]}


def _context(context, *qas):
  return {'id': 'c', 'context': context, 'context_tokens': [[w, 0] for w in context.split()],
          'qas': list(qas)}


def _lines(dataset, split, *contexts):
  header = {'header': {'dataset': dataset, 'split': split}}
  return [json.dumps(header)] + [json.dumps(c) for c in contexts]


LONG_CONTEXT = 'The Nile flows north. ' * 20

FILES = {
    'train/SQuAD.jsonl.gz': _lines(
        'SQuAD', 'train',
        _context('Hamlet is a play by William Shakespeare, written around 1600.',
                 _qa('s1', 'Who wrote "Hamlet"?', ['William Shakespeare']),
                 _qa('s2', 'When was it written?', ['around 1600', '1600']))),
    'dev/SQuAD.jsonl.gz': _lines(
        'SQuAD', 'dev',
        _context('Paris is the capital of France.',
                 _qa('s3', "What's the capital of France?", ['Paris', 'Paris, France']))),
    'dev/TextbookQA.jsonl.gz': _lines(
        'TextbookQA', 'dev',
        _context('Plants make food by photosynthesis.',
                 _qa('t1', 'How do plants make food?', ['photosynthesis'])),
        _context(LONG_CONTEXT, _qa('t2', 'Which way does the Nile flow?', ['north']))),
    'dev/BioASQ.jsonl.gz': _lines(
        'BioASQ', 'dev', _context('Insulin lowers blood sugar.',
                                  _qa('b1', 'What lowers blood sugar?', ['Insulin']))),
    'dev/RACE.jsonl.gz': _lines(
        'RACE', 'dev', _context('Tom walked to school.', _qa('r1', 'Who walked?', ['Tom']))),
    'dev/RelationExtraction.jsonl.gz': _lines(
        'RelationExtraction', 'dev',
        _context('Ottawa is the capital of Canada.',
                 _qa('e1', 'capital of Canada', ['Ottawa']))),
    # Unzipped: read as well.
    'dev/DuoRC.ParaphraseRC.jsonl': _lines(
        'DuoRC.ParaphraseRC', 'dev',
        _context('The detective finds the thief.', _qa('d1', 'Who finds the thief?',
                                                       ['The detective', 'detective']))),
    'dev/DROP.jsonl.gz': _lines(
        'DROP', 'dev', _context('They scored 3 goals and then 4 more.',
                                _qa('p1', 'How many goals in all?', ['7']))),
}


def _write(root, files):
  for name, lines in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = '\n'.join(lines) + '\n'
    if name.endswith('.gz'):
      with gzip.open(path, 'wt', encoding='utf-8') as f:
        f.write(text)
    else:
      path.write_text(text, encoding='utf-8')
  return root


@pytest.fixture(autouse=True)
def mrqa_dir(tmp_path, monkeypatch):
  root = _write(tmp_path, FILES)
  byte_vocabulary = seqio.ByteVocabulary()
  monkeypatch.setenv('PTJ_MRQA_DIR', str(root))
  monkeypatch.setattr(vocab, 'get_vocabulary', lambda *a, **k: byte_vocabulary)
  return root


def _examples(name, split):
  task = seqio.get_mixture_or_task(name)
  return list(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())


def _text(ex, feature):
  return ex[f'{feature}_pretokenized'].decode('utf-8')


def test_one_example_per_question_in_t5s_squad_format():
  examples = _examples('mrqa_squad_v001', 'train')
  assert [(_text(ex, 'inputs'), _text(ex, 'targets')) for ex in examples] == [
      ('question: Who wrote " Hamlet " ? context: Hamlet is a play by William Shakespeare , '
       'written around 1600 .', 'William Shakespeare'),
      ('question: When was it written ? context: Hamlet is a play by William Shakespeare , '
       'written around 1600 .', 'around 1600')]
  # Every gold answer is kept for the metrics; the target is the first.
  assert [a.decode() for a in examples[1]['answers']] == ['around 1600', '1600']
  (dev,) = _examples('mrqa_squad_v001', 'validation')
  assert _text(dev, 'inputs') == ("question: What ' s the capital of France ? context: Paris "
                                  'is the capital of France .')


@pytest.mark.parametrize('dataset', qa.OUT_OF_DOMAIN, ids=lambda d: d.key)
def test_out_of_domain_sets_read_their_dev_files(dataset):
  source = qa.mrqa_source(dataset)
  assert source.splits == ('validation',)
  rows = FILES.get(f'dev/{dataset.file_name}.jsonl.gz') or FILES[
      f'dev/{dataset.file_name}.jsonl']
  questions = [q['question'] for line in rows[1:] for q in json.loads(line)['qas']]
  got = [ex['question'] for ex in source.local.read_split('validation')]
  assert got == questions


def test_mixtures():
  ood = seqio.get_mixture_or_task(qa.OUT_OF_DOMAIN_MIXTURE)
  assert {t.name for t in ood.tasks} == {d.task_name for d in qa.OUT_OF_DOMAIN}
  both = seqio.get_mixture_or_task(qa.SQUAD_TO_MRQA_MIXTURE)
  rates = {t.name: both.get_rate(t) for t in both.tasks}
  assert rates == {qa.SQUAD: 1.0, **{d.task_name: 0.0 for d in qa.OUT_OF_DOMAIN}}
  assert qa.OUT_OF_DOMAIN[0].domain == 'Book' and qa.IN_DOMAIN.domain == 'Wiki'


def test_a_long_context_is_cut_and_counted():
  lengths = {'inputs': 96, 'targets': 16}
  counts = data.split_counts('mrqa_textbookqa_v001', 'validation', lengths)
  assert counts == {'examples': 2, 'truncated_inputs': 1, 'truncated_targets': 0}
  ds = data.examples_with_flags('mrqa_textbookqa_v001', 'validation', lengths)
  long = list(ds.as_numpy_iterator())[1]
  assert len(long['inputs']) == 96 and long['inputs'][-1] == 1  # cut, EOS kept
  assert seqio.ByteVocabulary().decode(long['inputs'][:-1].tolist()).startswith(
      'question: Which way does the Nile flow ? context: The Nile flows north .')


def test_the_task_scores_predictions_with_squad_em_and_f1():
  """Targets are all gold answers, punctuation padded as the model's targets."""
  task = seqio.get_mixture_or_task('mrqa_duorc_v001')
  (ex,) = _examples('mrqa_duorc_v001', 'validation')
  target = task.postprocess_fn(_text(ex, 'targets'), example=ex, is_target=True)
  assert target == ['The detective', 'detective']
  prediction = task.postprocess_fn(b'a detective', example=ex, is_target=False)
  (metric,) = task.predict_metric_fns
  # 'a detective' -> 'detective', equal to the second gold: EM 1, F1 1.
  assert metric([target], [prediction]) == {'em': 100.0, 'f1': 100.0}
  assert metric([target], ['the thief']) == {'em': 0.0, 'f1': 0.0}


def test_pad_punctuation_is_t5s():
  """T5 pads [[:punct:]] (ASCII punctuation) with spaces and collapses whitespace."""
  text = 'Who\'s "there"?  A-1,\tB_2 (c) é.'
  t5 = tf.strings.regex_replace(tf.strings.regex_replace(text, r'([[:punct:]])', r' \1 '),
                                r'\s+', ' ').numpy().decode().strip()
  assert formats.pad_punctuation(text) == t5
  assert t5 == 'Who \' s " there " ? A - 1 , B _ 2 ( c ) é .'


# ------------------------------------------------------------ SQuAD EM / F1

# prediction, gold answers, (EM, F1) worked out by hand.
SQUAD_CASES = [
    # Articles go: 'eiffel tower' both.
    ('the Eiffel Tower', ['Eiffel Tower', 'a tower'], (1, 1)),
    # Punctuation goes: 'paris france' vs 'paris': 1 token in common, P 1/2, R 1 -> F1 2/3.
    ('Paris, France.', ['Paris'], (0, 2 / 3)),
    # Whitespace and case: '  an  Apple   pie ' -> 'apple pie'.
    ('  an  Apple   pie ', ['apple pie'], (1, 1)),
    # The best gold: 'red' gives F1 2*(1/3*1)/(1/3+1) = 1/2, 'blue green yellow' gives
    # 2 common of 3 and 3: F1 2/3.
    ('red blue green', ['red', 'blue green yellow'], (0, 2 / 3)),
    # Apostrophes are punctuation: "O'Neil" -> 'oneil'.
    ("O'Neil", ['ONeil'], (1, 1)),
    ('cat', ['dog', 'mouse'], (0, 0)),
    # Repeated tokens count with multiplicity: 'to to be' vs 'to be': common {to:1, be:1},
    # P 2/3, R 1 -> F1 4/5.
    ('to to be', ['to be'], (0, 0.8)),
]


@pytest.mark.parametrize('prediction, golds, expected', SQUAD_CASES)
def test_squad_em_f1_by_hand(prediction, golds, expected):
  em, f1 = expected
  assert metrics.squad([golds], [prediction]) == pytest.approx({'em': 100 * em,
                                                                'f1': 100 * f1})


def test_squad_averages_over_the_examples():
  golds = [g for _, g, _ in SQUAD_CASES]
  predictions = [p for p, _, _ in SQUAD_CASES]
  em = sum(e for _, _, (e, _) in SQUAD_CASES) / len(SQUAD_CASES)
  f1 = sum(f for _, _, (_, f) in SQUAD_CASES) / len(SQUAD_CASES)
  assert metrics.squad(golds, predictions) == pytest.approx({'em': 100 * em, 'f1': 100 * f1})
  assert em == pytest.approx(3 / 7) and f1 == pytest.approx((3 + 2 / 3 + 2 / 3 + 0.8) / 7)


# ----------------------------------------------------------- malformed files


def _dev(*lines):
  return {'dev/BioASQ.jsonl.gz': list(lines)}


_HEADER = json.dumps({'header': {'dataset': 'BioASQ', 'split': 'dev'}})
_GOOD = json.dumps(_context('A b.', _qa('q1', 'A?', ['b'])))


@pytest.mark.parametrize('lines, message', [
    ([_GOOD, _GOOD], ':1: expected the MRQA header line'),
    ([_HEADER, _GOOD, '{"context": "x", "qas": ['], ':3: invalid JSON'),
    ([_HEADER, json.dumps({'context': 'x'})], ":2: missing field 'qas'"),
    ([_HEADER, json.dumps(_context('x', _qa('q9', 'A?', ['b']) | {'answers': []}))],
     ":2: question 'q9' has no answers"),
    ([_HEADER, _GOOD, json.dumps(_context('x', {'qid': 'q2', 'answers': ['b']}))],
     ":3: missing field 'question'"),
])
def test_malformed_line_names_file_and_line(mrqa_dir, lines, message):
  _write(mrqa_dir, _dev(*lines))
  source = qa.mrqa_source(qa.OUT_OF_DOMAIN[1])
  with pytest.raises(sources.TaskDataError, match='BioASQ.jsonl.gz' + message):
    source.local.read_split('validation')


def test_damaged_gzip_and_missing_file_are_named(mrqa_dir):
  path = mrqa_dir / 'dev' / 'BioASQ.jsonl.gz'
  path.write_bytes(path.read_bytes()[:-12])  # cut short: its end and checksum gone
  source = qa.mrqa_source(qa.OUT_OF_DOMAIN[1])
  with pytest.raises(sources.TaskDataError, match=r'BioASQ.jsonl.gz:\d+: not a readable gzip'):
    source.local.read_split('validation')
  path.unlink()
  with pytest.raises(sources.TaskDataError,
                     match=r'missing split file: expected .*dev/BioASQ.jsonl.gz'):
    source.local.read_split('validation')


# ---------------------------------------------------------------------- TFDS


class _FakeTfds:
  """Stands in for seqio.TfdsDataSource: records the split asked for, gives TFDS's fields."""
  asked = []

  def __init__(self, tfds_name, splits):
    self.tfds_name, self.splits = tfds_name, splits

  def get_dataset(self, split, shuffle, seed, shard_info):
    _FakeTfds.asked.append((self.tfds_name, self.splits[split]))
    return tf.data.Dataset.from_tensor_slices({
        'context': ['C .'], 'question': ['Q ?'], 'qid': ['x'], 'subset': ['BioASQ'],
        'answers': tf.ragged.constant([['A']])}).map(
            lambda ex: {**ex, 'answers': ex['answers']})


def test_without_a_directory_tfds_is_read_with_its_test_split(monkeypatch):
  monkeypatch.delenv('PTJ_MRQA_DIR')
  monkeypatch.setattr(seqio, 'TfdsDataSource', _FakeTfds)
  # The offline check of a real TFDS builder is tested in test_glue_tasks.py.
  monkeypatch.setattr(sources.BenchmarkSource, 'check_available', lambda self: None)
  _FakeTfds.asked.clear()
  source = qa.mrqa_source(qa.OUT_OF_DOMAIN[1])
  (ex,) = source.get_dataset('validation', shuffle=False).as_numpy_iterator()
  assert _FakeTfds.asked == [('mrqa/bio_asq:1.0.0', 'test')]
  assert set(ex) == {'context', 'question', 'qid', 'answers'}
  squad = qa.mrqa_source(qa.IN_DOMAIN)
  squad.get_dataset('validation', shuffle=False)
  assert _FakeTfds.asked[-1] == ('mrqa/squad:1.0.0', 'validation')


def test_the_synthetic_squad_reads_as_the_task_and_its_spans_are_the_answers(tmp_path,
                                                                              monkeypatch):
  from benchmarks import synthetic_mrqa  # pylint: disable=import-outside-toplevel
  synthetic_mrqa.write(str(tmp_path), train=3, dev=2, seed=0)
  monkeypatch.setenv('PTJ_MRQA_DIR', str(tmp_path))
  rows = [row for _, row in qa.read_mrqa(tmp_path / 'dev' / 'SQuAD.jsonl.gz')]
  for row in rows:
    for q in row['qas']:
      (start, end), = q['detected_answers'][0]['char_spans']
      assert row['context'][start:end + 1] == q['answers'][0]
      # The question names a person whose fact holds the answer: the span follows the name.
      name = next(n for n in synthetic_mrqa.NAMES if n in q['question'].rstrip('?').split())
      assert row['context'].index(name) < start
  examples = _examples('mrqa_squad_v001', 'validation')
  assert len(examples) == 2 * synthetic_mrqa.QUESTIONS_PER_CONTEXT
  assert [_text(ex, 'targets') for ex in examples] == [
      q['answers'][0] for row in rows for q in row['qas']]
  assert len(_examples('mrqa_squad_v001', 'train')) == 3 * synthetic_mrqa.QUESTIONS_PER_CONTEXT
