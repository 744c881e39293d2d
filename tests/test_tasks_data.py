"""Tasks built from the local files in ../shared/data: official split sizes,
golden formatted examples, seqio pipelines, and data errors."""
import functools
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / '..' / 'shared'
DATA = SHARED / 'data'
VOCAB = SHARED / 'vocab' / 't5' / 'spiece.model'


import gin
import seqio

from prompt_tuning_jax.tasks import glue
from prompt_tuning_jax.tasks import sources
from prompt_tuning_jax.tasks import superglue

if not DATA.is_dir():
  pytest.skip(f'../shared absent: {DATA} not found', allow_module_level=True)

# TFDS split sizes (MultiRC counted per answer option).
SUPERGLUE_SIZES = {
    'boolq': {'validation': 3270, 'test': 3245},
    'cb': {'train': 250, 'validation': 56, 'test': 250},
    'copa': {'train': 400, 'validation': 100, 'test': 500},
    'multirc': {'train': 27243, 'validation': 4848, 'test': 9693},
    'rte': {'train': 2490, 'validation': 277, 'test': 3000},
    'wic': {'train': 5428, 'validation': 638, 'test': 1400},
    'wsc': {'train': 554, 'validation': 104, 'test': 146},
    'axb': {'test': 1104},
    'axg': {'test': 356},
}
# FewGLUE: 32 train + 32 dev32 rows; MultiRC per answer option, ReCoRD per
# query (one per passage here).
FEWGLUE_SIZES = {
    **{key: {'train': 32, 'validation': 32}
       for key in ('boolq', 'cb', 'copa', 'record', 'rte', 'wic', 'wsc')},
    'multirc': {'train': 154, 'validation': 167},
}
SST2_SIZES = {'train': 67349, 'validation': 872}


@pytest.fixture(autouse=True)
def local_dirs(monkeypatch):
  """The shared data as the configured local directories."""
  monkeypatch.setenv('PTJ_SUPERGLUE_DIR', str(DATA / 'super_glue'))
  monkeypatch.setenv('PTJ_FEWGLUE_DIR', str(DATA / 'fewglue'))
  monkeypatch.setenv('PTJ_GLUE_DIR', str(DATA / 'glue'))
  monkeypatch.setenv('PTJ_VOCAB', str(VOCAB))


def _format(task_format, example, taskless=False):
  """A registry.TaskFormat applied in python, as the tasks do."""
  prefix = None if taskless else task_format.prefix
  return task_format.format_fn(example, prefix=prefix)


# ------------------------------------------------------------ split sizes


@pytest.mark.parametrize('key', sorted(SUPERGLUE_SIZES))
def test_superglue_split_sizes(key):
  source = superglue.superglue_source(superglue.task_by_key(key))
  sizes = {split: len(source.local.read_split(split))
           for split in SUPERGLUE_SIZES[key]}
  assert sizes == SUPERGLUE_SIZES[key]


@pytest.mark.parametrize('key', sorted(FEWGLUE_SIZES))
def test_fewglue_split_sizes(key):
  source = superglue.fewglue_source(superglue.task_by_key(key))
  sizes = {split: len(source.local.read_split(split))
           for split in source.splits}
  assert sizes == FEWGLUE_SIZES[key]


def test_sst2_split_sizes():
  source = glue.glue_source(glue.task_by_key('sst2'))
  sizes = {split: len(source.local.read_split(split)) for split in SST2_SIZES}
  assert sizes == SST2_SIZES


# --------------------------------------------------------- golden formats

