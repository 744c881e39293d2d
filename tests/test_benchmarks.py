"""The benchmarks run end to end on a tiny configuration (fields only; no timing assertions).

Workers run in-process here (`common.run_worker` is replaced by a direct call)
so the test stays fast; one test checks the real subprocess path.
"""
from __future__ import annotations

import importlib
import json
import os

import pytest

# `benchmarks/` is not an installed package: pytest's `pythonpath = ["."]` finds it.
from benchmarks import common
from benchmarks import eval as eval_bench
from benchmarks import train_step

TINY = ['--sizes', 'tiny', '--batch', '3', '--input_len', '6', '--prompt_len', '4',
        '--warmup', '0', '--steps', '1']


@pytest.fixture
def in_process_workers(monkeypatch):
  """Runs each worker's measurement in this process instead of a fresh Python."""
  def run_worker(module, payload, timeout_s=None, xla_flags=''):
    del timeout_s, xla_flags
    result = importlib.import_module(module)._measure(payload)  # pylint: disable=protected-access
    return json.loads(json.dumps(result))  # what a worker could write
  monkeypatch.setattr(common, 'run_worker', run_worker)


def test_random_batch_is_shifted_and_unpadded():
  batch = common.random_batch(common.Workload(2, 5, 3, 4), vocab_size=50, seed=0)
  assert batch['encoder_input_tokens'].shape == (2, 5)
  assert (batch['encoder_input_tokens'] >= 2).all() and (batch['decoder_target_tokens'] >= 2).all()
  assert (batch['decoder_input_tokens'][:, 0] == 0).all()
  assert (batch['decoder_input_tokens'][:, 1:] == batch['decoder_target_tokens'][:, :-1]).all()


def test_train_step_tiny_with_peer(in_process_workers, capsys, tmp_path):
  del in_process_workers
  pytest.importorskip('peft', reason='the PEFT peer needs the bench extra (torch, peft)')
  out = tmp_path / 'train.json'
  train_step.main(TINY + ['--target_len', '2', '--matmul_n', '64', '--peer', '--peer_flops',
                          '--variants', 'bf16_weights', '--json', str(out)])
  report = json.loads(out.read_text())
  rows = {(r['impl'], r['tuning'], r['variant']): r for r in report['rows']}
  assert set(rows) == {('ours', 'prompt', 'float32'), ('ours', 'prompt', 'bf16_weights'),
                       ('ours', 'full', 'float32'), ('peft', 'prompt', 'float32')}
  ours = rows['ours', 'prompt', 'float32']
  for key in ('median_s', 'examples_per_s', 'tokens_per_s', 'flops_per_step', 'flops_per_s',
              'mfu', 'compile_s', 'peak_rss_mib'):
    assert ours[key] > 0, key
  assert 'median_s' not in rows['ours', 'full', 'float32']  # compiled for FLOPs only
  peer = rows['peft', 'prompt', 'float32']
  assert peer['median_s'] > 0 and peer['flops_per_step'] > 0 and peer['torch_threads'] >= 1
  (comparison,) = report['comparisons']
  for key in ('speedup_vs_peft', 'speedup_vs_peft_fastest_step', 'peak_rss_ours_over_peft',
              'flops_ours_over_peft'):
    assert comparison[key] > 0, key
  # No weight gradients: the prompt-only step needs fewer FLOPs than full fine-tuning.
  assert 0 < comparison['prompt_over_full_flops'] < 1
  assert set(report['matmul_limit']) == {'float32', 'torch_float32'}
  assert report['machine']['cpu_count'] >= 1
  assert '| tiny | ours | prompt | float32 |' in capsys.readouterr().out


def test_eval_tiny(in_process_workers, tmp_path):
  del in_process_workers
  out = tmp_path / 'eval.json'
  eval_bench.main(TINY + ['--batch', '4', '--tasks', '2', '--num_labels', '2',
                          '--decode_lens', '2', '--json', str(out)])
  (row,) = json.loads(out.read_text())['rows']
  for key in ('rank_examples_per_s', 'rank_repeated_examples_per_s', 'greedy2_examples_per_s',
              'rank_over_greedy2', 'rank_repeated_over_greedy2',
              'mixed_examples_per_s', 'per_prompt_full_examples_per_s',
              'per_prompt_small_examples_per_s', 'mixed_over_per_prompt_full'):
    assert row[key] > 0, key
  for name in eval_bench.SAMPLERS:
    assert row[f'{name}2_examples_per_s'] > 0 and row[f'{name}_over_greedy2'] > 0, name
  assert row['raw']['label_tokens_with_eos'] == 2
  # The earlier (labels repeated) method scores exactly what scoring.rank_classify scores.
  assert row['raw']['rank_repeated']['max_abs_score_diff'] < 1e-3


