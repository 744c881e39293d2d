"""What every run builds first: the checked setup and the parameters it starts from.

`setup` checks what a user can get wrong before anything compiles or loads:
the task name, the batch size against the devices, the vocabulary against the
embedding table (and its sentinel, with TARGET_SENTINEL), the method against the
run (`Method.check`); then it traces the parameter shapes. The parameters come from
INITIAL_CHECKPOINT_PATH (T5X or Hugging Face format), or are random when it is None
(the smoke run, announced loudly). The method's own parameters
(`Method.parameter_rules`) may be absent from the checkpoint: its prompts
(`Method.prompt_rules`) then start from PROMPT_FILE or the PROMPT_INIT initialiser
(`initial_prompt`), the others from their modules' initialisers. Trained parameters
come from MODEL_DIR's checkpoints (`trained_params`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax import data as data_lib
from prompt_tuning_jax import optim
from prompt_tuning_jax import partitioning
from prompt_tuning_jax import prompts as prompts_lib
from prompt_tuning_jax import remote
from prompt_tuning_jax.checkpoints import hf as hf_lib
from prompt_tuning_jax.checkpoints import prompt_io
from prompt_tuning_jax.checkpoints import sharded as sharded_lib
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.checkpoints import tree as tree_lib
from prompt_tuning_jax.errors import CheckpointError, UsageError
from prompt_tuning_jax import models
from prompt_tuning_jax import settings as settings_lib
from prompt_tuning_jax.methods import Method
from prompt_tuning_jax.methods.hooks import ATTENTION, SELF_ATTENTION
from prompt_tuning_jax.settings import BEST, LATEST, PromptSettings, RunSettings

logger = logging.getLogger('prompt_tuning_jax')


@dataclasses.dataclass(frozen=True)
class Setup:
  """A run's settings, checked, with its mesh, parameter shapes and vocabularies."""
  run: RunSettings
  mesh: jax.sharding.Mesh
  abstract: dict  # parameter tree of ShapeDtypeStructs
  vocabularies: dict
  # {task: the TASK_INDEX of its examples} for the run's tasks: the method's
  # (`Method.task_index`), else their places in the mixture. Batches, eval and infer use it.
  task_index: dict[str, int]
  # The id of <extra_id_0> that starts every target (TARGET_SENTINEL); None: off.
  target_sentinel: Optional[int] = None

  @property
  def lengths(self) -> dict[str, int]:
    return dict(self.run.data.task_feature_lengths)

  @property
  def method(self) -> Method:
    return self.run.model.method

  @property
  def prompt_shapes(self) -> dict[str, tuple[int, ...]]:
    """{path: shape} of the method's parameters that start as prompts."""
    return {path: tuple(leaf.shape) for path, leaf in tree_lib.flatten(self.abstract).items()
            if self.method.is_prompt(path)}

  @property
  def fallback_to_init(self) -> Optional[str]:
    """The regex of the parameters a frozen checkpoint may lack: the method's own."""
    rules = self.method.parameter_rules
    return '|'.join(f'(?:{rule})' for rule in rules) if rules else None


def _init_params(model, rng: jax.Array) -> dict:
  return model.init(rng, **models.dummy_inputs(model), enable_dropout=False)['params']


def setup(run: RunSettings, *, batch_size: Optional[int] = None) -> Setup:
  """Checks the remote paths, the task, the devices (for `batch_size`) and the vocabulary;
  traces shapes.

  Nothing is allocated or compiled.
  """
  remote.check_reachable(run.model_dir, 'MODEL_DIR', must_exist=False, output=True)
  remote.check_reachable(run.initial_checkpoint_path, 'INITIAL_CHECKPOINT_PATH')
  remote.check_reachable(run.prompt.file, 'PROMPT_FILE')
  task_name = run.data.mixture_or_task_name
  data_lib.import_task_modules(run.data.module)
  data_lib.get_mixture_or_task(task_name)  # Unknown names fail here.
  task_names = list(data_lib.task_index_of(task_name))
  run.model.method.check(task_names)
  task_index = run.model.method.task_index(task_names) or data_lib.task_index_of(task_name)
  mesh = partitioning.make_mesh(run.num_partitions)
  data_parallel = mesh.shape[partitioning.DATA]
  if batch_size is not None and batch_size % data_parallel:
    raise UsageError(f'BATCH_SIZE={batch_size} is not divisible by the {data_parallel} '
                     f'data-parallel devices ({jax.device_count()} devices / '
                     f'NUM_PARTITIONS={run.num_partitions}).')
  abstract = jax.eval_shape(lambda rng: _init_params(run.model, rng), jax.random.PRNGKey(0))
  vocabularies = data_lib.task_vocabularies(task_name)
  for feature, vocab in vocabularies.items():
    remote.check_reachable(
        getattr(vocab, 'sentencepiece_model_file', None), f'The {feature!r} vocabulary',
        local_copy='set PTJ_VOCAB (or --gin.get_vocabulary.path) to the local file')
  flat = tree_lib.flatten(abstract)
  rows = flat[models.embedding_path(flat)].shape[0]
  for feature, vocab in vocabularies.items():
    if vocab.vocab_size > rows:
      raise UsageError(f'The {feature!r} vocabulary of {task_name!r} has {vocab.vocab_size} '
                       f"tokens, more than the {rows} rows of the model's embedding table: "
                       'wrong model size file or vocabulary?')
  sentinel = data_lib.target_sentinel(task_name) if run.data.target_sentinel else None
  return Setup(run, mesh, abstract, vocabularies, task_index, sentinel)


