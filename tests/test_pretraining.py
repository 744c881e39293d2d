"""Pre-training: vocabulary training, span corruption, prefix LM, the seqio tasks."""
import gzip
import json

import gin
import numpy as np
import pytest
import seqio

from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import pretraining as pretraining_lib
from prompt_tuning_jax.errors import CheckpointError
from prompt_tuning_jax.tasks import pretraining
from prompt_tuning_jax.tasks import vocab as vocab_lib
from prompt_tuning_jax.tasks import word_vectors
from prompt_tuning_jax.tasks.sources import TaskDataError

SENTINELS = np.arange(999, 899, -1)  # <extra_id_0> = 999, <extra_id_1> = 998, ...
WORDS = ('alpha beta gamma delta epsilon zeta theta iota kappa lambda mu nu xi omicron pi rho '
         'sigma tau upsilon phi chi psi omega red green blue yellow purple orange black white '
         'river mountain forest desert ocean island valley canyon meadow glacier').split()


def _write_corpus(path, num_lines=400, seed=0):
  rng = np.random.RandomState(seed)
  lines = [' '.join(rng.choice(WORDS, rng.randint(5, 30))) + '.' for _ in range(num_lines)]
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'wt', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  return lines


@pytest.mark.parametrize('length', [20, 141, 500])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_span_corruption_counts_order_and_reconstruction(length, seed):
  tokens = np.arange(10, 10 + length)  # distinct, none a sentinel
  inputs, targets = pretraining.span_corruption(tokens, SENTINELS, np.random.default_rng(seed))
  in_sentinels = [t for t in inputs if t in SENTINELS]
  out_sentinels = [t for t in targets if t in SENTINELS]
  num_noise = len(targets) - len(out_sentinels)
  assert num_noise == round(length * 0.15)  # density 0.15
  assert len(in_sentinels) == round(num_noise / 3)  # mean span length 3
  # Sentinels in order <extra_id_0>, <extra_id_1>, ..., the same in inputs and targets.
  assert in_sentinels == out_sentinels == list(SENTINELS[:len(in_sentinels)])
  assert targets[0] == SENTINELS[0]  # the targets start with the first sentinel
  assert inputs[0] not in SENTINELS  # a kept span comes first
  # No two sentinels are adjacent in the inputs, nor in the targets (spans are non-empty).
  for seq in (inputs, targets):
    is_sentinel = np.isin(seq, SENTINELS)
    assert not np.any(is_sentinel[1:] & is_sentinel[:-1])
  assert pretraining.reconstruct(inputs, targets, SENTINELS) == tokens.tolist()


def test_span_lengths_average_three():
  rng = np.random.default_rng(0)
  lengths = []
  for _ in range(200):
    _, noise = pretraining.noise_span_lengths(141, rng)
    lengths.extend(noise)
  assert abs(np.mean(lengths) - 3.0) < 0.05  # 21 noise tokens in 7 spans each time
  assert min(lengths) >= 1


def test_random_segmentation_is_a_uniform_composition():
  rng = np.random.default_rng(0)
  firsts = [pretraining.random_segmentation(5, 2, rng)[0] for _ in range(4000)]
  # The 4 compositions of 5 into 2 positive parts are equally likely.
  counts = np.bincount(firsts, minlength=5)[1:]
  assert counts.min() > 900 and counts.max() < 1100


def test_span_corruption_raw_length_fits_the_inputs():
  for inputs_length in (32, 64, 128, 512):
    raw, targets_length = pretraining.span_corruption_raw_length(inputs_length)
    inputs, targets = pretraining.span_corruption(np.arange(10, 10 + raw), SENTINELS,
                                                  np.random.default_rng(0))
    assert len(inputs) + 1 == inputs_length  # + EOS: exactly full
    assert len(targets) + 1 == targets_length
  assert pretraining.span_corruption_raw_length(512) == (568, 114)  # T5's figures


def test_prefix_lm_split():
  rng = np.random.default_rng(0)
  tokens = np.arange(100)
  splits = []
  for _ in range(500):
    prefix, continuation = pretraining.prefix_lm(tokens, rng, max_inputs=60, max_targets=20)
    assert 1 <= len(prefix) <= 60 and 1 <= len(continuation) <= 20
    assert prefix.tolist() + continuation.tolist() == tokens[:len(prefix) + len(continuation)
                                                             ].tolist()
    splits.append(len(prefix))
  assert min(splits) <= 3 and max(splits) >= 58  # uniform over the whole range


