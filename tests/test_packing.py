"""Packed training rows (PACK_LENGTHS): layout, the same math as one example a row, resume."""
from __future__ import annotations

import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import decoder_only_config, small_config

from prompt_tuning_jax import data
from prompt_tuning_jax import models
from prompt_tuning_jax import optim
from prompt_tuning_jax import partitioning
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import scoring
from prompt_tuning_jax import train_step
from prompt_tuning_jax.errors import UsageError
from prompt_tuning_jax.methods import (IA3, MethodInputs, ModelTuning, MultiTaskPrompts,
                                       PerLayerPrompts, PrefixTuning, PromptTuning, Visibility)
from prompt_tuning_jax.settings import DataSettings, OptimizerSettings
from prompt_tuning_jax.tasks import smoke

LENGTHS = {'inputs': 64, 'targets': 12}
BATCH = 8


def settings(pack_lengths=None, name=smoke.TASK_NAME, buckets=None):
  return DataSettings(name, LENGTHS, BATCH, seed=0, module=None, length_buckets=buckets,
                      pack_lengths=pack_lengths)


def unpacked_batch(task_index=None):
  batch = next(data.train_batches(settings()))
  batch = {k: v for k, v in batch.items() if k in data.MODEL_FEATURES + (data.TASK_INDEX,)}
  if task_index is not None:
    batch[data.TASK_INDEX] = np.asarray(task_index, np.int32)
  return batch


def test_pack_batch_gives_every_example_its_prompt_slots_segment_and_positions():
  rng = np.random.default_rng(0)
  inputs, targets = [5, 2, 7, 1, 3], [2, 3, 1, 2, 4]
  batch = {'encoder_input_tokens': np.zeros((5, 8), np.int32),
           'decoder_target_tokens': np.zeros((5, 4), np.int32),
           'decoder_input_tokens': np.zeros((5, 4), np.int32),
           'decoder_loss_weights': np.zeros((5, 4), np.int32),
           data.TASK_INDEX: np.array([0, 1, 0, 1, 1], np.int32),
           data.TRUNCATED: np.ones((5, 2), np.int32)}
  for i, (t, u) in enumerate(zip(inputs, targets)):
    batch['encoder_input_tokens'][i, :t] = rng.integers(2, 50, t)
    batch['decoder_target_tokens'][i, :u] = rng.integers(2, 50, u)
    batch['decoder_input_tokens'][i, 1:u] = batch['decoder_target_tokens'][i, :u - 1]
    batch['decoder_loss_weights'][i, :u] = 1
  for placement in ('prefix', 'suffix'):
    packing = data.Packing({'inputs': 12, 'targets': 6}, prompt_length=2, placement=placement,
                           row_multiple=2)
    rows = data.pack_rows(np.array(inputs), np.array(targets), packing)
    # Longest first, each into the first row with room for its tokens and prompt.
    assert rows == [[2, 3], [0, 4], [1]]
    packed = data.pack_batch(batch, packing)
    assert packed['encoder_input_tokens'].shape == (4, 12)  # 3 rows, rounded up to 2 x 2
    assert packed['decoder_target_tokens'].shape == (4, 6)
    np.testing.assert_array_equal(packed[data.TRUNCATED], batch[data.TRUNCATED])
    for r, members in enumerate(rows):
      e = d = 0
      for segment, i in enumerate(members, 1):
        t, u = inputs[i], targets[i]
        span = slice(e, e + 2 + t)
        assert (packed['encoder_segment_ids'][r, span] == segment).all()
        assert packed['encoder_positions'][r, span].tolist() == list(range(2 + t))
        assert (packed[data.TASK_INDEX][r, span] == batch[data.TASK_INDEX][i]).all()
        slots = packed[data.PROMPT_SLOTS][r, span]
        tokens = packed['encoder_input_tokens'][r, span]
        expect_slots = [0, 1] + [-1] * t if placement == 'prefix' else [-1] * t + [0, 1]
        assert slots.tolist() == expect_slots
        assert tokens[slots < 0].tolist() == batch['encoder_input_tokens'][i, :t].tolist()
        assert (tokens[slots >= 0] == data.PROMPT_SLOT_TOKEN).all()
        for key in ('decoder_target_tokens', 'decoder_input_tokens', 'decoder_loss_weights'):
          assert packed[key][r, d:d + u].tolist() == batch[key][i, :u].tolist()
        assert (packed['decoder_segment_ids'][r, d:d + u] == segment).all()
        assert packed['decoder_positions'][r, d:d + u].tolist() == list(range(u))
        e, d = e + 2 + t, d + u
      assert (packed['encoder_segment_ids'][r, e:] == 0).all()
      assert (packed['encoder_input_tokens'][r, e:] == 0).all()
    assert (packed['encoder_input_tokens'][3] == 0).all()  # the padding row
  # Without a prompt there are no slots (model tuning, IA3).
  assert data.PROMPT_SLOTS not in data.pack_batch(batch, data.Packing({'inputs': 12,
                                                                        'targets': 6}))