def packing(s: Setup, *, training: bool = True) -> Optional[data_lib.Packing]:
  """How a run packs its training batches and its rank classification (PACK_LENGTHS), or
  None; refuses, with one line, a run whose model, method or (`training`) loss cannot keep
  packed examples apart."""
  run = s.run
  lengths = run.data.pack_lengths
  if lengths is None:
    return None
  method = run.model.method
  if isinstance(run.model.config, models.DecoderOnlyConfig):
    raise UsageError('PACK_LENGTHS packs the rows of an encoder-decoder T5; a decoder-only LM '
                     'trains with PACK_LENGTHS=None.')
  if training and run.optimizer.loss != settings_lib.TOKEN_CROSS_ENTROPY:
    raise UsageError(f'LOSS={run.optimizer.loss!r} scores the labels of one example in one '
                     "decoder row (a packing of its own): use PACK_LENGTHS=None, or LOSS="
                     f"'{settings_lib.TOKEN_CROSS_ENTROPY}'.")
  blocks = [b for b in (ATTENTION, SELF_ATTENTION) if method.prefix_length(b)]
  if blocks:
    raise UsageError(f'PACK_LENGTHS: {type(method).__name__} puts one key/value prefix before '
                     f'each row of {", ".join(blocks)}, which packed examples would share: use '
                     "PACK_LENGTHS=None, or PREFIX_BLOCKS=('encoder_decoder_attention',).")
  prompt = method.added_positions
  need = prompt + run.data.task_feature_lengths['inputs']
  if lengths['inputs'] < need:
    raise UsageError(f"PACK_LENGTHS['inputs']={lengths['inputs']} must hold the longest "
                     f"example with its prompt: {prompt} (the method's) + "
                     f"TASK_FEATURE_LENGTHS['inputs']={run.data.task_feature_lengths['inputs']}"
                     f' = {need}.')
  data_parallel = s.mesh.shape[partitioning.DATA]
  return data_lib.Packing(lengths, prompt, getattr(method, 'placement', 'prefix'),
                          data_parallel * run.optimizer.accumulation_steps)


def on_devices(tree, mesh: jax.sharding.Mesh):
  """`tree` placed with the parameter shardings of `mesh`."""
  return jax.device_put(tree, partitioning.param_shardings(tree, mesh))


# ------------------------------------------------------------ frozen weights and prompt


def read_prompt_file(path: str, shape: tuple[int, ...]) -> np.ndarray:
  """The prompt file, checked against (PROMPT_LENGTH, emb dim)."""
  try:
    return prompt_io.load_prompt(path, expected_shape=shape)
  except CheckpointError as e:
    raise CheckpointError(
        f'PROMPT_FILE: {e} (the model expects (PROMPT_LENGTH, emb dim) = {shape}).') from e


def check_sources(s: Setup, *, trained: bool = False, task_data: bool = True) -> None:
  """Cheap checks, before any data or weights are read: the checkpoint path, the prompt
  file (shape and values), for `trained` runs (eval, infer) that MODEL_DIR holds the
  CHECKPOINT_STEP to read when no PROMPT_FILE is given, and when the `task_data` will be
  read, that a TFDS download it needs can be made (offline: one line, not minutes of
  retries)."""
  path = s.run.initial_checkpoint_path
  if path is not None and not remote.is_remote(path) and not os.path.exists(path):
    raise CheckpointError(f'INITIAL_CHECKPOINT_PATH {path!r} does not exist.')
  if s.run.prompt.file and s.prompt_shapes:
    for shape in set(s.prompt_shapes.values()):
      read_prompt_file(s.run.prompt.file, shape)
  elif trained:
    _checkpoint_to_read(s.run)
  if task_data:
    data_lib.check_sources_available(s.run.data.mixture_or_task_name)


