"""What every benchmark shares: shapes, inputs, timing, memory, machine facts, workers.

Each measurement runs in a worker: a fresh Python (`python -m <module> --worker
PAYLOAD RESULT`) that imports only one side (JAX or torch), so peak RSS is that
side's alone and the two runtimes never share an address space or a thread
pool. This module imports neither JAX nor torch at import time.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Model sizes the benchmarks accept (T5.1.1 and t5_mini), as preset names of
# `prompt_tuning_jax.models`.
SIZES = {
    'tiny': 't5_1_1_tiny',
    'mini': 't5_mini',  # the project's mini T5 (8k vocabulary); only its shape is used
    'small': 't5_1_1_small',
    'base': 't5_1_1_base',
    'large': 't5_1_1_large',
    'xl': 't5_1_1_xl',
}
# The T5Config fields that define a model's shape (and that PEFT's side copies).
SHAPE_FIELDS = ('vocab_size', 'emb_dim', 'num_heads', 'head_dim', 'mlp_dim',
                'num_encoder_layers', 'num_decoder_layers',
                'relative_attention_num_buckets', 'relative_attention_max_distance')


@dataclasses.dataclass(frozen=True)
class Workload:
  """One batch shape: B examples of `input_len` tokens (+ prompt), `target_len` targets."""
  batch: int
  input_len: int
  prompt_len: int
  target_len: int

  @property
  def tokens_per_step(self) -> int:
    """Real (non-prompt) tokens a step processes: inputs + targets of every example."""
    return self.batch * (self.input_len + self.target_len)


def model_shape(size: str) -> dict[str, int]:
  """The shape fields of a T5.1.1 preset (imports the model module, hence JAX)."""
  if size not in SIZES:
    raise ValueError(f'Unknown size {size!r}; known: {", ".join(SIZES)}')
  from prompt_tuning_jax.models import get_config  # pylint: disable=g-import-not-at-top
  config = get_config(SIZES[size])
  return {field: getattr(config, field) for field in SHAPE_FIELDS}


def random_batch(workload: Workload, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Unpadded random tokens in [2, vocab) (0 = pad, 1 = EOS), T5X feature names, int32.

  Both sides train on exactly these arrays; decoder inputs are the targets
  shifted right by one with 0 as the start token (what HF does with `labels`).
  """
  rng = np.random.RandomState(seed)
  high = max(vocab_size, 3)
  inputs = rng.randint(2, high, (workload.batch, workload.input_len)).astype(np.int32)
  targets = rng.randint(2, high, (workload.batch, workload.target_len)).astype(np.int32)
  decoder_inputs = np.concatenate(
      [np.zeros((workload.batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {'encoder_input_tokens': inputs, 'decoder_input_tokens': decoder_inputs,
          'decoder_target_tokens': targets,
          'decoder_loss_weights': np.ones(targets.shape, np.float32)}


def random_params(model, *init_args, seed: int = 0) -> dict:
  """Random float32 params shaped like `model.init(rng, *init_args)`, drawn with numpy.

  Timing does not depend on the values, only on their being finite and of a
  sane scale: norm scales are 1, other tables N(0, 1/fan_in). This skips
  compiling flax's initialisers (tens of seconds on a loaded CPU for nothing).
  """
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), *init_args, enable_dropout=False))['params']
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(shapes, sep='/')
  params = {}
  for path, leaf in flat.items():
    if path.endswith('scale'):
      value = np.ones(leaf.shape, np.float32)
    else:
      value = rng.standard_normal(leaf.shape, np.float32) / np.sqrt(leaf.shape[0])
    params[path] = jax.numpy.asarray(value, leaf.dtype)
  return flax.traverse_util.unflatten_dict(params, sep='/')


# ------------------------------------------------------------ timing


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> dict[str, Any]:
  """Calls `fn` (which must block until its result is ready) warmup + repeats times.

  Returns the median/min seconds of the timed calls and all of them, and (on
  Linux) the peak RSS during the timed calls, `timed_peak_rss_mib`.
  """
  if repeats < 1:
    raise ValueError(f'repeats must be >= 1, got {repeats}')
  for _ in range(warmup):
    fn()
  peak_before = peak_rss_mib()
  reset = reset_peak_rss()
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - start)
  result = {'median_s': statistics.median(seconds), 'min_s': min(seconds), 'all_s': seconds}
  if reset:
    result['timed_peak_rss_mib'] = high_water_rss_mib()
  # The reset also lowers ru_maxrss: keep the earlier peak for `process_peak_rss_mib`.
  result['peak_rss_before_timing_mib'] = peak_before
  return result


def throughput(median_s: float, workload: Workload) -> dict[str, float]:
  return {'examples_per_s': workload.batch / median_s,
          'tokens_per_s': workload.tokens_per_step / median_s}


# ------------------------------------------------------------ memory