def test_row_count_is_rounded_up_to_the_multiple():
  assert [data.row_count(n) for n in (1, 2, 3, 7)] == [1, 2, 3, 7]
  assert [data.row_count(n, multiple=4) for n in (1, 4, 5, 8, 9)] == [4, 4, 8, 8, 12]


def _segment_losses(token_loss, segment_ids, rows):
  """{example: its summed token loss} from packed rows' token losses."""
  out = {}
  for r, members in enumerate(rows):
    for segment, i in enumerate(members, 1):
      out[i] = float(np.sum(np.where(segment_ids[r] == segment, token_loss[r], 0.0)))
  return out


METHODS = {
    'prompt_tuning': (PromptTuning(3), 1),
    'suffix_causal_visibility': (PromptTuning(3, 'suffix', Visibility(False, 'causal')), 1),
    'per_layer_accumulated': (PerLayerPrompts(3, mode='add'), 2),
    'multi_task': (MultiTaskPrompts(3, tasks=('a', 'b')), 1),
    'ia3': (IA3(), 1),
    'cross_attention_prefix': (PrefixTuning(2, blocks=('encoder_decoder_attention',),
                                            mlp_dim=None), 1),
}


@pytest.mark.parametrize('name', list(METHODS))
def test_packed_rows_compute_what_one_example_a_row_computes(name):
  """Same examples, one a row vs packed (a prompt per example): per-example losses, the
  step's metrics, gradient norm and updated parameters agree.

  In float64 (a float64 model under `jax.enable_x64`): the two layouts sum in other orders,
  ~1e-15 relative apart; a prompt shared between two examples, a position attending across
  examples, or another relative distance moves the results by far more than the 1e-9 allowed.
  """
  method, accumulation = METHODS[name]
  model = models.T5(small_config(vocab_size=smoke.VOCABULARY.vocab_size, dtype=jnp.float64),
                    method=method)
  batch = unpacked_batch([0, 1, 1, 0, 1, 0, 0, 1] if name == 'multi_task' else None)
  p = method.added_positions
  packing = data.Packing({'inputs': 2 * (p + 56), 'targets': 8}, p,
                         getattr(method, 'placement', 'prefix'), row_multiple=accumulation)
  packed = data.pack_batch(batch, packing)
  rows = data.pack_rows(data.example_lengths(batch['encoder_input_tokens']),
                        data.example_lengths(batch['decoder_target_tokens']), packing)
  assert max(len(r) for r in rows) >= 2 and packed['encoder_input_tokens'].shape[0] < BATCH
  with jax.enable_x64(True):
    params = model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'][:1],
                        batch['decoder_input_tokens'][:1], batch['decoder_target_tokens'][:1],
                        method_inputs=MethodInputs(task_index=batch[data.TASK_INDEX][:1]),
                        enable_dropout=False)['params']
    # Larger than flax's initialisers, so that every position matters to the loss.
    scale = 1.0 if name in ('ia3', 'cross_attention_prefix') else 4.0  # 4: saturates these
    params = jax.tree.map(lambda x: x.astype(jnp.float64) * scale, params)

    @jax.jit
    def token_loss(batch):
      logits = train_step.batch_logits(model, params, batch)
      return train_step.cross_entropy_with_z_loss(
          logits, batch['decoder_target_tokens'],
          batch['decoder_loss_weights'].astype(jnp.float64))[0]

    one_a_row = np.asarray(token_loss(batch)).sum(-1)
    by_segment = _segment_losses(np.asarray(token_loss(packed)),
                                 packed['decoder_segment_ids'], rows)
    assert float(one_a_row.min()) > 0.1
    np.testing.assert_allclose([by_segment[i] for i in range(BATCH)], one_a_row, rtol=1e-9)

    rules = method.trainable_rules
    trainable, frozen = optim.partition(params, rules)
    tx = optim.partitioned_optimizer(params, optax.sgd(1.0), rules)
    # SGD with rate 1: the update is the gradient, so a scale error on either side fails.
    step = jax.jit(train_step.make_train_step(model, tx, accumulation_steps=accumulation))
    results = [step(train_step.init_train_state(trainable, frozen, tx), frozen, b)
               for b in (batch, packed)]
  (state_one, m_one), (state_packed, m_packed) = results
  assert float(m_one['grad_norm']) > 0.1  # a gradient, so a wrong update shows
  assert m_one.keys() == m_packed.keys()
  for key in m_one:
    np.testing.assert_allclose(m_packed[key], m_one[key], rtol=1e-9, err_msg=key)
  for a, b in zip(jax.tree.leaves(state_packed.trainable), jax.tree.leaves(state_one.trainable)):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_packed_stream_is_deterministic_and_resumes_exactly_across_tasks():
  """A mixture, bucketed then packed: every example of each batch once, the same batches on
  a resume inside the stream."""
  method = MultiTaskPrompts(3, tasks=tuple(data.task_index_of(smoke.MIXTURE_NAME)))
  packing = data.Packing({'inputs': 2 * (3 + 64), 'targets': 24}, 3, 'prefix', 2)
  run = settings({'inputs': 2 * (3 + 64), 'targets': 24}, smoke.MIXTURE_NAME, 'pow2')

  def stream(start_step=0, pack=packing):
    return list(itertools.islice(data.train_batches(
        run, start_step=start_step, packing=pack,
        task_index=method.task_index(list(data.task_index_of(smoke.MIXTURE_NAME)))), 6))

  straight, plain = stream(), stream(pack=None)
  assert any(len(np.unique(b[data.TASK_INDEX])) > 1 for b in straight)  # tasks share rows
  for packed, one_a_row in zip(straight, plain):
    def examples(b, segment_ids):
      rows = []
      for r in range(b['encoder_input_tokens'].shape[0]):
        for s in np.unique(segment_ids[r][segment_ids[r] > 0]):
          enc = b['encoder_input_tokens'][r][b['encoder_segment_ids'][r] == s]
          slots = b[data.PROMPT_SLOTS][r][b['encoder_segment_ids'][r] == s]
          rows.append((tuple(enc[slots < 0]), tuple(b['decoder_target_tokens'][r][
              b['decoder_segment_ids'][r] == s]), int(b[data.TASK_INDEX][r][
                  b['encoder_segment_ids'][r] == s][0])))
      return sorted(rows)
    expected = sorted((tuple(i[i > 0]), tuple(t[t > 0]), int(k)) for i, t, k in zip(
        one_a_row['encoder_input_tokens'], one_a_row['decoder_target_tokens'],
        one_a_row[data.TASK_INDEX]))
    assert examples(packed, packed['encoder_segment_ids']) == expected
    assert packed['encoder_input_tokens'].shape[0] % 2 == 0
  for start in (1, 4):
    for a, b in zip(straight[start:], stream(start)):
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _setup(method=None, pack_lengths=None, loss='token_cross_entropy', config=None):
  run = types.SimpleNamespace(
      model=models.build(config or small_config(), method),
      data=settings(pack_lengths),
      optimizer=OptimizerSettings(optax.sgd, 1.0, None, 2, loss=loss))
  return types.SimpleNamespace(run=run, mesh=partitioning.make_mesh(1))


