"""The README's table of errors ("Errors you may hit") holds the real messages.

Each row's mistake is made here (cheaply: nothing compiles or trains) and
every `message` fragment of the row must appear in one of the errors it
raises; `...` in a fragment stands for text left out. Paths under the test's
temporary directory read as /x/...
"""
from __future__ import annotations

import errno
import os
import re
import signal
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from conftest import REPO

from prompt_tuning_jax import config
from prompt_tuning_jax import data
from prompt_tuning_jax import distributed
from prompt_tuning_jax import logging_utils
from prompt_tuning_jax import errors
from prompt_tuning_jax import objectives
from prompt_tuning_jax import optim
from prompt_tuning_jax import pretrained
from prompt_tuning_jax import remote
from prompt_tuning_jax import run_dir
from prompt_tuning_jax import run_setup
from prompt_tuning_jax import train
from prompt_tuning_jax import train_step
from prompt_tuning_jax.checkpoints import hf
from prompt_tuning_jax.checkpoints import train_state as train_state_lib
from prompt_tuning_jax.methods.prefix_tuning import PrefixTuning
from prompt_tuning_jax.methods.prompt_tuning import PromptTuning
from prompt_tuning_jax.methods.visibility import Visibility
from prompt_tuning_jax.tasks import smoke as smoke_task
from prompt_tuning_jax.tasks import sources

pytestmark = pytest.mark.usefixtures('restore_ptj_global_state')


def readme_rows() -> dict[str, list[str]]:
  """{mistake: the backquoted message fragments} of the README's errors table."""
  text = (REPO / 'README.md').read_text()
  section = text.split('## Errors you may hit', 1)[1].split('\n## ', 1)[0]
  rows = {}
  for line in section.splitlines():
    if line.startswith('| ') and not line.startswith('| mistake'):
      mistake, message = line.strip('| \n').split(' | ', 1)
      rows[mistake] = re.findall(r'`([^`]+)`', message)
  return rows


def error(fn, *args, **kwargs) -> str:
  """The message of the project error `fn` raises."""
  with pytest.raises(errors.Error) as raised:
    fn(*args, **kwargs)
  return str(raised.value)


def smoke(*bindings: str) -> config.Configuration:
  return config.configure('train', ['runs/smoke.gin'], ["MODEL_DIR = '/tmp/unused'", *bindings])


# ------------------------------------------------------------ the mistakes, made


def setting_value(x, monkeypatch):
  return [error(smoke, "PROMPT_INIT = 'clas_labels'")]


def misspelled_macro(x, monkeypatch):
  (x / 'my.gin').write_text('# my settings\nLERNING_RATE = 0.001\n')
  return [error(config.configure, 'train', ['runs/smoke.gin'], ['LERNING_RATE = 0.1']),
          error(config.configure, 'train', ['runs/smoke.gin', str(x / 'my.gin')],
                ["MODEL_DIR = '/x'"])]


def misspelled_model_setting(x, monkeypatch):
  return [error(smoke, 'models.get_config.emb_dmi = 8'),
          error(smoke, "models.get_config.name = 't5_1_1_bse'")]


def missing_settings(x, monkeypatch):
  run_files = ['runs/prompt_finetune.gin']
  return [error(config.configure, 'train', [*run_files, 'models/byte_tiny.gin'],
                ["MODEL_DIR = '/x'"]),
          error(config.configure, 'train', run_files,
                ["MODEL_DIR = '/x'", "MIXTURE_OR_TASK_NAME = 'smoke_sentiment'"])]


def unknown_task(x, monkeypatch):
  return [error(data.get_mixture_or_task, 'super_glue_rte_v12')]


def tfds_without_network(x, monkeypatch):
  import requests  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  import seqio  # pylint: disable=g-import-not-at-top

  def unreachable(url, **kwargs):
    raise requests.ConnectionError(url)
  monkeypatch.setattr(requests, 'head', unreachable)
  monkeypatch.delenv('PTJ_GLUE_DIR', raising=False)
  source = glue.glue_source(glue.task_by_key('sst2'))
  source.__dict__['_tfds'] = seqio.TfdsDataSource(
      tfds_name=source.tfds_name, tfds_data_dir=str(x / 'tensorflow_datasets'),
      splits=source.splits)
  return [error(source.check_available)]


