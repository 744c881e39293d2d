"""The runs `ptj` starts: train, evaluate, infer.

Every run first checks what a user can get wrong, before anything compiles:
the task name, the feature lengths, the batch size against the devices, the
vocabulary against the embedding table, the prompt file's shape and the
checkpoint. Then it builds the parameters: the frozen weights come from
INITIAL_CHECKPOINT_PATH (T5X or Hugging Face format), or are random when it
is None (the smoke run, announced loudly); the prompt comes from the chosen
initialiser, or from PROMPT_FILE.

Training resumes from the latest checkpoint in MODEL_DIR. The data position
is the step: batches are a deterministic function of the seed, and a resumed
run skips the batches already seen (see `data.py`), so an interrupted run ends
with exactly the prompt of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import evaluation
from prompt_tuning_jax import inference
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import optim
from prompt_tuning_jax import partitioning
from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax.checkpoints import hf as hf_lib
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import sharded as sharded_lib
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib

logger = logging.getLogger('prompt_tuning_jax')

PROMPT_PATH = 'encoder/prompt/prompt/prompt'
PROMPT_INITS = ('random_uniform', 'sampled_vocab', 'class_labels', 'from_text')
CONFIG_FILE = 'config.gin'


class DivergedError(RuntimeError):
  """The loss became NaN or infinite."""


# ------------------------------------------------------------------ setup


@dataclasses.dataclass(frozen=True)
class PromptSettings:
  """Where the prompt's initial value comes from (PROMPT_FILE wins over `init`)."""
  init: str = 'class_labels'
  file: Optional[str] = None
  class_labels: Optional[Sequence[str]] = None
  text: Optional[str] = None


@dataclasses.dataclass
class Setup:
  """What every run builds first: checked task, mesh, parameter shapes, vocabularies."""
  model: Any
  task_name: str
  lengths: dict[str, int]
  mesh: jax.sharding.Mesh
  abstract: dict  # parameter tree of ShapeDtypeStructs
  vocabularies: dict
  seed: int

  @property
  def has_prompt(self) -> bool:
    return PROMPT_PATH in tree_lib.flatten(self.abstract)

  @property
  def prompt_shape(self) -> tuple[int, int]:
    return tuple(tree_lib.flatten(self.abstract)[PROMPT_PATH].shape)


def setup(model, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], *,
          batch_size: Optional[int] = None, num_partitions: int = 1,
          mixture_or_task_module=None, seed: int = 0) -> Setup:
  """Checks the task, lengths, devices and vocabulary; traces parameter shapes (no compile)."""
  data_lib.import_task_modules(mixture_or_task_module)
  data_lib.get_mixture_or_task(mixture_or_task_name)  # Unknown names fail here.
  lengths = {k: int(v) for k, v in dict(task_feature_lengths).items()}
  if set(lengths) != {'inputs', 'targets'}:
    raise ValueError(f"TASK_FEATURE_LENGTHS must have exactly 'inputs' and 'targets', got {lengths}.")
  mesh = partitioning.make_mesh(num_partitions)
  data_parallel = mesh.shape[partitioning.DATA]
  if batch_size is not None and batch_size % data_parallel:
    raise ValueError(f'BATCH_SIZE={batch_size} is not divisible by the {data_parallel} data-parallel '
                     f'devices ({jax.device_count()} devices / NUM_PARTITIONS={num_partitions}).')
  dummy = jnp.ones((1, 1), jnp.int32)
  abstract = jax.eval_shape(
      lambda rng: model.init(rng, dummy, dummy, dummy, enable_dropout=False)['params'],
      jax.random.PRNGKey(0))
  vocabularies = data_lib.task_vocabularies(mixture_or_task_name)
  rows = tree_lib.flatten(abstract)['token_embedder/embedding'].shape[0]
  for feature, vocab in vocabularies.items():
    if vocab.vocab_size > rows:
      raise ValueError(f'The {feature!r} vocabulary of {mixture_or_task_name!r} has '
                       f'{vocab.vocab_size} tokens, more than the {rows} rows of the model\'s '
                       'embedding table: wrong model size file or vocabulary?')
  return Setup(model, mixture_or_task_name, lengths, mesh, abstract, vocabularies, seed)