@pytest.fixture(scope='module')
def tiny_vocab(tmp_path_factory):
  directory = tmp_path_factory.mktemp('vocab')
  _write_corpus(directory / 'corpus.txt.gz')
  path = str(directory / 'spiece.model')
  return vocab_lib.train_vocabulary([str(directory / 'corpus.txt.gz')], path, vocab_size=60), \
      directory


def test_train_vocabulary_follows_t5_conventions(tiny_vocab):
  vocab, _ = tiny_vocab
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.bos_id is None or vocab.bos_id < 0
  assert vocab.vocab_size == 60 + 100
  assert vocab.decode([vocab.vocab_size - 1]) == '<extra_id_0>'
  assert vocab.decode(vocab.encode('green river valley')) == 'green river valley'


def test_train_vocabulary_bad_input(tmp_path):
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n  \n')
  with pytest.raises(TaskDataError, match='no text'):
    vocab_lib.train_vocabulary([str(empty)], str(tmp_path / 'a.model'), vocab_size=50)
  binary = tmp_path / 'latin1.txt'
  binary.write_bytes(b'fine line\ncaf\xe9 au lait\n')
  with pytest.raises(TaskDataError, match=r'latin1.txt:2: not UTF-8'):
    vocab_lib.train_vocabulary([str(binary)], str(tmp_path / 'b.model'), vocab_size=50)
  small = tmp_path / 'small.txt'
  small.write_text('one two three\n')
  with pytest.raises(TaskDataError, match=r'cannot train a 8000-piece vocabulary .*Vocabulary size too high'):
    vocab_lib.train_vocabulary([str(small)], str(tmp_path / 'c.model'), vocab_size=8000)
  assert not (tmp_path / 'c.model').exists()
  existing = tmp_path / 'd.model'
  existing.write_bytes(b'keep me')
  with pytest.raises(TaskDataError, match='already exists'):
    vocab_lib.train_vocabulary([str(small)], str(existing), vocab_size=50)
  assert existing.read_bytes() == b'keep me'
  with pytest.raises(TaskDataError, match='not found'):
    vocab_lib.train_vocabulary([str(tmp_path / 'missing.txt')], str(tmp_path / 'e.model'))


def test_read_text_lines_field_of_tsv_and_jsonl(tmp_path):
  tsv = tmp_path / 'train.tsv'
  tsv.write_text('sentence\tlabel\nit is good \t1\nit is bad\t0\n')
  assert vocab_lib.read_text_lines(f'{tsv}::sentence') == ['it is good', 'it is bad']
  with pytest.raises(TaskDataError, match="no column 'text'"):
    vocab_lib.read_text_lines(f'{tsv}::text')
  jsonl = tmp_path / 'train.jsonl'
  jsonl.write_text('{"premise": "a cat", "label": 0}\n{"premise": "a dog"}\n')
  assert vocab_lib.read_text_lines(f'{jsonl}::premise') == ['a cat', 'a dog']
  bad = tmp_path / 'bad.tsv'
  bad.write_text('sentence\tlabel\nonly one cell\n')
  with pytest.raises(TaskDataError, match='bad.tsv:2: 1 columns'):
    vocab_lib.read_text_lines(f'{bad}::sentence')


def test_pretraining_tasks_end_to_end(tiny_vocab, restore_ptj_global_state):
  del restore_ptj_global_state
  vocab, directory = tiny_vocab
  lines = _write_corpus(directory / 'more.txt', num_lines=300, seed=1)
  gin.bind_parameter('get_vocabulary.path', str(directory / 'spiece.model'))
  gin.bind_parameter('pretraining_corpus.files', [str(directory / 'more.txt')])
  pretraining._shuffled_lines.cache_clear()  # pylint: disable=protected-access
  lengths = {'inputs': 64, 'targets': 16}
  sentinels = vocab.vocab_size - 1 - np.arange(100)
  task = seqio.get_mixture_or_task(pretraining.SPAN_CORRUPTION_TASK)
  examples = list(task.get_dataset(lengths, split='train', shuffle=False).take(20)
                  .as_numpy_iterator())
  raw, _ = pretraining.span_corruption_raw_length(64)
  text = ' '.join(lines)
  for ex in examples:
    assert len(ex['inputs']) == 64 and ex['inputs'][-1] == vocab.eos_id
    assert ex['targets'][-1] == vocab.eos_id and len(ex['targets']) <= 16
    original = pretraining.reconstruct(ex['inputs'][:-1], ex['targets'][:-1], sentinels)
    assert len(original) == raw
    assert vocab.decode(original).split()[1] in text  # real corpus text comes back
  # Held-out validation lines are not in train.
  train, validation = pretraining._shuffled_lines((str(directory / 'more.txt'),))  # pylint: disable=protected-access
  assert not set(train) & set(validation) and len(train) + len(validation) == 300
  # Deterministic under a seed.
  again = list(task.get_dataset(lengths, split='train', shuffle=True, seed=3).take(5)
               .as_numpy_iterator())
  twice = list(task.get_dataset(lengths, split='train', shuffle=True, seed=3).take(5)
               .as_numpy_iterator())
  assert all((a['inputs'] == b['inputs']).all() for a, b in zip(again, twice))
  lm = seqio.get_mixture_or_task(pretraining.PREFIX_LM_TASK)
  for ex in lm.get_dataset(lengths, split='train', shuffle=False).take(20).as_numpy_iterator():
    assert 2 <= len(ex['inputs']) <= 64 and ex['inputs'][-1] == vocab.eos_id
    assert len(ex['targets']) == 16 and ex['targets'][-1] == vocab.eos_id
    assert not np.isin(ex['inputs'], sentinels).any()


