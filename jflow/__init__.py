"""jflow: flow matching and diffusion models in JAX (MIT 6.S184 notation, flow time t: 0 noise -> 1 data)."""
from jflow import paths, schedulers

__version__ = "0.1.0"
__all__ = ["schedulers", "paths"]
