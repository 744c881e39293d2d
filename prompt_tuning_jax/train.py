"""The train loop: train (or resume) a prompt in MODEL_DIR; `ptj train` and `python -m`.

  python -m prompt_tuning_jax.train --gin_file=runs/smoke.gin --gin.MODEL_DIR=/tmp/smoke

`train` resumes from the latest checkpoint in MODEL_DIR. The data position is
the step: global batches are a deterministic function of the seed, the same on
any number of processes, and a resumed run skips the batches already seen (see
`data.py`), so an interrupted run ends with exactly the prompt of an
uninterrupted one, also when resumed on another number of hosts. Every LOG_PERIOD steps a log
line and metrics; every EVAL_PERIOD steps an eval; a checkpoint every
CHECKPOINT_PERIOD steps, at each eval and at the end. A NaN or infinite loss
stops the run before anything after it is saved. `ptj train` stops cleanly on
SIGTERM/SIGINT: the step in flight finishes and is saved (`preemption.py`).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from prompt_tuning_jax import config
from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import distributed
from prompt_tuning_jax import dry_run
from prompt_tuning_jax import evaluation
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import objectives
from prompt_tuning_jax import models
from prompt_tuning_jax import optim
from prompt_tuning_jax import partitioning
from prompt_tuning_jax import preemption
from prompt_tuning_jax import run_dir
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import train_step
from prompt_tuning_jax import wayward
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.errors import DivergedError, Stopped, UsageError
from prompt_tuning_jax.methods.hooks import SELF_ATTENTION
from prompt_tuning_jax.settings import TOKEN_CROSS_ENTROPY, RunSettings

logger = logging.getLogger('prompt_tuning_jax')

# A prompt whose longest row is more than this many times the longest row of the token
# embedding has diverged: no input the frozen model was trained on looks like it. Tuned
# prompts of the mini model stay within 1.1x; LEARNING_RATE=1e9 gave ~1e8x (eval 0%).
DIVERGENCE_FACTOR = 1000.0


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
  """The data-position entries that differ between a checkpoint's record and this run.

  The record comes back from JSON, so tuples are compared as the lists they were saved as.
  """
  as_saved = json.loads(json.dumps(now))
  return {k: (saved.get(k), now[k]) for k in now if saved.get(k) != as_saved[k]}


def train(run: RunSettings, *, save_config: Optional[Callable[[str], None]] = None,
          stop: Optional[preemption.StopSignals] = None) -> dict[str, Any]:
  """Trains (or resumes) in MODEL_DIR; returns a summary of where things are.

  `save_config(directory)` records the configuration once the run has started: the
  parameters and the checkpoint restored, the first batch read.
  When `stop` reports a signal, the step just run is saved and `Stopped` raised.
  """
  stop = stop or preemption.NoSignals()
  s = run_setup.setup(run, batch_size=run.data.batch_size)
  run_setup.check_sources(s)
  opt = run.optimizer
  label_sets = None  # A loss over the label set: each task's labels (refused without).
  if opt.loss != TOKEN_CROSS_ENTROPY:
    if isinstance(run.model.config, models.DecoderOnlyConfig):
      raise UsageError(f"LOSS={opt.loss!r} is for encoder-decoder models (their labels share a "
                       f"decoder row): a decoder-only LM trains with LOSS='{TOKEN_CROSS_ENTROPY}'.")
    if s.method.prefix_length(SELF_ATTENTION):  # Labels share a decoder row (pack_labels).
      raise UsageError(f"LOSS={opt.loss!r} scores the labels in one decoder row, which a prefix "
                       "in the decoder's self-attention cannot share: use LOSS="
                       f"'{TOKEN_CROSS_ENTROPY}', or PREFIX_BLOCKS without 'self_attention'.")
    label_sets = objectives.label_sets(run.data.mixture_or_task_name, opt.loss,
                                       run.prompt.class_labels, s.task_index)
  packing = run_setup.packing(s)
  model_dir, steps = run.model_dir, run.train_steps
  primary = jax.process_index() == 0
  evaluator = None
  if run.eval_period:  # Built now: a missing eval split fails before training.
    evaluator = evaluation.Evaluator(run.model, run.data.mixture_or_task_name, s.lengths,
                                     run.evaluation, class_labels=run.prompt.class_labels,
                                     mesh=s.mesh, length_buckets=run.data.length_buckets,
                                     task_index=s.task_index, target_sentinel=s.target_sentinel,
                                     packing=packing)
  # Checked now (the text fits the method's prompts); built once the embedding is loaded.
  wayward_ids = (wayward.text_ids(s.vocabularies['inputs'], opt.wayward_text, s.prompt_shapes)
                 if opt.wayward_weight else None)
  params = run_setup.build_params(s)
  ckpt = train_state_lib.TrainStateCheckpointer(
      model_dir, keep=run.checkpoints.keep, best_metric=run.evaluation.best_metric,
      best_mode=run.evaluation.best_mode, exports=s.method.exports)
  # Batches are a function of these and the step (see data.py): the data position.
  data_position = {'mixture_or_task_name': run.data.mixture_or_task_name, 'split': 'train',
                   'seed': run.data.seed, 'batch_size': run.data.batch_size,
                   'length_buckets': run.data.length_buckets,
                   'pack_lengths': run.data.pack_lengths}
  topology = distributed.topology(s.mesh)  # Recorded; may change on resume.
  regularizer = None
  if wayward_ids is not None:
    regularizer = wayward.regularizer(
        wayward.text_embedding(tree_lib.flatten(params)[models.embedding_path(tree_lib.flatten(params))],
                               wayward_ids, s.mesh), opt.wayward_weight, tuple(s.prompt_shapes))
    logger.info('Wayward prompt: %g x the squared distance of the first %d rows of %s from '
                'the embedded WAYWARD_TEXT joins the loss.', opt.wayward_weight,
                len(wayward_ids), ', '.join(s.prompt_shapes))
  trainable, frozen = optim.partition(params, run.trainable_rules)
  sizes = [sum(math.prod(x.shape) for x in jax.tree.leaves(t)) for t in (trainable, frozen)]
  logger.info('Training %s parameters (TRAINABLE_RULES=%s); %s frozen.', f'{sizes[0]:,}',
              run.trainable_rules, f'{sizes[1]:,}')
  tx = optim.partitioned_optimizer(params, opt.optimizer(learning_rate=opt.learning_rate),
                                   run.trainable_rules)
  norms = _PromptNorms(params, s.method, run.stop_on_divergence)
  frozen = run_setup.on_devices(frozen, s.mesh)
  abstract_state = jax.eval_shape(lambda t, f: train_step.init_train_state(t, f, tx), trainable,
                                  frozen)
  state_shardings = partitioning.shardings_like_params(abstract_state, params, s.mesh)
  if ckpt.latest_step() is not None:
    target = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                          abstract_state, state_shardings)
    state, meta = ckpt.restore(target)
    logger.info('Resuming from step %d.', int(state.step))
    changed = data_changes(meta.get('data_position', {}), data_position)
    if changed:
      logger.warning("The data differ from the checkpoint's (saved, now): %s; the resumed run "
                     'will not see the batches an uninterrupted one would.', changed)
    distributed.log_topology_change(meta.get('topology'), topology)
  else:
    state = jax.jit(lambda t, f: train_step.init_train_state(t, f, tx),
                    out_shardings=state_shardings)(run_setup.on_devices(trainable, s.mesh), frozen)
  del params, trainable
  start = int(jax.device_get(state.step))
  writer = logging_utils.MetricsWriter(model_dir, enabled=primary, resume_step=start)
  summary = {'model_dir': model_dir, 'start_step': start}
  if start >= steps:
    logger.info('MODEL_DIR already holds step %d >= TRAIN_STEPS=%d: nothing to train.',
                start, steps)
    return {**summary, 'final_step': start, **_paths(model_dir, ckpt, start, s.method.prompt_file)}

  lr = opt.learning_rate
  lr_fn = lr if callable(lr) else (lambda step: lr)
  dropout = getattr(getattr(run.model, 'config', None), 'dropout_rate', 0.0)
  step_fn = jax.jit(
      train_step.make_train_step(
          run.model, tx, z_loss=opt.z_loss, loss_normalization=opt.loss_normalization,
          accumulation_steps=opt.accumulation_steps,
          dropout_rng=jax.random.fold_in(jax.random.PRNGKey(run.data.seed), 2) if dropout else None,
          learning_rate_fn=lambda step: jnp.asarray(lr_fn(step), jnp.float32),
          label_objective=None if label_sets is None else label_sets.objective(
              objectives.label_loss(opt.loss, opt.hinge_margin)),
          regularizer=regularizer),
      donate_argnums=(0,), out_shardings=(state_shardings, partitioning.replicated(s.mesh)))
  # Every process reads the same global batches and places its devices' rows.
  batches = data_lib.train_batches(run.data, start_step=start, task_index=s.task_index,
                                   feature_converter_cls=run.model.FEATURE_CONVERTER_CLS,
                                   packing=packing)
  counter = data_lib.TruncationCounter(s.lengths)

  def next_batch():
    try:
      host = counter.pop(next(batches))
    except StopIteration:  # The batches repeat the split: it is empty.
      raise data_lib.no_examples(run.data.mixture_or_task_name, 'train') from None
    if label_sets is not None:
      host[objectives.LABEL_INDEX] = label_sets.gold(host)
    return partitioning.global_batch(host, s.mesh), logging_utils.BatchShape.of(host)

  batch, shape = next_batch()
  if save_config is not None and primary:
    save_config(model_dir)
  window = logging_utils.TrainWindow(opt.loss_normalization)
  compiled_steps = {}  # One compiled step per batch shape (one per length-bucket pair).

  def compiled(state, frozen, batch):
    key = tuple(sorted((name, value.shape) for name, value in batch.items()))
    if key not in compiled_steps:
      tick = time.time()
      compiled_steps[key] = step_fn.lower(state, frozen, batch).compile()
      window.exclude(time.time() - tick)  # Compiling is not training throughput.
      logger.info('Compiled the train step for %s positions in %.1fs (%d shape(s) so far).',
                  _positions(batch), time.time() - tick, len(compiled_steps))
    return compiled_steps[key](state, frozen, batch)

  logger.info('Training steps %d..%d of %d.', start + 1, steps, steps)
  progress = logging_utils.Progress(start, steps)
  last_saved = ckpt.latest_step()
  try:
    for step in range(start + 1, steps + 1):
      state, metrics = compiled(state, frozen, batch)
      window.add(metrics, shape)
      progress.update()
      is_last = step == steps
      signum = None if is_last else stop.requested()
      if step % run.log_period == 0 or is_last or signum:
        _check_finite(window, step, last_saved, model_dir)
        prompt_norms = norms.check(state.trainable, step, _last_good(last_saved, model_dir))
        values = window.averages()
        values.update(learning_rate=float(lr_fn(step - 1)), **counter.metrics(), **prompt_norms)
        values.update(examples_per_second=run.data.batch_size * window.steps_done / window.seconds,
                      tokens_per_second=window.tokens_done / window.seconds,
                      **window.padding())
        eta = (steps - step) * window.total_seconds / max(step - start, 1)
        progress.log(logging_utils.format_train_line(step, steps, values, eta))
        writer.write(step, 'train', values)
        window.reset()
      eval_now = (evaluator is not None and (step % run.eval_period == 0 or is_last)
                  and not signum)  # A stopping run saves at once: the eval could outlast it.
      if eval_now or step % run.checkpoints.period == 0 or is_last or signum:
        _check_finite(window, step, last_saved, model_dir)
        if not bool(all_finite(state.trainable)):
          raise DivergedError(
              f'The trained parameters became NaN/inf by step {step}: training stopped and '
              f'nothing after it was saved; {_last_good(last_saved, model_dir)}. Lower '
              'LEARNING_RATE, or check the data.')
        norms.check(state.trainable, step, _last_good(last_saved, model_dir))
        pause = time.time()
        eval_metrics = None
        if eval_now:
          eval_metrics, value = evaluation.evaluate_and_record(
              evaluator, optim.merge(state.trainable, frozen), step, writer, progress)
          if value is not None:  # Orbax keeps the best checkpoint by this value.
            eval_metrics[run.evaluation.best_metric] = value
        last_saved = ckpt.save(state, data_position={**data_position, 'step': step},
                               metrics=eval_metrics, topology=topology)
        window.exclude(time.time() - pause)
      if signum:
        line = _stopped_line(signum, _paths(model_dir, ckpt, step, s.method.prompt_file))
        ckpt.close()
        raise Stopped(line, signum)
      if not is_last:
        batch, shape = next_batch()
  finally:
    progress.close()
    writer.close()
  final = int(jax.device_get(state.step))
  paths = _paths(model_dir, ckpt, final, s.method.prompt_file)
  best_metric = run.evaluation.best_metric
  if paths.get('best_step') is not None:
    # Reading the metrics back is collective (orbax): every process does it.
    best_value = (ckpt.metrics(paths['best_step']) or {}).get(best_metric)
    if primary:
      train_state_lib.write_json(os.path.join(model_dir, train_state_lib.BEST_CHECKPOINT_FILE), {
          'step': paths['best_step'], 'metric': best_metric, 'value': best_value,
          'prompt_file': paths.get('best_prompt_file')})
  ckpt.close()
  return {**summary, 'final_step': final, **counter.metrics(), **paths,
          'diverged_step': norms.diverged_step}


def _positions(batch: dict) -> str:
  """'inputs I / targets T' (T5), or 'sequence S' (a decoder-only batch)."""
  if 'encoder_input_tokens' in batch:
    return (f"inputs {batch['encoder_input_tokens'].shape[1]} / targets "
            f"{batch['decoder_target_tokens'].shape[1]}")
  return f"sequence {batch['decoder_target_tokens'].shape[1]}"


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _paths(model_dir: str, ckpt: train_state_lib.TrainStateCheckpointer, step: int,
           prompt_name: Optional[str]) -> dict:
  """Where the run's files are; `prompt_name`: the method's plain prompt export, if any."""
  prompt_file = lambda s: (os.path.join(train_state_lib.numpy_checkpoint_dir(model_dir, s),
                                        prompt_name) if prompt_name else None)
  out = {'checkpoint_dir': os.path.join(model_dir, train_state_lib.CHECKPOINT_SUBDIR, str(step)),
         'prompt_file': prompt_file(step),
         'metrics_file': os.path.join(model_dir, logging_utils.METRICS_FILE),
         'tensorboard_dir': os.path.join(model_dir, logging_utils.TENSORBOARD_SUBDIR)}
  best = ckpt.best_step()
  if best is not None:
    out.update(best_step=best, best_prompt_file=prompt_file(best))
  return out


def _stopped_line(signum: int, paths: dict[str, Any]) -> str:
  step = os.path.basename(paths['checkpoint_dir'])
  prompt = f", prompt file {paths['prompt_file']}" if paths['prompt_file'] else ''
  return (f'stopped by {signal.Signals(signum).name} after step {step}: saved checkpoint '
          f"{paths['checkpoint_dir']}{prompt}. Run the same command to resume.")


def _check_finite(window: logging_utils.TrainWindow, step: int, last_saved: Optional[int],
                  model_dir: str) -> None:
  """Raises DivergedError if a loss of the window is NaN/inf (before anything is saved)."""
  bad = window.first_nonfinite_loss(step)
  if bad is None:
    return
  raise DivergedError(f'The loss became {bad[1]} at step {bad[0]}: training stopped and nothing '
                      f'after it was saved; {_last_good(last_saved, model_dir)}. Lower '
                      'LEARNING_RATE, or check the data.')


@jax.jit
def _row_norms(matrix: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The longest row's norm, the rows' summed norms and their count (rows along the last axis)."""
  norms = jnp.linalg.norm(matrix.astype(jnp.float32), axis=-1)
  return jnp.max(norms), jnp.sum(norms), jnp.asarray(norms.size, jnp.float32)


