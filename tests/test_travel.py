"""The travel study's driver (benchmarks/travel.py): its plan, its flags and its tables."""
from __future__ import annotations

import json
import os

import pytest

from benchmarks import travel
from prompt_tuning_jax import config
from prompt_tuning_jax import pretrained
from prompt_tuning_jax.analysis import neighbors

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')

MODELS = {'lm_adapted': '/m/lm', 'span_corruption': '/m/span', 'first_lm_adapted': '/m/first'}


def _settings(run: travel.Run):
  files, bindings = config.split_bindings(travel.train_args(run, '/tmp/travel_run', MODELS))
  return config.configure('train', [f.split('=', 1)[1] for f in files], bindings).settings


def test_the_plan_lists_each_run_once():
  sources = travel.source_runs()
  assert len(sources) == len(set(r.name for r in sources)) == 2 * 3 * 3 - 2
  assert travel.source_runs(('smoke',)) == [r for r in sources if r.recipe == 'smoke'] != []
  library = {run: {'prompt_file': f'/lib/{run.recipe}.npy'} for run in travel.spot_library_runs()}
  rankings = {f'{t}/average_tokens': {'trained': [('spot_rte', 0.9), ('spot_cb', 0.1)]}
              for t in travel.SPOT_TARGETS}
  transfers = travel.spot_transfer_runs(library, rankings)
  names = [r.name for r in sources + transfers + travel.wayward_runs()
           + travel.spot_library_runs()]
  assert len(names) == len(set(names))
  for target in travel.SPOT_TARGETS:
    mine = [r for r in transfers if r.recipe == target]
    assert sorted(r.seed for r in mine if r.init == 'class_labels') == [0, 1, 2]
    assert sorted(r.seed for r in mine if r.init == 'spot-spot_rte') == [0, 1, 2]  # the best
    assert [r.seed for r in mine if r.init == 'spot-spot_cb'] == [0]
    assert not any(r.init == f'spot-{target}' for r in mine)  # never its own prompt
  assert len(set(travel.SPOT_LIBRARY.values())) == len(travel.SPOT_LIBRARY)  # distinct seeds


def test_run_flags_configure_the_intended_runs():
  sst2 = _settings(travel.Run('sst2', 'span_corruption', 2))
  assert (sst2.train_steps, sst2.data.batch_size, sst2.model.method.length) == (600, 32, 100)
  assert sst2.initial_checkpoint_path == '/m/span' and sst2.data.seed == 2
  assert sst2.prompt.init == 'class_labels' and sst2.optimizer.wayward_weight == 0
  spot = _settings(travel.Run('spot_smoke', seed=11, init='spot-spot_rte',
                              prompt_file='/lib/rte.npy'))
  assert (spot.train_steps, spot.eval_period, spot.model.method.length) == (300, 300, 100)
  assert spot.prompt.file == '/lib/rte.npy'
  held = _settings(travel.wayward_runs()[-1])
  assert held.optimizer.wayward_weight == travel.WAYWARD_WEIGHTS[-1]
  assert held.optimizer.wayward_text == held.prompt.text == travel.WAYWARD_TEXT
  assert held.prompt.init == 'from_text'
  # The prompt is exactly as long as the text (as in the original).
  vocabulary = neighbors.PieceVocabulary(pretrained.path('t5_mini/spiece.model'))
  assert held.model.method.length == len(vocabulary.encode(travel.WAYWARD_TEXT))


def test_steps_to_reach():
  curve = [(0, 50.0), (50, 70.0), (100, 81.0), (150, 79.0)]
  assert travel.steps_to_reach(curve, 80.0) == 100
  assert travel.steps_to_reach(curve, 40.0) == 0
  assert travel.steps_to_reach(curve, 90.0) is None


def test_tables_of_a_report():
  stat = {'mean': 75.0, 'std': 1.0, 'n': 3}
  cells = {'own': stat, 'class_labels': stat, 'random_uniform': stat}
  zero = {}
  for task in travel.RECYCLING_TASKS:
    for source, target in travel.PAIRS:
      entry = zero.setdefault(f'{task}/{target}', dict(cells))
      entry[f'{source}-as_is'] = stat
      if 'first' in source + target:
        entry.update({f'{source}-{r}': stat for r in travel.RECYCLERS})
  report = {
      'recycling': {'tasks': travel.RECYCLING_TASKS, 'zero_shot': zero, 'fits': {'a -> b, v2v-lin': 0.11},
                    'curves': {'class_labels': [[(0, 50.0), (50, 80.0)]]}, 'level': 78.0,
                    'steps_to_level': {'class_labels': [50]}},
      'spot': {'spot_sst2': {'transfer': {'class_labels': stat, 'spot-spot_rte': stat},
                             'rankings': {m: {'trained': [('spot_rte', 0.5)],
                                              'initial': [('spot_rte', 0.1)]}
                                          for m in ('average_tokens', 'per_token')}}},
      'spot_small': {'sst2': {'rankings': {'average_tokens': [('copa', 0.25), ('smoke', -0.5)],
                                           'per_token': [('smoke', 0.125), ('copa', 0.0)]},
                              'zero_shot': {'source-copa': 50.5, 'source-smoke': 60.0,
                                            'own': 80.0},
                              'class_labels': stat}},
      'wayward': {'0': {'accuracy': stat, 'top1_read_back': stat, 'top5_read_back': stat,
                        'text_seed0': 'classify these'}}}
  text = travel.tables(report)
  assert '| smoke | span_corruption -> lm_adapted | = as is | = as is | 75.0 ± 1.0 |' in text
  assert '| sst2 | first_lm_adapted -> lm_adapted | 75.0 ± 1.0 | 75.0 ± 1.0 |' in text
  assert '| class_labels | 50.0 ± 0.0 (n=1) | 80.0 ± 0.0 (n=1) | 50 |' in text
  assert '| spot_sst2 | spot_rte: +0.500 / +0.500; +0.100 | 75.0 ± 1.0 |' in text
  assert '| 0 | 75.0 ± 1.0 | 75.0 ± 1.0% | 75.0 ± 1.0% | classify these |' in text
  assert '| sst2 | copa | +0.250 | +0.000 | 50.5 |\n| sst2 | smoke | -0.500 | +0.125 | 60.0 |' in text
  assert '| sst2 | class-label init (untrained) | | | 75.0 ± 1.0 |' in text