def read_prompt_file(path: str, shape: tuple[int, int]) -> np.ndarray:
  """The prompt file, checked against (PROMPT_LENGTH, emb dim)."""
  try:
    return prompt_io.load_prompt(path, expected_shape=shape)
  except tree_lib.CheckpointError as e:
    raise tree_lib.CheckpointError(
        f'PROMPT_FILE: {e} (the model expects (PROMPT_LENGTH, emb dim) = {shape}).') from e


def load_frozen(s: Setup, checkpoint_path: Optional[str]) -> dict:
  """The full parameter tree: checkpoint weights, or random ones when the path is None.

  A prompt absent from the checkpoint stays a ShapeDtypeStruct (set later).
  """
  if checkpoint_path is None:
    logger.warning('!' * 78 + '\n!! INITIAL_CHECKPOINT_PATH is None: the frozen model is RANDOMLY '
                   'INITIALISED (seed %d).\n!! It knows nothing: expect the loss to fall but eval '
                   'metrics near chance.\n!! Fine for a smoke test; meaningless for research.\n'
                   + '!' * 78, s.seed)
    dummy = jnp.ones((1, 1), jnp.int32)
    init = jax.jit(lambda rng: s.model.init(rng, dummy, dummy, dummy,
                                            enable_dropout=False)['params'])
    flat = tree_lib.flatten(jax.device_get(init(jax.random.fold_in(jax.random.PRNGKey(s.seed), 0))))
    if PROMPT_PATH in flat:  # The prompt is set from PromptSettings, not the module default.
      flat[PROMPT_PATH] = tree_lib.flatten(s.abstract)[PROMPT_PATH]
    return tree_lib.unflatten(flat)
  local = '://' not in checkpoint_path
  is_hf = checkpoint_path.endswith(('.safetensors', '.safetensors.index.json')) or (
      local and os.path.isdir(checkpoint_path) and any(
          os.path.exists(os.path.join(checkpoint_path, f))
          for f in ('model.safetensors', 'model.safetensors.index.json')))
  logger.info('Reading the frozen model from %s (%s format).', checkpoint_path,
              'Hugging Face' if is_hf else 'T5X')
  if is_hf:
    return tree_lib.merge_params(s.abstract, hf_lib.load_hf(checkpoint_path)[0])
  # T5X: each process reads only its devices' slices, straight into their shards.
  shardings = partitioning.param_shardings(s.abstract, s.mesh)
  target = jax.tree.map(lambda a, sharding: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                 sharding=sharding),
                        s.abstract, shardings)
  flat = tree_lib.flatten(sharded_lib.load_t5x_sharded(checkpoint_path, target))
  for path, leaf in tree_lib.flatten(s.abstract).items():
    flat.setdefault(path, leaf)  # The prompt, when the checkpoint has none.
  return tree_lib.unflatten(flat)


