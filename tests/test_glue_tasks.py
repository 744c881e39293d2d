"""Every GLUE task on small synthetic files in the official GLUE layouts.

The files are written by the tests into a temporary directory, in the layout
of GLUE's download script (headers, column order, CoLA's headerless train/dev
files, MRPC's `#1 String`/`#2 String`, QQP's truncated rows, MNLI's matched
and mismatched files, AX's `diagnostic/diagnostic.tsv`); their sentences are
made up. Each task is built through seqio (a byte vocabulary stands in for
SentencePiece, so nothing here needs ../shared) and checked for: split sizes,
`idx` and `label` as TFDS gives them, the formatted inputs/targets (golden
strings), and the task's own metrics on chosen predictions against
hand-computed values and scikit-learn / scipy.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf

from prompt_tuning_jax.tasks import formats
from prompt_tuning_jax.tasks import glue
from prompt_tuning_jax.tasks import registry
from prompt_tuning_jax.tasks import sources
from prompt_tuning_jax.tasks import vocab

sklearn_metrics = pytest.importorskip('sklearn.metrics')
scipy_stats = pytest.importorskip('scipy.stats')


def _tsv(*rows) -> str:
  return ''.join('\t'.join(str(value) for value in row) + '\n' for row in rows)


def _parse(sentence1: str, sentence2: str) -> tuple[str, ...]:
  """MNLI's four parse columns (content irrelevant to the task)."""
  return ('( A )', '( B )', f'(ROOT {sentence1})', f'(ROOT {sentence2})')


_COLA_TEST_HEADER = ('index', 'sentence')
_MRPC_HEADER = ('Quality', '#1 ID', '#2 ID', '#1 String', '#2 String')
_MRPC_TEST_HEADER = ('index', '#1 ID', '#2 ID', '#1 String', '#2 String')
_QQP_HEADER = ('id', 'qid1', 'qid2', 'question1', 'question2', 'is_duplicate')
_STSB_META = ('genre', 'filename', 'year', 'old_index', 'source1', 'source2')
_STSB_HEADER = ('index', *_STSB_META, 'sentence1', 'sentence2', 'score')
_MNLI_COLUMNS = ('index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse',
                 'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse',
                 'sentence1', 'sentence2')
_MNLI_TRAIN_HEADER = (*_MNLI_COLUMNS, 'label1', 'gold_label')
_MNLI_DEV_HEADER = (*_MNLI_COLUMNS, 'label1', 'label2', 'label3', 'label4',
                    'label5', 'gold_label')


def _stsb(i, s1, s2, *score):
  return (i, 'main-captions', 'MSRvid', '2012test', f'{i:04d}', 'none', 'none',
          s1, s2, *score)


def _mnli(i, genre, premise, hypothesis, *labels):
  return (i, 1000 + i, f'{1000 + i}e', genre, *_parse(premise, hypothesis),
          premise, hypothesis, *labels)


