"""The miniature study's driver (benchmarks/reproduction.py): its plan, its summary, a tiny run."""
from __future__ import annotations

import dataclasses
import json

import gin
import numpy as np
import pytest

from benchmarks import reproduction
from prompt_tuning_jax import cli
from conftest import shared_path


def test_study_plan_lists_every_comparison_once():
  setting = reproduction.Setting()
  runs = reproduction.study_runs(setting)
  assert len(runs) == len(set(runs))
  sst2 = [r for r in runs if r.task == 'sst2']
  # Per SST-2 seed: the 4 lengths (20 = the default), 2 more inits, span-only, random
  # weights, model tuning = 9; seeds 3 and 4 of the default run join for the ensemble.
  assert len(sst2) == 9 * 3 + 2
  assert {r.prompt_length for r in sst2} == {1, 5, 20, 100}
  assert {r.init for r in sst2} == {'random_uniform', 'sampled_vocab', 'class_labels'}
  # The SuperGLUE tasks, one seed: the default prompt and the method / frozen-model
  # comparisons.
  rte = [r for r in runs if r.task == 'rte']
  assert rte == [reproduction.Run('rte'), reproduction.Run('rte', model='span_corruption'),
                 reproduction.Run('rte', model='random'), reproduction.Run('rte', tuning='model')]
  flags = reproduction.train_flags(reproduction.Run('cb', tuning='model'), setting, '/m',
                                   reproduction.CHECKPOINTS)
  assert '--gin_file=runs/model_finetune.gin' in flags
  assert '--gin.LEARNING_RATE=@optax.linear_schedule()' in flags  # decays to 0
  assert f'--gin.optax.linear_schedule.init_value={setting.model_learning_rate}' in flags
  assert f'--gin.optax.linear_schedule.transition_steps={setting.steps}' in flags
  assert not any(f.startswith('--gin.PROMPT_LENGTH') for f in flags)
  # P=1 cannot hold SST-2's two class labels (ptj refuses it): sampled vocabulary instead.
  one = reproduction.train_flags(reproduction.Run('sst2', prompt_length=1), setting, '/m',
                                 reproduction.CHECKPOINTS)
  assert '--gin.PROMPT_INIT=sampled_vocab' in one
  five = reproduction.train_flags(reproduction.Run('sst2', prompt_length=5), setting, '/m',
                                  reproduction.CHECKPOINTS)
  assert '--gin.PROMPT_INIT=class_labels' in five


def test_quick_setting_runs_every_part_on_sst2_and_the_default_prompt_elsewhere():
  runs = reproduction.study_runs(reproduction.QUICK)
  sst2 = [r for r in runs if r.task == 'sst2']
  # The default run, P=1, random-uniform init, span-only, random weights, model
  # tuning, and the second ensemble member.
  assert len(sst2) == 7
  assert len(runs) == 9
  assert {r.tuning for r in sst2} == {'prompt', 'model'}
  assert {r.model for r in sst2} == {'lm_adapted', 'span_corruption', 'random'}
  others = [r for r in runs if r.task != 'sst2']
  assert others == [reproduction.Run(task) for task in ('rte', 'cb')]
  flags = reproduction.train_flags(others[0], reproduction.QUICK, '/m', reproduction.CHECKPOINTS)
  assert '--gin.EVAL_PERIOD=150' in flags  # one eval, at the end


def test_summary_means_over_the_right_runs():
  setting = dataclasses.replace(reproduction.QUICK, main_seeds=(0, 1), tasks=('sst2',))
  results = []
  for run in reproduction.study_runs(setting):
    accuracy = 50.0 + run.seed + (10 if run.tuning == 'model' else 0) + run.prompt_length / 10
    if run.model == 'random':
      accuracy = 40.0 + run.seed
    results.append({**dataclasses.asdict(run), 'accuracy': accuracy})
  summary = reproduction.summarise(results, setting)['sst2']
  assert summary['prompt_tuning'] == {'mean': 52.5, 'std': 0.5, 'n': 2}  # P=20: 52 and 53
  assert summary['model_tuning'] == {'mean': 62.5, 'std': 0.5, 'n': 2}  # 60 + seed + 2
  assert summary['random_weights']['mean'] == 40.5
  assert np.isclose(summary['prompt_length']['1']['mean'], 50.6)
  assert summary['init']['random_uniform']['n'] == 2