def task_outside_multi_task_prompt(x, monkeypatch):
  run = config.configure('train', ['runs/smoke.gin', 'methods/multi_task_prompts.gin'], [
      f"MODEL_DIR = '{x}'", "MIXTURE_OR_TASK_NAME = 'smoke_sentiment_words'",
      "PROMPT_TASKS = ('smoke_sentiment', 'smoke_sentiment_np')"]).settings
  return [error(run_setup.setup, run)]


def prefix_peft_cannot_hold(x, monkeypatch):
  return [error(PrefixTuning(10).check_peft)]


def prompt_peft_cannot_hold(x, monkeypatch):
  return [error(PromptTuning(5, placement='suffix').check_peft),
          error(PromptTuning(5, visibility=Visibility(prompt_to_input=False)).check_peft)]


def model_dir_is_a_file(x, monkeypatch):
  (x / 'run').write_text('a file')
  is_a_file = error(run_dir.check_writable, str(x / 'run'))

  def denied(dir, prefix):
    raise PermissionError(errno.EACCES, 'Permission denied', os.path.join(dir, prefix))
  monkeypatch.setattr(run_dir.tempfile, 'mkstemp', denied)
  return [is_a_file, error(run_dir.check_writable, str(x / 'other'))]


def model_dir_holds_another_run(x, monkeypatch):
  model_dir = f"MODEL_DIR = '{x / 'run'}'"
  smoke(model_dir, 'BATCH_SIZE = 32').save(str(x / 'run'))
  return [error(config.check_model_dir, smoke(model_dir, 'BATCH_SIZE = 16'), override=False)]


def model_dir_in_use(x, monkeypatch):
  (x / 'run').mkdir()
  (x / 'run' / run_dir.LOCK_FILE).write_text(
      '{"host": "tpu-worker-7", "pid": 4242, "started": "2026-11-29 09:00:00 UTC"}')
  return [error(run_dir.WriterLock(str(x / 'run')).__enter__)]


def remote_without_network(x, monkeypatch):
  monkeypatch.setattr(remote, '_exists', lambda path: time.sleep(60))
  monkeypatch.setenv(remote.TIMEOUT_ENV, '0.2')
  return [error(remote.check_reachable, 'gs://bucket/checkpoint_1000', 'INITIAL_CHECKPOINT_PATH')]


def remote_model_dir_without_network(x, monkeypatch):
  monkeypatch.setattr(remote, '_exists', lambda path: time.sleep(60))
  monkeypatch.setenv(remote.TIMEOUT_ENV, '0.2')
  return [error(remote.check_reachable, 'gs://bucket/run', 'MODEL_DIR', must_exist=False,
                output=True)]


def missing_bucket(x, monkeypatch):
  def no_bucket(path, data):
    raise OSError(f'{path}: NOT_FOUND: Not Found')  # What storage.write says (tests/test_gcs.py).
  monkeypatch.setattr(run_dir.storage, 'write', no_bucket)
  return [error(run_dir.check_writable, 'gs://no-bucket/run')]


def bucket_stops_answering(x, monkeypatch):
  def unavailable(path, data):
    raise OSError(f'{path}: ABORTED: All 8 retry attempts failed: CURL error ...')
  monkeypatch.setattr(logging_utils.storage, 'append', unavailable)
  metrics = error(logging_utils.MetricsWriter('gs://bucket/run').write, 6, 'train', {'loss': 1.0})
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((2, 4))}}}}
  state = train_step.init_train_state(trainable, {}, optim.partitioned_optimizer(
      trainable, optim.adafactor()))._replace(step=jnp.asarray(6, jnp.int32))
  ckpt = train_state_lib.TrainStateCheckpointer(str(x / 'run'))
  ckpt.model_dir = 'gs://bucket/run'  # As one on gs:// is reported.

  def down(step, **kwargs):
    raise OSError('gs://bucket/run/checkpoints/6: UNAVAILABLE: ...')
  monkeypatch.setattr(ckpt._manager, 'save', down)  # pylint: disable=protected-access
  return [metrics, error(ckpt.save, state, data_position={})]


