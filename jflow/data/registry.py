"""Toy distributions by name: :data:`TOYS` and :func:`get_toy`.

Names of :mod:`jflow.data.toy` (jflow's own sets) and of :mod:`jflow.data.peers` (presets
reproducing torchcfm's and flow_matching's sets of the same names).
"""
from __future__ import annotations

import inspect

from jflow._checks import check_choice
from jflow.data import peers, toy

__all__ = ["TOYS", "get_toy"]

TOYS = {
    "symmetric_mixture": toy.symmetric_mixture,
    "eight_gaussians": toy.eight_gaussians,
    "moons": toy.Moons,
    "circles": toy.Circles,
    "checkerboard": toy.Checkerboard,
    "spirals": toy.Spirals,
    "swiss_roll": toy.SwissRoll,
    "torchcfm_eight_gaussians": peers.torchcfm_eight_gaussians,
    "torchcfm_moons": peers.torchcfm_moons,
    "flow_matching_checkerboard": peers.flow_matching_checkerboard,
    "flow_matching_moons": peers.flow_matching_moons,
}


def get_toy(name: str, **params):
    """Build a toy distribution by name: one of :data:`TOYS` (see :mod:`jflow.data.toy`).

    ``params`` are the keyword arguments of that distribution (e.g.
    ``get_toy("moons", noise=0.1)``, ``get_toy("symmetric_mixture", nmodes=5, std=1.0,
    scale=10.0)``). Unknown names or parameters raise ``ValueError``.
    """
    check_choice(name, TOYS, "toy distribution")
    factory = TOYS[name]
    allowed = [p for p in inspect.signature(factory).parameters]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for toy {name!r}; allowed: {allowed}")
    return factory(**params)