def test_missing_corpus_is_a_clear_error(restore_ptj_global_state, monkeypatch):
  del restore_ptj_global_state
  monkeypatch.delenv(pretraining.CORPUS_ENV, raising=False)
  with pytest.raises(TaskDataError, match='no pre-training corpus is set'):
    pretraining.pretraining_corpus()


def test_pretraining_through_the_trainer_then_export(tiny_vocab, tmp_path, capsys,
                                                     restore_ptj_global_state):
  """runs/pretrain.gin trains every weight from scratch; `ptj export` writes what trained."""
  del restore_ptj_global_state
  from prompt_tuning_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax import cli  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.checkpoints import train_state  # pylint: disable=import-outside-toplevel
  vocab, directory = tiny_vocab
  corpus = directory / 'pretrain.txt'
  if not corpus.exists():
    _write_corpus(corpus, num_lines=300, seed=2)
  pretraining._shuffled_lines.cache_clear()  # pylint: disable=protected-access
  model_dir = tmp_path / 'span'
  tiny = ['--gin.models.get_config.vocab_size=256', '--gin.models.get_config.emb_dim=16',
          '--gin.models.get_config.num_heads=2', '--gin.models.get_config.head_dim=8',
          '--gin.models.get_config.mlp_dim=32', '--gin.models.get_config.num_encoder_layers=1',
          '--gin.models.get_config.num_decoder_layers=1']
  rc = cli.main(['train', '--gin_file=models/t5_mini.gin', '--gin_file=runs/pretrain.gin',
                 *tiny, f'--gin.get_vocabulary.path={directory / "spiece.model"}',
                 f"--gin.pretraining_corpus.files=['{corpus}']",
                 "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 8}",
                 '--gin.INITIAL_CHECKPOINT_PATH=None', f'--gin.MODEL_DIR={model_dir}',
                 '--gin.BATCH_SIZE=4', '--gin.TRAIN_STEPS=3', '--gin.LOG_PERIOD=1'])
  assert rc == 0
  losses = [json.loads(line)['loss'] for line in open(model_dir / 'metrics.jsonl')]
  assert len(losses) == 3 and losses[-1] < losses[0]
  exported = str(tmp_path / 'span_t5x')
  export = ['export', f'--gin.MODEL_DIR={model_dir}', '--format', 't5x', '--output', exported]
  assert cli.main(export) == 0
  trained, step = train_state.TrainStateCheckpointer(str(model_dir), read_only=True
                                                     ).restore_trainable()
  loaded = checkpoints.flatten(checkpoints.load_t5x(exported))
  assert step == 3 and len(loaded) > 20  # every weight, not a prompt
  for path, value in checkpoints.flatten(trained).items():
    np.testing.assert_array_equal(loaded[path], np.asarray(value), err_msg=path)
  capsys.readouterr()
  assert cli.main(export) != 0
  assert 'already exists' in capsys.readouterr().err


def test_long_lines_are_cut_into_pieces_before_the_shuffle(tmp_path):
  """One huge line must not become hundreds of consecutive chunks (the corpus has such lines)."""
  words = [f'w{i}' for i in range(2 * pretraining.MAX_WORDS_PER_PIECE + 10)]
  corpus = tmp_path / 'long.txt'
  corpus.write_text('short line one\n' + ' '.join(words) + '\nshort line two\n')
  train, validation = pretraining._shuffled_lines((str(corpus),))  # pylint: disable=protected-access
  pieces = [p.split(' ') for p in [*train, *validation]]
  assert max(len(p) for p in pieces) == pretraining.MAX_WORDS_PER_PIECE
  assert len(pieces) == 5
  long_pieces = sorted((p for p in pieces if p[0].startswith('w')), key=lambda p: int(p[0][1:]))
  assert [w for p in long_pieces for w in p] == words  # nothing lost, nothing repeated


