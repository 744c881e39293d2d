"""Zero-shot transfer tasks (Table 2, QQP <-> MRPC; SST-2 <-> the smoke reviews) on small
synthetic files in GLUE's official TSV layouts, written here; a byte vocabulary stands in
for SentencePiece, so nothing here needs ../shared."""
from __future__ import annotations

import functools

import pytest
import seqio

from prompt_tuning_jax import data
from prompt_tuning_jax.tasks import registry
from prompt_tuning_jax.tasks import smoke
from prompt_tuning_jax.tasks import sources
from prompt_tuning_jax.tasks import transfer
from prompt_tuning_jax.tasks import vocab


def _tsv(*rows) -> str:
  return ''.join('\t'.join(str(value) for value in row) + '\n' for row in rows)


_MRPC_HEADER = ('Quality', '#1 ID', '#2 ID', '#1 String', '#2 String')
_QQP_HEADER = ('id', 'qid1', 'qid2', 'question1', 'question2', 'is_duplicate')
MRPC_LABELS = [1, 1, 0, 1, 0, 0]
QQP_LABELS = [1, 0, 0, 1, 1]
FILES = {
    'MRPC/dev.tsv': _tsv(_MRPC_HEADER, *[
        (label, 200 + 2 * i, 201 + 2 * i, f'First {i}.', f'Second {i}.')
        for i, label in enumerate(MRPC_LABELS)]),
    'QQP/dev.tsv': _tsv(_QQP_HEADER, *[
        (i, 20 + 2 * i, 21 + 2 * i, f'Question {i}a?', f'Question {i}b?', label)
        for i, label in enumerate(QQP_LABELS)]),
    'SST-2/dev.tsv': _tsv(('sentence', 'label'), ('a warm film ', 1), ('dull , dull ', 0)),
    'WNLI/dev.tsv': _tsv(('index', 'sentence1', 'sentence2', 'label'),
                         (0, 'A.', 'B.', 0), (1, 'C.', 'D.', 1), (2, 'E.', 'F.', 1)),
}


@pytest.fixture(scope='module', autouse=True)
def glue_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('glue')
  for name, text in FILES.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text, encoding='utf-8')
  byte_vocabulary = seqio.ByteVocabulary()
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('PTJ_GLUE_DIR', str(root))
    patch.setattr(vocab, 'get_vocabulary', lambda *a, **k: byte_vocabulary)
    yield root


@functools.lru_cache(maxsize=None)
def _examples(name: str, split: str = 'validation') -> tuple[dict, ...]:
  task = seqio.get_mixture_or_task(name)
  return tuple(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())


def _text(ex, feature):
  return ex[f'{feature}_pretokenized'].decode('utf-8')


def test_target_examples_are_shown_in_the_sources_format():
  assert [(_text(ex, 'inputs'), _text(ex, 'targets')) for ex in
          _examples('glue_mrpc_from_qqp_v002')[:3]] == [
      ('qqp question1: First 0. question2: Second 0.', 'duplicate'),
      ('qqp question1: First 1. question2: Second 1.', 'duplicate'),
      ('qqp question1: First 2. question2: Second 2.', 'not_duplicate')]
  assert [_text(ex, 'inputs') for ex in _examples('taskless_glue_mrpc_from_qqp_v002')][:1] == [
      'question1: First 0. question2: Second 0.']
  assert [(_text(ex, 'inputs'), _text(ex, 'targets'))
          for ex in _examples('glue_qqp_from_mrpc_v002')][:2] == [
      ('mrpc sentence1: Question 0a? sentence2: Question 0b?', 'equivalent'),
      ('mrpc sentence1: Question 1a? sentence2: Question 1b?', 'not_equivalent')]
  assert registry.label_words('glue_mrpc_from_qqp_v002') == ['not_duplicate', 'duplicate']
  # The mini-scale pair: SST-2 sentences as smoke reviews, and the reverse.
  assert [(_text(ex, 'inputs'), _text(ex, 'targets'))
          for ex in _examples('glue_sst2_from_smoke_v002')] == [
      ('review: a warm film ', 'positive'), ('review: dull , dull ', 'negative')]
  reviews = smoke.generate('validation', smoke.WORD_LABELS, held_out_words=True)
  shown = _examples('smoke_sentiment_transfer_from_sst2')
  assert [(_text(ex, 'inputs'), _text(ex, 'targets')) for ex in shown] == [
      ('sst2 ' + ex['inputs'].replace('review:', 'sentence:'), ex['targets']) for ex in reviews]