def test_worker_runs_in_a_fresh_process():
  result = common.run_worker(train_step.MODULE, {'kind': 'matmul', 'n': 32, 'dtype': 'float32'})
  assert result['flops_per_s'] > 0 and result['n'] == 32


def test_worker_failure_names_the_module():
  with pytest.raises(common.WorkerError, match='benchmarks.train_step worker failed'):
    common.run_worker(train_step.MODULE, {'kind': 'nonsense'})


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match='Unknown variant'):
    train_step.run(train_step.parse_args(['--variants', 'warp_drive']))


def test_rounds_keep_the_fastest_with_every_median():
  slow = {'median_s': 2.0, 'size': 's', 'impl': 'ours', 'tuning': 'prompt', 'variant': 'v',
          'peak_rss_mib': 1.0, 'profile': {'wall_s_per_call': 2.0}}
  fast = dict(slow, median_s=1.0, profile=None)
  kept = train_step._fastest(train_step._fastest(None, slow), fast)  # pylint: disable=protected-access
  assert kept['median_s'] == 1.0 and kept['round_medians_s'] == [2.0, 1.0]
  assert kept['profile'] == {'wall_s_per_call': 2.0}  # the first round's profile is kept


def test_workload_tiny_every_side_same_examples(in_process_workers, monkeypatch, tmp_path):
  del in_process_workers
  from conftest import shared_path  # pylint: disable=g-import-not-at-top
  pytest.importorskip('peft', reason='the PEFT sides need the bench extra (torch, peft)')
  from benchmarks import workload  # pylint: disable=g-import-not-at-top
  shared = shared_path()
  for name, value in (('PTJ_VOCAB', shared / 'vocab/t5/spiece.model'),
                      ('PTJ_GLUE_DIR', shared / 'data/glue'),
                      ('PTJ_SUPERGLUE_DIR', shared / 'data/super_glue')):
    monkeypatch.setenv(name, str(value))  # restored after the test
  out = tmp_path / 'workload.json'
  workload.main(['--tasks', 'rte', '--size', 'tiny', '--batch', '4', '--prompt_len', '4',
                 '--steps', '2', '--rounds', '1', '--eval', '--eval_examples', '8',
                 '--eval_batch', '4', '--buckets', 'step16',
                 '--shared', str(shared), '--json', str(out)])
  report = json.loads(out.read_text())
  sides = report['tasks']['rte']['sides']
  assert set(sides) == set(workload.SIDES)
  for side, row in sides.items():
    assert row['examples_per_s'] > 0 and row['peak_rss_mib'] > 0, side
  # The same 8 examples on every side: the same real input tokens (same spiece.model).
  real = {side: row['real_input_tokens_per_example'] for side, row in sides.items()}
  assert len(set(real.values())) == 1, real
  assert sides['ours_fixed']['input_positions_per_example'] == 512
  for side in ('ours_bucketed', 'ours_packed', 'peft', 'peft_grouped'):
    assert real['peft'] <= sides[side]['input_positions_per_example'] < 512, side
  # --buckets step16: each batch padded to the next multiple of 16 over the longest example
  # it holds, where PEFT grouped (the same grouping) pads to that longest example.
  padding = (sides['ours_bucketed']['input_positions_per_example']
             - sides['peft_grouped']['input_positions_per_example'])
  assert 0 <= padding < 16, padding
  assert set(report['tasks']['rte']['ratios']) == {
      'bucketed_over_ours_fixed', 'bucketed_over_peft', 'bucketed_over_peft_grouped',
      'packed_over_ours_bucketed', 'packed_over_peft', 'packed_over_peft_grouped'}
  eval_rows = report['eval_sst2_dev']
  assert (eval_rows['fixed']['examples'] == eval_rows['bucketed']['examples']
          == eval_rows['packed']['examples'] == 8)
  assert eval_rows['bucketed']['shapes'] >= 1 and eval_rows['bucketed_over_fixed'] > 0
  assert eval_rows['packed_over_fixed'] > 0
  positions = {k: eval_rows[k]['encoder_positions_per_example'] for k in ('fixed', 'packed')}
  assert positions['fixed'] == 4 + 512 and positions['packed'] < positions['fixed'], positions


