"""``python -m experiments.ablation``: the main job from the command line (see the package docstring)."""
from experiments.ablation import main
from experiments.common import cli
from jflow.train import CheckpointError

if __name__ == "__main__":
    cli(main, CheckpointError)
