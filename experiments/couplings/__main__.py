"""``python -m experiments.couplings``: the Tong et al. (2023) 2-D reproduction (see the package docstring)."""
from experiments.common import cli
from experiments.couplings.run import main

if __name__ == "__main__":
    cli(main)