def test_time_to_accuracy_tiny(in_process_workers, monkeypatch, tmp_path):
  del in_process_workers
  from conftest import shared_path  # pylint: disable=g-import-not-at-top
  pytest.importorskip('peft', reason='the PEFT side needs the bench extra (torch, peft)')
  from benchmarks import time_to_accuracy as tta  # pylint: disable=g-import-not-at-top
  shared = shared_path()
  monkeypatch.setenv('PTJ_GLUE_DIR', str(shared / 'data/glue'))
  monkeypatch.setenv('PTJ_VOCAB', '')  # restored after the test; the benchmark sets it
  out, png = tmp_path / 'tta.json', tmp_path / 'tta.png'
  tta.main(['--steps', '4', '--eval_every', '2', '--eval_examples', '16', '--batch', '4',
            '--prompt_len', '3', '--shared', str(shared), '--json', str(out), '--png', str(png)])
  report = json.loads(out.read_text())
  assert report['prompt_shape'] == [3, 128]
  for side in ('ours', 'peft'):
    curve = report['curves'][side]
    assert [p['step'] for p in curve] == [0, 2, 4]
    assert all(0 <= p['accuracy'] <= 100 for p in curve)
    assert curve[-1]['train_seconds'] > curve[1]['train_seconds'] > 0
  # Same frozen model, same starting prompt, same rank classification: the same step-0 accuracy.
  assert report['curves']['ours'][0]['accuracy'] == report['curves']['peft'][0]['accuracy']
  assert report['target_accuracy'] == pytest.approx(
      0.9 * max(report['final_accuracy'].values()))
  assert report['speedup_per_step'] > 0 and png.stat().st_size > 0


@pytest.mark.slow
def test_time_to_accuracy_tiny_on_the_smoke_transfer_task_packed(in_process_workers,
                                                                 monkeypatch, tmp_path):
  """The README's main task (generated: no ../shared), our side on packed rows."""
  del in_process_workers
  pytest.importorskip('peft', reason='the PEFT side needs the bench extra (torch, peft)')
  from benchmarks import time_to_accuracy as tta  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('PTJ_VOCAB', '')  # restored after the test; the benchmark sets it
  out = tmp_path / 'tta.json'
  tta.main(['--task', 'smoke_transfer', '--steps', '2', '--eval_every', '2',
            '--eval_examples', '8', '--batch', '4', '--prompt_len', '3',
            '--pack_inputs', str(2 * (3 + tta.LENGTHS['inputs'])), '--json', str(out)])
  report = json.loads(out.read_text())
  assert report['task'] == 'smoke_sentiment_transfer'
  assert report['settings']['pack_inputs'] == 262
  for side in ('ours', 'peft'):
    assert [p['step'] for p in report['curves'][side]] == [0, 2]
  assert report['curves']['ours'][0]['accuracy'] == report['curves']['peft'][0]['accuracy']


@pytest.mark.parametrize('decay', [False, True])
def test_time_to_accuracy_our_rate_constant_or_decaying(decay, tmp_path, restore_ptj_global_state):
  from benchmarks import time_to_accuracy as tta  # pylint: disable=g-import-not-at-top
  payload = {'task': tta.TASKS['sst2'], 'checkpoint': 'None',
             'vocab': os.path.join(tta.pretrained_dir(), 'spiece.model'),
             'batch': 4, 'prompt_len': 3, 'seed': 0, 'learning_rate': 0.03, 'steps': 10,
             'decay': decay}
  rate = tta._configure(payload, str(tmp_path)).optimizer.learning_rate
  if decay:
    assert [float(rate(step)) for step in (0, 5, 10)] == pytest.approx([0.03, 0.015, 0.0])
  else:
    assert rate == 0.03


def test_compile_cache_reads_the_compile_seconds_of_a_train_log():
  from benchmarks import compile_cache  # pylint: disable=g-import-not-at-top
  log = ('00:22:42 Compiled the train step for inputs 148 / targets 12 positions in 4.1s '
         '(1 shape(s) so far).\n00:22:43 step 10/30 | loss 3.843\n'
         '00:22:44 Compiled the train step for inputs 64 / targets 4 positions in 0.7s '
         '(2 shape(s) so far).\n')
  assert compile_cache.compile_seconds(log) == [4.1, 0.7]
  args = compile_cache.parse_args(['--gin', "LENGTH_BUCKETS = 'pow2'"])
  assert args.gin_file == ['runs/smoke.gin'] and args.gin == ["LENGTH_BUCKETS = 'pow2'"]