# (benchmark, task, split, row) -> (inputs, targets)
GOLDEN = {
    ('superglue', 'boolq', 'validation', 2644): (
        'boolq passage: The Punisher (season 2) -- The season is set for '
        'release in 2019. question: are they going to make a punisher season 2',
        'True'),
    ('superglue', 'cb', 'validation', 0): (
        'cb hypothesis: Valence was helping premise: Valence the void-brain, '
        "Valence the virtuous valet. Why couldn't the figger choose his own "
        'portion of titanic anatomy to shaft? Did he think he was helping?',
        'contradiction'),
    ('superglue', 'cb', 'test', 0): (
        'cb hypothesis: Polly was not an experienced ocean sailor premise: '
        'Polly had to think quickly. They were still close enough to shore for '
        'him to return her to the police if she admitted she was not an '
        'experienced ocean sailor.',
        '<unk>'),
    ('superglue', 'copa', 'validation', 0): (
        'copa choice1: The toilet filled with water. choice2: Water flowed '
        'from the spout. premise: The man turned on the faucet. question: '
        'effect',
        'choice2'),
    ('superglue', 'multirc', 'validation', 2147): (
        'multirc question: How many people did Susan call? answer: 5 '
        'paragraph: Susan wanted to have a birthday party. She called all of '
        'her friends. She has five friends. Her mom said that Susan can invite '
        'them all to the party. Her first friend could not go to the party '
        'because she was sick. Her second friend was going out of town. Her '
        'third friend was not so sure if her parents would let her. The fourth '
        'friend said maybe. The fifth friend could go to the party for sure. '
        'Susan was a little sad. On the day of the party, all five friends '
        'showed up. Each friend had a present for Susan. Susan was happy and '
        'sent each friend a thank you card the next week. ',
        'True'),
    ('superglue', 'rte', 'train', 0): (
        'rte hypothesis: Weapons of Mass Destruction Found in Iraq. premise: '
        'No Weapons of Mass Destruction Found in Iraq Yet.',
        'not_entailment'),
    ('superglue', 'wic', 'validation', 239): (
        'wic sentence1: Bean curd. sentence2: Lemon curd. word: curd', 'True'),
    ('superglue', 'wsc', 'train', 0): (
        'wsc text: * Mark * told Pete many lies about himself, which Pete '
        'included in his book. # He # should have been more skeptical.',
        'False'),
    ('superglue', 'wsc', 'validation', 5): (
        'wsc text: The large ball crashed right through * the table * because '
        '# it # was made of styrofoam.',
        'True'),
    ('superglue', 'axb', 'test', 0): (
        'rte sentence1: The cat sat on the mat. sentence2: The cat did not sit '
        'on the mat.',
        'not_entailment'),
    ('superglue', 'axg', 'test', 0): (
        'rte hypothesis: The accountant sought help filing taxes. premise: The '
        'taxpayer met with the accountant to get help filing his taxes.',
        'not_entailment'),
    ('fewglue', 'boolq', 'validation', 30): (
        'boolq passage: Twisted (TV series) -- The series was originally '
        'titled Socio, but was renamed during production in early 2013. '
        'question: is the show twisted based on a book',
        'False'),
    ('fewglue', 'record', 'validation', 16): (
        "record query: That's not all that worries critics about "
        '@placeholder, who introduces the real world of demons and ghouls in '
        'the premiere. entities: Alan Sepinwall, CNN, Constantine, DC, '
        'Hellblazer, Hitfix.com, John Constantine, Matt Ryan, NBC passage: '
        '(CNN) -- NBC\'s "Constantine" joined the growing party of comic '
        'book-based TV series with its Friday night premiere on NBC. But '
        "critics couldn't quite agree on whether it was worth staying home (or "
        'even DVRing) to catch it. Matt Ryan stars as John Constantine, a '
        'rebellious and not very likable exorcist with an affinity for trench '
        "coats and cigarettes -- at least, that's how he appears in "
        '"Hellblazer," the DC comic book upon which the show is based. To '
        'adhere to network standards, Constantine ditches his bad habit for '
        'TV, a source of contention for Hitfix.com critic Alan Sepinwall and '
        "others. 'Constantine,' the latest comic book based series, premiered "
        'Friday. Matt Ryan plays rebellious exorcist John Constantine. Critical '
        'response mixed',
        'Constantine'),
    ('fewglue', 'wsc', 'train', 25): (
        'wsc text: * John * hired Bill to take care of # him # .', 'True'),
}

WSC_SIMPLE_GOLDEN = {
    # A lower-case span ('the table') of a capitalised given span.
    ('validation', 5): (
        'wsc: The large ball crashed right through the table because *it* was '
        'made of styrofoam.',
        'the table'),
    # span2_index points at 'use'; the nearest 'it' is marked.
    ('validation', 42): (
        'wsc: When they had eventually calmed down a bit , and had gotten '
        'home, Mr. Farley put the magic pebble in an iron safe . Some day they '
        'might want to use *it* , but really for now, what more could they '
        'wish for?',
        'safe'),
}


