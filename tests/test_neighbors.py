"""Prompt interpretation (`ptj neighbors`), and the analysis commands on a smoke run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import shared_path
from prompt_tuning_jax import checkpoints
from prompt_tuning_jax import config
from prompt_tuning_jax import infer
from prompt_tuning_jax import inference
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import scoring
from prompt_tuning_jax.analysis import neighbors
from prompt_tuning_jax.many_prompts import ensemble
from prompt_tuning_jax.tasks import smoke

V, H = 32128, 768  # a T5 Base embedding table's shape


@pytest.fixture(scope='module')
def table() -> np.ndarray:
  """A random stand-in for the T5.1.1 Base table (the real one is not available offline)."""
  return (0.5 * np.random.default_rng(1234).standard_normal((V, H))).astype(np.float32)


@pytest.fixture(scope='module')
def t5_pieces() -> neighbors.PieceVocabulary:
  return neighbors.PieceVocabulary(str(shared_path('vocab', 't5', 'spiece.model')))


def test_nearest_neighbors_match_brute_force():
  rng = np.random.default_rng(0)
  table = rng.standard_normal((1000, 16)).astype(np.float32)
  queries = rng.standard_normal((7, 16)).astype(np.float32)
  queries[3] = 0.0  # a zero row: cosine 0 with everything
  sims, ids = neighbors.nearest_neighbors(queries, table, top_k=4, chunk_size=96)
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  cos = unit(queries) @ unit(table).T
  want = np.argsort(-cos, axis=1, kind='stable')[:, :4]
  for row in (0, 1, 2, 4, 5, 6):
    np.testing.assert_array_equal(ids[row], want[row])
  np.testing.assert_allclose(sims, np.take_along_axis(cos, ids, 1), atol=1e-5)
  np.testing.assert_array_equal(sims[3], 0.0)
  # max_id leaves rows out.
  _, ids = neighbors.nearest_neighbors(queries, table, top_k=4, max_id=100)
  assert ids.max() < 100
  with pytest.raises(ValueError, match='share H'):
    neighbors.nearest_neighbors(queries, table[:, :8])


def test_random_baseline_has_the_prompt_norms():
  prompt = np.random.default_rng(0).standard_normal((10, 32)).astype(np.float32) * 7
  baseline = neighbors.random_like(prompt, seed=3)
  np.testing.assert_allclose(np.linalg.norm(baseline, axis=1), np.linalg.norm(prompt, axis=1),
                             rtol=1e-5)
  assert not np.allclose(baseline, prompt)


def test_released_sst2_prompt_against_a_base_shaped_table(table, t5_pieces, tmp_path):
  prompt = checkpoints.load_prompt(str(shared_path('prompts', 'original_release', 'sst2.npy')))
  assert prompt.shape == (100, H)
  # Plant two neighbours: row 5 is the embedding of "▁positive", row 9 a scaled "▁negative".
  positive, negative = t5_pieces.encode('positive')[0], t5_pieces.encode('negative')[0]
  prompt = prompt.copy()
  prompt[5] = table[positive]
  prompt[9] = 3.0 * table[negative]
  report = neighbors.analyze(prompt, table, vocabulary=t5_pieces, labels=['positive', 'negative'],
                             top_k=5, source='sst2.npy (planted rows 5, 9)')
  assert report.sims.shape == (100, 5) and report.ids.shape == (100, 5)
  assert report.rows_searched == 32100  # the 32,000 pieces + 100 extra ids; not the padding rows
  assert np.all(report.sims <= 1.0) and np.all(report.sims >= -1.0)
  assert np.all(np.diff(report.sims, axis=1) <= 1e-6)  # descending
  assert report.ids[5, 0] == positive and report.sims[5, 0] == pytest.approx(1.0, abs=1e-5)
  assert report.ids[9, 0] == negative and report.sims[9, 0] == pytest.approx(1.0, abs=1e-5)
  assert report.pieces[5][0] == '\u2581positive' and report.pieces[9][0] == '\u2581negative'
  assert report.hits[5] == ['positive'] and report.hits[9] == ['negative']
  summary = report.summary()
  assert summary['label_share'] >= 0.02 and summary['random_label_share'] == 0.0
  assert summary['mean_top1_cosine'] > summary['random_mean_top1_cosine']  # the planted rows

  paths = neighbors.write_report(report, str(tmp_path))
  text = open(paths['txt'], encoding='utf-8').read()
  assert '\u2581positive 1.000' in text and 'rows with a label in top-k' in text
  assert open(paths['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  saved = json.load(open(paths['json'], encoding='utf-8'))
  assert len(saved['rows']) == 100 and saved['rows'][5]['labels'] == ['positive']


def test_neighbors_command(table, tmp_path, capsys):
  np.save(tmp_path / 'table.npy', table)
  prompt = str(shared_path('prompts', 'original_release', 'sst2.npy'))
  status = neighbors.main([
      '--prompt', prompt, '--embedding_npy', str(tmp_path / 'table.npy'),
      '--vocab', str(shared_path('vocab', 't5', 'spiece.model')), '--labels', 'positive,negative',
      '--top_k', '3', '--output_dir', str(tmp_path / 'out')])
  assert status == 0
  assert 'mean top-1 cosine' in capsys.readouterr().out
  assert {p.name for p in (tmp_path / 'out').iterdir()} == {
      'neighbors.txt', 'neighbors.png', 'neighbors.json'}
  # A width mismatch is one clear line, not a traceback.
  narrow = str(shared_path('prompts', 'prompt_5x256.npy'))
  assert neighbors.main(['--prompt', narrow, '--embedding_npy',
                                  str(tmp_path / 'table.npy'), '--vocab', 'none',
                                  '--output_dir', str(tmp_path / 'x')]) == 1
  assert 'their widths differ' in capsys.readouterr().err


def test_embedding_only_reader_on_a_real_t5x_checkpoint():
  path = str(shared_path('checkpoints', 't5x_t5_1_1_tiny', 'checkpoint_3'))
  table = neighbors.load_t5x_embedding(path)
  full = checkpoints.load_t5x(path)
  np.testing.assert_array_equal(table, full['token_embedder']['embedding'])
  assert table.shape == (32128, 4)
  np.testing.assert_array_equal(neighbors.load_t5x_embedding(path + '/checkpoint'), table)


# ------------------------------------------------------------ the commands on a smoke run

SMOKE_STEPS = 10


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """A short smoke run (`ptj train --gin_file=runs/smoke.gin`, 10 steps): its dir and prompts."""
  from prompt_tuning_jax import cli
  model_dir = tmp_path_factory.mktemp('smoke')
  status = cli.main(['train', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}',
                     f'--gin.TRAIN_STEPS={SMOKE_STEPS}', '--gin.CHECKPOINT_PERIOD=5',
                     '--gin.EVAL_PERIOD=None', '--gin.LOG_PERIOD=5'])
  assert status == 0
  prompts = {step: model_dir / 'numpy_checkpoints' / f'checkpoint_{step}' /
             'encoder.prompt.prompt.prompt' for step in (5, SMOKE_STEPS)}
  assert all(p.exists() for p in prompts.values())
  return model_dir, prompts


@pytest.mark.slow
def test_neighbors_of_a_smoke_trained_prompt(smoke_run, tmp_path):
  model_dir, prompts = smoke_run
  out = tmp_path / 'neighbors'
  assert neighbors.main([
      '--prompt', str(prompts[SMOKE_STEPS]), '--model_dir', str(model_dir),
      '--vocab', 'byte', '--top_k', '3', '--output_dir', str(out)]) == 0
  assert (out / 'neighbors.png').read_bytes()[:4] == b'\x89PNG'
  saved = json.loads((out / 'neighbors.json').read_text(encoding='utf-8'))
  assert saved['summary']['prompt_shape'] == [10, 64]
  assert saved['summary']['rows_searched'] == 259  # the byte vocabulary, not the padding rows
  byte_pieces = set(neighbors.SeqioPieces(__import__('seqio').ByteVocabulary()).pieces)
  for row in saved['rows']:
    assert all(0 <= i < 259 for i in row['ids'])
    assert all(p in byte_pieces for p in row['pieces'])
    assert all(-1.0 <= c <= 1.0 for c in row['cosines'])
  assert 'neighbours (piece cosine)' in (out / 'neighbors.txt').read_text(encoding='utf-8')


@pytest.mark.slow
def test_ensemble_and_mixed_infer_commands_on_a_smoke_run(smoke_run, tmp_path, capsys):
  model_dir, prompts = smoke_run
  members = [f'early={prompts[5]}', f'late={prompts[SMOKE_STEPS]}']
  output = tmp_path / 'ensemble.json'
  assert ensemble.main(
      [arg for m in members for arg in ('--prompt', m)] +
      ['--output', str(output), f'--gin.MODEL_DIR={model_dir}', '--gin.NUM_EVAL_EXAMPLES=24',
       '--gin.EVAL_BATCH_SIZE=8']) == 0
  result = json.loads(output.read_text())
  assert result['num_examples'] == 24 and result['method'] == 'rank_classification'
  assert set(result['metrics']) == {'member/early', 'member/late', 'members_mean',
                                    'ensemble/vote', 'ensemble/average'}
  # Each member alone, scored here one prompt at a time: the report's numbers follow.
  run = config.configure('eval', [], [f'MODEL_DIR = {str(model_dir)!r}']).settings
  s = run_setup.setup(run)
  frozen = run_setup.frozen_params_without_prompt(s)
  examples, _ = inference.examples_from_task(run.data.mixture_or_task_name, run.evaluation.split,
                                             s.lengths, 24)
  targets = [ex.extra['target'] for ex in examples]
  label_ids = scoring.encode_labels(s.vocabularies['targets'], smoke.LABELS)
  ((_, tokens),) = inference.padded_batches(examples, 24, s.lengths['inputs'])
  member_scores = {}
  for name, step in [('early', 5), ('late', SMOKE_STEPS)]:
    params = {**frozen, 'encoder': {**frozen['encoder'], 'prompt': {'prompt': {
        'prompt': checkpoints.load_prompt(str(prompts[step]))}}}}
    member_scores[name] = np.asarray(scoring.jit_rank_classify(run.model, params, tokens,
                                                               label_ids)[1])
  accuracy = lambda scores: smoke.accuracy(targets, [smoke.LABELS[i] for i in scores.argmax(-1)])
  metrics = result['metrics']
  for name, scores in member_scores.items():
    assert metrics[f'member/{name}'] == pytest.approx(accuracy(scores))
  assert metrics['members_mean']['accuracy'] == pytest.approx(
      np.mean([accuracy(scores)['accuracy'] for scores in member_scores.values()]))
  assert metrics['ensemble/average'] == pytest.approx(
      accuracy(member_scores['early'] + member_scores['late']))
  assert metrics['ensemble/vote'] == metrics['member/early']  # 2 members: a 1-1 tie -> the first
  assert 'ensemble/vote' in capsys.readouterr().out

  lines = [{'prompt': 'early', 'inputs': 'review: the soup was awful', 'id': 7},
           {'task': 'late', 'inputs': 'review: the film was great'},
           {'prompt': 'late', 'inputs': 'review: the room was dirty'}]
  input_file = tmp_path / 'mixed.jsonl'
  input_file.write_text(''.join(json.dumps(line) + '\n' for line in lines))
  out_file = tmp_path / 'predictions.jsonl'
  assert infer.main(
      [arg for m in members for arg in ('--prompt', m)] +
      ['--input', str(input_file), '--output', str(out_file), '--method', 'rank_classification',
       f'--gin.MODEL_DIR={model_dir}']) == 0
  records = [json.loads(line) for line in out_file.read_text().splitlines()]
  assert [r['prompt'] for r in records] == ['early', 'late', 'late'] and records[0]['id'] == 7
  assert all(r['prediction'] in smoke.LABELS for r in records)  # the run task's labels
  # An unknown prompt name is one clear error.
  input_file.write_text(json.dumps({'prompt': 'nope', 'inputs': 'x'}) + '\n')
  assert infer.main(
      [arg for m in members for arg in ('--prompt', m)] +
      ['--input', str(input_file), f'--gin.MODEL_DIR={model_dir}']) == 1
  assert "names prompt 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_prompt_transfer_gin_starts_from_another_runs_prompt(smoke_run, tmp_path):
  """gin/prompts/from_file_transfer.gin: a new run's initial prompt IS the source file."""
  from prompt_tuning_jax.checkpoints import CheckpointError, tree
  _, prompts = smoke_run
  files = ['runs/smoke.gin', 'prompts/from_file_transfer.gin']
  _, bindings = config.split_bindings([f'--gin.MODEL_DIR={tmp_path / "transfer"}',
                                       f'--gin.PROMPT_FILE={prompts[5]}'])
  run = config.configure('train', files, bindings + ['PROMPT_LENGTH = 10']).settings
  assert run.prompt.file == str(prompts[5])
  params = run_setup.build_params(run_setup.setup(run))
  np.testing.assert_array_equal(tree.flatten(params)['encoder/prompt/prompt/prompt'],
                                checkpoints.load_prompt(str(prompts[5])))
  # The file's PROMPT_LENGTH (100) does not fit the 10-row source prompt: a clear error.
  s = run_setup.setup(config.configure('train', files, bindings).settings)
  with pytest.raises(CheckpointError, match='PROMPT_FILE'):
    run_setup.build_params(s)
