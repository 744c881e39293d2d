"""The configuration layer: gin files and flags in, checked `RunSettings` out; one error boundary.

Every `ptj` command depends on this module and it depends on none of them.
It owns:
- the gin names of the library (`_register_configurables`: library modules
  stay free of gin) and where gin files are found (`gin_dir`);
- the command line's gin flags (`gin_parser`, `split_bindings`) and the help
  text of the macros, read from the run block of the run file (`macro_help`):
  gin/runs/prompt_finetune.gin names every setting, its default and meaning;
- `configure`: files + bindings -> a `Configuration` (the run's settings,
  built and checked before anything loads, and the effective config text),
  saved as DIR/config.gin by the runs (`Configuration.save`);
- `check_model_dir`: a resumed run must have the saved run's configured
  values (the model and the trainable rules as built), except the settings
  `settings.RESUMABLE_FIELDS` name;
- `report_errors` / `run_command`: the project's errors (`errors.Error`)
  become one line and exit status 1; anything else keeps its traceback.

Parsing order: --gin_file files in the order given, then the --gin.NAME=VALUE
bindings. A VALUE that is not a Python/gin literal is taken as a string, so
`--gin.MODEL_DIR=/tmp/rte` and `--gin.MODEL_DIR="'/tmp/rte'"` are the same.
Without --gin_file, commands other than `train` read MODEL_DIR/config.gin,
the configuration the training run saved.
"""
from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import difflib
import functools
import importlib.resources
import logging
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

import gin

from prompt_tuning_jax import errors
from prompt_tuning_jax import settings as settings_lib

CONFIG_FILE = 'config.gin'
RUN_FILE = 'runs/prompt_finetune.gin'  # the run block: every macro, its default and meaning
_SETTINGS = (settings_lib.RunSettings, settings_lib.DataSettings, settings_lib.PromptSettings,
             settings_lib.OptimizerSettings, settings_lib.CheckpointSettings,
             settings_lib.EvalSettings, settings_lib.InferSettings)
_RUN_SETTINGS = 'settings.RunSettings'
_MODEL_CONFIG = 'models.get_config'
# Compared on resume besides the run's settings: the tasks' vocabulary.
_VOCABULARY = 'get_vocabulary'
_NO_MODEL = ('No model size: add a model file, e.g. --gin_file=models/t5_1_1_base.gin '
             '(see gin/models/).')


# ------------------------------------------------------------------ gin names


