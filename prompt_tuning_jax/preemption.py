"""Stopping a training run cleanly on SIGTERM or SIGINT (preemption, Ctrl-C).

TPU VMs and spot GPUs are stopped with SIGTERM. `StopSignals` catches the
first SIGTERM or SIGINT and only records it: the train loop finishes its
step, saves a checkpoint and stops (`train.py`). A second signal exits at
once with status 128 + the signal's number (a checkpoint being written then
stays a temporary directory, which a resume ignores).

Several processes (multi-host) must stop at the same step, or the collective
save would hang: `requested()` combines the processes' flags with one
all-gather of one integer per step. In a single process it reads the
local flag and costs nothing.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

logger = logging.getLogger('prompt_tuning_jax')

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
  """A context that turns SIGTERM/SIGINT into a stop request the train loop polls."""

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous: dict[int, object] = {}

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():  # Python's own restriction
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.signum is not None:
      print(f'{name} again: exiting now without saving.', file=sys.stderr, flush=True)
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.signum = signum
    logger.warning('%s received: finishing this step, then saving a checkpoint and stopping '
                   '(send it again to exit at once, without saving).', name)

  def requested(self) -> Optional[int]:
    """The signal every process is to stop on after this step, or None to go on.

    Every process calls it after each step (multi-host: a collective).
    """
    if jax.process_count() == 1:
      return self.signum
    flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return int(np.max(flags)) or None


class NoSignals:
  """Never stops: for `train` called as a library function (the caller owns the signals)."""

  def requested(self) -> Optional[int]:
    return None