def test_packing_of_a_run():
  packing = run_setup.packing(_setup(PromptTuning(3), {'inputs': 134, 'targets': 12}))
  assert packing == data.Packing({'inputs': 134, 'targets': 12}, 3, 'prefix', 2)
  assert run_setup.packing(_setup(PromptTuning(3))) is None
  assert run_setup.packing(_setup(ModelTuning(), {'inputs': 64, 'targets': 12})).prompt_length == 0
  cross_only = PrefixTuning(2, blocks=('encoder_decoder_attention',))
  assert run_setup.packing(_setup(cross_only, {'inputs': 64, 'targets': 12})) is not None
  # Eval packs its rank classification whatever the training loss.
  hinge = _setup(PromptTuning(3), {'inputs': 134, 'targets': 12}, loss='hinge')
  assert run_setup.packing(hinge, training=False).lengths == {'inputs': 134, 'targets': 12}


@pytest.mark.parametrize('kwargs, message', [
    (dict(method=PromptTuning(3), pack_lengths={'inputs': 66, 'targets': 12}),
     r"PACK_LENGTHS\['inputs'\]=66 must hold the longest example with its prompt: 3"),
    (dict(method=PrefixTuning(2), pack_lengths={'inputs': 64, 'targets': 12}),
     'PACK_LENGTHS: PrefixTuning puts one key/value prefix before each row of attention'),
    (dict(method=PromptTuning(3), pack_lengths={'inputs': 134, 'targets': 12}, loss='hinge'),
     "LOSS='hinge' scores the labels of one example in one decoder row"),
    (dict(config=decoder_only_config(), pack_lengths={'inputs': 134, 'targets': 12}),
     'PACK_LENGTHS packs the rows of an encoder-decoder T5'),
])
def test_packing_that_cannot_work_is_refused_with_one_line(kwargs, message):
  with pytest.raises(UsageError, match=message):
    run_setup.packing(_setup(**kwargs))