def test_zero_shot_mixtures_train_on_the_source_and_only_evaluate_the_target():
  for mixture, source, target in [
      ('glue_mrpc_from_qqp_zeroshot_v002', 'glue_qqp_v002', 'glue_mrpc_from_qqp_v002'),
      ('taskless_glue_qqp_from_mrpc_zeroshot_v002', 'taskless_glue_mrpc_v002',
       'taskless_glue_qqp_from_mrpc_v002'),
      ('glue_sst2_from_smoke_zeroshot_v002', 'smoke_sentiment_transfer',
       'glue_sst2_from_smoke_v002'),
      ('smoke_sentiment_transfer_from_sst2_zeroshot', 'glue_sst2_v002',
       'smoke_sentiment_transfer_from_sst2')]:
    provider = seqio.get_mixture_or_task(mixture)
    assert {t.name: provider.get_rate(t) for t in provider.tasks} == {source: 1.0, target: 0.0}
    assert seqio.get_mixture_or_task(target).splits == ('validation',)
  assert 'taskless_glue_sst2_from_smoke_zeroshot_v002' not in seqio.MixtureRegistry.names()


def _metrics(name, predictions):
  """The task's postprocessor and predict metrics over decoded `predictions`."""
  task = seqio.get_mixture_or_task(name)
  examples = _examples(name)
  targets = [task.postprocess_fn(_text(ex, 'targets'), example=ex, is_target=True)
             for ex in examples]
  predicted = [task.postprocess_fn(p, example=ex, is_target=False)
               for p, ex in zip(predictions, examples)]
  results = {}
  for fn in task.predict_metric_fns:
    results.update(fn(targets, predicted))
  return results


HAND_MAP = {'glue_mrpc_from_qqp_v002': ('glue_mrpc_v002', {'duplicate': 'equivalent',
                                                           'not_duplicate': 'not_equivalent'}),
            'glue_qqp_from_mrpc_v002': ('glue_qqp_v002', {'equivalent': 'duplicate',
                                                          'not_equivalent': 'not_duplicate'})}
# Decoded predictions in the source's words, and one that is no label word of either task.
PREDICTIONS = {
    # MRPC gold [1,1,0,1,0,0]; predicted [1,0,1,1,0,invalid->1]: tp 2, fp 2, fn 1.
    'glue_mrpc_from_qqp_v002': ['duplicate', 'not_duplicate', 'duplicate', 'duplicate',
                                'not_duplicate', 'yes'],
    # QQP gold [1,0,0,1,1]; predicted [1,1,0,0,invalid->0]: tp 1, fp 1, fn 2.
    'glue_qqp_from_mrpc_v002': ['equivalent', 'equivalent', 'not_equivalent',
                                'not_equivalent', 'yes'],
}
BY_HAND = {'glue_mrpc_from_qqp_v002': {'f1': 100 * 4 / 7, 'accuracy': 50.0},
           'glue_qqp_from_mrpc_v002': {'f1': 100 * 2 / 5, 'accuracy': 40.0}}


@pytest.mark.parametrize('name', sorted(PREDICTIONS))
def test_mapped_metrics_equal_a_hand_mapping_of_the_same_predictions(name):
  predictions = PREDICTIONS[name]
  results = _metrics(name, predictions)
  assert results == pytest.approx(BY_HAND[name])
  # The same predictions rewritten by hand into the target's words, scored by the target
  # task itself (its own postprocessor, metrics and gold labels).
  target, words = HAND_MAP[name]
  assert _metrics(target, [words.get(p, p) for p in predictions]) == pytest.approx(results)