def missing_checkpoint(x, monkeypatch):
  s = types.SimpleNamespace(run=types.SimpleNamespace(
      initial_checkpoint_path=str(x / 't5x'), prompt=types.SimpleNamespace(file=None)))
  return [error(run_setup.check_sources, s)]


def checkpoint_step_not_held(x, monkeypatch):
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((2, 4))}}}}
  state = train_step.init_train_state(trainable, {}, optim.partitioned_optimizer(
      trainable, optim.adafactor()))
  ckpt = train_state_lib.TrainStateCheckpointer(str(x / 'run'))
  for step in (3, 6):
    ckpt.save(state._replace(step=jnp.asarray(step, jnp.int32)), data_position={})
  run = smoke(f"MODEL_DIR = '{x / 'run'}'", 'CHECKPOINT_STEP = 7').settings
  return [error(run_setup.check_sources, types.SimpleNamespace(run=run), trained=True)]


def pytorch_only(x, monkeypatch):
  (x / 'hf').mkdir()
  (x / 'hf' / 'pytorch_model.bin').write_bytes(b'a pickle')
  assert run_setup._is_hf_checkpoint(str(x / 'hf'))  # pylint: disable=protected-access
  return [error(hf.load_hf, str(x / 'hf'))]


def cut_short_safetensors(x, monkeypatch):
  (x / 'hf').mkdir()
  path = x / 'hf' / 'model.safetensors'
  safetensors.numpy.save_file({'shared.weight': np.zeros((64, 8), np.float32)}, str(path))
  path.write_bytes(path.read_bytes()[:100])
  return [error(hf.load_hf, str(x / 'hf'))]


def vocabulary_too_large(x, monkeypatch):
  run = smoke("MIXTURE_OR_TASK_NAME = 'super_glue_cb_v102'",
              f"get_vocabulary.path = '{pretrained.path('t5_mini/spiece.model')}'").settings
  return [error(run_setup.setup, run)]


def recycling_across_vocabularies(x, monkeypatch):
  from prompt_tuning_jax.analysis import neighbors  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.transfer import recycling  # pylint: disable=import-outside-toplevel
  return [error(recycling.check_same_vocabulary,
                neighbors.PieceVocabulary(pretrained.path('t5_mini/spiece.model')),
                neighbors.piece_vocabulary('byte'))]


def wayward_without_room(x, monkeypatch):
  from prompt_tuning_jax import wayward  # pylint: disable=import-outside-toplevel
  from prompt_tuning_jax.analysis import neighbors  # pylint: disable=import-outside-toplevel
  vocabulary = neighbors.PieceVocabulary(pretrained.path('t5_mini/spiece.model'))
  text = 'Classify these movie reviews based on sentiment .'
  return [error(wayward.text_ids, vocabulary, text, {'encoder/prompt/prompt/prompt': (5, 128)}),
          error(wayward.text_ids, vocabulary, text, {})]


def prompt_of_the_wrong_shape(x, monkeypatch):
  np.save(x / 'p.npy', np.zeros((100, 512), np.float32))
  return [error(run_setup.read_prompt_file, str(x / 'p.npy'), (100, 768))]


def nan_prompt(x, monkeypatch):
  prompt = np.zeros((10, 8), np.float32)
  prompt[3, 5] = np.nan
  np.save(x / 'p.npy', prompt)
  return [error(run_setup.read_prompt_file, str(x / 'p.npy'), (10, 8))]


def batch_size_vs_devices(x, monkeypatch):
  mesh = types.SimpleNamespace(shape={'data': 8, 'model': 1})
  monkeypatch.setattr(run_setup.partitioning, 'make_mesh', lambda num_partitions: mesh)
  monkeypatch.setattr(jax, 'device_count', lambda: 8)
  return [error(run_setup.setup, smoke('BATCH_SIZE = 30').settings, batch_size=30)]