@pytest.mark.parametrize('pack_lengths, message', [
    ({'inputs': 128}, r"PACK_LENGTHS must be None or \{'inputs': R, 'targets': D\}"),
    ({'inputs': 128, 'targets': 0}, r"PACK_LENGTHS\['targets'\] must be a positive integer"),
    ({'inputs': 128, 'targets': 8}, r"PACK_LENGTHS\['targets'\]=8 must hold the longest target"),
])
def test_bad_pack_lengths_are_refused(pack_lengths, message):
  with pytest.raises(UsageError, match=message):
    settings(pack_lengths)


def test_a_packed_example_too_long_for_its_row_is_a_data_error():
  from prompt_tuning_jax.errors import DataError  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match='does not fit a packed row'):
    data.pack_rows(np.array([10]), np.array([2]), data.Packing({'inputs': 12, 'targets': 4}, 3))


def test_a_packed_run_is_configured_by_gin_and_planned_at_its_row_lengths(
    restore_ptj_global_state):
  from prompt_tuning_jax import config  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import dry_run  # pylint: disable=g-import-not-at-top
  run = config.configure('train', ['runs/smoke.gin'], [
      "MODEL_DIR = '/tmp/unused'", "PACK_LENGTHS = {'inputs': 148, 'targets': 12}"]).settings
  assert run.data.pack_lengths == {'inputs': 148, 'targets': 12}
  report = dry_run.plan(run)  # the worst case: a row per example
  assert (report.encoder_length, report.decoder_length) == (148, 12)


@pytest.mark.slow
def test_a_packed_run_resumed_inside_its_stream_ends_as_an_uninterrupted_one(
    tmp_path, capsys, restore_ptj_global_state):
  """`ptj train` on packed, bucketed rows with accumulation: 3 steps, then resumed to 6, gives
  the prompt of 6 steps straight, bit for bit."""
  from prompt_tuning_jax import cli  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import prompt_io  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import train_state  # pylint: disable=g-import-not-at-top
  args = ['train', '--gin_file=runs/smoke.gin', "--gin.PACK_LENGTHS={'inputs': 148, "
          "'targets': 12}", "--gin.LENGTH_BUCKETS='pow2'", '--gin.EVAL_PERIOD=None',
          '--gin.CHECKPOINT_PERIOD=3', '--gin.LOG_PERIOD=3', '--gin.ACCUMULATION_STEPS=2']
  resumed, straight = tmp_path / 'resumed', tmp_path / 'straight'
  for model_dir, steps in ((resumed, 3), (resumed, 6), (straight, 6)):
    assert cli.main([*args, f'--gin.MODEL_DIR={model_dir}', f'--gin.TRAIN_STEPS={steps}']) == 0
  err = capsys.readouterr().err
  assert 'Resuming from step 3.' in err and 'The data differ' not in err
  prompts = [prompt_io.load_prompt(train_state.prompt_file(str(d), 6))
             for d in (resumed, straight)]
  np.testing.assert_array_equal(*prompts)


def test_the_padding_metric_counts_no_prompt_slot_as_text_or_padding():
  from prompt_tuning_jax import logging_utils  # pylint: disable=g-import-not-at-top
  batch = unpacked_batch()
  packed = data.pack_batch(batch, data.Packing({'inputs': 2 * (3 + 64), 'targets': 12}, 3))
  one_a_row, rows = logging_utils.BatchShape.of(batch), logging_utils.BatchShape.of(packed)
  assert rows.tokens == one_a_row.tokens
  slots = (packed[data.PROMPT_SLOTS] >= 0).sum()
  assert slots == 3 * BATCH
  assert rows.positions == (packed['encoder_input_tokens'].size
                            + packed['decoder_target_tokens'].size - slots)


