"""The main job end to end: build the programs once, train, evaluate, draw, write the tables."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple

import jax
import numpy as np

from experiments.ablation import figures as plots
from experiments.ablation.config import METRICS, PRESETS, STREAMS, AblationConfig, RunSpec, build_model, run_specs
from experiments.ablation.evaluation import (
    EvalPrograms,
    evaluate,
    evaluation_programs,
    field_error,
    reference_row,
    sample_data,
)
from experiments.ablation.training import TrainingProgram, init_program, train, training_program, with_earlier_curve
from experiments.common import Streams, markdown_table, parse_config, progress, run_dir, save_json, write_table
from jflow.data import get_toy
from jflow.marginals import GaussianMixture

#: the columns of the printed table of trained models
MODEL_SUMMARY = ("dataset", "run", "final_loss", "train_seconds", "field_mse_mean", "field_mse_std", "field_rel_mean")


class Programs(NamedTuple):
    """Every compiled program of one run: training per ``(dataset, run name)``, evaluation per run name."""

    training: Dict[tuple, TrainingProgram]
    evaluation: Dict[str, EvalPrograms]


def build_programs(cfg: AblationConfig, specs: List[RunSpec]) -> Programs:
    """The programs of ``cfg`` (compiled on first call; one network, so one init program per data dimension)."""
    model = build_model(cfg)
    dims = {dataset: get_toy(dataset).dim for dataset in cfg.datasets}
    inits = {dim: init_program(model, dim) for dim in set(dims.values())}
    training = {(dataset, s.name): training_program(cfg, model, inits[dims[dataset]], dataset, s)
                for dataset in cfg.datasets for s in specs}
    return Programs(training, {s.name: evaluation_programs(cfg, model, s) for s in specs})


def _resolved_config(cfg: AblationConfig, specs: List[RunSpec], preset: str) -> dict:
    resolved = dataclasses.asdict(cfg)
    resolved.update(preset=preset, runs=[s.name for s in specs],
                    sampling_grid=f"uniform, {list(cfg.sample_steps)} steps on [{cfg.t_eps}, {1 - cfg.t_eps}]",
                    devices=[str(d) for d in jax.devices()])
    return resolved


def _previous_training(path: Path) -> dict:
    """``(dataset, run) -> record`` of an earlier invocation in the same directory (its loss curves)."""
    return {(d["dataset"], d["run"]): d for d in json.loads(path.read_text())} if path.is_file() else {}


def _draw(cfg, out: Path, dataset: str, specs, programs: Programs, samples, params, heldout, rows, reference,
          model_rows, gm) -> List[str]:
    """Every figure of ``dataset``; returns their paths."""
    draw = {
        "samples": lambda p: plots.plot_samples(p, cfg, specs, samples, heldout),
        "metrics": lambda p: plots.plot_metrics(p, cfg, rows, reference),
        "trajectories": lambda p: plots.plot_trajectories(p, cfg, specs, heldout, samples),
        "vector_field": lambda p: plots.plot_vector_field(p, specs, programs.evaluation, heldout, params, gm),
    }
    if gm is not None:
        draw["field_error"] = lambda p: plots.plot_field_error(p, cfg, model_rows)
    for name, plot in draw.items():
        plot(out / f"{dataset}_{name}.png")
    return [str(out / f"{dataset}_{name}.png") for name in draw]


def _summary(rows: List[dict], cfg: AblationConfig) -> str:
    """Readable Markdown: every row at the largest step count, metrics as ``mean +- std``."""
    n = max(cfg.sample_steps)
    out = []
    for r in rows:
        if r["steps"] not in (n, 0):
            continue
        s = {"dataset": r["dataset"], "method": r["method"], "path": r["scheduler"],
             "sampler": plots.setting_label(r["sampler"], r["sigma"]) if r["sampler"] != "-" else "-",
             "steps": r["steps"]}
        for m in METRICS:
            mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
            s[m] = "-" if mean is None else (f"{mean:.4g}" if not std else f"{mean:.4g} +- {std:.2g}")
        out.append(s)
    return markdown_table(out)


def _write_outputs(cfg: AblationConfig, out: Path, rows, models, training, figures) -> None:
    """The tables (``results``, ``models``, per-time field errors, training facts), and the printed summary."""
    write_table(rows, out, "results")
    flat_models = [{k: v for k, v in m.items() if k != "field_mse_by_t"} for m in models]
    write_table(flat_models, out, "models")
    save_json(out / "models_field_error_by_t.json", models)
    save_json(out / "training.json", training)
    models_md = markdown_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in m.items()
                                 if k in MODEL_SUMMARY} for m in flat_models])
    print(f"\n## Results at {max(cfg.sample_steps)} steps (mean +- std over {cfg.seeds} seeds)\n")
    print(_summary(rows, cfg))
    print("\n## Trained models (field error: E||u_learned - u_exact||^2 over x ~ p_t, t in field_times)\n")
    print(models_md)
    print(f"\nfull table: {out / 'results.md'} (also .csv, .json); figures: {', '.join(figures)}")


def _model_row(dataset, spec: RunSpec, info: dict) -> dict:
    return {"dataset": dataset, "run": spec.name, "method": spec.method, "scheduler": spec.scheduler,
            "parameterization": spec.parameterization, "final_loss": info["final_loss"],
            "train_seconds": info["train_seconds"], "resumed_from_step": info["resumed_from_step"]}


class Outputs(NamedTuple):
    """What a run produces for one data set (concatenated over data sets into the tables)."""

    rows: List[dict]
    models: List[dict]
    training: List[dict]
    figures: List[str]


def _run_dataset(cfg: AblationConfig, dataset: str, specs: List[RunSpec], programs: Programs, streams: Streams,
                 out: Path, previous: dict, bars) -> Outputs:
    """Train every run family on ``dataset``, evaluate it against held-out data, draw its figures."""
    dist = get_toy(dataset)
    gm = dist if isinstance(dist, GaussianMixture) else None
    heldout = np.asarray(sample_data(dist, streams.key("heldout"), cfg.n_eval))
    params, samples, rows, models, training = {}, {}, [], [], []
    for spec in specs:
        params[spec.name], info = train(cfg, dataset, spec, programs.training[dataset, spec.name], streams,
                                        out / "checkpoints" / f"{dataset}-{spec.method}-{spec.scheduler}", bars[0])
        training.append(with_earlier_curve(info, previous.get((dataset, spec.name))))
    reference = reference_row(cfg, dataset, dist, heldout, streams)
    for spec, info in zip(specs, training):
        spec_rows, samples[spec.name] = evaluate(cfg, dataset, spec, programs.evaluation[spec.name],
                                                 params[spec.name], heldout, streams, bars[1])
        rows.extend(spec_rows)
        models.append(_model_row(dataset, spec, info))
        if gm is not None:
            models[-1].update(field_error(cfg, programs.evaluation[spec.name].field_error, params[spec.name], gm,
                                          heldout, streams))
    drawn = _draw(cfg, out, dataset, specs, programs, samples, params, heldout, rows, reference, models, gm) \
        if cfg.figures else []
    if gm is None:
        print(f"[{dataset}] not a Gaussian mixture: no exact marginal field, field error skipped", file=sys.stderr)
    return Outputs([reference] + rows, models, training, drawn)


def run(cfg: AblationConfig, out: Path, preset: str = "custom") -> dict:
    """Train, sample and evaluate every method for ``cfg``; write every output into ``out``."""
    specs = run_specs(cfg)
    save_json(out / "config.json", _resolved_config(cfg, specs, preset))
    programs, streams = build_programs(cfg, specs), Streams(cfg.seed, STREAMS)
    previous = _previous_training(out / "training.json")
    n_runs = len(cfg.datasets) * len(specs)
    bars = (progress(total=n_runs * cfg.train_steps, desc="train"),
            progress(total=n_runs * len(cfg.sampler_settings()) * len(cfg.sample_steps), desc="sample"))
    parts = [_run_dataset(cfg, dataset, specs, programs, streams, out, previous, bars) for dataset in cfg.datasets]
    for bar in bars:
        bar.close()
    result = {field: [x for part in parts for x in getattr(part, field)] for field in Outputs._fields}
    _write_outputs(cfg, out, **result)
    return {"rows": result["rows"], "models": result["models"], "training": result["training"],
            "figures": result["figures"]}


def main(argv=None) -> dict:
    """Parse ``argv`` (preset and ``--field value`` overrides), validate, then :func:`run`.

    Raises :class:`experiments.common.ConfigError` for an invalid configuration before
    anything is trained or written.
    """
    cfg, args = parse_config(AblationConfig, PRESETS, argv, description=AblationConfig.__doc__)
    out = run_dir(args.out, f"ablation-{args.preset}")
    return run(cfg, out, args.preset)