# Official file layouts, synthetic content. Each task's dev file has the rows
# scored by the metric tests below.
FILES = {
    # CoLA train/dev: no header; columns source, label, original mark, sentence.
    'CoLA/train.tsv': _tsv(
        ('src1', 1, '', 'The cat slept on the warm mat.'),
        ('src1', 0, '*', 'The cat slept the mat on.'),
        ('src2', 1, '', 'She said "yes" twice.'),  # No quoting: '"' is text.
    ),
    'CoLA/dev.tsv': _tsv(*[
        ('src3', label, '' if label else '*', f'Dev sentence {i}.')
        for i, label in enumerate([1, 1, 0, 0, 1, 0])]),
    'CoLA/test.tsv': _tsv(_COLA_TEST_HEADER, (0, 'What did you see?'),
                          (1, 'Saw you what?')),
    'SST-2/train.tsv': _tsv(('sentence', 'label'),
                            ('a warm and funny story ', 1),
                            ('dull and far too long ', 0)),
    'SST-2/dev.tsv': _tsv(('sentence', 'label'),
                          *[(f'review {i} ', label)
                            for i, label in enumerate([1, 0, 0, 1])]),
    'SST-2/test.tsv': _tsv(('index', 'sentence'), (0, 'a film of some kind ')),
    'MRPC/train.tsv': _tsv(
        _MRPC_HEADER,
        (1, 101, 102, 'The firm sold the unit in May.',
         'In May the firm sold the unit.'),
        (0, 103, 104, 'Rain fell all day.', 'The sun shone brightly.')),
    'MRPC/dev.tsv': _tsv(_MRPC_HEADER, *[
        (label, 200 + 2 * i, 201 + 2 * i, f'First {i}.', f'Second {i}.')
        for i, label in enumerate([1, 1, 0, 1, 0, 0])]),
    'MRPC/test.tsv': _tsv(_MRPC_TEST_HEADER,
                          (0, 301, 302, 'Prices rose.', 'Prices went up.')),
    # QQP: a question broken over two lines gives two short rows, and a row
    # without its label is short too; TFDS drops them (counting them in idx).
    'QQP/train.tsv': (
        _tsv(_QQP_HEADER,
             (0, 1, 2, 'How do I boil an egg?', 'What is the way to boil an egg?', 1))
        + '1\t3\t4\tWhy is the sea salty?\tWhy is the sea\n'
        + 'salty and not sweet?\t0\n'
        + _tsv((2, 5, 6, 'Is tea good for you?', 'Is coffee good for you?', 0),
               (3, 7, 8, 'Where is Paris?', 'Where is Lyon?'),
               (4, 9, 10, 'How tall is a giraffe?', 'How high is a giraffe?', 1))),
    'QQP/dev.tsv': _tsv(_QQP_HEADER, *[
        (i, 20 + 2 * i, 21 + 2 * i, f'Question {i}a?', f'Question {i}b?', label)
        for i, label in enumerate([1, 0, 0, 1, 1])]),
    'QQP/test.tsv': _tsv(('id', 'question1', 'question2'),
                         (0, 'Can fish sleep?', 'Do fish sleep?')),
    'STS-B/train.tsv': _tsv(
        _STSB_HEADER,
        _stsb(0, 'A man plays a guitar.', 'A man is playing a guitar.', '5.000'),
        _stsb(1, 'A dog runs.', 'A cat sleeps.', '0.250'),
        _stsb(2, 'A woman cuts an onion.', 'A woman slices an onion.', '3.750'),
        _stsb(3, 'Two kids play.', 'Children are playing.', '2.500'),
        _stsb(4, 'A bird flies.', 'A plane flies.', '0.700')),
    'STS-B/dev.tsv': _tsv(_STSB_HEADER, *[
        _stsb(i, f'Left {i}.', f'Right {i}.', score)
        for i, score in enumerate(['4.800', '0.000', '2.200', '3.000', '1.400'])]),
    'STS-B/test.tsv': _tsv(_STSB_HEADER[:-1],
                           _stsb(0, 'A boy sings.', 'A boy is singing.')),
    'MNLI/train.tsv': _tsv(
        _MNLI_TRAIN_HEADER,
        _mnli(0, 'government', 'The plan was approved in June.',
              'The plan was rejected.', 'contradiction', 'contradiction'),
        _mnli(1, 'fiction', 'He ran to the station.', 'He moved.',
              'entailment', 'entailment')),
    # label1 differs from gold_label in row 1: the gold label is the label.
    'MNLI/dev_matched.tsv': _tsv(_MNLI_DEV_HEADER, *[
        _mnli(i, 'travel', f'Matched premise {i}.', f'Matched hypothesis {i}.',
              first, first, gold, gold, gold, gold)
        for i, (first, gold) in enumerate([
            ('entailment', 'entailment'), ('contradiction', 'neutral'),
            ('contradiction', 'contradiction'), ('neutral', 'neutral')])]),
    'MNLI/dev_mismatched.tsv': _tsv(_MNLI_DEV_HEADER, *[
        _mnli(i, 'letters', f'Mismatched premise {i}.',
              f'Mismatched hypothesis {i}.', gold, gold, gold, gold, gold, gold)
        for i, gold in enumerate(['neutral', 'entailment', 'contradiction'])]),
    'MNLI/test_matched.tsv': _tsv(
        _MNLI_COLUMNS, _mnli(0, 'travel', 'Test premise m.', 'Test hypothesis m.')),
    'MNLI/test_mismatched.tsv': _tsv(
        _MNLI_COLUMNS,
        _mnli(0, 'letters', 'Test premise mm.', 'Test hypothesis mm.'),
        _mnli(1, 'letters', 'Test premise mm2.', 'Test hypothesis mm2.')),
    'QNLI/train.tsv': _tsv(('index', 'question', 'sentence', 'label'),
                           (0, 'Where do owls live?', 'Owls live in trees.',
                            'entailment')),
    'QNLI/dev.tsv': _tsv(('index', 'question', 'sentence', 'label'), *[
        (i, f'Question {i}?', f'Sentence {i}.', label) for i, label in enumerate(
            ['entailment', 'not_entailment', 'not_entailment', 'entailment'])]),
    'QNLI/test.tsv': _tsv(('index', 'question', 'sentence'),
                          (0, 'Who wrote it?', 'It was written in 1900.')),
    'RTE/train.tsv': _tsv(('index', 'sentence1', 'sentence2', 'label'),
                          (0, 'Ann bought a red car.', 'Ann owns a car.',
                           'entailment')),
    'RTE/dev.tsv': _tsv(('index', 'sentence1', 'sentence2', 'label'), *[
        (i, f'Text {i}.', f'Hypothesis {i}.', label) for i, label in enumerate(
            ['not_entailment', 'entailment', 'not_entailment', 'not_entailment',
             'entailment'])]),
    'RTE/test.tsv': _tsv(('index', 'sentence1', 'sentence2'),
                         (0, 'Bob swims daily.', 'Bob can swim.')),
    # WNLI labels are 0/1 with 1 = entailment.
    'WNLI/train.tsv': _tsv(('index', 'sentence1', 'sentence2', 'label'),
                           (0, 'The cup fell because it was full.',
                            'The cup was full.', 1)),
    'WNLI/dev.tsv': _tsv(('index', 'sentence1', 'sentence2', 'label'), *[
        (i, f'Winograd {i}.', f'Replaced {i}.', label)
        for i, label in enumerate([0, 1, 1, 0])]),
    'WNLI/test.tsv': _tsv(('index', 'sentence1', 'sentence2'),
                          (0, 'Tom hid it.', 'Tom hid the key.')),
    'diagnostic/diagnostic.tsv': _tsv(
        ('index', 'sentence1', 'sentence2'),
        (0, 'The cat sat on the mat.', 'The cat did not sit on the mat.'),
        (1, 'Every dog barked.', 'Some dog barked.')),
}


