"""``python -m experiments.ablation``: the main job (see :mod:`experiments.ablation`)."""
from experiments.ablation.run import main
from experiments.common import cli
from jflow.train import CheckpointError

if __name__ == "__main__":
    cli(main, CheckpointError)
