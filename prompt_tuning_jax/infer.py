"""`python -m prompt_tuning_jax.infer`: the same as `ptj infer` (see `cli.py`)."""
import sys

from prompt_tuning_jax import cli

if __name__ == '__main__':
  sys.exit(cli.main(command='infer'))