def initial_prompt(s: Setup, params: Mapping[str, Any], settings: PromptSettings) -> np.ndarray:
  """The prompt's starting value, [PROMPT_LENGTH, emb] float32."""
  shape = s.prompt_shape
  if settings.file:
    logger.info('Prompt initialised from PROMPT_FILE %s.', settings.file)
    return read_prompt_file(settings.file, shape)
  embedding = tree_lib.flatten(params)['token_embedder/embedding']
  name = settings.init
  if name not in PROMPT_INITS:
    raise ValueError(f'Unknown PROMPT_INIT {name!r}; expected one of {PROMPT_INITS} '
                     '(or set PROMPT_FILE).')
  vocab = s.vocabularies['inputs']
  if name == 'class_labels':
    words = evaluation.label_words(s.task_name, settings.class_labels)
    if not words:
      logger.info('PROMPT_INIT=class_labels: %s has no label words (set CLASS_LABELS); '
                  'using sampled_vocab.', s.task_name)
      name = 'sampled_vocab'
    else:
      logger.info('Prompt initialised from the class labels %s.', words)
      init = prompts_lib.class_labels(embedding, prompts_lib.label_token_ids_from_words(vocab, words))
  if name == 'sampled_vocab':
    init = prompts_lib.sampled_vocab(embedding)
  elif name == 'random_uniform':
    init = prompts_lib.random_uniform()
  elif name == 'from_text':
    if not settings.text:
      raise ValueError("PROMPT_INIT='from_text' needs the text: bind PromptSettings.text.")
    init = prompts_lib.from_text(embedding, list(vocab.encode(settings.text)))
  rng = jax.random.fold_in(jax.random.PRNGKey(s.seed), 1)
  return np.asarray(init(rng, shape, jnp.float32))


def check_sources(s: Setup, checkpoint_path: Optional[str], prompt: PromptSettings) -> None:
  """Cheap checks of the checkpoint path and the prompt file, before any loading."""
  if checkpoint_path is not None and '://' not in checkpoint_path and not os.path.exists(
      checkpoint_path):
    raise tree_lib.CheckpointError(
        f'INITIAL_CHECKPOINT_PATH {checkpoint_path!r} does not exist.')
  if prompt.file and s.has_prompt:
    read_prompt_file(prompt.file, s.prompt_shape)


def build_params(s: Setup, checkpoint_path: Optional[str], prompt: PromptSettings) -> dict:
  """Frozen weights + initial prompt, as a host parameter tree."""
  check_sources(s, checkpoint_path, prompt)
  flat = tree_lib.flatten(load_frozen(s, checkpoint_path))
  if s.has_prompt:
    if isinstance(flat[PROMPT_PATH], jax.ShapeDtypeStruct) or prompt.file:
      flat[PROMPT_PATH] = initial_prompt(s, tree_lib.unflatten(flat), prompt)
    else:
      logger.info('The checkpoint holds a prompt; it is the starting prompt.')
  return tree_lib.unflatten(flat)


def _on_devices(tree, mesh):
  return jax.device_put(tree, partitioning.param_shardings(tree, mesh))


# ------------------------------------------------------------------ train