class _PromptNorms:
  """The rows of the method's prompts against the token embedding's, at every log step:
  `prompt_norm` / `embedding_norm` (mean row norms) and `prompt_norm_ratio` (the longest
  prompt row over the embedding's longest). Warns once, or stops the run
  (STOP_ON_DIVERGENCE), when that ratio passes DIVERGENCE_FACTOR."""

  def __init__(self, params, method, stop: bool):
    flat = tree_lib.flatten(params)
    self.method = method
    self.stop = stop
    self.diverged_step = None
    self.embedding = None  # (longest row, mean row) norms; None without a prompt
    if any(method.is_prompt(path) for path in flat):
      longest, total, count = (float(x) for x in _row_norms(flat[models.embedding_path(flat)]))
      self.embedding = (longest, total / count)

  def check(self, trainable, step: int, last_good: str) -> dict[str, float]:
    """The logged norms ({} without a trained prompt)."""
    prompts = [v for path, v in tree_lib.flatten(trainable).items()
               if self.method.is_prompt(path)]
    if not prompts or not self.embedding:
      return {}
    rows = [[float(x) for x in _row_norms(prompt)] for prompt in prompts]
    norm = max(longest for longest, _, _ in rows)
    ratio = norm / self.embedding[0]
    values = {'prompt_norm': sum(r[1] for r in rows) / sum(r[2] for r in rows),
              'embedding_norm': self.embedding[1], 'prompt_norm_ratio': ratio}
    if not ratio > DIVERGENCE_FACTOR:  # NaN is _check_finite's.
      return values
    message = (f'The prompt diverged by step {step}: its longest row has norm {norm:.3g}, '
               f"{ratio:.3g}x the token embedding's longest row ({self.embedding[0]:.3g}; "
               f'the limit is {DIVERGENCE_FACTOR:g}x)')
    if self.stop:
      raise DivergedError(f'{message}: training stopped (STOP_ON_DIVERGENCE) and nothing after '
                          f'it was saved; {last_good}. Lower LEARNING_RATE.')
    if self.diverged_step is None:
      self.diverged_step = step
      logger.warning('%s: its eval metrics will mean nothing. Lower LEARNING_RATE; '
                     '--gin.STOP_ON_DIVERGENCE=True stops a run here.', message)
    return values