def _write_two_topic_corpus(path, num_lines=300, seed=0):
  """Lines drawn from one of two disjoint word groups (the first half of WORDS or the second)."""
  rng = np.random.RandomState(seed)
  groups = (WORDS[:len(WORDS) // 2], WORDS[len(WORDS) // 2:])
  with open(path, 'w', encoding='utf-8') as f:
    for _ in range(num_lines):
      f.write(' '.join(rng.choice(groups[rng.randint(2)], 12)) + '\n')
  return groups


@pytest.fixture(scope='module')
def two_topics(tmp_path_factory):
  """(corpus path, vocabulary path, vocabulary, word groups) of a two-topic corpus."""
  directory = tmp_path_factory.mktemp('topics')
  corpus, vocab_path = str(directory / 'topics.txt'), str(directory / 'spiece.model')
  groups = _write_two_topic_corpus(corpus)
  vocabulary = vocab_lib.train_vocabulary([corpus], vocab_path, vocab_size=60)
  return corpus, vocab_path, vocabulary, groups


def test_word_vectors_put_co_occurring_pieces_together(two_topics):
  corpus, vocab_path, vocabulary, groups = two_topics
  vectors = word_vectors.train_word_vectors([corpus], vocab_path, dim=8)
  assert vectors.shape == (vocabulary.vocab_size, 8) and vectors.dtype == np.float32
  # Pieces that never occur in a line with a neighbour: zero rows (EOS, the extra ids).
  assert not vectors[1].any() and not vectors[-1].any()
  unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)

  def ids(words):  # the words that are one piece of their own
    return [p[0] for p in (vocabulary.encode(w) for w in words) if len(p) == 1]
  first, second = ids(groups[0]), ids(groups[1])
  assert len(first) >= 5 and len(second) >= 5
  within = np.mean([unit[a] @ unit[b] for g in (first, second) for a in g for b in g if a != b])
  across = np.mean([unit[a] @ unit[b] for a in first for b in second])
  assert within > across + 0.5, (within, across)


def test_word_vectors_bad_input(two_topics, tmp_path):
  corpus, vocab_path, _, groups = two_topics
  with pytest.raises(TaskDataError, match='2 weights for 1 corpus files'):
    word_vectors.train_word_vectors([corpus], vocab_path, dim=8, weights=[1, 2])
  with pytest.raises(TaskDataError, match='too few for 500-dimensional'):
    word_vectors.train_word_vectors([corpus], vocab_path, dim=500)
  (tmp_path / 'one.txt').write_text(f'{groups[0][0]}\n')
  with pytest.raises(TaskDataError, match='distinct pieces with a neighbour'):
    word_vectors.train_word_vectors([str(tmp_path / 'one.txt')], vocab_path, dim=8)


def test_initial_checkpoint_with_word_vectors(tmp_path):
  rng = np.random.RandomState(0)
  vectors = rng.standard_normal((50, 4)).astype(np.float32) * 0.01
  vectors[7] = 0.0  # a piece the corpus never showed: keeps its random row
  path = pretraining_lib.initial_checkpoint('t5_1_1_tiny', str(tmp_path / 'init'),
                                            word_vectors=vectors, seed=3)
  table = checkpoints.load_t5x(path)['token_embedder']['embedding']
  random_table = checkpoints.load_t5x(pretraining_lib.initial_checkpoint(
      't5_1_1_tiny', str(tmp_path / 'random'), seed=3))['token_embedder']['embedding']
  rows = np.flatnonzero(np.arange(50) != 7)
  scale = table[0, 0] / vectors[0, 0]
  np.testing.assert_allclose(table[rows], vectors[rows] * scale, rtol=1e-5)
  np.testing.assert_allclose(np.sqrt(np.mean(table[rows] ** 2)),
                             np.sqrt(np.mean(random_table ** 2)), rtol=1e-5)
  np.testing.assert_array_equal(table[7], random_table[7])
  np.testing.assert_array_equal(table[50:], random_table[50:])
  with pytest.raises(CheckpointError, match='already exists'):
    pretraining_lib.initial_checkpoint('t5_1_1_tiny', path, word_vectors=vectors)
  with pytest.raises(CheckpointError, match="do not fit the model's embedding"):
    pretraining_lib.initial_checkpoint('t5_1_1_tiny', str(tmp_path / 'wide'),
                                       word_vectors=np.ones((50, 5)))
  assert not (tmp_path / 'wide').exists()
