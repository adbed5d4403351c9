"""``python -m experiments.images``: the guided image experiment from the command line (see the package docstring)."""
from experiments.common import cli
from experiments.images import main
from jflow.train import CheckpointError

if __name__ == "__main__":
    cli(main, CheckpointError)