def train(*, model_dir: str, model, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], batch_size: int, train_steps: int,
          initial_checkpoint_path: Optional[str], prompt: PromptSettings = PromptSettings(),
          optimizer: Callable[..., optax.GradientTransformation] = optim.adafactor,
          learning_rate: float | Callable = 0.3,
          trainable_rules: Sequence[str] = optim.PROMPT_TUNING_RULES,
          seed: int = 0, checkpoint_period: int = 1000, keep_checkpoints: int = 3,
          log_period: int = 100, eval_period: Optional[int] = None,
          eval_settings: Optional[evaluation.EvalSettings] = None,
          accumulation_steps: int = 1, z_loss: float = 1e-4, loss_normalization: str = 'sum',
          num_partitions: int = 1, mixture_or_task_module=None,
          config_text: Optional[str] = None) -> dict[str, Any]:
  """Trains (or resumes) in MODEL_DIR; returns a summary of where things are."""
  s = setup(model, mixture_or_task_name, task_feature_lengths, batch_size=batch_size,
            num_partitions=num_partitions, mixture_or_task_module=mixture_or_task_module,
            seed=seed)
  if batch_size % accumulation_steps:
    raise ValueError(f'BATCH_SIZE={batch_size} is not divisible by '
                     f'ACCUMULATION_STEPS={accumulation_steps}.')
  check_sources(s, initial_checkpoint_path, prompt)
  primary = jax.process_index() == 0
  eval_settings = eval_settings or evaluation.EvalSettings()
  evaluator = None
  if eval_period:  # Built now: a missing eval split fails before training.
    evaluator = evaluation.Evaluator(model, mixture_or_task_name, s.lengths, eval_settings,
                                     class_labels=prompt.class_labels)
  params = build_params(s, initial_checkpoint_path, prompt)
  ckpt = train_state_lib.TrainStateCheckpointer(
      model_dir, keep=keep_checkpoints, best_metric=eval_settings.best_metric,
      best_mode=eval_settings.best_mode)
  if config_text is not None and primary:
    tree_lib.write_bytes(os.path.join(model_dir, CONFIG_FILE), config_text.encode())

  # Batches are a function of these and the step (see data.py): the data position.
  data_position = {'mixture_or_task_name': mixture_or_task_name, 'split': 'train',
                   'seed': seed, 'batch_size': batch_size}
  trainable, frozen = optim.partition(params, trainable_rules)
  tx = optim.partitioned_optimizer(params, optimizer(learning_rate=learning_rate), trainable_rules)
  frozen = _on_devices(frozen, s.mesh)
  abstract_state = jax.eval_shape(lambda t, f: optim.init_train_state(t, f, tx), trainable, frozen)
  state_shardings = partitioning.shardings_like_params(abstract_state, params, s.mesh)
  if ckpt.latest_step() is not None:
    target = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                          abstract_state, state_shardings)
    state, meta = ckpt.restore(target)
    logger.info('Resuming from step %d.', int(state.step))
    saved = meta.get('data_position', {})
    changed = {k: (saved.get(k), v) for k, v in data_position.items() if saved.get(k) != v}
    if changed:
      logger.warning('The data differ from the checkpoint\'s (saved, now): %s; the resumed run '
                     'will not see the batches an uninterrupted one would.', changed)
  else:
    state = jax.jit(lambda t, f: optim.init_train_state(t, f, tx),
                    out_shardings=state_shardings)(_on_devices(trainable, s.mesh), frozen)
  del params, trainable
  start = int(jax.device_get(state.step))
  writer = logging_utils.MetricsWriter(model_dir, enabled=primary)
  summary = {'model_dir': model_dir, 'start_step': start}
  if start >= train_steps:
    logger.info('MODEL_DIR already holds step %d >= TRAIN_STEPS=%d: nothing to train.',
                start, train_steps)
    return {**summary, 'final_step': start, **_paths(model_dir, ckpt, start, s.has_prompt)}

  lr_fn = learning_rate if callable(learning_rate) else (lambda step: learning_rate)
  dropout = getattr(getattr(model, 'config', None), 'dropout_rate', 0.0)
  step_fn = jax.jit(
      optim.make_train_step(
          model, tx, z_loss=z_loss, loss_normalization=loss_normalization,
          accumulation_steps=accumulation_steps,
          dropout_rng=jax.random.fold_in(jax.random.PRNGKey(seed), 2) if dropout else None,
          learning_rate_fn=lambda step: jnp.asarray(lr_fn(step), jnp.float32)),
      donate_argnums=(0,), out_shardings=(state_shardings, partitioning.replicated(s.mesh)))
  shard_index, num_shards = partitioning.data_shard(s.mesh)
  ds = data_lib.get_dataset(data_lib.DataConfig(
      mixture_or_task_name, s.lengths, batch_size, seed=seed, shard_index=shard_index,
      num_shards=num_shards), start_step=start)
  batches = data_lib.iterate(ds)
  counter = data_lib.TruncationCounter(s.lengths)

  def next_batch():
    host = counter.pop(next(batches))
    tokens = int((host['encoder_input_tokens'] > 0).sum() + (host['decoder_target_tokens'] > 0).sum())
    return partitioning.global_batch(host, s.mesh), tokens * num_shards

  batch, tokens = next_batch()
  tick = time.time()
  compiled = step_fn.lower(state, frozen, batch).compile()
  logger.info('Compiled the train step in %.1fs; training steps %d..%d of %d.',
              time.time() - tick, start + 1, train_steps, train_steps)

  window = logging_utils.TrainWindow(loss_normalization)
  progress = logging_utils.Progress(start, train_steps)
  last_saved = ckpt.latest_step()
  try:
    for step in range(start + 1, train_steps + 1):
      state, metrics = compiled(state, frozen, batch)
      window.add(metrics, tokens)
      progress.update()
      is_last = step == train_steps
      if step % log_period == 0 or is_last:
        _check_finite(window, step, last_saved, model_dir)
        values = window.averages()
        values.update(learning_rate=float(lr_fn(step - 1)), **counter.metrics())
        values.update(examples_per_second=batch_size * window.steps_done / window.seconds,
                      tokens_per_second=window.tokens_done / window.seconds)
        eta = (train_steps - step) * window.total_seconds / max(step - start, 1)
        progress.log(logging_utils.format_train_line(step, train_steps, values, eta))
        writer.write(step, 'train', values)
        window.reset()
      eval_now = evaluator is not None and (step % eval_period == 0 or is_last)
      if eval_now or step % checkpoint_period == 0 or is_last:
        _check_finite(window, step, last_saved, model_dir)
        if not bool(all_finite(state.trainable)):
          raise DivergedError(
              f'The trained parameters became NaN/inf by step {step}: training stopped and '
              f'nothing after step {last_saved} was saved. Lower LEARNING_RATE, or check the data.')
        pause = time.time()
        eval_metrics = None
        if eval_now:
          eval_metrics, value = _run_eval(evaluator, merge_params(state, frozen), step, writer,
                                          progress)
          if value is not None:  # Orbax keeps the best checkpoint by this value.
            eval_metrics[eval_settings.best_metric] = value
        last_saved = ckpt.save(state, data_position={**data_position, 'step': step},
                               metrics=eval_metrics)
        window.exclude(time.time() - pause)
      if not is_last:
        batch, tokens = next_batch()
  finally:
    progress.close()
    writer.close()
  final = int(jax.device_get(state.step))
  paths = _paths(model_dir, ckpt, final, s.has_prompt)
  if primary and paths.get('best_step') is not None:
    train_state_lib.write_json(os.path.join(model_dir, 'best_checkpoint.json'), {
        'step': paths['best_step'], 'metric': eval_settings.best_metric,
        'value': (ckpt.metrics(paths['best_step']) or {}).get(eval_settings.best_metric),
        'prompt_file': paths.get('best_prompt_file')})
  ckpt.close()
  return {**summary, 'final_step': final, **counter.metrics(), **paths}


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def merge_params(state: optim.TrainState, frozen: dict) -> dict:
  return optim.merge(state.trainable, frozen)