def _write_files(root):
  for name, text in FILES.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding='utf-8')
  return root


@pytest.fixture(scope='module', autouse=True)
def glue_dir(tmp_path_factory):
  """FILES under a PTJ_GLUE_DIR shared by the module; tasks tokenize bytes."""
  root = _write_files(tmp_path_factory.mktemp('glue'))
  byte_vocabulary = seqio.ByteVocabulary()
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('PTJ_GLUE_DIR', str(root))
    patch.setattr(vocab, 'get_vocabulary', lambda *a, **k: byte_vocabulary)
    yield root


@pytest.fixture
def own_glue_dir(tmp_path, monkeypatch):
  """A fresh copy of FILES for a test that changes them."""
  root = _write_files(tmp_path)
  monkeypatch.setenv('PTJ_GLUE_DIR', str(root))
  return root


@functools.lru_cache(maxsize=None)
def _cached_examples(glue_root: str, name: str, split: str) -> tuple[dict, ...]:
  del glue_root  # Part of the key: the files read.
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False)
  return tuple(ds.as_numpy_iterator())


def _examples(name: str, split: str) -> list[dict]:
  """The seqio task's examples of `split` (built once per module)."""
  return list(_cached_examples(os.environ['PTJ_GLUE_DIR'], name, split))


def _text(ex, feature):
  return ex[f'{feature}_pretokenized'].decode('utf-8')


def _summary(name, split):
  return [(int(ex['idx']), ex['label'].item(), _text(ex, 'inputs'),
           _text(ex, 'targets')) for ex in _examples(name, split)]


# ------------------------------------------------------ readers + formats