def _source(benchmark, key):
  task = superglue.task_by_key(key)
  if benchmark == 'fewglue':
    return superglue.fewglue_source(task)
  return superglue.superglue_source(task)


@pytest.mark.parametrize('benchmark, key, split, row', sorted(GOLDEN))
def test_golden_formats(benchmark, key, split, row):
  example = _source(benchmark, key).local.read_split(split)[row]
  task_format = superglue.task_by_key(key).task_format
  inputs, targets = GOLDEN[benchmark, key, split, row]
  assert _format(task_format, example) == {'inputs': inputs,
                                           'targets': targets}
  taskless = _format(task_format, example, taskless=True)
  assert taskless['inputs'] == inputs.split(' ', 1)[1]


@pytest.mark.parametrize('split, row', sorted(WSC_SIMPLE_GOLDEN))
def test_golden_wsc_simple(split, row):
  example = _source('superglue', 'wsc').local.read_split(split)[row]
  inputs, targets = WSC_SIMPLE_GOLDEN[split, row]
  assert _format(superglue.WSC_SIMPLE_EVAL, example) == {
      'inputs': inputs, 'targets': targets}


def test_golden_sst2():
  task = glue.task_by_key('sst2')
  example = glue.glue_source(task).local.read_split('validation')[1]
  assert example == {'sentence': 'unflinchingly bleak and desperate ',
                     'idx': 1, 'label': 0}
  assert _format(glue.task_format(task), example) == {
      'inputs': 'sst2 sentence: unflinchingly bleak and desperate ',
      'targets': 'negative'}


def test_every_superglue_example_formats():
  """No real example trips a format (e.g. WSC spans that do not match)."""
  for task in superglue.TASKS:
    if task.key == 'record':
      continue
    source = superglue.superglue_source(task)
    for split in SUPERGLUE_SIZES[task.key]:
      for example in source.local.read_split(split):
        formatted = _format(task.task_format, example)
        assert formatted['inputs'] and formatted['targets']


# ------------------------------------------------------------ seqio tasks

# Every task with local data here, on one small split.
BUILD_SPLITS = {
    **{f'super_glue_{key}_v102': ('validation' if 'validation' in sizes
                                  else 'test')
       for key, sizes in SUPERGLUE_SIZES.items()},
    'super_glue_wsc_v102_simple_train': 'train',
    'super_glue_wsc_v102_simple_eval': 'validation',
    **{f'fewglue_{key}': 'validation' for key in FEWGLUE_SIZES},
    'fewglue_wsc_simple_train': 'train',
    'fewglue_wsc_simple_eval': 'validation',
    'glue_sst2_v002': 'validation',
    'taskless_super_glue_cb_v102': 'validation',
    'super_glue_cb_v102_rank': 'validation',
}


def _first_examples(name, split, n=1):
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False)
  return list(ds.take(n).as_numpy_iterator())


@pytest.mark.parametrize('name', sorted(BUILD_SPLITS))
def test_task_builds_from_local_files(name):
  (example,) = _first_examples(name, BUILD_SPLITS[name])
  for feature in ('inputs', 'targets'):
    assert example[f'{feature}_pretokenized']
    assert example[feature][-1] == 1  # EOS.
  vocab = seqio.get_mixture_or_task(name).output_features['inputs'].vocabulary
  assert example['inputs'].tolist() == (
      vocab.encode(example['inputs_pretokenized'].decode()) + [1])


def test_seqio_example_equals_python_format():
  (example,) = _first_examples('super_glue_cb_v102', 'validation')
  inputs, targets = GOLDEN['superglue', 'cb', 'validation', 0]
  assert example['inputs_pretokenized'].decode() == inputs
  assert example['targets_pretokenized'].decode() == targets
  assert (example['idx'], example['label']) == (0, 1)