def _is_hf_checkpoint(path: str) -> bool:
  """A safetensors file, or a directory of Hugging Face files and no T5X `checkpoint` file."""
  if path.endswith(('.safetensors', '.safetensors.index.json')):
    return True
  return (not remote.is_remote(path) and os.path.isdir(path)
          and not os.path.exists(os.path.join(path, 'checkpoint'))
          and any(os.path.exists(os.path.join(path, f)) for f in hf_lib.HF_FILES))


def load_frozen(s: Setup) -> dict:
  """The full parameter tree: checkpoint weights, or random ones when the path is None.

  A method's parameter absent from the checkpoint, and with random weights every prompt,
  stays a ShapeDtypeStruct (set by `build_params`).
  """
  path, seed = s.run.initial_checkpoint_path, s.run.data.seed
  if path is None and s.run.trainable_rules == optim.MODEL_TUNING_RULES:
    logger.info('INITIAL_CHECKPOINT_PATH is None: every weight trains from a random '
                'initialisation (seed %d), as in pre-training.', seed)
  elif path is None:
    logger.warning('!' * 78 + '\n!! INITIAL_CHECKPOINT_PATH is None: the frozen model is RANDOMLY '
                   'INITIALISED (seed %d).\n!! It knows nothing: expect the loss to fall but eval '
                   'metrics near chance.\n!! Fine for a smoke test; meaningless for research.\n'
                   + '!' * 78, seed)
  if path is None:
    init = jax.jit(lambda rng: _init_params(s.run.model, rng))
    flat = tree_lib.flatten(jax.device_get(init(jax.random.fold_in(jax.random.PRNGKey(seed), 0))))
    abstract = tree_lib.flatten(s.abstract)
    for param in s.prompt_shapes:  # Prompts start from PromptSettings, not the module's init.
      flat[param] = abstract[param]
    return tree_lib.unflatten(flat)
  is_hf = _is_hf_checkpoint(path)
  logger.info('Reading the frozen model from %s (%s format).', path,
              'Hugging Face' if is_hf else 'T5X')
  if is_hf:
    return tree_lib.merge_params(s.abstract, hf_lib.load_hf(path)[0],
                                 fallback_to_init=s.fallback_to_init)
  # T5X: each process reads only its devices' slices, straight into their shards.
  shardings = partitioning.param_shardings(s.abstract, s.mesh)
  target = jax.tree.map(lambda a, sharding: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                 sharding=sharding),
                        s.abstract, shardings)
  flat = tree_lib.flatten(sharded_lib.load_t5x_sharded(
      path, target, fallback_to_init=s.fallback_to_init))
  for param, leaf in tree_lib.flatten(s.abstract).items():
    flat.setdefault(param, leaf)  # The method's, when the checkpoint has none.
  return tree_lib.unflatten(flat)


def frozen_params_without_prompt(s: Setup) -> dict:
  """The frozen weights on the devices, without a learned prompt (a prompt bank supplies them)."""
  flat = tree_lib.flatten(load_frozen(s))
  for param in s.prompt_shapes:
    flat.pop(param, None)
  return jax.device_put(tree_lib.unflatten(flat))


def initial_prompt(s: Setup, params: Mapping[str, Any], settings: PromptSettings,
                   shape: tuple[int, int], index: int = 0) -> np.ndarray:
  """The starting value of the method's `index`-th prompt parameter, [P, emb] float32."""
  if settings.file:
    logger.info('Prompt initialised from PROMPT_FILE %s.', settings.file)
    return read_prompt_file(settings.file, shape)
  flat = tree_lib.flatten(params)
  embedding = flat[models.embedding_path(flat)]
  vocab = s.vocabularies['inputs']
  task_name = s.run.data.mixture_or_task_name
  name = settings.init
  if name == 'class_labels':
    words = data_lib.label_words(task_name, settings.class_labels)
    if words and len(words) > shape[0]:
      raise UsageError(f'PROMPT_INIT=class_labels: the {len(words)} class labels {words} do not '
                       f'fit PROMPT_LENGTH={shape[0]}: lengthen the prompt or choose another '
                       'PROMPT_INIT.')
    if words:
      logger.info('Prompt initialised from the class labels %s.', words)
      init = prompts_lib.class_labels(embedding,
                                      prompts_lib.label_token_ids_from_words(vocab, words))
    else:
      logger.info('PROMPT_INIT=class_labels: %s has no label words (set CLASS_LABELS); '
                  'using sampled_vocab.', task_name)
      name = 'sampled_vocab'
  if name == 'sampled_vocab':
    init = prompts_lib.sampled_vocab(embedding)
  elif name == 'random_uniform':
    init = prompts_lib.random_uniform()
  elif name == 'from_text':
    init = prompts_lib.from_text(embedding, list(vocab.encode(settings.text)))
  rng = jax.random.fold_in(jax.random.PRNGKey(s.run.data.seed), 1)
  if index:  # Each prompt its own draw; the first keeps the seed's.
    rng = jax.random.fold_in(rng, index)
  return np.asarray(init(rng, shape, jnp.float32))