def _run_eval(evaluator, params, step, writer, progress):
  tick = time.time()
  metrics = evaluator.evaluate(params, step)
  for line in evaluation.summary_lines(metrics, step):
    progress.log(line)
  progress.log(f'eval took {time.time() - tick:.1f}s')
  by_task: dict[str, dict[str, float]] = {}
  for key, value in metrics.items():
    task, name = key.split('/', 1)
    by_task.setdefault(task, {})[name] = value
  for task, values in by_task.items():
    writer.write(step, f'eval/{task}', values)
  best = evaluator.settings.best_metric
  return dict(metrics), (evaluation.selection_value(metrics, best) if best else None)


def _paths(model_dir: str, ckpt: train_state_lib.TrainStateCheckpointer, step: int,
           has_prompt: bool) -> dict:
  prompt_file = lambda s: train_state_lib.prompt_file(model_dir, s) if has_prompt else None
  out = {'checkpoint_dir': os.path.join(model_dir, train_state_lib.CHECKPOINT_SUBDIR, str(step)),
         'prompt_file': prompt_file(step),
         'metrics_file': os.path.join(model_dir, logging_utils.METRICS_FILE),
         'tensorboard_dir': os.path.join(model_dir, logging_utils.TENSORBOARD_SUBDIR)}
  best = ckpt.best_step()
  if best is not None:
    out.update(best_step=best, best_prompt_file=prompt_file(best))
  return out