@pytest.mark.parametrize('name', ['prompt_tuning', 'multi_task',
                                  'ia3', 'cross_attention_prefix'])
def test_packed_rank_classification_scores_what_one_example_a_row_scores(name):
  """Rank classification of packed rows (a prompt per example, tasks mixed in a row) scores
  every example's labels as one example a row does: in float64 (1e-9 as above), with labels
  of unequal lengths, so a label reading another example or another label shows."""
  method, _ = METHODS[name]
  model = models.T5(small_config(vocab_size=smoke.VOCABULARY.vocab_size, dtype=jnp.float64),
                    method=method)
  batch = unpacked_batch([0, 1, 1, 0, 1, 0, 0, 1] if name == 'multi_task' else None)
  p = method.added_positions
  packing = data.Packing({'inputs': 3 * (p + 40), 'targets': 24}, p,
                         getattr(method, 'placement', 'prefix'))
  packed = data.pack_batch(batch, packing)
  rows = data.pack_rows(data.example_lengths(batch['encoder_input_tokens']),
                        data.example_lengths(batch['decoder_target_tokens']), packing)
  members = max(len(r) for r in rows)
  assert members >= 2 and len(rows) < BATCH
  labels = np.array([[7, 9, 1], [12, 1, 0], [5, 30, 1]], np.int32)
  with jax.enable_x64(True):
    params = model.init(jax.random.PRNGKey(0), batch['encoder_input_tokens'][:1],
                        batch['decoder_input_tokens'][:1], batch['decoder_target_tokens'][:1],
                        method_inputs=MethodInputs(task_index=batch[data.TASK_INDEX][:1]),
                        enable_dropout=False)['params']
    scale = 1.0 if name in ('ia3', 'cross_attention_prefix') else 4.0
    params = jax.tree.map(lambda x: x.astype(jnp.float64) * scale, params)
    _, one_a_row = scoring.rank_classify(
        model, params, batch['encoder_input_tokens'], labels,
        method_inputs=MethodInputs(task_index=batch[data.TASK_INDEX]))
    best, by_row = scoring.jit_rank_classify_packed(
        model, params, {k: packed[k] for k in (
            'encoder_input_tokens', 'encoder_segment_ids', data.TASK_INDEX, data.PROMPT_SLOTS)
            if k in packed}, labels, members=members)
  one_a_row = np.asarray(one_a_row)
  assert np.ptp(one_a_row, axis=0).min() > 0.1  # the examples' scores differ
  by_example = np.zeros_like(one_a_row)
  for r, row in enumerate(rows):
    for j, i in enumerate(row):
      by_example[i] = by_row[r, j]
      assert best[r, j] == np.argmax(by_row[r, j])
  np.testing.assert_allclose(by_example, one_a_row, rtol=1e-9)


def test_ptj_eval_with_pack_lengths_reports_the_metrics_of_one_example_a_row(
    tmp_path, monkeypatch, restore_ptj_global_state):
  """`ptj eval` of a prompt file, rank classification with and without PACK_LENGTHS (rows of
  two or more examples): the same metrics, from packed rows in the packed run only."""
  from prompt_tuning_jax import cli  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import prompt_io  # pylint: disable=g-import-not-at-top
  prompt = tmp_path / 'prompt.npy'
  prompt_io.save_prompt(str(prompt), np.random.default_rng(0).normal(size=(10, 64)) * 4)
  members = []
  jit_packed = scoring.jit_rank_classify_packed

  def recording(*args, **kwargs):
    members.append(kwargs['members'])
    return jit_packed(*args, **kwargs)

  monkeypatch.setattr(scoring, 'jit_rank_classify_packed', recording)
  summaries = []
  for name, packed in (('one_a_row', []), ('packed', ["--gin.PACK_LENGTHS={'inputs': 148, "
                                                      "'targets': 12}"])):
    model_dir = tmp_path / name
    assert cli.main(['eval', '--gin_file=runs/smoke.gin', f'--gin.MODEL_DIR={model_dir}',
                     f'--gin.PROMPT_FILE={prompt}', "--gin.EVAL_METHODS=('rank_classification',)",
                     '--gin.NUM_EVAL_EXAMPLES=100', *packed]) == 0
    summaries.append((model_dir / 'eval' / 'summary.txt').read_text())
    assert bool(members) == bool(packed)
  assert min(members) >= 2
  assert 'rank_classification/accuracy' in summaries[0]
  assert summaries[1] == summaries[0]
