"""XLA:CPU flags `ptj` sets by default: only flags measured to pay on the machine's CPU kind,
and only when the user has not set XLA_FLAGS (any value, even empty, keeps XLA's defaults).

The measurements are in benchmarks/README.md ("CPU defaults"); a CPU kind not listed
gets none. XLA reads XLA_FLAGS when its first backend starts, so setting them
after `import jax` but before the first computation takes effect.
"""
from __future__ import annotations

import os
from typing import MutableMapping, Optional

# /proc/cpuinfo vendor_id -> flags measured to speed up the train step on that kind.
MEASURED_FLAGS: dict[str, tuple[str, ...]] = {
    # YNNPACK dot fusions off: T5.1.1-small prompt-tuning step 15-18% faster and ~200 MiB
    # smaller on AMD EPYC; no gain on Intel Xeon (so nothing is set there).
    'AuthenticAMD': ('--xla_cpu_experimental_ynn_fusion_type=',),
}


def cpu_vendor(cpuinfo: str = '/proc/cpuinfo') -> Optional[str]:
  """The CPU's vendor_id (e.g. 'AuthenticAMD', 'GenuineIntel'); None when unknown."""
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith('vendor_id'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return None


def apply_defaults(environ: MutableMapping[str, str] = os.environ,
                   vendor: Optional[str] = None) -> Optional[str]:
  """Sets XLA_FLAGS to the measured flags of this CPU kind when it is unset; returns
  what was set (None: nothing)."""
  if 'XLA_FLAGS' in environ:
    return None
  flags = MEASURED_FLAGS.get(vendor or cpu_vendor() or '')
  if not flags:
    return None
  environ['XLA_FLAGS'] = ' '.join(flags)
  return environ['XLA_FLAGS']
