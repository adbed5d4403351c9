"""The labs end to end: build the trained labs' programs once, run the selected labs, list the figures."""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from experiments.common import Streams, Timer, parse_config, run_dir, save_json
from experiments.labs.config import PRESETS, STREAMS, LabsConfig
from experiments.labs.learned import lab_bridge, lab_cfg, lab_gmm, lab_moons
from experiments.labs.sdes import lab_brownian, lab_langevin, lab_ou
from experiments.labs.training import LabPrograms, build_programs


def lab_table(programs: LabPrograms) -> Dict[str, Callable]:
    """Lab name -> ``draw(cfg, out, key) -> [png paths]``, the trained labs bound to ``programs``."""
    return {
        "brownian": lab_brownian,
        "ou": lab_ou,
        "langevin": lab_langevin,
        "fm_gmm": functools.partial(lab_gmm, programs=programs, method="fm"),
        "sm_gmm": functools.partial(lab_gmm, programs=programs, method="sm"),
        "moons": functools.partial(lab_moons, programs=programs),
        "bridge": functools.partial(lab_bridge, programs=programs),
        "cfg": lab_cfg,
    }


def run(cfg: LabsConfig, out: Path, *, log=print) -> Dict[str, List[str]]:
    """Run the selected labs; returns ``{lab: [png paths]}`` (also saved as ``figures.json``)."""
    save_json(out / "config.json", dataclasses.asdict(cfg))
    labs, streams = lab_table(build_programs(cfg)), Streams(cfg.seed, STREAMS)
    figures = {}
    for i, name in enumerate(cfg.labs()):
        with Timer() as timer:
            written = labs[name](cfg, out, streams.key("lab", i))
        figures[name] = [str(p) for p in written]
        log(f"[{name}] {timer.seconds:.1f}s: " + ", ".join(str(p) for p in written))
    save_json(out / "figures.json", figures)
    return figures


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Parse ``argv`` (preset and ``--field value`` overrides), validate, then :func:`run`."""
    config, args = parse_config(LabsConfig, PRESETS, argv, description=LabsConfig.__doc__)
    return run(config, run_dir(args.out, f"labs-{args.preset}"))
