"""Task names, label words, users' own tasks, submission files, the
vocabulary, and postprocessors + metrics over real task examples."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / '..' / 'shared'
DATA = SHARED / 'data'
VOCAB = SHARED / 'vocab' / 't5' / 'spiece.model'


import gin
import seqio

import prompt_tuning_jax.tasks as ptj_tasks
from prompt_tuning_jax.tasks import registry
from prompt_tuning_jax.tasks import submission
from prompt_tuning_jax.tasks import vocab

needs_shared = pytest.mark.skipif(
    not DATA.is_dir(), reason=f'../shared absent: {DATA} not found')

SUPERGLUE_KEYS = ('boolq', 'cb', 'copa', 'multirc', 'record', 'rte', 'wic',
                  'wsc', 'axb', 'axg')
GLUE_KEYS = ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', 'mnli_matched',
             'mnli_mismatched', 'qnli', 'rte', 'wnli', 'ax')


# ------------------------------------------------------------------ names


def _with_variants(name, rank=True):
  names = {name, f'taskless_{name}'}
  return names | ({f'{n}_rank' for n in names} if rank else set())


def test_registered_names():
  expected = set()
  for key in SUPERGLUE_KEYS:
    expected |= _with_variants(f'super_glue_{key}_v102', rank=key != 'record')
  for key in GLUE_KEYS:
    expected |= _with_variants(f'glue_{key}_v002', rank=key != 'stsb')
  for key in SUPERGLUE_KEYS[:8]:
    expected |= _with_variants(f'fewglue_{key}', rank=key != 'record')
  for prefix in ('super_glue_wsc_v102', 'fewglue_wsc'):
    for kind in ('train', 'eval'):
      expected |= _with_variants(f'{prefix}_simple_{kind}', rank=False)
  # Zero-shot transfer (tasks/transfer.py): the smoke reviews' format has no task word.
  for name in ('glue_mrpc_from_qqp_v002', 'glue_qqp_from_mrpc_v002'):
    expected |= _with_variants(name)
  expected |= {'glue_sst2_from_smoke_v002', 'glue_sst2_from_smoke_v002_rank'}
  benchmarks = ('super_glue', 'glue', 'fewglue')
  benchmarks += tuple(f'taskless_{name}' for name in benchmarks)
  registered = {name for name in registry.registered_tasks()
                if name.startswith(benchmarks)}
  assert registered == expected
  assert expected <= set(seqio.TaskRegistry.names())


def test_mixtures_are_proportional_to_sizes():
  mixture = seqio.get_mixture_or_task('super_glue_v102_proportional')
  rates = {task.name: mixture.get_rate(task) for task in mixture.tasks}
  assert rates['super_glue_cb_v102'] == 250
  assert rates['super_glue_record_v102'] == 138_854
  assert rates['super_glue_wsc_v102_simple_train'] == 259
  assert rates['super_glue_axg_v102'] == 0
  assert len(rates) == 11
  glue_mixture = seqio.get_mixture_or_task('taskless_glue_v002_proportional')
  glue_rates = {t.name: glue_mixture.get_rate(t) for t in glue_mixture.tasks}
  assert glue_rates['taskless_glue_mnli_v002'] == 392_702
  assert glue_rates['taskless_glue_ax_v002'] == 0
  assert registry.capped_rate(10, cap=4) == 4.0


# ------------------------------------------------------------ label words


@pytest.mark.parametrize('name, words', [
    ('super_glue_cb_v102', ['entailment', 'contradiction', 'neutral']),
    ('taskless_super_glue_rte_v102_rank', ['entailment', 'not_entailment']),
    ('super_glue_boolq_v102', ['False', 'True']),
    ('super_glue_copa_v102', ['choice1', 'choice2']),
    ('super_glue_axg_v102', ['entailment', 'not_entailment']),
    ('fewglue_wic', ['False', 'True']),
    ('glue_sst2_v002', ['negative', 'positive']),
    ('glue_mnli_v002', ['entailment', 'neutral', 'contradiction']),
    ('glue_wnli_v002', ['not_entailment', 'entailment']),
    ('glue_cola_v002', ['unacceptable', 'acceptable']),
    ('super_glue_record_v102', None),
    ('glue_stsb_v002', None),
    ('super_glue_wsc_v102_simple_eval', None),
    ('super_glue_v102_proportional', None),
])
def test_label_words(name, words):
  assert ptj_tasks.label_words(name) == words


def test_label_words_of_unknown_name():
  with pytest.raises(KeyError, match='no_such_task'):
    ptj_tasks.label_words('no_such_task')


# --------------------------------------------------------- users' own tasks


@pytest.fixture
def user_task(tmp_path):
  """'movies' from a TSV (train) and a jsonl (validation) file."""
  train = tmp_path / 'train.tsv'
  train.write_text('review\tsentiment\n'
                   'a great film\tpositive\n'
                   'a dull film\t0\n', encoding='utf-8')
  validation = tmp_path / 'validation.jsonl'
  validation.write_text(
      json.dumps({'review': 'loved it', 'sentiment': 1}) + '\n'
      + json.dumps({'review': 'no label'}) + '\n', encoding='utf-8')
  names = ptj_tasks.add_classification_task(
      'movies', {'train': train, 'validation': validation},
      text_fields=['review'], label_field='sentiment',
      label_words=['negative', 'positive'])
  yield names
  for name in names:
    seqio.TaskRegistry.remove(name)
    registry._TASKS.pop(name)  # pylint: disable=protected-access


def _pretokenized(name, split):
  ds = seqio.get_mixture_or_task(name).get_dataset(
      sequence_length=None, split=split, shuffle=False)
  return [(ex['inputs_pretokenized'].decode(),
           ex['targets_pretokenized'].decode())
          for ex in ds.as_numpy_iterator()]


@needs_shared
def test_user_classification_task(user_task, monkeypatch):
  monkeypatch.setenv('PTJ_VOCAB', str(VOCAB))
  assert user_task == ['movies', 'movies_rank', 'taskless_movies',
                       'taskless_movies_rank']
  assert ptj_tasks.label_words('movies') == ['negative', 'positive']
  assert _pretokenized('movies', 'train') == [
      ('movies review: a great film', 'positive'),
      ('movies review: a dull film', 'negative')]
  assert _pretokenized('taskless_movies', 'validation') == [
      ('review: loved it', 'positive'), ('review: no label', '<unk>')]
  task = seqio.get_mixture_or_task('movies')
  targets = [task.postprocess_fn(t, is_target=True)
             for t in ('positive', 'negative')]
  predictions = [task.postprocess_fn(p) for p in ('positive', 'dunno')]
  assert task.predict_metric_fns[0](targets, predictions) == {
      'accuracy': 50.0}


def test_user_task_bad_label_names_file_and_line(tmp_path):
  path = tmp_path / 'train.jsonl'
  path.write_text('{"text": "x", "label": "good"}\n'
                  '{"text": "y", "label": "meh"}\n', encoding='utf-8')
  names = ptj_tasks.add_classification_task(
      'bad_labels', {'train': path}, text_fields=['text'],
      label_words=['bad', 'good'])
  try:
    source = seqio.get_mixture_or_task('bad_labels').source
    with pytest.raises(ptj_tasks.TaskDataError, match=f'{path}:2: label'):
      source.read_split('train')
  finally:
    for name in names:
      seqio.TaskRegistry.remove(name)
      registry._TASKS.pop(name)  # pylint: disable=protected-access


def test_user_task_tsv_without_header_is_a_missing_header(tmp_path):
  path = tmp_path / 'train.tsv'
  path.write_text('a great film\tpositive\na dull film\tnegative\n', encoding='utf-8')
  names = ptj_tasks.add_classification_task(
      'headerless', {'train': path}, text_fields=['review'], label_field='sentiment',
      label_words=['negative', 'positive'])
  try:
    source = seqio.get_mixture_or_task('headerless').source
    with pytest.raises(ptj_tasks.TaskDataError, match=f'{path}:1: missing header row'):
      source.read_split('train')
  finally:
    for name in names:
      seqio.TaskRegistry.remove(name)
      registry._TASKS.pop(name)  # pylint: disable=protected-access


# ------------------------------------------------------------ submissions


def test_submission_rows():
  rows = submission.submission_rows(
      'super_glue_cb_v102', [{'idx': 0}, {'idx': 1}], ['neutral', 'junk'])
  assert rows == [{'idx': 0, 'label': 'neutral'},
                  {'idx': 1, 'label': 'entailment'}]
  assert submission.submission_rows(
      'taskless_super_glue_boolq_v102', [{'idx': 3}, {'idx': 4}],
      ['True', 'False']) == [{'idx': 3, 'label': 'true'},
                             {'idx': 4, 'label': 'false'}]
  assert submission.submission_rows(
      'super_glue_copa_v102', [{'idx': 5}], ['choice2']) == [
          {'idx': 5, 'label': 1}]
  assert submission.submission_rows(
      'super_glue_wsc_v102_simple_eval',
      [{'idx': 0, 'targets_pretokenized': b'the cup'},
       {'idx': 1, 'targets_pretokenized': b'the bottle'}],
      ['Cup', 'the cup']) == [{'idx': 0, 'label': 'True'},
                              {'idx': 1, 'label': 'False'}]


def test_multirc_and_record_submission_rows():
  def option(p, q, a):
    return {'idx/paragraph': p, 'idx/question': q, 'idx/answer': a}

  examples = [option(0, 0, 0), option(0, 0, 1), option(0, 1, 2),
              option(1, 2, 3)]
  assert submission.submission_rows(
      'super_glue_multirc_v102', examples,
      ['True', 'False', '???', 'True']) == [
          {'idx': 0, 'passage': {'questions': [
              {'idx': 0, 'answers': [{'idx': 0, 'label': 1},
                                     {'idx': 1, 'label': 0}]},
              {'idx': 1, 'answers': [{'idx': 2, 'label': 0}]}]}},
          {'idx': 1, 'passage': {'questions': [
              {'idx': 2, 'answers': [{'idx': 3, 'label': 1}]}]}}]
  queries = [{'idx/passage': 0, 'idx/query': 7},
             {'idx/passage': 0, 'idx/query': 7},
             {'idx/passage': 1, 'idx/query': 8}]
  assert submission.submission_rows(
      'super_glue_record_v102', queries, ['Obama', 'Obama', 'Paris']) == [
          {'idx': 7, 'label': 'Obama'}, {'idx': 8, 'label': 'Paris'}]


def test_write_submission(tmp_path):
  rows = {'super_glue_axb_v102': [{'idx': 0, 'label': 'entailment'}],
          'super_glue_rte_v102': [{'idx': 0, 'label': 'not_entailment'},
                                  {'idx': 1, 'label': 'entailment'}]}
  paths = submission.write_submission(tmp_path / 'out', rows)
  assert [p.name for p in paths] == ['AX-b.jsonl', 'RTE.jsonl']
  lines = paths[1].read_text(encoding='utf-8').splitlines()
  assert [json.loads(line) for line in lines] == rows['super_glue_rte_v102']


def test_no_submission_for_rank_or_fewglue_tasks():
  for name in ('super_glue_cb_v102_rank', 'fewglue_cb'):
    with pytest.raises(ValueError, match='no SuperGLUE submission file'):
      submission.submission_rows(name, [{'idx': 0}], ['neutral'])


# ------------------------------------------------------------- vocabulary


@needs_shared
def test_vocabulary_from_env_and_gin(monkeypatch):
  monkeypatch.setenv('PTJ_VOCAB', str(VOCAB))
  vocabulary = ptj_tasks.get_vocabulary()
  assert vocabulary.vocab_size == 32_100
  deferred = seqio.get_mixture_or_task('glue_sst2_v002').output_features[
      'targets'].vocabulary
  assert deferred.vocab_size == 32_100
  assert deferred.eos_id == 1
  assert deferred.encode('positive') == vocabulary.encode('positive')
  assert deferred.decode(vocabulary.encode('hello world')) == 'hello world'
  monkeypatch.delenv('PTJ_VOCAB')
  assert vocab.get_vocabulary().sentencepiece_model_file == (
      vocab.DEFAULT_VOCAB_PATH)
  with gin.unlock_config():
    gin.bind_parameter('ptj_test/get_vocabulary.path', str(VOCAB))
  with gin.config_scope('ptj_test'):
    assert deferred.resolved.sentencepiece_model_file == str(VOCAB)


# ------------------------------------- postprocessors + metrics, real data


@pytest.fixture
def shared_dirs(monkeypatch):
  if not DATA.is_dir():
    pytest.skip(f'../shared absent: {DATA} not found')
  monkeypatch.setenv('PTJ_SUPERGLUE_DIR', str(DATA / 'super_glue'))
  monkeypatch.setenv('PTJ_FEWGLUE_DIR', str(DATA / 'fewglue'))
  monkeypatch.setenv('PTJ_VOCAB', str(VOCAB))


def _evaluate(name, split, predict):
  """seqio-style evaluation with `predict(example) -> text`."""
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False)
  examples = list(ds.as_numpy_iterator())
  targets = [task.postprocess_fn(ex['targets_pretokenized'].decode(),
                                 example=ex, is_target=True)
             for ex in examples]
  predictions = [task.postprocess_fn(predict(ex), example=ex,
                                     is_target=False) for ex in examples]
  results = {}
  for fn in task.predict_metric_fns:
    results.update(fn(targets, predictions))
  return results


def _gold(ex):
  return ex['targets_pretokenized'].decode()


@pytest.mark.parametrize('name, split, expected', [
    ('super_glue_cb_v102', 'validation', {'macro_f1': 100, 'accuracy': 100}),
    ('fewglue_multirc', 'validation', {'f1a': 100, 'em': 100}),
    ('fewglue_record', 'validation', {'em': 100, 'f1': 100}),
    ('super_glue_axb_v102', 'test', {'mcc': 100}),
    ('super_glue_axg_v102', 'test', {'accuracy': 100, 'gender_parity': 100}),
    ('super_glue_wsc_v102_simple_eval', 'validation', {'accuracy': 100}),
])
def test_gold_predictions_score_perfectly(shared_dirs, name, split, expected):
  del shared_dirs

  def predict(ex):
    # WSC simple: name the candidate exactly when it is the referent.
    if name.endswith('simple_eval'):
      return _gold(ex) if ex['label'] == 1 else 'nobody'
    return _gold(ex)

  assert _evaluate(name, split, predict) == pytest.approx(expected)


def test_invalid_predictions_score_as_wrong(shared_dirs):
  del shared_dirs
  results = _evaluate('fewglue_multirc', 'validation', lambda ex: 'maybe')
  assert results == {'f1a': 0.0, 'em': 0.0}
  results = _evaluate('super_glue_cb_v102', 'validation', lambda ex: '')
  assert results == {'macro_f1': 0.0, 'accuracy': 0.0}


def test_rank_classification_scores_real_candidates(shared_dirs):
  del shared_dirs
  task = seqio.get_mixture_or_task('super_glue_cb_v102_rank')
  ds = task.get_dataset(sequence_length=None, split='validation',
                        shuffle=False)
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == 3 * 56
  targets = [task.postprocess_fn(ex['targets_pretokenized'].decode(),
                                 example=ex, is_target=True)
             for ex in examples]
  # Score the gold candidate highest: perfect; the first candidate: the
  # share of 'entailment' examples.
  gold_scores = [float(ex['rank_candidate'] == ex['label'])
                 for ex in examples]
  (metric,) = task.score_metric_fns
  assert metric(targets, gold_scores) == {'macro_f1': 100.0,
                                          'accuracy': 100.0}
  first_scores = [-float(ex['rank_candidate']) for ex in examples]
  entailment = sum(ex['label'] == 0 for ex in examples[::3])
  assert metric(targets, first_scores)['accuracy'] == pytest.approx(
      100 * entailment / 56)