@pytest.fixture
def in_process_ptj(monkeypatch, restore_ptj_global_state):
  """Runs the driver's `ptj` commands in this process (one import, one compilation cache)."""
  calls = []

  def ptj(args, env, log_path):
    del log_path
    for name in ('PTJ_GLUE_DIR', 'PTJ_SUPERGLUE_DIR'):
      monkeypatch.setenv(name, env[name])
    calls.append(list(args))
    assert cli.main(list(args)) == 0, args
    gin.clear_config()
  monkeypatch.setattr(reproduction, '_ptj', ptj)
  return calls


def test_tiny_study_end_to_end_and_resumable(tmp_path, in_process_ptj):
  shared_path('data', 'glue', 'SST-2', 'dev.tsv')
  out = tmp_path / 'study'
  assert reproduction.main(['--out', str(out), '--tiny', '--shared', str(shared_path())]) == 0
  report = json.loads((out / 'results.json').read_text())
  runs = {r['name']: r for r in report['runs']}
  assert len(runs) == len(reproduction.study_runs(reproduction.TINY))
  assert [a[0] for a in in_process_ptj] == ['train'] * len(runs) + ['ensemble', 'neighbors']
  for run in runs.values():
    assert [step for step, _ in run['curve']] == [1, 2]  # TINY evaluates twice: every step
  # The ensemble re-scores each member's saved prompt on the same examples: each member's
  # accuracy there is the accuracy its own run reported at its last eval.
  ensemble = report['ensembles']['sst2']
  members = [r for r in runs.values() if r['tuning'] == 'prompt' and r['model'] == 'lm_adapted'
             and r['prompt_length'] == 2 and r['init'] == 'class_labels']
  assert len(members) == reproduction.TINY.ensemble_size
  for member in members:
    assert np.isclose(ensemble[f'member/s{member["seed"]}']['accuracy'], member['accuracy'])
  assert set(report['neighbors']['sst2']) >= {'label_share', 'random_label_share'}
  assert (out / 'reproduction.png').stat().st_size > 0
  assert '| sst2 |' in (out / 'reproduction_tables.md').read_text()
  # Resumable: a second call finds every result and trains nothing (naming TINY's own
  # task and seeds, two runs at a time, selects the same runs).
  del in_process_ptj[:]
  assert reproduction.main(['--out', str(out), '--tiny', '--shared', str(shared_path()),
                            '--tasks', 'sst2', '--seeds', '0', '--jobs', '2']) == 0
  assert in_process_ptj == []


def _stat(mean, std=0.0, n=3):
  return {'mean': mean, 'std': std, 'n': n}