def _initial_values(s: Setup, params: Sequence[str]) -> dict[str, np.ndarray]:
  """The modules' initial values of `params`, with the seed of random frozen weights.

  Compiled to compute these parameters only: the rest of the model is never allocated.
  """
  model = s.run.model
  init = jax.jit(lambda rng: {p: tree_lib.flatten(_init_params(model, rng))[p] for p in params})
  return jax.device_get(init(jax.random.fold_in(jax.random.PRNGKey(s.run.data.seed), 0)))


def build_params(s: Setup) -> dict:
  """Frozen weights + the method's starting parameters, as a host parameter tree."""
  check_sources(s, task_data=False)
  flat = tree_lib.flatten(load_frozen(s))
  prompt = s.run.prompt
  for index, (param, shape) in enumerate(s.prompt_shapes.items()):
    if isinstance(flat[param], jax.ShapeDtypeStruct) or prompt.file:
      flat[param] = initial_prompt(s, tree_lib.unflatten(flat), prompt, shape, index)
    else:
      logger.info('The checkpoint holds a prompt (%s); it is the starting prompt.', param)
  missing = [param for param, leaf in flat.items() if isinstance(leaf, jax.ShapeDtypeStruct)]
  if missing:
    logger.info('Initialised from their modules (absent from the checkpoint): %s.',
                ', '.join(missing))
    flat.update(_initial_values(s, missing))
  return tree_lib.unflatten(flat)


# ------------------------------------------------------------ trained parameters


def _saved_best_metric(model_dir: str) -> Optional[str]:
  path = os.path.join(model_dir, train_state_lib.BEST_CHECKPOINT_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"CHECKPOINT_STEP='best' but {path} does not exist "
                          '(no eval ran during training).')
  with open(path) as f:
    return json.load(f)['metric']


def trained_params(s: Setup) -> tuple[dict, Optional[int]]:
  """Frozen weights + the trained parameters: from PROMPT_FILE, else from MODEL_DIR.

  The checkpoint is CHECKPOINT_STEP's ('latest', 'best' or a step). Returns
  (device params, the checkpoint step, or None for PROMPT_FILE).
  """
  if s.run.prompt.file:
    return on_devices(build_params(s), s.mesh), None
  return checkpoint_params(s)


def _checkpoint_to_read(run: RunSettings
                        ) -> tuple[train_state_lib.TrainStateCheckpointer, Optional[int]]:
  """MODEL_DIR's checkpoints and the step CHECKPOINT_STEP names (None: the latest), checked."""
  wanted = run.checkpoints.step
  ckpt = train_state_lib.TrainStateCheckpointer(run.model_dir, read_only=True, best_metric=(
      _saved_best_metric(run.model_dir) if wanted == BEST else None))
  if not ckpt.all_steps():
    raise CheckpointError(
        f'Nothing to load: no checkpoint in {run.model_dir}/{train_state_lib.CHECKPOINT_SUBDIR} '
        'and PROMPT_FILE is not set. Train first, or pass --gin.PROMPT_FILE=...')
  step = {LATEST: None, BEST: ckpt.best_step()}.get(wanted, wanted)
  if step is not None and step not in ckpt.all_steps():
    raise CheckpointError(f'No checkpoint of step {step} (CHECKPOINT_STEP) in '
                          f'{run.model_dir}/{train_state_lib.CHECKPOINT_SUBDIR}; kept steps: '
                          f'{ckpt.all_steps()}.')
  return ckpt, step


def checkpoint_params(s: Setup) -> tuple[dict, int]:
  """Frozen weights + the trained parameters of MODEL_DIR's CHECKPOINT_STEP; (params, step)."""
  run = s.run
  ckpt, step = _checkpoint_to_read(run)
  trainable, step = ckpt.restore_trainable(step)
  flat = tree_lib.flatten(load_frozen(s))
  expected = tree_lib.flatten(s.abstract)
  for path, value in tree_lib.flatten(trainable).items():
    if path not in expected or tuple(np.shape(value)) != tuple(expected[path].shape):
      raise CheckpointError(
          f'{run.model_dir} step {step}: {path} has shape {np.shape(value)}, the model expects '
          f'{getattr(expected.get(path), "shape", "nothing")}: the run used another config.')
    flat[path] = np.asarray(value)
  return on_devices(tree_lib.unflatten(flat), s.mesh), step