@pytest.mark.parametrize('name', sorted(PREDICTIONS))
def test_rank_classification_scores_the_sources_words(name):
  rank_name = name.replace('_v002', '_v002_rank')
  task = seqio.get_mixture_or_task(rank_name)
  examples = _examples(rank_name)
  source_words = HAND_MAP[name][1]
  assert {_text(ex, 'targets') for ex in examples} == set(source_words)
  # Rank picks a label word: the invalid predictions become the first word.
  words = registry.label_words(name)
  chosen = [p if p in words else words[0] for p in PREDICTIONS[name]]
  targets = [task.postprocess_fn(_text(ex, 'targets'), example=ex, is_target=True)
             for ex in examples]
  scores = [float(_text(ex, 'targets') == chosen[i // len(words)])
            for i, ex in enumerate(examples)]
  (metric,) = task.score_metric_fns
  assert metric(targets, scores) == pytest.approx(_metrics(name, chosen))


def test_a_label_map_relabels_examples_and_maps_predictions_back():
  """WNLI's classes are (not_entailment, entailment), RTE's (entailment, not_entailment):
  shown as RTE, a WNLI example of class c gets RTE's word for c, and a prediction comes back
  as WNLI's class."""
  rte, wnli = transfer.glue_task('rte'), transfer.glue_task('wnli')
  name = 'test_glue_wnli_from_rte'
  try:
    transfer.register_transfer(
        name, wnli, rte, mixture=f'{name}_zeroshot',
        label_map={'entailment': 'entailment', 'not_entailment': 'not_entailment'})
    shown = [(_text(ex, 'inputs'), _text(ex, 'targets'), int(ex['label']))
             for ex in _examples(name)]
    # WNLI gold [0,1,1] = not_entailment, entailment, entailment: RTE classes [1,0,0].
    assert shown == [('rte sentence1: A. sentence2: B.', 'not_entailment', 1),
                     ('rte sentence1: C. sentence2: D.', 'entailment', 0),
                     ('rte sentence1: E. sentence2: F.', 'entailment', 0)]
    assert _metrics(name, ['not_entailment', 'not_entailment', 'entailment']) == {
        'accuracy': pytest.approx(200 / 3)}
    # Predictions and targets come back as WNLI's classes (accuracy alone cannot tell).
    task = seqio.get_mixture_or_task(name)
    assert [task.postprocess_fn(word) for word in ('entailment', 'not_entailment', 'yes')] == [
        1, 0, -1]
  finally:
    for variant in (name, f'{name}_rank', f'taskless_{name}', f'taskless_{name}_rank'):
      seqio.TaskRegistry.remove(variant)
    for mixture in (f'{name}_zeroshot', f'taskless_{name}_zeroshot'):
      seqio.MixtureRegistry.remove(mixture)


@pytest.mark.parametrize('kwargs, message', [
    (dict(target='mrpc', source='sst2'), 'give the field_map'),
    (dict(target='mrpc', source='qqp', field_map={'question1': 'sentence1'}),
     'must fill each of'),
    (dict(target='mrpc', source='qqp', label_map={'duplicate': 'equivalent'}),
     'must map each of'),
    (dict(target='mrpc', source='qqp',
          label_map={'duplicate': 'equivalent', 'not_duplicate': 'equivalent'}),
     r"stands for \['not_equivalent'\]"),
    (dict(target='mnli', source='rte'), 'give the label_map'),
])
def test_maps_that_do_not_fit_are_refused(kwargs, message):
  target, source = transfer.glue_task(kwargs.pop('target')), transfer.glue_task(
      kwargs.pop('source'))
  with pytest.raises(ValueError, match=message):
    transfer.register_transfer('never_registered', target, source, mixture='never', **kwargs)
  assert 'never_registered' not in seqio.TaskRegistry.names()


def test_a_malformed_target_line_names_its_file_and_line(glue_dir, monkeypatch, tmp_path):
  (tmp_path / 'MRPC').mkdir()
  (tmp_path / 'MRPC' / 'dev.tsv').write_text(
      _tsv(_MRPC_HEADER, (1, 1, 2, 'a', 'b'), (1, 3, 4, 'c')), encoding='utf-8')
  monkeypatch.setenv('PTJ_GLUE_DIR', str(tmp_path))
  task = seqio.get_mixture_or_task('glue_mrpc_from_qqp_v002')
  with pytest.raises(sources.TaskDataError,
                     match=r'MRPC/dev.tsv:3: expected 5 tab-separated fields, found 4'):
    task.get_dataset(None, split='validation', shuffle=False)
  # The messages that name a task's files (an empty split, ...) name the target's.
  assert data.split_files('glue_mrpc_from_qqp_v002', 'validation') == [
      str(tmp_path / 'MRPC' / 'dev.tsv')]