def empty_data_file(x, monkeypatch):
  monkeypatch.setenv('PTJ_SUPERGLUE_DIR', str(x / 'super_glue'))
  return [str(data.no_examples('super_glue_cb_v102', split)) for split in ('train', 'validation')]


def not_utf8(x, monkeypatch):
  (x / 'CB').mkdir()
  (x / 'CB' / 'train.jsonl').write_bytes(b'{}\n' * 4 + b'{"\xff": 1}\n')
  return [error(list, sources.read_jsonl(x / 'CB' / 'train.jsonl'))]


def sentinel_without_extra_ids(x, monkeypatch):
  return [error(run_setup.setup, smoke('TARGET_SENTINEL = True').settings)]


def label_loss_without_labels(x, monkeypatch):
  return [error(objectives.label_sets, 'super_glue_record_v102', 'hinge')]


def packing_that_cannot_work(x, monkeypatch):
  def packing(*bindings):
    run = smoke(*bindings).settings
    return run_setup.packing(types.SimpleNamespace(run=run, mesh=None))
  return [error(packing, "PACK_LENGTHS = {'inputs': 64, 'targets': 12}"),
          error(packing, "PACK_LENGTHS = {'inputs': 148, 'targets': 12}", "LOSS = 'hinge'")]


def target_not_a_label(x, monkeypatch):
  sets = objectives.label_sets(smoke_task.TASK_NAME, 'hinge')
  target = np.array([smoke_task.VOCABULARY.encode('good') + [1]], np.int32)
  return [error(sets.gold, {'decoder_target_tokens': target,
                            data.TASK_INDEX: np.zeros(1, np.int32)})]


def tsv_without_header(x, monkeypatch):
  from prompt_tuning_jax.tasks import glue  # pylint: disable=g-import-not-at-top
  (x / 'SST-2').mkdir()
  (x / 'SST-2' / 'dev.tsv').write_text('a fine film .\t1\nawful .\t0\n')
  monkeypatch.setenv('PTJ_GLUE_DIR', str(x))
  return [error(glue.glue_source(glue.task_by_key('sst2')).local.read_split, 'validation')]


def divergence(x, monkeypatch):
  window = types.SimpleNamespace(first_nonfinite_loss=lambda step: (812, 'nan'))
  check = train._check_finite  # pylint: disable=protected-access
  return [error(check, window, 812, last_saved, str(x / 'run')) for last_saved in (800, None)]


def prompt_far_beyond_the_embedding(x, monkeypatch):
  embedding = np.zeros((8, 4), np.float32)
  embedding[0] = [2.5, 2.5, 2.5, 2.5]  # The longest row: norm 5.
  prompt = np.full((3, 4), 1.73e9, np.float32)
  norms = train._PromptNorms(  # pylint: disable=protected-access
      {'token_embedder': {'embedding': embedding}, 'encoder': {'prompt': {'prompt': {
          'prompt': prompt}}}}, PromptTuning(length=3), stop=True)
  last_good = train._last_good(800, str(x / 'run'))  # pylint: disable=protected-access
  return [error(norms.check, {'encoder': {'prompt': {'prompt': {'prompt': prompt}}}}, 812,
                last_good)]


def peer_died(x, monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 2)

  def collective_of_a_dead_peer():
    with distributed.peer_failures():
      raise jax.errors.JaxRuntimeError(
          'UNKNOWN: Gloo AllGather failed: [pair.cc:534] Connection reset by peer')
  return [error(collective_of_a_dead_peer)]