def _get_config(name: Optional[str] = None, **overrides):
  """A T5 preset with fields replaced; `dtype` may be given as a string ('bfloat16')."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import models  # pylint: disable=g-import-not-at-top
  if name is None:
    raise errors.UsageError(_NO_MODEL)
  if name not in models.PRESETS:
    raise errors.UsageError(f'Unknown model preset {name!r} ({_MODEL_CONFIG}.name).'
                            f'{_did_you_mean(name, models.PRESETS)}')
  config_cls = type(models.PRESETS[name])  # T5Config, or DecoderOnlyConfig
  fields = [f.name for f in dataclasses.fields(config_cls)]
  for key in overrides:
    if key not in fields:
      raise errors.UsageError(f'{_MODEL_CONFIG}.{key}: {config_cls.__name__} has no field '
                              f'{key!r}.{_did_you_mean(key, fields)}')
  if isinstance(overrides.get('dtype'), str):
    overrides['dtype'] = getattr(jnp, overrides['dtype'])  # e.g. jnp.bfloat16
  if 'mlp_activations' in overrides:
    overrides['mlp_activations'] = tuple(overrides['mlp_activations'])
  return models.get_config(name, **overrides)


def _t5(config, method=None):
  """The configured architecture (T5, or a decoder-only LM) with its trainable method
  (METHOD: gin/methods/*.gin); None: model tuning."""
  from prompt_tuning_jax import models  # pylint: disable=g-import-not-at-top
  return models.build(config, method)


def _prompted_t5(config, prompt_length: int = 100, prompt_placement: Optional[str] = None):
  """The configured architecture with prompt tuning, as configurations written before
  gin/methods/ name it. `prompt_placement` None: the architecture's default ('prefix' in
  T5's encoder, 'after_bos' in a decoder-only LM)."""
  from prompt_tuning_jax import models  # pylint: disable=g-import-not-at-top
  placement = {} if prompt_placement is None else {'prompt_placement': prompt_placement}
  if isinstance(config, models.DecoderOnlyConfig):
    return models.PromptedDecoderOnly(config, prompt_length=prompt_length, **placement)
  return models.PromptedT5(config, prompt_length=prompt_length, **placement)


@functools.cache
def _register_configurables() -> None:
  """Gives the library's names to gin, once; imports the tasks (their own configurables)."""
  import optax  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import data  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import methods  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import optim  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import pretrained  # pylint: disable=g-import-not-at-top
  data.import_task_modules()  # get_vocabulary, local_data_dirs
  gin.external_configurable(pretrained.path, 'path', module='pretrained')
  gin.external_configurable(_get_config, 'get_config', module='models')
  gin.external_configurable(_prompted_t5, 'PromptedT5', module='models')
  gin.external_configurable(_t5, 'T5', module='models')
  for cls in methods.METHODS + methods.PARTS:
    gin.external_configurable(cls, cls.__name__, module='methods')
  for fn in (optim.adafactor, optim.inverse_sqrt_schedule):
    gin.external_configurable(fn, fn.__name__, module='optim')
  for fn in (optax.adamw, optax.adam, optax.sgd, optax.constant_schedule, optax.linear_schedule,
             optax.warmup_cosine_decay_schedule, optax.cosine_decay_schedule):
    gin.external_configurable(fn, fn.__name__, module='optax')
  for cls in _SETTINGS:
    gin.external_configurable(cls, cls.__name__, module='settings')


# ------------------------------------------------------------------ gin files and flags


def gin_dir() -> str:
  """The `gin/` directory: installed as `prompt_tuning_jax/gin`, or the checkout's `gin/`.

  `gin/` has no `__init__.py`, so on sys.path (a checkout's root) it never
  shadows the gin-config package.
  """
  installed = importlib.resources.files('prompt_tuning_jax').joinpath('gin')
  if installed.is_dir():
    return str(installed)
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gin')


def _resolve_file(name: str, search_paths: Sequence[str]) -> str:
  if os.path.isfile(name):
    return os.path.abspath(name)
  for directory in search_paths:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise errors.UsageError(f'gin file {name!r} not found in the current directory or in '
                          f'{list(search_paths)}.')


def gin_value(value: str) -> str:
  """VALUE as gin text: literals and @/% references as they are, anything else a string."""
  text = value.strip()
  if text.startswith(('@', '%')):
    return text
  try:
    ast.literal_eval(text)
    return text
  except (ValueError, SyntaxError):
    return repr(value)


def split_bindings(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--gin.NAME=VALUE` / `--gin.NAME VALUE` (as gin statements) from the rest."""
  rest, bindings = [], []
  argv = list(argv)
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith('--gin.'):
      body = arg[len('--gin.'):]
      if '=' in body:
        name, value = body.split('=', 1)
      elif i + 1 < len(argv):
        name, value = body, argv[i + 1]
        i += 1
      else:
        raise errors.UsageError(f'{arg}: expected --gin.NAME=VALUE')
      bindings.append(f'{name} = {gin_value(value)}')
    else:
      rest.append(arg)
    i += 1
  return rest, bindings


_MACRO_LINE = re.compile(r'^(?:# )?([A-Z][A-Z0-9_]*) = (.*?)\s+# (.*)$')


def macro_help() -> str:
  """The macros of the run file's run block, grouped as there: name, meaning, default."""
  with open(os.path.join(gin_dir(), RUN_FILE)) as f:
    text = f.read()
  # The run block: from its '# ---- run' rule to the next rule.
  block = text.split('\n# ---')[1].split('\n', 1)[1]
  lines = [f'gin macros (--gin.NAME=VALUE; defaults and meanings: gin/{RUN_FILE}):']
  for line in block.splitlines():
    match = _MACRO_LINE.match(line)
    if match:
      name, default, meaning = match.groups()
      default = 'required' if default == '%gin.REQUIRED' else default
      lines.append(f'  {name:<24} {meaning} [{default}]')
    elif line.startswith('# '):
      lines.append(f' {line[2:].rstrip(".:")}:')
  return '\n'.join(lines)


def gin_parser(command: str, description: str) -> argparse.ArgumentParser:
  """An argument parser for `ptj <command>` with the gin flags; the macros in its help."""
  parser = argparse.ArgumentParser(
      prog=f'ptj {command}', description=description, epilog=macro_help(),
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--gin_file', action='append', default=[],
                      help='gin file (repeatable), looked up in the current directory, then in '
                      '--gin_search_paths and the installed gin/ directory; none (eval, infer, '
                      'ensemble): MODEL_DIR/config.gin')
  parser.add_argument('--gin_search_paths', default='',
                      help='comma-separated directories searched for gin files and includes')
  parser.add_argument('--gin.NAME=VALUE', dest='unused', action='append', metavar='',
                      help='a gin binding, e.g. --gin.BATCH_SIZE=16 (repeatable)')
  parser.add_argument('--print_config', action='store_true',
                      help='print the effective configuration and exit')
  return parser


# ------------------------------------------------------------------ configuration


@dataclasses.dataclass(frozen=True)
class Configuration:
  """A parsed configuration: the run's checked settings and the effective gin text."""
  settings: settings_lib.RunSettings
  text: str

  def save(self, directory: str) -> None:
    """Records the configuration as DIRECTORY/config.gin (local or gs://)."""
    from prompt_tuning_jax.checkpoints import tree  # pylint: disable=g-import-not-at-top
    tree.write_bytes(config_file(directory), self.text.encode())


def config_file(directory: str) -> str:
  return os.path.join(directory, CONFIG_FILE)


@functools.cache
def _quiet_gin_path_errors() -> None:
  """gin logs 'Path not found' for each search path it tries before finding a file."""
  class _Filter(logging.Filter):
    def filter(self, record):
      return not str(record.msg).startswith('Path not found')
  logging.getLogger().addFilter(_Filter())


def _parse(files: Sequence[str], bindings: Sequence[str]) -> None:
  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(list(files), list(bindings), finalize_config=False)
  except ValueError as e:
    raise errors.UsageError(f'gin: {e}') from e


def configure(command: str, files: Sequence[str], bindings: Sequence[str],
              search_paths: Sequence[str] = ()) -> Configuration:
  """Parses the gin files and bindings; builds and checks the run's settings.

  Without `files`, commands other than 'train' read MODEL_DIR/config.gin.
  """
  _register_configurables()
  paths = [p for p in search_paths if p] + [os.getcwd(), gin_dir()]
  for path in paths:
    gin.add_config_file_search_path(path)
  _quiet_gin_path_errors()
  files = [_resolve_file(f, paths) for f in files]
  saved_run = not files and command != 'train'
  saved = []
  if saved_run:
    _parse([], bindings)
    model_dir = _bindings('MODEL_DIR/gin.macro').get('value')
    if not isinstance(model_dir, str):
      raise errors.UsageError(f'ptj {command} needs --gin.MODEL_DIR=DIR of a training run, '
                              'or --gin_file=... files (see runs/eval.gin).')
    saved = [_read_saved_config(config_file(model_dir))]  # Text: MODEL_DIR may be gs://.
  _parse(files, saved)
  # A saved run's PROMPT_FILE was its starting prompt (prompt transfer); what it trained
  # is in its checkpoints. Only a PROMPT_FILE given now replaces them.
  given = {m.group(1) for m in map(_MACRO_BINDING.match, bindings) if m}
  if saved_run and _bindings('PROMPT_FILE/gin.macro').get('value') and 'PROMPT_FILE' not in given:
    bindings = ['PROMPT_FILE = None', *bindings]
  if _bindings(_RUN_SETTINGS):  # Without a run file, `_check_complete` says so.
    _check_macro_names(bindings)
  _parse(files, [*saved, *bindings])
  if not saved_run:  # A saved config.gin holds only what its run's files set.
    _check_file_macros([f for f in files if not f.startswith(gin_dir() + os.sep)])
  _check_complete()
  run = gin.get_configurable(_RUN_SETTINGS)()
  return Configuration(run, gin.config_str())


def _read_saved_config(path: str) -> str:
  """The text of a training run's config.gin (local or gs://)."""
  from prompt_tuning_jax import storage  # pylint: disable=g-import-not-at-top
  try:
    text = storage.read(path)
  except OSError as e:
    raise errors.UsageError(f'{path} cannot be read ({e}).') from e
  if text is None:
    raise errors.UsageError(f'{path} does not exist: MODEL_DIR holds no training run. '
                            "Pass the run's files instead, e.g. --gin_file=runs/eval.gin.")
  return text.decode()


_MACRO_BINDING = re.compile(r'\s*([A-Z][A-Z0-9_]*)\s*=')
_MACRO_NAME = re.compile(r'[A-Z][A-Z0-9_]*')


def _did_you_mean(name: str, known: Sequence[str]) -> str:
  close = difflib.get_close_matches(name, list(known), n=3)
  return f' Did you mean {", ".join(close)}?' if close else ''


def _defined_macros() -> list[str]:
  return sorted(scope for scope, selector in gin.config._CONFIG  # pylint: disable=protected-access
                if selector == 'gin.macro')


def _check_macro_names(bindings: Sequence[str]) -> None:
  """Every macro a binding sets is one the gin files define: a typo is not a new macro."""
  known = _defined_macros()
  for binding in bindings:
    match = _MACRO_BINDING.match(binding)
    if match and match.group(1) not in known:
      name = match.group(1)
      hint = _did_you_mean(name, known) or ' (`ptj --help` lists them.)'
      raise errors.UsageError(f'--gin.{name}: no gin file defines the macro {name}.{hint}')


def _used_macros() -> set[str]:
  """The macros some parsed binding refers to (%NAME), macros' values included."""
  used = set()

  def visit(value: Any) -> None:
    if isinstance(value, gin.config.ConfigurableReference):
      if value.selector == 'gin.macro':
        used.add('/'.join(value.scopes))
    elif isinstance(value, (list, tuple, set)):
      for item in value:
        visit(item)
    elif isinstance(value, dict):
      for item in value.values():
        visit(item)

  for params in gin.config._CONFIG.values():  # pylint: disable=protected-access
    for value in params.values():
      visit(value)
  return used


@functools.cache
def _project_macros() -> frozenset[str]:
  """The macros the project's own gin files set (run blocks, model and prompt files)."""
  names = set()
  for root, _, filenames in os.walk(gin_dir()):
    for filename in filenames:
      if filename.endswith('.gin'):
        with open(os.path.join(root, filename)) as f:
          names.update(m.group(1) for m in map(_MACRO_BINDING.match, f) if m)
  return frozenset(names)


def _check_file_macros(files: Sequence[str]) -> None:
  """A macro a user's gin file sets is one a project gin file sets, or one some binding uses:
  a typo (LERNING_RATE) is not a new macro that nothing reads."""
  known = _project_macros() | _used_macros()
  for path in files:
    with open(path) as f:
      for lineno, line in enumerate(f, 1):
        match = _MACRO_BINDING.match(line)
        if match and match.group(1) not in known:
          name = match.group(1)
          raise errors.UsageError(
              f'{path}:{lineno}: {name}: no gin file of the project defines the macro {name} '
              f'and no binding uses it.{_did_you_mean(name, sorted(known))}')


def _bindings(selector: str) -> dict[str, Any]:
  """The parameters bound to `selector` as parsed: references are not evaluated."""
  return gin.get_bindings(selector, resolve_references=False)


def _check_complete() -> None:
  """The run file, the model file and every required value are there, before anything is built."""
  if not _bindings(_RUN_SETTINGS):
    raise errors.UsageError('No run file: add e.g. --gin_file=runs/prompt_finetune.gin.')
  values = configured_values(_RUN_SETTINGS)
  unset = [name for name, value in values.items() if value is _UNSET]
  if unset and 'name' not in _bindings(_MODEL_CONFIG):
    raise errors.UsageError(_NO_MODEL)
  for cls in _SETTINGS:
    selector = f'settings.{cls.__name__}'
    bound = _bindings(selector)
    for field in dataclasses.fields(cls):
      if field.default is dataclasses.MISSING and field.name not in bound:
        raise errors.UsageError(f'{selector}.{field.name} is not bound: the run file binds it '
                                f'(see gin/{RUN_FILE}).')
  for name, value in values.items():
    if value is _UNSET or value is gin.REQUIRED:
      raise errors.UsageError(f'{name} is not set: pass --gin.{name}=...')


# ------------------------------------------------------------------ configured values


class _Unset:
  def __repr__(self):
    return '(unset)'


_UNSET = _Unset()


@dataclasses.dataclass(frozen=True)
class _Reference:
  """A configurable reference, compared by what it names (its own bindings are compared apart)."""
  text: str

  def __repr__(self):
    return self.text


def configured_values(*roots: str, skip: Sequence[str] = ()) -> dict[str, Any]:
  """{name: value} of every binding the configurables `roots` are built from.

  A value reached through a macro is named by the macro ('BATCH_SIZE'), any
  other by its binding ('models.get_config.name'). A reference to a
  configurable is a value ('@models.T5()'), and the configurable's own
  bindings follow it. The parameters named in `skip` ('settings.RunSettings.model_dir')
  are left out, with what is reached only through them.
  """
  values: dict[str, Any] = {}

  def visit_configurable(selector: str) -> None:
    for param, value in _bindings(selector).items():
      if f'{selector}.{param}' not in skip:
        visit(f'{selector}.{param}', value)

  def visit(name: str, value: Any) -> None:
    if not isinstance(value, gin.config.ConfigurableReference):
      values[name] = value
    elif value.selector == 'gin.macro':
      macro = '/'.join(value.scopes)
      if macro not in values:
        visit(macro, _bindings(f'{macro}/gin.macro').get('value', _UNSET))
    elif value.selector == 'gin.constant':
      values[name] = copy.deepcopy(value)  # Evaluates it, e.g. gin.REQUIRED.
    elif name not in values:
      values[name] = _Reference(repr(value))
      visit_configurable(value.scoped_selector)

  for root in roots:
    visit_configurable(root)
  return values


_MODEL, _TRAINABLE_RULES = f'{_RUN_SETTINGS}.model', 'settings.OptimizerSettings.trainable_rules'


def _compared_values(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """The values of a configuration's text that a resumed run may not change, and the macro
  values the model is built from (PROMPT_LENGTH, DROPOUT_RATE), which name its differences.

  The model and the trainable rules are compared as built, not as written: the T5's
  config fields, its method (a frozen dataclass) and the rules that train (TRAINABLE_RULES,
  or the method's when None). So `MODEL = @models.PromptedT5()` with TRAINABLE_RULES
  ('.*prompt.*',), as runs saved before gin/methods/ existed, equals today's `@models.T5()`
  with `METHOD = @methods.PromptTuning()`. A settings field at its dataclass default counts
  as unset: a run saved before the field existed behaved as that default (TARGET_SENTINEL,
  LOSS, WAYWARD_WEIGHT).
  """
  _parse([], [text])
  fields = [f'{_RUN_SETTINGS}.{f.name}' for f in dataclasses.fields(settings_lib.RunSettings)]
  resumable = [f'{_RUN_SETTINGS}.{field}' for field in settings_lib.RESUMABLE_FIELDS]
  values = configured_values(_RUN_SETTINGS, _VOCABULARY,
                             skip=resumable + [_MODEL, _TRAINABLE_RULES])
  for cls in _SETTINGS:
    selector = f'settings.{cls.__name__}'
    bound = _bindings(selector)
    for field in dataclasses.fields(cls):
      value = bound.get(field.name, _UNSET)
      if field.default is dataclasses.MISSING or value is _UNSET:
        continue
      is_macro = isinstance(value, gin.config.ConfigurableReference) and (
          value.selector == 'gin.macro')
      name = '/'.join(value.scopes) if is_macro else f'{selector}.{field.name}'
      if values.get(name, _UNSET) == field.default:
        del values[name]
  model_macros = {name: value for name, value in configured_values(
      _RUN_SETTINGS, skip=[f for f in fields if f != _MODEL]).items()
                  if _MACRO_NAME.fullmatch(name) and not isinstance(value, _Reference)}
  run = gin.get_configurable(_RUN_SETTINGS)()
  model_config = run.model.config
  values.update({f'model.config.{field.name}': getattr(model_config, field.name)
                 for field in dataclasses.fields(model_config)})
  values['model.method'] = run.model.method
  values['trainable rules'] = run.trainable_rules
  return values, model_macros


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  return [f'  {name}: {saved.get(name, _UNSET)!r} -> {current.get(name, _UNSET)!r}'
          for name in sorted(saved.keys() | current.keys())
          if saved.get(name, _UNSET) != current.get(name, _UNSET)]


def check_model_dir(configuration: Configuration, *, override: bool) -> None:
  """Refuses to resume a run in MODEL_DIR whose saved configured values differ.

  TRAIN_STEPS, MODEL_DIR, NUM_PARTITIONS and the checkpoint, eval and infer
  settings may change (`settings.RESUMABLE_FIELDS`); anything else, unless `override`.
  A setting the saved configuration lacks (added later, e.g. LOSS) is compared with
  its settings field's default.
  """
  from prompt_tuning_jax import storage  # pylint: disable=g-import-not-at-top
  model_dir = configuration.settings.model_dir
  saved_path = config_file(model_dir)
  try:
    saved_text = storage.read(saved_path)
  except OSError as e:
    raise errors.UsageError(f'{saved_path} cannot be read ({e}).') from e
  if saved_text is None:
    return
  try:
    saved, saved_macros = _compared_values(saved_text.decode())
  except errors.UsageError as e:
    raise errors.UsageError(f'{saved_path} does not parse ({e}): use another MODEL_DIR.') from e
  # Last: gin holds the run's configuration.
  current, current_macros = _compared_values(configuration.text)
  diffs = _differences(saved, current)
  if diffs:  # The model's macros name what changed in it (a macro added since changes nothing).
    common = saved_macros.keys() & current_macros.keys()
    diffs = sorted(diffs + _differences({k: saved_macros[k] for k in common},
                                        {k: current_macros[k] for k in common}))
  if not diffs:
    return
  message = (f'MODEL_DIR {model_dir} holds a run with a different configuration:\n'
             + '\n'.join(diffs))
  if not override:
    raise errors.UsageError(message + '\nUse another MODEL_DIR, or pass '
                            '--override_model_dir_config to resume it with the new '
                            'configuration anyway.')
  logging.getLogger('prompt_tuning_jax').warning(
      '%s\n(--override_model_dir_config given: continuing)', message)


# ------------------------------------------------------------------ the error boundary


def enable_compilation_cache(path: Optional[str] = None) -> Optional[str]:
  """Turns on JAX's persistent compilation cache (returns its directory, or None).

  Compiling dominates short runs on CPU; with the cache, `ptj eval` after
  `ptj train`, a resumed run, or the same command again reuse the compiled
  programs. Directory: `path`, else $PTJ_COMPILATION_CACHE_DIR, else
  ~/.cache/prompt_tuning_jax/xla; 'none' turns it off. JAX's own
  JAX_COMPILATION_CACHE_DIR, when set, is left alone.
  """
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  path = path or os.environ.get('PTJ_COMPILATION_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'prompt_tuning_jax', 'xla')
  if path.lower() == 'none':
    return None
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  return path


def report_errors(command: str, fn: Callable[[], int]) -> int:
  """Runs `ptj <command>`'s `fn` and returns its status; the one error boundary of `ptj`.

  A project error (`errors.Error`) prints one line and returns 1 (PTJ_DEBUG=1
  re-raises it); a run stopped by a signal (`errors.Stopped`) returns 128 +
  the signal; anything else is a bug and propagates with its traceback.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from prompt_tuning_jax import cpu_flags  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax import logging_utils  # pylint: disable=g-import-not-at-top
  logging_utils.setup_logging()
  flags = cpu_flags.apply_defaults()
  if flags:
    logging.getLogger('prompt_tuning_jax').info(
        'XLA_FLAGS unset: using the flags measured to pay on this CPU kind, %r (set XLA_FLAGS, '
        "even to '', to choose your own).", flags)
  enable_compilation_cache()
  try:
    return fn()
  except KeyboardInterrupt:
    print(f'ptj {command}: interrupted', file=sys.stderr)
    return 130
  except errors.Stopped as e:  # Not a mistake: a signal, after saving.
    print(f'ptj {command}: {e}', file=sys.stderr)
    return e.exit_status
  except errors.Error as e:
    if os.environ.get('PTJ_DEBUG'):
      raise
    message = re.sub(r'\n\s*In call to configurable .*', '', str(e))  # gin's addition
    print(f'ptj {command}: error: {message}\n(set PTJ_DEBUG=1 for the traceback)',
          file=sys.stderr)
    return 1


def run_command(command: str, parser: argparse.ArgumentParser,
                argv: Optional[Sequence[str]],
                body: Callable[[argparse.Namespace, Configuration], int]) -> int:
  """`ptj <command>`: the flags, then the configuration, then `body(args, configuration)`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    rest, bindings = split_bindings(argv)
  except errors.UsageError as e:
    parser.error(str(e))
  args = parser.parse_args(rest)

  def run() -> int:
    configuration = configure(command, args.gin_file, bindings,
                              args.gin_search_paths.split(','))
    if args.print_config:
      print(configuration.text)
      return 0
    return body(args, configuration)

  return report_errors(command, run)
