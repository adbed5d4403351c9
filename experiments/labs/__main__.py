"""``python -m experiments.labs``: the lab figures from the command line (see the package docstring)."""
from experiments.common import cli
from experiments.labs import main
from jflow.train import CheckpointError

if __name__ == "__main__":
    cli(main, CheckpointError)
