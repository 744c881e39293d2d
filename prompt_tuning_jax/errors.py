"""The project's exceptions: mistakes a user can fix, each reported by `ptj` in one line.

`ptj` catches `Error` and nothing else (`config.report_errors`): any other
exception is a bug and keeps its traceback. The subclasses also derive from
the built-in type a library caller would expect (`ValueError`, `RuntimeError`).
"""


class Error(Exception):
  """A mistake in the configuration, the data or a checkpoint, or a run that diverged."""


class UsageError(Error, ValueError):
  """A command-line or configuration mistake: a setting's value, a name, a missing file."""


class DataError(Error, ValueError):
  """Task data or an input file is missing or malformed."""


class CheckpointError(Error, ValueError):
  """A checkpoint or prompt file is missing, unreadable, or does not match the model."""


class StorageError(Error, OSError):
  """MODEL_DIR (a disk, a bucket) could not be written while a run was going on."""


class DivergedError(Error, RuntimeError):
  """The loss or the trained parameters became NaN or infinite."""


class Stopped(Error):
  """Training stopped on a signal after saving a checkpoint; `ptj` exits with 128 + the signal."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_status = 128 + signum


class PeerError(Error, RuntimeError):
  """A collective operation of a multi-process run failed: another process stopped."""