def _check_finite(window: logging_utils.TrainWindow, step: int, last_saved: Optional[int],
                  model_dir: str) -> None:
  """Raises DivergedError if a loss of the window is NaN/inf (before anything is saved)."""
  bad = window.first_nonfinite_loss(step)
  if bad is None:
    return
  where = (f'the last good checkpoint is step {last_saved} in '
           f'{os.path.join(model_dir, train_state_lib.CHECKPOINT_SUBDIR)}'
           if last_saved is not None else 'no checkpoint was saved')
  raise DivergedError(f'The loss became {bad[1]} at step {bad[0]}: training stopped and nothing '
                      f'after it was saved; {where}. Lower LEARNING_RATE, or check the data.')


# ------------------------------------------------------------------ eval / infer


def trained_params(s: Setup, model_dir: str, checkpoint_path: Optional[str],
                   prompt: PromptSettings, checkpoint_step: int | str = 'latest'
                   ) -> tuple[dict, Optional[int]]:
  """Frozen weights + the trained parameters: from PROMPT_FILE, else from MODEL_DIR.

  `checkpoint_step` is 'latest', 'best' or a step number. Returns (device
  params, the checkpoint step, or None for PROMPT_FILE).
  """
  if prompt.file:
    return _on_devices(build_params(s, checkpoint_path, prompt), s.mesh), None
  ckpt = train_state_lib.TrainStateCheckpointer(model_dir, read_only=True, best_metric=(
      None if checkpoint_step != 'best' else _saved_best_metric(model_dir)))
  if not ckpt.all_steps():
    raise FileNotFoundError(
        f'Nothing to load: no checkpoint in {model_dir}/{train_state_lib.CHECKPOINT_SUBDIR} '
        'and PROMPT_FILE is not set. Train first, or pass --gin.PROMPT_FILE=...')
  step = {'latest': None, 'best': ckpt.best_step()}.get(checkpoint_step, checkpoint_step)
  trainable, step = ckpt.restore_trainable(None if step is None else int(step))
  flat = tree_lib.flatten(load_frozen(s, checkpoint_path))
  expected = tree_lib.flatten(s.abstract)
  for path, value in tree_lib.flatten(trainable).items():
    if path not in expected or tuple(np.shape(value)) != tuple(expected[path].shape):
      raise tree_lib.CheckpointError(
          f'{model_dir} step {step}: {path} has shape {np.shape(value)}, the model expects '
          f'{getattr(expected.get(path), "shape", "nothing")}: the run used another config.')
    flat[path] = np.asarray(value)
  return _on_devices(tree_lib.unflatten(flat), s.mesh), step


def _saved_best_metric(model_dir: str) -> Optional[str]:
  path = os.path.join(model_dir, 'best_checkpoint.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'EVAL_CHECKPOINT_STEP=best but {path} does not exist '
                            '(no eval ran during training).')
  with open(path) as f:
    return json.load(f)['metric']