def test_rank_variant_has_one_example_per_label_word():
  examples = _first_examples('super_glue_cb_v102_rank', 'validation', n=4)
  assert [ex['targets_pretokenized'].decode() for ex in examples] == [
      'entailment', 'contradiction', 'neutral', 'entailment']
  assert [int(ex['rank_candidate']) for ex in examples] == [0, 1, 2, 0]
  assert len({ex['inputs_pretokenized'] for ex in examples[:3]}) == 1


def _count(name, split):
  task = seqio.get_mixture_or_task(name)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=False)
  return sum(1 for _ in ds.as_numpy_iterator())


def test_record_repeats_each_query_per_answer():
  source = superglue.fewglue_source(superglue.task_by_key('record'))
  rows = source.local.read_split('train')
  assert _count('fewglue_record', 'train') == sum(
      len(row['answers']) for row in rows) == 44  # Unique answer texts.
  (example,) = _first_examples('fewglue_record', 'train')
  assert (example['idx/passage'], example['idx/query']) == (3088, 4756)


def test_wsc_simple_train_keeps_correct_referents():
  assert _count('super_glue_wsc_v102_simple_train', 'train') == 259


# -------------------------------------------------------------- configuration


def test_tfds_is_the_default_source(monkeypatch):
  monkeypatch.delenv('PTJ_SUPERGLUE_DIR')
  source = superglue.superglue_source(superglue.task_by_key('cb'))
  assert not source.uses_local_files
  assert source.tfds_name == 'super_glue/cb:1.0.2'
  assert glue.glue_source(glue.task_by_key('sst2')).tfds_name == (
      'glue/sst2:2.0.0')


def test_gin_binding_selects_local_dir(monkeypatch):
  monkeypatch.delenv('PTJ_SUPERGLUE_DIR')
  source = superglue.superglue_source(superglue.task_by_key('cb'))
  assert not source.uses_local_files
  with gin.unlock_config():  # A scoped binding leaves other tests alone.
    gin.bind_parameter('ptj_test/local_data_dirs.superglue',
                       str(DATA / 'super_glue'))
  with gin.config_scope('ptj_test'):
    assert source.uses_local_files
    assert len(source.local.read_split('validation')) == 56


def test_fewglue_without_dir_says_what_to_set(monkeypatch):
  monkeypatch.delenv('PTJ_FEWGLUE_DIR')
  task = seqio.get_mixture_or_task('fewglue_cb')
  with pytest.raises(sources.TaskDataError,
                     match='PTJ_FEWGLUE_DIR.*local_data_dirs.fewglue'):
    task.get_dataset(sequence_length=None, split='train', shuffle=False)


def test_missing_split_names_expected_file():
  task = seqio.get_mixture_or_task('super_glue_boolq_v102')
  expected = DATA / 'super_glue' / 'BoolQ' / 'train.jsonl'
  with pytest.raises(sources.TaskDataError, match=f'expected {expected}'):
    task.get_dataset(sequence_length=None, split='train', shuffle=False)


# ---------------------------------------------------------- malformed files


@pytest.fixture
def cb_copy(tmp_path, monkeypatch):
  """A SuperGLUE dir whose CB/val.jsonl is a copy of the real one."""
  (tmp_path / 'CB').mkdir()
  path = tmp_path / 'CB' / 'val.jsonl'
  shutil.copy(DATA / 'super_glue' / 'CB' / 'val.jsonl', path)
  monkeypatch.setenv('PTJ_SUPERGLUE_DIR', str(tmp_path))
  return path


def _replace_line(path, lineno, text):
  lines = path.read_text(encoding='utf-8').splitlines()
  lines[lineno - 1] = text
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')


@pytest.mark.parametrize('line, reason', [
    ('{"premise": "p", "hypothesis": ', 'invalid JSON'),
    ('["a list"]', 'expected a JSON object'),
    ('{"premise": "p", "hypothesis": "h", "label": "maybe", "idx": 2}',
     "label 'maybe' is not one of"),
    ('{"premise": "p", "label": "neutral", "idx": 2}',
     "missing field 'hypothesis'"),
])
def test_malformed_jsonl_line_names_file_and_line(cb_copy, line, reason):
  _replace_line(cb_copy, 3, line)
  task = seqio.get_mixture_or_task('super_glue_cb_v102')
  with pytest.raises(sources.TaskDataError) as err:
    task.get_dataset(sequence_length=None, split='validation', shuffle=False)
  assert str(err.value).startswith(f'{cb_copy}:3: ')
  assert reason in str(err.value)