def peak_rss_mib() -> float:
  """Peak resident set size (Linux reports KiB) since start or since `reset_peak_rss`."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def process_peak_rss_mib(timing: Optional[dict] = None) -> float:
  """Whole-process peak RSS, including any peak before `time_calls` reset the mark."""
  return max(peak_rss_mib(), (timing or {}).get('peak_rss_before_timing_mib', 0.0))


def reset_peak_rss() -> bool:
  """Restarts the kernel's high-water mark (VmHWM) from the current RSS; False if unsupported.

  Lets a worker report the peak of its timed steps apart from the transient
  peak of compiling (XLA/LLVM) or building the model.
  """
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def high_water_rss_mib() -> float:
  """VmHWM: the peak RSS since the process started or since `reset_peak_rss`."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError('/proc/self/status has no VmHWM line')


def current_rss_mib() -> float:
  with open('/proc/self/statm') as f:
    pages = int(f.read().split()[1])
  return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


# ------------------------------------------------------------ profile


def profile_ops(fn: Callable[[], Any], calls: int, trace_dir: str) -> dict[str, Any]:
  """Where the time of `fn` goes: XLA's per-op trace events, summed per op over `calls`.

  Reads the trace JAX's profiler writes (the XLA CPU runtime records one event
  per executed op/fusion; on GPU, per kernel). Returns seconds per call by op
  name, sorted, with the share of the summed op time and of wall time. Ops on
  different threads overlap, so shares are of the summed op time.
  """
  import glob  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  fn()
  jax.profiler.start_trace(trace_dir)
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  wall_s = (time.perf_counter() - start) / calls
  jax.profiler.stop_trace()
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))
  if not paths:
    raise RuntimeError(f'The profiler wrote no trace under {trace_dir}.')
  data = jax.profiler.ProfileData.from_file(paths[-1])
  per_op: dict[str, float] = {}
  for plane in data.planes:
    for line in plane.lines:
      if not any(tag in line.name for tag in ('XLAPjRtCpuClient', 'XLAEigen', 'Stream')):
        continue
      for event in line.events:
        name = event.name
        if name.startswith('end: ') or '::' in name:  # runtime bookkeeping, waits
          continue
        per_op[name] = per_op.get(name, 0.0) + event.duration_ns * 1e-9 / calls
  total = sum(per_op.values()) or 1.0
  ops = sorted(per_op.items(), key=lambda kv: -kv[1])
  return {'wall_s_per_call': wall_s, 'op_s_per_call': total,
          'ops': [{'op': name, 's': seconds, 'share': seconds / total}
                  for name, seconds in ops]}


PROFILE_PARTS = ('logits_dense', 'encoder_decoder_attention', 'self_attention', 'attention',
                 'mlp', 'layer_norm', 'encoder_norm', 'decoder_norm', 'relpos_bias',
                 'token_embedder', 'prompt', 'softmax', 'exp', 'log', 'reduce', 'adam')
_MATMUL_OPCODES = (' dot(', ' convolution(', 'custom_call_target="__cublas', '__onednn$matmul')


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, bool]]:
  """Compiled HLO: instruction name -> (its `op_name` metadata, whether it is/fuses a matmul)."""
  computations_with_dot, current, has_dot = set(), None, False
  lines = [line.strip() for line in hlo_text.splitlines()]
  for line in lines:
    if line.endswith('{') and ' = ' not in line:
      current, has_dot = line.split()[0].lstrip('%'), False
    elif line == '}' and current is not None:
      if has_dot:
        computations_with_dot.add(current)
      current = None
    elif any(op in line for op in _MATMUL_OPCODES):
      has_dot = True
  found = {}
  for line in lines:
    line = line[5:] if line.startswith('ROOT ') else line
    if not line.startswith('%') or ' = ' not in line:
      continue
    name = line[1:line.index(' = ')]
    source = line.split('op_name="', 1)[1].split('"', 1)[0] if 'op_name="' in line else ''
    called = line.split('calls=%', 1)[1].split(',', 1)[0].split()[0] if 'calls=%' in line else ''
    found[name] = (source, any(op in line for op in _MATMUL_OPCODES)
                   or called in computations_with_dot)
  return found


