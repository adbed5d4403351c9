"""The image experiment end to end: check the data, build the programs once, train, sweep ``w``, write."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import jax

from experiments.common import Streams, Timer, parse_config, require, run_dir, save_json, write_table
from experiments.images import figures
from experiments.images.config import PRESETS, STREAMS, ImageConfig
from experiments.images.data import Sources, all_images, open_sources
from experiments.images.evaluation import judge_summary, make_judge, make_sampler, sweep
from experiments.images.training import (
    ClassifierProgram,
    FlowProgram,
    build_model,
    classifier_program,
    flow_program,
    train_classifier,
    train_flow,
)


def num_devices(config: ImageConfig) -> int:
    """Devices of the data-parallel mesh; the batch size must divide by it."""
    available = jax.local_device_count()
    n = available if config.devices == 0 else config.devices
    require(n <= available, "devices", f"asks for {n} devices but only {available} are present")
    require(config.batch_size % n == 0, "batch_size",
            f"must be a multiple of the number of devices ({n}) for data-parallel training; got {config.batch_size}")
    return n


class Programs(NamedTuple):
    """Every compiled program of one run (each compiles on its first call)."""

    flow: FlowProgram
    classifier: ClassifierProgram
    sample: Callable


def build_programs(config: ImageConfig, n_devices: int) -> Programs:
    model = build_model(config)
    return Programs(flow_program(config, model, n_devices), classifier_program(config), make_sampler(config, model))


def _evaluate(config: ImageConfig, out: Path, programs: Programs, params, mesh, sources: Sources,
              streams: Streams, summary: dict, step: int, log) -> None:
    """Train the classifier, sweep the guidance scales; write the table and the sample grids."""
    train_x, _ = all_images(sources.train)
    test_x, test_y = all_images(sources.test)
    with Timer() as t_cls:
        cls_params = train_classifier(config, programs.classifier, out, sources.train, streams)
    judge = make_judge(programs.classifier.apply, cls_params, train_x)
    summary.update(judge_summary(judge, test_x, test_y), classifier_seconds=round(t_cls.seconds, 2))
    rows, per_w = sweep(config, programs.sample, params, mesh, judge, streams)
    figures.save_sample_grids(out, config, per_w, step)
    table = write_table(rows, out)
    summary["results"] = rows
    log(f"\nclassifier: test accuracy {summary['classifier_test_accuracy']:.3f}; Frechet distance of the held-out "
        f"test images to the train images {summary['fd_test_vs_train']:.4g} (the floor for the FD column); "
        f"{config.samples_per_class} samples per class, {config.sample_steps} {config.sample_method} steps, "
        f"guided field (1 - w) u(x|null) + w u(x|y)\n")
    log(table)
    log(f"\nwrote {out}/results.{{json,csv,md}}, summary.json, loss.png, samples_w*.png, samples_class*.png")


def run(config: ImageConfig, out: Path, *, sources: Optional[Sources] = None, log=print) -> dict:
    """Train, evaluate and write every output of one run into ``out``; returns the summary dict.

    ``sources``: the data (default: opened here, before anything is written).
    """
    n_dev = num_devices(config)
    sources = open_sources(config) if sources is None else sources
    save_json(out / "config.json", dataclasses.asdict(config))
    log(f"data {config.dataset}: {len(sources.train)} train / {len(sources.test)} test images of shape "
        f"{config.image_shape}; {n_dev} device(s)")
    programs, streams = build_programs(config, n_dev), Streams(config.seed, STREAMS)
    state, info = train_flow(config, programs.flow, out, sources.train, streams, log=log)
    figures.save_loss(out / "loss.png", info["history"])
    summary = {"dataset": config.dataset, "devices": n_dev, "start_step": info["start_step"],
               "end_step": info["end_step"], "train_seconds": round(info["train_seconds"], 2)}
    if info["history"]:
        summary["final_loss"] = info["history"][-1][1]
    if config.evaluate:
        params = state.ema_params if state.ema_params is not None else state.params
        _evaluate(config, out, programs, params, programs.flow.mesh, sources, streams, summary, info["end_step"], log)
    save_json(out / "summary.json", summary)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``argv``, check the config and the data (nothing is written before), then :func:`run`."""
    config, args = parse_config(ImageConfig, PRESETS, argv, description=ImageConfig.__doc__)
    num_devices(config)
    sources = open_sources(config)
    return run(config, run_dir(args.out, f"images-{args.preset}"), sources=sources)