# (task, split) -> [(idx, label, inputs, targets)], every example of the split.
GOLDEN = {
    ('glue_cola_v002', 'train'): [
        (0, 1, 'cola sentence: The cat slept on the warm mat.', 'acceptable'),
        (1, 0, 'cola sentence: The cat slept the mat on.', 'unacceptable'),
        (2, 1, 'cola sentence: She said "yes" twice.', 'acceptable')],
    ('glue_cola_v002', 'test'): [
        (0, -1, 'cola sentence: What did you see?', '<unk>'),
        (1, -1, 'cola sentence: Saw you what?', '<unk>')],
    ('glue_sst2_v002', 'train'): [
        (0, 1, 'sst2 sentence: a warm and funny story ', 'positive'),
        (1, 0, 'sst2 sentence: dull and far too long ', 'negative')],
    ('glue_sst2_v002', 'test'): [
        (0, -1, 'sst2 sentence: a film of some kind ', '<unk>')],
    ('glue_mrpc_v002', 'train'): [
        (0, 1, 'mrpc sentence1: The firm sold the unit in May. sentence2: In '
               'May the firm sold the unit.', 'equivalent'),
        (1, 0, 'mrpc sentence1: Rain fell all day. sentence2: The sun shone '
               'brightly.', 'not_equivalent')],
    ('glue_mrpc_v002', 'test'): [
        (0, -1, 'mrpc sentence1: Prices rose. sentence2: Prices went up.',
         '<unk>')],
    # Rows 1, 2 (one question over two lines) and 4 (no label) are dropped;
    # idx counts them, as TFDS's does.
    ('glue_qqp_v002', 'train'): [
        (0, 1, 'qqp question1: How do I boil an egg? question2: What is the '
               'way to boil an egg?', 'duplicate'),
        (3, 0, 'qqp question1: Is tea good for you? question2: Is coffee good '
               'for you?', 'not_duplicate'),
        (5, 1, 'qqp question1: How tall is a giraffe? question2: How high is a '
               'giraffe?', 'duplicate')],
    ('glue_qqp_v002', 'test'): [
        (0, -1, 'qqp question1: Can fish sleep? question2: Do fish sleep?',
         '<unk>')],
    # Scores rounded to 0.2 as T5 (tf.round(label * 5) / 5 in float32, ties to
    # even): 0.25 -> 0.2, 3.75 -> 3.8, 2.5 -> 2.4, and 0.7 (3.5 in float32) -> 0.8.
    ('glue_stsb_v002', 'train'): [
        (0, 5.0, 'stsb sentence1: A man plays a guitar. sentence2: A man is '
                 'playing a guitar.', '5.0'),
        (1, 0.25, 'stsb sentence1: A dog runs. sentence2: A cat sleeps.', '0.2'),
        (2, 3.75, 'stsb sentence1: A woman cuts an onion. sentence2: A woman '
                  'slices an onion.', '3.8'),
        (3, 2.5, 'stsb sentence1: Two kids play. sentence2: Children are '
                 'playing.', '2.4'),
        (4, 0.7, 'stsb sentence1: A bird flies. sentence2: A plane flies.',
         '0.8')],
    ('glue_stsb_v002', 'test'): [
        (0, -1.0, 'stsb sentence1: A boy sings. sentence2: A boy is singing.',
         '<unk>')],
    # MNLI: premise = sentence1, hypothesis = sentence2, shown sorted by name.
    ('glue_mnli_v002', 'train'): [
        (0, 2, 'mnli hypothesis: The plan was rejected. premise: The plan was '
               'approved in June.', 'contradiction'),
        (1, 0, 'mnli hypothesis: He moved. premise: He ran to the station.',
         'entailment')],
    ('glue_mnli_v002', 'validation_matched'): [
        (0, 0, 'mnli hypothesis: Matched hypothesis 0. premise: Matched premise 0.',
         'entailment'),
        (1, 1, 'mnli hypothesis: Matched hypothesis 1. premise: Matched premise 1.',
         'neutral'),
        (2, 2, 'mnli hypothesis: Matched hypothesis 2. premise: Matched premise 2.',
         'contradiction'),
        (3, 1, 'mnli hypothesis: Matched hypothesis 3. premise: Matched premise 3.',
         'neutral')],
    ('glue_mnli_v002', 'validation_mismatched'): [
        (0, 1, 'mnli hypothesis: Mismatched hypothesis 0. premise: Mismatched '
               'premise 0.', 'neutral'),
        (1, 0, 'mnli hypothesis: Mismatched hypothesis 1. premise: Mismatched '
               'premise 1.', 'entailment'),
        (2, 2, 'mnli hypothesis: Mismatched hypothesis 2. premise: Mismatched '
               'premise 2.', 'contradiction')],
    ('glue_mnli_v002', 'test_matched'): [
        (0, -1, 'mnli hypothesis: Test hypothesis m. premise: Test premise m.',
         '<unk>')],
    ('glue_mnli_v002', 'test_mismatched'): [
        (0, -1, 'mnli hypothesis: Test hypothesis mm. premise: Test premise mm.',
         '<unk>'),
        (1, -1, 'mnli hypothesis: Test hypothesis mm2. premise: Test premise '
                'mm2.', '<unk>')],
    ('glue_qnli_v002', 'train'): [
        (0, 0, 'qnli question: Where do owls live? sentence: Owls live in '
               'trees.', 'entailment')],
    ('glue_qnli_v002', 'test'): [
        (0, -1, 'qnli question: Who wrote it? sentence: It was written in 1900.',
         '<unk>')],
    ('glue_rte_v002', 'train'): [
        (0, 0, 'rte sentence1: Ann bought a red car. sentence2: Ann owns a car.',
         'entailment')],
    ('glue_rte_v002', 'test'): [
        (0, -1, 'rte sentence1: Bob swims daily. sentence2: Bob can swim.',
         '<unk>')],
    ('glue_wnli_v002', 'train'): [
        (0, 1, 'wnli sentence1: The cup fell because it was full. sentence2: '
               'The cup was full.', 'entailment')],
    ('glue_wnli_v002', 'test'): [
        (0, -1, 'wnli sentence1: Tom hid it. sentence2: Tom hid the key.',
         '<unk>')],
    ('glue_ax_v002', 'test'): [
        (0, -1, 'mnli hypothesis: The cat did not sit on the mat. premise: The '
                'cat sat on the mat.', '<unk>'),
        (1, -1, 'mnli hypothesis: Some dog barked. premise: Every dog barked.',
         '<unk>')],
}


