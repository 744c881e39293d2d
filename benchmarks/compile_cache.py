"""First vs second start of the same run: what JAX's persistent compilation cache saves.

  python -m benchmarks.compile_cache --json compile_cache.json
  python -m benchmarks.compile_cache --gin_file models/t5_mini.gin \
    --gin_file runs/smoke_pretrained.gin --gin "LENGTH_BUCKETS = 'pow2'" --steps 40

Runs `ptj train` twice, each in a fresh process and a fresh MODEL_DIR, with one fresh cache
directory (`PTJ_COMPILATION_CACHE_DIR`, `config.enable_compilation_cache`; JAX's own
JAX_COMPILATION_CACHE_DIR unset): the first start fills the cache, the second reads it.
Reported per start: the seconds its train steps spent compiling (the sum of the
"Compiled the train step ... in Xs" log lines, one per batch shape), the shapes, the wall
seconds of the whole command, and the cache's files after it; then the second start's
compile seconds as a fraction of the first's. `--no_cache` runs both starts with the cache
off (`none`), the baseline. The default run is the smoke run (runs/smoke.gin) cut to
`--steps` steps without eval; pass gin files and bindings for another. Nothing here asserts
a timing.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

from benchmarks import common

MODULE = 'benchmarks.compile_cache'
COMPILED = re.compile(r'Compiled the train step for .* in ([0-9.]+)s')


def compile_seconds(log: str) -> list[float]:
  """The seconds of each train-step compilation a `ptj train` log reports."""
  return [float(seconds) for seconds in COMPILED.findall(log)]


def start(gin_files: Sequence[str], bindings: Sequence[str], model_dir: str,
          cache_dir: str) -> dict:
  """One `ptj train` in a fresh process; its compile seconds and wall seconds."""
  env = dict(os.environ, PTJ_COMPILATION_CACHE_DIR=cache_dir)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  command = [sys.executable, '-m', 'prompt_tuning_jax.cli', 'train',
             *[f'--gin_file={f}' for f in gin_files], f"--gin.MODEL_DIR='{model_dir}'",
             *[f'--gin.{name.strip()}={value.strip()}'
               for name, value in (b.split('=', 1) for b in bindings)]]
  tick = time.perf_counter()
  proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=common.REPO_ROOT)
  wall = time.perf_counter() - tick
  log = proc.stdout + proc.stderr
  if proc.returncode:
    raise SystemExit(f'ptj train failed (exit {proc.returncode}):\n{log[-3000:]}')
  seconds = compile_seconds(log)
  files = sum(len(names) for _, _, names in os.walk(cache_dir)) if os.path.isdir(
      cache_dir) else 0
  return {'compile_s': sum(seconds), 'shapes': len(seconds), 'wall_s': wall,
          'cache_files': files}


def run(args: argparse.Namespace) -> dict:
  bindings = [f'TRAIN_STEPS = {args.steps}', 'EVAL_PERIOD = None', *args.gin]
  with tempfile.TemporaryDirectory(prefix='ptj_compile_cache_') as tmp:
    cache_dir = 'none' if args.no_cache else os.path.join(tmp, 'xla')
    starts = []
    for i in range(2):
      starts.append(start(args.gin_file, bindings, os.path.join(tmp, f'run{i}'), cache_dir))
      print(f'start {i + 1}: compile {starts[-1]["compile_s"]:.1f}s over '
            f'{starts[-1]["shapes"]} shape(s), wall {starts[-1]["wall_s"]:.1f}s',
            file=sys.stderr, flush=True)
  first, second = starts
  return {'machine': common.machine_info(), 'settings': {
      k: v for k, v in vars(args).items() if k != 'json'}, 'first': first, 'second': second,
          'second_compile_fraction': second['compile_s'] / max(first['compile_s'], 1e-9),
          'second_wall_fraction': second['wall_s'] / first['wall_s']}


def format_report(report: dict) -> str:
  rows = [{'start': name, **report[name]} for name in ('first', 'second')]
  table = common.format_table(rows, [('start', 'start', 's'), ('compile s', 'compile_s', '.1f'),
                                     ('shapes', 'shapes', 'd'), ('wall s', 'wall_s', '.1f'),
                                     ('cache files', 'cache_files', 'd')])
  return (f"{table}\n\nsecond start: compile {100 * report['second_compile_fraction']:.0f}% "
          f"of the first's, wall {100 * report['second_wall_fraction']:.0f}%")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f'python -m {MODULE}', description=__doc__.split('\n')[0])
  parser.add_argument('--gin_file', action='append', default=None,
                      help='gin files of the run (default: runs/smoke.gin)')
  parser.add_argument('--gin', action='append', default=[],
                      help="a binding, e.g. \"LENGTH_BUCKETS = 'pow2'\" (repeatable)")
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--no_cache', action='store_true', help='both starts without the cache')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  args.gin_file = args.gin_file or ['runs/smoke.gin']
  return args


def main(argv: Sequence[str]) -> None:
  args = parse_args(argv)
  report = run(args)
  print(format_report(report))
  if args.json:
    common.write_json(args.json, report)


if __name__ == '__main__':
  main(sys.argv[1:])