def _last_good(last_saved: Optional[int], model_dir: str) -> str:
  if last_saved is None:
    return 'no checkpoint was saved'
  return (f'the last good checkpoint is step {last_saved} in '
          f'{os.path.join(model_dir, train_state_lib.CHECKPOINT_SUBDIR)}')


# ------------------------------------------------------------------ command line


def summary_lines(result: dict[str, Any]) -> list[str]:
  """What `ptj train` prints at the end: where the checkpoint, prompt, logs and config are."""
  model_dir = result['model_dir']
  lines = [f"Done: step {result['final_step']}.",
           f"  checkpoint:  {result['checkpoint_dir']}"]
  if result['prompt_file']:
    lines.append(f"  prompt file: {result['prompt_file']}")
  if result.get('best_step') is not None:
    lines.append(f"  best:        step {result['best_step']} "
                 f"({os.path.join(model_dir, train_state_lib.BEST_CHECKPOINT_FILE)})")
  if result.get('diverged_step') is not None:
    lines.append(f"  WARNING:     the prompt diverged by step {result['diverged_step']} (its rows "
                 f"far longer than the embedding's; see the log): lower LEARNING_RATE")
  truncated = {k: int(v) for k, v in result.items() if k.startswith('truncated_') and v}
  if truncated:
    lines.append(f'  truncated:   {truncated} examples (longer than TASK_FEATURE_LENGTHS)')
  return lines + [f"  metrics:     {result['metrics_file']}",
                  f"  TensorBoard: tensorboard --logdir {result['tensorboard_dir']}",
                  f'  config:      {config.config_file(model_dir)}']


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`ptj train`; returns the exit status."""
  parser = config.gin_parser('train', 'train (or resume) a prompt in MODEL_DIR')
  parser.add_argument('--override_model_dir_config', action='store_true',
                      help='resume even though MODEL_DIR holds a run with another configuration')
  parser.add_argument('--dry_run', action='store_true',
                      help="print the mesh, every parameter's sharding and the memory per "
                      'device, then exit without allocating the model')
  parser.add_argument('--topology', default=None,
                      help='dry run on a declared topology instead of the visible devices, '
                      'e.g. v3-32, 8xA100-80GB (see partitioning.declared_topology)')

  def run(args: argparse.Namespace, configuration: config.Configuration) -> int:
    distributed.initialize()  # Before the dry run too: it plans for every host's devices.
    if args.dry_run:
      report = dry_run.plan(configuration.settings, args.topology)
      if distributed.is_primary():
        print(report, flush=True)
      return 0 if report.fits else 1
    model_dir = configuration.settings.model_dir
    run_dir.check_writable(model_dir)
    with run_dir.WriterLock(model_dir, enabled=distributed.is_primary()):
      config.check_model_dir(configuration, override=args.override_model_dir_config)
      with preemption.StopSignals() as stop, distributed.peer_failures():
        result = train(configuration.settings, save_config=configuration.save, stop=stop)
    print('\n'.join(summary_lines(result)), flush=True)
    return 0

  return config.run_command('train', parser, argv, run)


if __name__ == '__main__':
  sys.exit(main())