def evaluate(*, model_dir: str, model, mixture_or_task_name: str,
             task_feature_lengths: Mapping[str, int], initial_checkpoint_path: Optional[str],
             prompt: PromptSettings = PromptSettings(),
             eval_settings: evaluation.EvalSettings = evaluation.EvalSettings(),
             checkpoint_step: int | str = 'latest', num_partitions: int = 1,
             mixture_or_task_module=None, seed: int = 0,
             config_text: Optional[str] = None) -> dict[str, float]:
  """Evaluates a trained prompt (or PROMPT_FILE); writes metrics and a summary to MODEL_DIR."""
  s = setup(model, mixture_or_task_name, task_feature_lengths, batch_size=None,
            num_partitions=num_partitions, mixture_or_task_module=mixture_or_task_module,
            seed=seed)
  evaluator = evaluation.Evaluator(model, mixture_or_task_name, s.lengths, eval_settings,
                                   class_labels=prompt.class_labels)
  params, step = trained_params(s, model_dir, initial_checkpoint_path, prompt, checkpoint_step)
  source = prompt.file if step is None else f'{model_dir} step {step}'
  step = step or 0
  primary = jax.process_index() == 0
  eval_dir = os.path.join(model_dir, 'eval')
  if primary and config_text is not None:
    tree_lib.write_bytes(os.path.join(eval_dir, CONFIG_FILE), config_text.encode())
  logger.info('Evaluating %s on %s:%s.', source, mixture_or_task_name, eval_settings.split)
  writer = logging_utils.MetricsWriter(model_dir, enabled=primary)
  progress = logging_utils.Progress(0, 0)
  metrics, _ = _run_eval(evaluator, params, step, writer, progress)
  writer.close()
  if primary:
    with open(os.path.join(eval_dir, 'summary.txt'), 'a') as f:
      f.write(f'# {source} on {mixture_or_task_name}:{eval_settings.split}\n')
      f.writelines(line + '\n' for line in evaluation.summary_lines(metrics, step))
  return metrics


def infer(*, model_dir: str, model, mixture_or_task_name: str,
          task_feature_lengths: Mapping[str, int], initial_checkpoint_path: Optional[str],
          prompt: PromptSettings = PromptSettings(), checkpoint_step: int | str = 'latest',
          input_file: Optional[str] = None, split: str = 'validation',
          output_file: Optional[str] = None, method: str = 'decode', decoder: str = 'greedy',
          beam_size: int = 4, alpha: float = 0.6, batch_size: int = 32,
          num_examples: Optional[int] = None, num_partitions: int = 1,
          mixture_or_task_module=None, seed: int = 0,
          config_text: Optional[str] = None) -> str:
  """Writes predictions as jsonl; returns the output path."""
  s = setup(model, mixture_or_task_name, task_feature_lengths, batch_size=None,
            num_partitions=num_partitions, mixture_or_task_module=mixture_or_task_module,
            seed=seed)
  if input_file:
    records = inference.read_input_file(input_file)[:num_examples or None]
    examples, truncated = inference.examples_from_records(
        records, s.vocabularies['inputs'], s.lengths['inputs'])
    if truncated:
      logger.warning('%d of %d inputs were longer than %d tokens and were truncated.',
                     truncated, len(examples), s.lengths['inputs'])
    name = os.path.splitext(os.path.basename(input_file))[0]
  else:
    examples = inference.examples_from_task(mixture_or_task_name, split, s.lengths, num_examples)
    name = f'{mixture_or_task_name}_{split}'
  params, step = trained_params(s, model_dir, initial_checkpoint_path, prompt, checkpoint_step)
  source = prompt.file if step is None else f'{model_dir} step {step}'
  logger.info('Predicting %d examples with %s (%s).', len(examples), source, method)
  records = inference.predict(
      model, params, examples, s.vocabularies['targets'], input_length=s.lengths['inputs'],
      max_decode_length=s.lengths['targets'], batch_size=batch_size, method=method,
      decoder=decoder, beam_size=beam_size, alpha=alpha,
      label_words=evaluation.label_words(mixture_or_task_name, prompt.class_labels))
  suffix = 'prompt_file' if step is None else f'step{step}'
  output_file = output_file or os.path.join(model_dir, 'inference', f'{name}_{suffix}.jsonl')
  if jax.process_index() == 0:
    if config_text is not None:
      tree_lib.write_bytes(os.path.join(model_dir, 'inference', CONFIG_FILE), config_text.encode())
    inference.write_jsonl(output_file, records)
  logger.info('Wrote %d predictions to %s.', len(records), output_file)
  return output_file