@pytest.mark.parametrize('name, split', sorted(GOLDEN))
def test_golden_examples(name, split):
  """Every example of the split: idx, label, inputs and targets, in order."""
  examples = _examples(name, split)
  got = _summary(name, split)
  expected = GOLDEN[name, split]
  assert [row[0] for row in got] == [row[0] for row in expected]
  assert [row[2:] for row in got] == [row[2:] for row in expected]
  np.testing.assert_allclose([row[1] for row in got],
                             [row[1] for row in expected], rtol=1e-6)
  # Tokens: the pretokenized text in the task's vocabulary, then EOS.
  vocabulary = seqio.ByteVocabulary()
  for ex in examples:
    assert ex['inputs'].tolist() == vocabulary.encode(_text(ex, 'inputs')) + [1]
  # The taskless variant drops the task word and nothing else.
  if split not in ('train', 'test'):
    return
  taskless = _examples(f'taskless_{name}', split)
  assert [_text(ex, 'inputs') for ex in taskless] == [
      inputs.split(' ', 1)[1] for _, _, inputs, _ in expected]


# Sizes of every split of every task (dev files as written in FILES).
SIZES = {
    'cola': {'train': 3, 'validation': 6, 'test': 2},
    'sst2': {'train': 2, 'validation': 4, 'test': 1},
    'mrpc': {'train': 2, 'validation': 6, 'test': 1},
    'qqp': {'train': 3, 'validation': 5, 'test': 1},
    'stsb': {'train': 5, 'validation': 5, 'test': 1},
    'mnli': {'train': 2, 'validation_matched': 4, 'validation_mismatched': 3,
             'test_matched': 1, 'test_mismatched': 2},
    'mnli_matched': {'validation': 4, 'test': 1},
    'mnli_mismatched': {'validation': 3, 'test': 2},
    'qnli': {'train': 1, 'validation': 4, 'test': 1},
    'rte': {'train': 1, 'validation': 5, 'test': 1},
    'wnli': {'train': 1, 'validation': 4, 'test': 1},
    'ax': {'test': 2},
}


def test_every_glue_task_is_covered():
  assert {task.key for task in glue.TASKS} == set(SIZES)


@pytest.mark.parametrize('key', sorted(SIZES))
def test_split_sizes(key):
  source = glue.glue_source(glue.task_by_key(key))
  assert set(source.splits) == set(SIZES[key])
  sizes = {split: len(source.local.read_split(split)) for split in source.splits}
  assert sizes == SIZES[key]
  name = f'glue_{key}_v002'
  assert {split: len(_examples(name, split)) for split in source.splits} == sizes


def test_mnli_matched_and_mismatched_tasks_read_their_files():
  for variant, split in (('matched', 'validation_matched'),
                         ('mismatched', 'validation_mismatched')):
    assert _summary(f'glue_mnli_{variant}_v002', 'validation') == (
        _summary('glue_mnli_v002', split))
  assert [_text(ex, 'inputs') for ex in _examples('glue_mnli_matched_v002', 'test')] == [
      GOLDEN['glue_mnli_v002', 'test_matched'][0][2]]


def test_readers_give_tfds_examples():
  """Raw examples: TFDS feature names (MRPC's '#1 String' -> sentence1, MNLI's
  sentence1 -> premise), label as class index or float."""
  def first(key, split):
    return glue.glue_source(glue.task_by_key(key)).local.read_split(split)[0]

  assert first('mrpc', 'train') == {
      'sentence1': 'The firm sold the unit in May.',
      'sentence2': 'In May the firm sold the unit.', 'idx': 0, 'label': 1}
  assert first('mnli', 'validation_mismatched') == {
      'premise': 'Mismatched premise 0.', 'hypothesis': 'Mismatched hypothesis 0.',
      'idx': 0, 'label': 1}
  assert first('cola', 'train') == {
      'sentence': 'The cat slept on the warm mat.', 'idx': 0, 'label': 1}
  assert first('stsb', 'train') == {
      'sentence1': 'A man plays a guitar.',
      'sentence2': 'A man is playing a guitar.', 'idx': 0, 'label': 5.0}
  assert first('ax', 'test') == {
      'premise': 'The cat sat on the mat.',
      'hypothesis': 'The cat did not sit on the mat.', 'idx': 0, 'label': -1}