def test_claims_verdicts_weigh_the_difference_against_its_noise():
  summary = {
      'prompt_tuning': _stat(56.0, 1.0), 'model_tuning': _stat(75.0, 1.0),
      'span_corruption': _stat(57.0, 1.0),          # 1 point under: not held, within noise
      'random_weights': _stat(50.0, 1.0),
      'prompt_length': {'1': _stat(50.0, 1.0), '20': _stat(56.0, 1.0), '100': _stat(57.0, 1.0)},
      'init': {'random_uniform': _stat(53.0, 1.0), 'sampled_vocab': _stat(54.0, None, 1),
               'class_labels': _stat(56.0, 1.0)},
  }
  report = {'setting': {'default_prompt_length': 20}, 'summary': {'sst2': summary},
            'ensembles': {'sst2': {'ensemble/vote': {'accuracy': 58.0},
                                   **{f'member/s{i}': {'accuracy': 55.0 + i} for i in range(3)}}},
            'neighbors': {'sst2': {'label_share': 0.1, 'random_label_share': 0.0}}}
  found = {c.claim.split(' (')[0]: c for c in reproduction.claims(report)}
  model = found['at small scale model tuning beats prompt tuning']
  assert model.difference == 19.0 and model.verdict == 'held'
  # Three seeds of std 1 (population) a side: s.e. of the difference sqrt(2 * 1/2) = 1.
  assert np.isclose(model.noise, 1.0)
  assert found['LM adaptation helps prompt tuning over span corruption only'].verdict == (
      'not held, within noise')
  assert found['class-label init beats random uniform at small scale'].verdict == 'held'
  # One seed on a side: no error bar, and the verdict says so.
  sampled = found['sampled-vocabulary init beats random uniform at small scale']
  assert sampled.noise is None and sampled.verdict.startswith('held (one run')
  length = [c for c in found.values() if c.claim.startswith('gains flatten')][0]
  assert (length.higher, length.lower) == (6.0, 1.0) and length.verdict == 'held'
  ensemble = found['a 3-prompt ensemble beats the mean of its members']
  assert (ensemble.higher, ensemble.lower) == (58.0, 56.0)
  assert np.isclose(ensemble.noise, 1 / np.sqrt(3)) and ensemble.verdict == 'held'
  assert found["class labels among a trained prompt's nearest neighbours, more than for "
               'random vectors'].difference == 10.0
  table = reproduction.claims_table(report)
  assert '| sst2 | 75.0 | 56.0 | +19.0 ± 1.0 | held |' in table
  # Equal means: neither held nor not held.
  summary['random_weights'] = _stat(56.0, 1.0)
  tie = [c for c in reproduction.claims(report) if 'random weights' in c.claim][0]
  assert tie.difference == 0.0 and tie.verdict == 'tied, within noise'
  # A comparison the study did not run is left out, not reported as held.
  summary['model_tuning'] = summary['random_weights'] = _stat(None, None, 0)
  claims = [c.claim for c in reproduction.claims(report)]
  assert not any('model tuning' in c or 'random weights' in c for c in claims)


def test_label_losses_choose_each_rate_on_seed_0_and_pair_the_seeds():
  from benchmarks import label_losses  # pylint: disable=g-import-not-at-top
  accuracy = {('token_cross_entropy', 0.03): [56.0, 58.0, 60.0],
              ('token_cross_entropy', 0.1): [55.0], ('token_cross_entropy', 0.01): [50.0],
              ('hinge', 0.01): [61.0, 62.0, 66.0], ('hinge', 0.03): [61.0], ('hinge', 0.1): [52.0]}
  runs = [{'task': 'sst2', 'loss': loss, 'rate': rate, 'seed': seed, 'accuracy': value,
           'train': {'prompt_norm': 2.0, 'embedding_norm': 1.0} if seed == 0 else {}}
          for (loss, rate), values in accuracy.items() for seed, value in enumerate(values)]
  summary = label_losses.summarise(runs, ['sst2'], ['token_cross_entropy', 'hinge'])['sst2']
  assert summary['token_cross_entropy']['rate'] == 0.03
  assert summary['hinge']['rate'] == 0.01  # a tie on seed 0 goes to the lower rate
  assert summary['hinge']['stats'] == pytest.approx({'mean': 63.0, 'std': np.std([61, 62, 66]),
                                                      'n': 3})
  paired = summary['hinge']['paired_difference']
  assert paired['values'] == [5.0, 4.0, 6.0]
  assert paired['mean'] == 5.0 and paired['standard_error'] == pytest.approx(1 / np.sqrt(3))
  text = label_losses.table({'sst2': summary})
  assert '| sst2 | hinge | 61.0 / 61.0 / 52.0 | 0.01 | 61.0 / 62.0 / 66.0 | 63.0 ± 2.2 | +5.0 ± 0.6 | 2.00 (1.00) |' in text
  # Exact McNemar: 3 examples only the first gets right, 1 only the second: p = 2 * 5/16.
  test = label_losses.mcnemar([1, 1, 1, 0, 0, 1], [0, 0, 0, 0, 1, 1])
  assert test == {'only_first': 3, 'only_second': 1, 'p': 0.625}
  assert label_losses.mcnemar([1, 0], [1, 0])['p'] == 1.0