def test_a_cut_measures_the_finished_runs_only(tmp_path, capsys):
  """--finished_only: no training; recycling keeps the tasks whose sources all finished."""
  finished = [run for run in travel.source_runs() if run.recipe == 'smoke']
  for run in finished + [travel.Run('sst2', 'lm_adapted', 0)]:
    os.makedirs(tmp_path / 'runs' / run.name)
    with open(tmp_path / 'runs' / run.name / 'result.json', 'w') as f:
      json.dump({'accuracy': 70.0, 'seconds': 1.0}, f)
  sources = travel.run_all(travel.source_runs(), str(tmp_path), {}, MODELS, 1,
                           finished_only=True)
  assert len(sources) == len(finished) + 1
  assert travel.measured_tasks(sources) == ('smoke',)
  assert 'sst2-span_corruption-class_labels-s1: not run (cut)' in capsys.readouterr().out


def test_the_permuted_control_is_the_same_function_in_a_permuted_space(tmp_path):
  """`permute_model`: the LM-adapted t5_mini with a prompt p, and its permuted copy with the
  prompt p S, give the same logits (float64: the reordered sums agree to ~1e-12)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.models import PromptedT5, get_config  # pylint: disable=import-outside-toplevel
  source = pretrained.path('t5_mini/lm_adapted')
  travel.permute_model(source, str(tmp_path / 'permuted'))
  perm, signs = travel.signed_permutation(128)
  rng = np.random.default_rng(0)
  prompt = rng.standard_normal((4, 128))
  inputs = jnp.asarray(rng.integers(2, 8000, (2, 9)))
  decoder_inputs = jnp.asarray(rng.integers(2, 8000, (2, 3)))
  with jax.enable_x64(True):
    model = PromptedT5(get_config('t5_mini').replace(dtype=jnp.float64), prompt_length=4)

    def logits(path, p):
      params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), checkpoints.load_t5x(path))
      params['encoder']['prompt'] = {'prompt': {'prompt': jnp.asarray(p)}}
      return np.asarray(model.apply({'params': params}, inputs, decoder_inputs, decoder_inputs,
                                    enable_dropout=False))
    original = logits(source, prompt)
    np.testing.assert_allclose(logits(str(tmp_path / 'permuted'), prompt[:, perm] * signs),
                               original, rtol=0, atol=1e-9 * np.abs(original).max())
    assert np.abs(logits(str(tmp_path / 'permuted'), prompt) - original).max() > 1e-3


def test_steps_saved_curves_start_from_each_recycled_prompts_zero_shot_accuracy():
  """A recycled start's step 0 is its prompt's zero-shot accuracy: v2v-lin's where the
  tables differ, the prompt as it is where they are one (the recycler is the identity)."""
  sources = {travel.Run('smoke', model, seed): {'curve': [(600, 80.0 + seed)]}
             for model in ('lm_adapted', 'span_corruption', 'first_lm_adapted')
             for seed in travel.SEEDS}
  recycled = {('smoke', source, target, recycler, seed): {
      'file': f'/r/{source}-{recycler}-{seed}.npy', 'r_squared': 0.5,
      'identical_tables': {source, target} == {'span_corruption', 'lm_adapted'}}
              for source, target in travel.PAIRS for recycler in travel.RECYCLERS
              for seed in travel.SEEDS}
  start = {}
  for seed in travel.SEEDS:
    start.update({f'class_labels-s{seed}': 47.5, f'span_corruption-as_is-s{seed}': 60.0 + seed,
                  f'first_lm_adapted-as_is-s{seed}': 40.0,
                  f'first_lm_adapted-v2v-lin-s{seed}': 50.0 + seed,
                  f'first_lm_adapted-v2v-nn-s{seed}': 30.0})
  continued = {run: {'curve': [(600, 81.0)]} for run in travel.steps_saved_runs(recycled)}
  report = travel.recycling_report(sources, recycled, {'smoke/lm_adapted': start}, continued)
  curves = report['curves']
  assert [c[0] for c in curves['from-span_corruption-v2v-lin']] == [(0, 60.0), (0, 61.0),
                                                                     (0, 62.0)]
  assert [c[0] for c in curves['from-first_lm_adapted-v2v-lin']] == [(0, 50.0), (0, 51.0),
                                                                      (0, 52.0)]
  assert report['steps_to_level']['from-span_corruption-v2v-lin'] == [600, 600, 600]