def test_stsb_rounding_is_t5s():
  """The STS-B target equals T5's `tf.as_string(tf.round(label * 5) / 5,
  precision=1)` on the float32 label, for every score 0.000 ... 5.000."""
  scores = np.round(np.arange(0, 5001) / 1000, 3).astype(np.float32)
  t5 = tf.strings.as_string(tf.round(tf.constant(scores) * 5) / 5,
                            precision=1).numpy()
  ours = [formats.stsb({'sentence1': 'a', 'sentence2': 'b',
                        'label': float(score)}, 'stsb')['targets']
          for score in scores]
  mismatched = [(float(s), o, t.decode()) for s, o, t in zip(scores, ours, t5)
                if o != t.decode()]
  assert not mismatched, mismatched[:10]


# --------------------------------------------------------------- metrics


def _predict_metrics(name, split, predictions):
  """The task's postprocessor and metrics on `predictions` (decoded text)."""
  task = seqio.get_mixture_or_task(name)
  examples = _examples(name, split)
  assert len(examples) == len(predictions)
  targets = [task.postprocess_fn(_text(ex, 'targets'), example=ex,
                                 is_target=True) for ex in examples]
  predicted = [task.postprocess_fn(text, example=ex, is_target=False)
               for text, ex in zip(predictions, examples)]
  results = {}
  for fn in task.predict_metric_fns:
    results.update(fn(targets, predicted))
  return results


def _invalid_is_opposite(targets, predictions):
  """The project's convention for binary F1/MCC: an invalid prediction (-1)
  is the opposite of the target."""
  targets, predictions = np.asarray(targets), np.asarray(predictions)
  return np.where(predictions < 0, 1 - targets, predictions)


# name, split -> (predictions, their class ids (-1 invalid), expected metrics
# by hand). Dev labels are those of FILES.
METRIC_CASES = {
    # targets [1,1,0,0,1,0]; predictions [1,0,0,0,1,->1]: tp 2, tn 2, fp 1,
    # fn 1 -> MCC = (4 - 1) / sqrt(3^4) = 1/3.
    ('glue_cola_v002', 'validation'): (
        ['acceptable', 'unacceptable', 'unacceptable', 'unacceptable',
         'acceptable', 'maybe'], [1, 0, 0, 0, 1, -1], {'mcc': 100 / 3}),
    # targets [1,0,0,1]: right, right, wrong, invalid.
    ('glue_sst2_v002', 'validation'): (
        ['positive', 'negative', 'positive', '<unk>'], [1, 0, 1, -1],
        {'accuracy': 50.0}),
    # targets [1,1,0,1,0,0]; predictions [1,0,1,1,0,->1]: tp 2, fp 2, fn 1 ->
    # F1 = 4/7; right 3 of 6.
    ('glue_mrpc_v002', 'validation'): (
        ['equivalent', 'not_equivalent', 'equivalent', 'equivalent',
         'not_equivalent', 'yes'], [1, 0, 1, 1, 0, -1],
        {'f1': 400 / 7, 'accuracy': 50.0}),
    # targets [1,0,0,1,1]; predictions [1,1,0,0,1]: tp 2, fp 1, fn 1 -> 2/3.
    ('glue_qqp_v002', 'validation'): (
        ['duplicate', 'duplicate', 'not_duplicate', 'not_duplicate',
         'duplicate'], [1, 1, 0, 0, 1], {'f1': 200 / 3, 'accuracy': 60.0}),
    # targets [0,1,2,1]: right, wrong, right, invalid (case matters).
    ('glue_mnli_v002', 'validation_matched'): (
        ['entailment', 'contradiction', 'contradiction', 'Neutral'],
        [0, 2, 2, -1], {'accuracy': 50.0}),
    ('glue_mnli_matched_v002', 'validation'): (
        ['entailment', 'contradiction', 'contradiction', 'Neutral'],
        [0, 2, 2, -1], {'accuracy': 50.0}),
    # targets [1,0,2]: right, wrong, right.
    ('glue_mnli_mismatched_v002', 'validation'): (
        ['neutral', 'neutral', 'contradiction'], [1, 1, 2],
        {'accuracy': 200 / 3}),
    ('glue_mnli_v002', 'validation_mismatched'): (
        ['neutral', 'neutral', 'contradiction'], [1, 1, 2],
        {'accuracy': 200 / 3}),
    # targets [0,1,1,0]: right, right, wrong, wrong.
    ('glue_qnli_v002', 'validation'): (
        ['entailment', 'not_entailment', 'entailment', 'not_entailment'],
        [0, 1, 0, 1], {'accuracy': 50.0}),
    # targets [1,0,1,1,0]: right, right, right, invalid, wrong.
    ('glue_rte_v002', 'validation'): (
        ['not_entailment', 'entailment', 'not_entailment', '', 'not_entailment'],
        [1, 0, 1, -1, 1], {'accuracy': 60.0}),
    # targets [0,1,1,0] (0 = not_entailment): right, wrong, right, right.
    ('glue_wnli_v002', 'validation'): (
        ['not_entailment', 'not_entailment', 'entailment', 'not_entailment'],
        [0, 0, 1, 0], {'accuracy': 75.0}),
}