def summarise_profile(profile: dict, hlo_text: str, top: int = 15) -> dict:
  """Groups `profile_ops` output: matmul vs other ops, forward vs backward, model part."""
  instructions = hlo_instructions(hlo_text)
  groups: dict[str, float] = {}
  top_ops = []
  for entry in profile['ops']:
    source, is_matmul = instructions.get(entry['op'], ('', False))
    kind = 'matmul' if is_matmul else 'other'
    direction = 'backward' if 'transpose(' in source else 'forward'
    part = next((p for p in PROFILE_PARTS if p in source), 'other')
    for key in (kind, f'{direction}/{kind}', f'part/{part}/{kind}'):
      groups[key] = groups.get(key, 0.0) + entry['s']
    if len(top_ops) < top:
      top_ops.append(dict(entry, kind=kind, source=source[-120:]))
  total = profile['op_s_per_call'] or 1.0
  return {'wall_s_per_call': profile['wall_s_per_call'], 'op_s_per_call': total,
          'share': {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
          'top_ops': top_ops}


# ------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
  """What a results table needs to be reproducible: CPU, cores, load, date, versions."""
  model = platform.processor() or 'unknown'
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
      if line.startswith('Model name:'):
        model = line.split(':', 1)[1].strip()
  except (OSError, subprocess.CalledProcessError):
    pass
  return {
      'cpu_model': model,
      'cpu_count': os.cpu_count(),
      'load_average': [round(x, 2) for x in os.getloadavg()],
      'date_utc': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M'),
      'python': platform.python_version(),
      'versions': _versions(('jax', 'jaxlib', 'flax', 'optax', 'torch', 'transformers', 'peft')),
  }


def _versions(packages: Sequence[str]) -> dict[str, str]:
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  found = {}
  for name in packages:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      found[name] = 'not installed'
  return found


# ------------------------------------------------------------ matmul limit


def jax_matmul_flops_per_s(n: int = 2048, dtype: str = 'float32', repeats: int = 7) -> dict:
  """Median FLOP/s of a jitted [n, n] @ [n, n] matmul: the practical compute limit."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.dtype(dtype))
  matmul = jax.jit(jnp.matmul)
  timing = time_calls(lambda: matmul(a, b).block_until_ready(), warmup=2, repeats=repeats)
  return {'n': n, 'dtype': dtype, 'flops_per_s': 2 * n**3 / timing['median_s'],
          'backend': jax.default_backend()}


def torch_matmul_flops_per_s(n: int = 2048, repeats: int = 7) -> dict:
  """The same measurement with torch (float32), for the peer's utilisation."""
  import torch  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  a = torch.randn(n, n, device=device)
  b = torch.randn(n, n, device=device)

  def call():
    torch.matmul(a, b)
    if device == 'cuda':
      torch.cuda.synchronize()

  timing = time_calls(call, warmup=2, repeats=repeats)
  return {'n': n, 'dtype': 'float32', 'flops_per_s': 2 * n**3 / timing['median_s'],
          'backend': device}


# ------------------------------------------------------------ workers


class WorkerError(RuntimeError):
  """A benchmark worker process failed; the message holds its stderr tail."""


def run_worker(module: str, payload: dict, timeout_s: Optional[float] = None,
               xla_flags: str = '') -> dict:
  """Runs `python -m module --worker PAYLOAD RESULT` in a fresh process; returns RESULT.

  `xla_flags` are appended to the worker's XLA_FLAGS (compiler options are
  process-wide, hence per worker).
  """
  with tempfile.TemporaryDirectory(prefix='ptj_bench_') as tmp:
    payload_path = os.path.join(tmp, 'payload.json')
    result_path = os.path.join(tmp, 'result.json')
    with open(payload_path, 'w') as f:
      json.dump(payload, f)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO_ROOT, env.get('PYTHONPATH')]))
    if xla_flags:
      env['XLA_FLAGS'] = ' '.join(filter(None, [env.get('XLA_FLAGS'), xla_flags]))
    proc = subprocess.run(
        [sys.executable, '-m', module, '--worker', payload_path, result_path],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not os.path.exists(result_path):
      tail = '\n'.join(proc.stderr.strip().splitlines()[-25:])
      raise WorkerError(f'{module} worker failed (exit {proc.returncode}) on payload '
                        f'{json.dumps(payload)}:\n{tail}')
    with open(result_path) as f:
      return json.load(f)


def worker_main(argv: Sequence[str], measure: Callable[[dict], dict]) -> bool:
  """If argv is `--worker PAYLOAD RESULT`, runs `measure(payload)` into RESULT; else False."""
  if len(argv) < 1 or argv[0] != '--worker':
    return False
  if len(argv) != 3:
    raise SystemExit('usage: python -m <benchmark> --worker PAYLOAD.json RESULT.json')
  with open(argv[1]) as f:
    payload = json.load(f)
  result = measure(payload)
  with open(argv[2], 'w') as f:
    json.dump(result, f)
  return True


# ------------------------------------------------------------ reporting


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
  """A markdown table; `columns` are (header, key, format spec); missing keys print '-'."""
  lines = ['| ' + ' | '.join(h for h, _, _ in columns) + ' |',
           '|' + '|'.join('---' for _ in columns) + '|']
  for row in rows:
    cells = []
    for _, key, spec in columns:
      value = row.get(key)
      cells.append('-' if value is None else format(value, spec))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def write_json(path: str, obj: Any) -> None:
  if path == '-':
    json.dump(obj, sys.stdout, indent=1)
    sys.stdout.write('\n')
    return
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1)