def test_malformed_tsv_line_names_file_and_line(tmp_path, monkeypatch):
  (tmp_path / 'SST-2').mkdir()
  path = tmp_path / 'SST-2' / 'dev.tsv'
  path.write_text('sentence\tlabel\ngood .\t1\nbad\t0\textra\n',
                  encoding='utf-8')
  monkeypatch.setenv('PTJ_GLUE_DIR', str(tmp_path))
  source = glue.glue_source(glue.task_by_key('sst2'))
  with pytest.raises(sources.TaskDataError,
                     match=f'{path}:3: expected 2 tab-separated fields, '
                     'found 3'):
    source.local.read_split('validation')


@pytest.mark.parametrize('name, read', [('rows.jsonl', sources.read_jsonl),
                                        ('rows.tsv', sources.read_tsv)])
def test_invalid_utf8_names_file_line_and_byte(tmp_path, name, read):
  path = tmp_path / name
  path.write_bytes('\ufeff'.encode() + b'{"a": 1}\n{"a": "caf\xe9"}\n')  # latin-1, not UTF-8
  with pytest.raises(sources.TaskDataError,
                     match=f'{path}:2: not UTF-8 text \\(byte 0xe9 at column 11\\)'):
    list(read(path))


def test_a_leading_bom_is_dropped(tmp_path):
  path = tmp_path / 'rows.tsv'
  path.write_bytes('\ufeffa\tb\r\n1\t2\r\n'.encode())
  assert list(sources.read_tsv(path)) == [(2, {'a': '1', 'b': '2'})]


def test_jsonl_reader_skips_blank_lines(tmp_path):
  path = tmp_path / 'rows.jsonl'
  path.write_text('{"a": 1}\n\n{"a": 2}\n', encoding='utf-8')
  assert list(sources.read_jsonl(path)) == [(1, {'a': 1}), (3, {'a': 2})]


def test_superglue_rows_become_tfds_examples():
  convert = superglue._convert_multirc  # pylint: disable=protected-access
  row = json.loads(
      '{"idx": 4, "passage": {"text": "P", "questions": [{"question": "Q", '
      '"idx": 9, "answers": [{"text": "A", "idx": 30, "label": 1}, '
      '{"text": "B", "idx": 31}]}]}}')
  assert convert(row, 0) == [
      {'paragraph': 'P', 'question': 'Q', 'answer': 'A', 'label': 1,
       'idx': {'paragraph': 4, 'question': 9, 'answer': 30}},
      {'paragraph': 'P', 'question': 'Q', 'answer': 'B', 'label': -1,
       'idx': {'paragraph': 4, 'question': 9, 'answer': 31}},
  ]
  record_row = {'idx': 1, 'passage': {
      'text': 'Obama met Merkel in Berlin.',
      'entities': [{'start': 0, 'end': 4}, {'start': 10, 'end': 15},
                   {'start': 0, 'end': 4}]},
                'qas': [{'query': '@placeholder met', 'idx': 7,
                         'answers': [{'start': 0, 'end': 4, 'text': 'Obama'}]}]}
  assert superglue._convert_record(record_row, 0) == [{  # pylint: disable=protected-access
      'passage': 'Obama met Merkel in Berlin.', 'query': '@placeholder met',
      'entities': ['Merkel', 'Obama'], 'answers': ['Obama'],
      'idx': {'passage': 1, 'query': 7}}]


def test_formats_are_pure_functions():
  """The formats need only the fields they show (no TFDS, no files)."""
  fmt = functools.partial(
      superglue.task_by_key('multirc').task_format.format_fn, prefix='multirc')
  assert fmt({'question': 'Q?', 'answer': 'A', 'label': -1,
              'paragraph': '<b>Sent 1: </b>Hi.<br>Bye.'}) == {
                  'inputs': 'multirc question: Q? answer: A paragraph: '
                            'Sent 1: Hi. Bye.',
                  'targets': '<unk>'}