@pytest.mark.parametrize('name, split', sorted(METRIC_CASES))
def test_classification_metrics(name, split):
  predictions, predicted_ids, by_hand = METRIC_CASES[name, split]
  results = _predict_metrics(name, split, predictions)
  assert results == pytest.approx(by_hand)
  # The same numbers from scikit-learn, on the labels as read.
  targets = [int(ex['label']) for ex in _examples(name, split)]
  expected = {}
  if 'mcc' in by_hand:
    expected['mcc'] = 100 * sklearn_metrics.matthews_corrcoef(
        targets, _invalid_is_opposite(targets, predicted_ids))
  if 'f1' in by_hand:
    expected['f1'] = 100 * sklearn_metrics.f1_score(
        targets, _invalid_is_opposite(targets, predicted_ids))
  if 'accuracy' in by_hand:
    expected['accuracy'] = 100 * sklearn_metrics.accuracy_score(
        targets, predicted_ids)
  assert results == pytest.approx(expected)


def test_stsb_metrics():
  """Pearson/Spearman between the rounded targets and the predicted numbers;
  a prediction that is not a number is -1."""
  # Dev scores 4.8, 0.0, 2.2, 3.0, 1.4 (all on the 0.2 grid).
  predictions = ['4.6', '0.4', 'three', '3.0', '1.2']
  results = _predict_metrics('glue_stsb_v002', 'validation', predictions)
  targets = [4.8, 0.0, 2.2, 3.0, 1.4]
  predicted = [4.6, 0.4, -1.0, 3.0, 1.2]
  assert results == pytest.approx({
      'pearson': 100 * scipy_stats.pearsonr(targets, predicted)[0],
      'spearman': 100 * scipy_stats.spearmanr(targets, predicted)[0]})
  # Spearman by hand: target ranks [5,1,3,4,2], prediction ranks [5,2,1,4,3],
  # d^2 = 0+1+4+0+1 = 6 -> 1 - 6*6/(5*24) = 0.7.
  assert results['spearman'] == pytest.approx(70.0)
  # Gold predictions: both correlations are 100.
  assert _predict_metrics('glue_stsb_v002', 'validation',
                          [f'{t:.1f}' for t in targets]) == pytest.approx(
                              {'pearson': 100.0, 'spearman': 100.0})


def test_ax_has_no_metrics():
  """AX has no public labels: it is predicted for submission, not scored."""
  task = seqio.get_mixture_or_task('glue_ax_v002')
  assert task.predict_metric_fns == [] and task.score_metric_fns == []


@pytest.mark.parametrize('name, split', sorted(
    key for key in METRIC_CASES if 'matched_v002' not in key[0]))