def disk_full(x, monkeypatch):
  trainable = {'encoder': {'prompt': {'prompt': {'prompt': jnp.ones((2, 4))}}}}
  state = train_step.init_train_state(trainable, {}, optim.partitioned_optimizer(
      trainable, optim.adafactor()))._replace(step=jnp.asarray(3, jnp.int32))
  ckpt = train_state_lib.TrainStateCheckpointer(str(x / 'run'))

  def full(step, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(ckpt._manager, 'save', full)  # pylint: disable=protected-access
  return [error(ckpt.save, state, data_position={})]


def stopped(x, monkeypatch):
  model_dir = str(x / 'run')
  paths = {'checkpoint_dir': os.path.join(model_dir, 'checkpoints', '812'),
           'prompt_file': train_state_lib.prompt_file(model_dir, 812)}
  line = train._stopped_line(signal.SIGTERM, paths)  # pylint: disable=protected-access
  return [str(errors.Stopped(line, signal.SIGTERM))]


CASES = {
    "a setting's value": setting_value,
    'a misspelled macro': misspelled_macro,
    'a misspelled model setting': misspelled_model_setting,
    'missing settings': missing_settings,
    'unknown task or mixture': unknown_task,
    'a GLUE/SuperGLUE task without network or local files': tfds_without_network,
    'a task without a multi-task prompt': task_outside_multi_task_prompt,
    '`ptj export --format peft` of prefixes PEFT cannot hold': prefix_peft_cannot_hold,
    '`ptj export --format peft` of a prompt placed or masked as PEFT cannot': prompt_peft_cannot_hold,
    'MODEL_DIR is a file': model_dir_is_a_file,
    'MODEL_DIR holds another run': model_dir_holds_another_run,
    'MODEL_DIR in use by another `ptj train`': model_dir_in_use,
    'a gs:// path without network': remote_without_network,
    'a gs:// MODEL_DIR without network': remote_model_dir_without_network,
    'a gs:// MODEL_DIR whose bucket does not exist': missing_bucket,
    'the bucket stops answering during a run': bucket_stops_answering,
    'missing checkpoint': missing_checkpoint,
    '`ptj eval`/`infer` of a step MODEL_DIR does not hold': checkpoint_step_not_held,
    'a Hugging Face directory with only `pytorch_model.bin`': pytorch_only,
    'a cut-short `model.safetensors`': cut_short_safetensors,
    'vocabulary larger than the embedding': vocabulary_too_large,
    '`ptj recycle` between models with different vocabularies': recycling_across_vocabularies,
    'a Wayward text longer than the prompt, or no prompt to hold': wayward_without_room,
    'prompt file of the wrong shape': prompt_of_the_wrong_shape,
    'NaN/inf in a prompt file': nan_prompt,
    'batch size vs devices': batch_size_vs_devices,
    'an empty train or validation file': empty_data_file,
    'a data file that is not UTF-8': not_utf8,
    '`TARGET_SENTINEL` with a vocabulary without extra ids': sentinel_without_extra_ids,
    'a loss over the label set on a task without label words': label_loss_without_labels,
    'a target that is none of the label words (with such a loss)': target_not_a_label,
    '`PACK_LENGTHS` rows too short, or a method or loss packing cannot serve':
        packing_that_cannot_work,
    'a TSV without its header row': tsv_without_header,
    'divergence': divergence,
    ("a prompt whose rows grow far beyond the embedding's (with `STOP_ON_DIVERGENCE = True`; "
     'otherwise a warning with the same numbers, and `WARNING: the prompt diverged` in the '
     'summary)'): prompt_far_beyond_the_embedding,
    'a process of a multi-host run died': peer_died,
    'disk full at a save': disk_full,
    'SIGTERM / Ctrl-C (not a mistake; exit 143 / 130)': stopped,
}


def test_every_row_is_checked():
  assert list(readme_rows()) == list(CASES)


@pytest.mark.parametrize('mistake', list(CASES))
def test_the_readme_shows_the_real_message(mistake, tmp_path, monkeypatch):
  (tmp_path / 'x').mkdir()
  messages = CASES[mistake](tmp_path / 'x', monkeypatch)
  normal = lambda text: ' '.join(text.replace(str(tmp_path), '').split())
  for fragment in readme_rows()[mistake]:
    pieces = [normal(piece) for piece in fragment.split('...') if piece.strip()]
    assert any(all(piece in normal(message) for piece in pieces) for message in messages), (
        f'README: {fragment!r}\nreal: {messages}')