def test_rank_variant_scores_like_decoding(name, split):
  """`<task>_rank`: the best-scored label word is the prediction, and the
  task's metrics come out as for decoding that word."""
  predictions, predicted_ids, _ = METRIC_CASES[name, split]
  predicted_ids = [max(i, 0) for i in predicted_ids]  # Rank picks a label.
  words = registry.label_words(name)
  rank_name = name.replace('_v002', '_v002_rank')
  task = seqio.get_mixture_or_task(rank_name)
  examples = _examples(rank_name, split)
  assert len(examples) == len(words) * len(predicted_ids)
  targets = [task.postprocess_fn(_text(ex, 'targets'), example=ex,
                                 is_target=True) for ex in examples]
  scores = [float(ex['rank_candidate'] == predicted_ids[i // len(words)])
            for i, ex in enumerate(examples)]
  (metric,) = task.score_metric_fns
  assert metric(targets, scores) == pytest.approx(_predict_metrics(
      name, split, [words[i] for i in predicted_ids]))


# ---------------------------------------------------------- data errors


@pytest.mark.parametrize('name, text, message', [
    ('CoLA/dev.tsv', 'src\t1\t\tFine.\nsrc\t0\tNo mark column.\n',
     ':2: expected 4 tab-separated fields, found 3'),
    ('RTE/dev.tsv', 'index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n'
     '1\ta\tb\tmaybe\n',
     ":3: label 'maybe' is not one of ['entailment', 'not_entailment']"),
    ('STS-B/dev.tsv', _tsv(_STSB_HEADER, _stsb(0, 'a', 'b', 'high')),
     ":2: could not convert string to float: 'high'"),
    # QQP drops short rows only: one with too many fields is an error.
    ('QQP/dev.tsv', _tsv(_QQP_HEADER, (0, 1, 2, 'a?', 'b?', 1, 'extra')),
     ':2: expected 6 tab-separated fields, found 7'),
    ('MRPC/dev.tsv', _tsv(_MRPC_HEADER, (2, 1, 2, 'a', 'b')),
     ":2: label '2' is not one of ['not_equivalent', 'equivalent']"),
    # A file without its header row: the header is missing, not a field of line 2.
    ('SST-2/dev.tsv', 'a fine film .\t1\nawful .\t0\n',
     ":1: missing header row: the first line must name the columns (tab-separated, 'sentence' "
     "among them); it reads 'a fine film .\\t1'"),
    ('RTE/dev.tsv', 'index\tsentence_1\tsentence2\tlabel\n0\ta\tb\tentailment\n',
     ":1: the header row has no column 'sentence1' (it names 'index', 'sentence_1', "
     "'sentence2', 'label')"),
])
def test_malformed_row_names_file_and_line(own_glue_dir, name, text, message):
  path = own_glue_dir / name
  path.write_text(text, encoding='utf-8')
  key = {'CoLA': 'cola', 'RTE': 'rte', 'STS-B': 'stsb', 'QQP': 'qqp',
         'MRPC': 'mrpc', 'SST-2': 'sst2'}[name.split('/')[0]]
  task = seqio.get_mixture_or_task(f'glue_{key}_v002')
  with pytest.raises(sources.TaskDataError) as err:
    task.get_dataset(sequence_length=None, split='validation', shuffle=False)
  assert str(err.value) == f'{path}{message}'


def test_missing_mnli_file_names_the_expected_path(own_glue_dir):
  (own_glue_dir / 'MNLI' / 'dev_mismatched.tsv').unlink()
  task = seqio.get_mixture_or_task('glue_mnli_mismatched_v002')
  with pytest.raises(sources.TaskDataError,
                     match='missing split file: expected '
                     f'{own_glue_dir}/MNLI/dev_mismatched.tsv'):
    task.get_dataset(sequence_length=None, split='validation', shuffle=False)


# ---------------------------------------------------------- TFDS


def _tfds_source(key, data_dir):
  """A fresh GLUE source that reads TFDS from `data_dir` (never the user's)."""
  source = glue.glue_source(glue.task_by_key(key))
  source.__dict__['_tfds'] = seqio.TfdsDataSource(
      tfds_name=source.tfds_name, tfds_data_dir=str(data_dir), splits=source.splits)
  return source


def test_tfds_without_network_is_one_line_naming_the_local_files(tmp_path, monkeypatch):
  """No local directory, TFDS not prepared, its download unreachable: the real HTTP probe,
  sent to a host that never resolves (.invalid), fails in one line before TFDS retries."""
  import requests
  real_head = requests.head
  monkeypatch.setattr(requests, 'head', lambda url, **kwargs: real_head(
      'https://ptj-no-network.invalid/' + url.rsplit('/', 1)[-1], **kwargs))
  monkeypatch.delenv('PTJ_GLUE_DIR')
  source = _tfds_source('sst2', tmp_path / 'tfds')
  with pytest.raises(sources.TaskDataError) as err:
    source.get_dataset('validation', shuffle=False)
  message = str(err.value)
  assert '\n' not in message
  assert message.startswith('TFDS glue/sst2:2.0.0 is not prepared in ')
  assert ('ConnectionError; no network?). Use the local files instead: set PTJ_GLUE_DIR (or '
          '--gin.local_data_dirs.glue) to a directory holding SST-2/ with dev.tsv, test.tsv, '
          'train.tsv.') in message


def test_tfds_downloads_and_prepares_glue_with_the_declared_packages(glue_dir, tmp_path,
                                                                     monkeypatch):
  """Where there is a network, TFDS downloads and prepares GLUE: its download is served
  from the test's files, the rest (builder, checksums path, prepare, read) is TFDS's own,
  so a package it imports on the way and the project does not declare fails here in a
  fresh install. Its examples equal the local reader's."""
  import requests
  import tensorflow_datasets as tfds
  monkeypatch.setattr(requests, 'head', lambda url, **kwargs: None)  # Reachable.
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      lambda self, url: str(glue_dir))
  local = glue.glue_source(glue.task_by_key('sst2')).local.read_split('validation')
  monkeypatch.delenv('PTJ_GLUE_DIR')
  source = _tfds_source('sst2', tmp_path / 'tfds')
  from_tfds = list(source.get_dataset('validation', shuffle=False).as_numpy_iterator())
  assert source._tfds.tfds_dataset.builder.is_prepared()  # pylint: disable=protected-access
  assert sorted((int(ex['idx']), ex['sentence'].decode(), int(ex['label'])) for ex in from_tfds) == [
      (ex['idx'], ex['sentence'], ex['label']) for ex in local]  # TFDS shuffles when preparing.
