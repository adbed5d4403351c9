"""Orchestration of the main job: train every run on every dataset, evaluate, write tables and figures."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import jax
import numpy as np

from experiments.ablation import figures
from experiments.ablation.config import AblationConfig, RunSpec, streams
from experiments.ablation.evaluation import best_rows, evaluate, model_summary, reference_row
from experiments.ablation.programs import Programs
from experiments.ablation.training import make_init, train
from experiments.common import markdown_table, progress, save_json, write_table
from jflow.data import get_toy
from jflow.marginals import GaussianMixture

MODEL_COLUMNS = ("dataset", "run", "final_loss", "train_seconds", "nll_mean", "nll_std", "dopri5_nfe_mean",
                 "dopri5_nfe_std", "dopri5_energy_mean", "field_mse_mean", "field_mse_std", "field_rel_mean")


def _merge_earlier_curve(info: dict, earlier) -> dict:
    """After a resume, prepend the loss curve of the interrupted run up to the checkpoint."""
    if earlier is None or info["resumed_from_step"] == 0:
        return info
    info["loss_curve"] = [pt for pt in earlier.get("loss_curve", []) if pt[0] <= info["resumed_from_step"]] + \
        info["loss_curve"]
    curve = [v for _, v in info["loss_curve"]]
    info["final_loss"] = float(np.mean(curve[-max(1, len(curve) // 10):])) if curve else None
    return info


def _dataset(cfg, programs, dataset, out, previous, bars):
    """Train and evaluate every run on one dataset: ``(rows, model_rows, training, figure paths)``."""
    dist = get_toy(dataset)
    gm = dist if isinstance(dist, GaussianMixture) else None
    heldout = np.asarray(programs.data(dist, streams(cfg).key("heldout"), cfg.n_eval))
    init = make_init(cfg, dist.dim)
    rows, model_rows, training, samples = [reference_row(cfg, programs, dataset, dist, heldout)], [], [], {}
    for spec in cfg.specs:
        ckpt = out / "checkpoints" / f"{dataset}-{spec.method}-{spec.scheduler}-{spec.weighting}"
        params, info = train(cfg, dataset, spec, init, ckpt, bars["train"])
        training.append(_merge_earlier_curve(info, previous.get((dataset, spec.name))))
        spec_rows, samples[spec.name] = evaluate(cfg, programs, dataset, spec, params, heldout, bars["sample"])
        rows.extend(spec_rows)
        summary = model_summary(cfg, programs, spec, params, heldout, gm)
        model_rows.append({"dataset": dataset, "run": spec.name, "final_loss": info["final_loss"],
                           "train_seconds": info["train_seconds"], **summary})
    paths = []
    if cfg.figures:
        paths = [out / f"{dataset}_{kind}.png" for kind in ("samples", "metrics", "field_error")][: 3 if gm else 2]
        figures.plot_samples(paths[0], samples, heldout, max(cfg.sample_steps))
        figures.plot_metrics(paths[1], rows[1:], rows[0])
        if gm is not None:
            figures.plot_field_error(paths[2], model_rows)
    return rows, model_rows, training, [str(p) for p in paths]


def _tables(cfg: AblationConfig, rows: List[dict], model_rows: List[dict]) -> str:
    """The Markdown summary: each run's best sampler at the largest step count, and the model table."""
    fmt = lambda r, m: "-" if r.get(f"{m}_mean") is None else f"{r[f'{m}_mean']:.4g} +- {r[f'{m}_std']:.2g}"  # noqa: E731
    n = max(cfg.sample_steps)
    best = [{"dataset": r["dataset"], "run": r["run"], "best sampler": r["sampler"], "steps": r["steps"] or "-",
             "energy": fmt(r, "energy"), "mmd": fmt(r, "mmd"), "sliced W2": fmt(r, "sw2")}
            for r in [x for x in rows if x["steps"] == 0] + best_rows(rows, n)]
    models = [{k: (f"{m[k]:.4g}" if isinstance(m.get(k), float) else m.get(k, "-")) for k in MODEL_COLUMNS}
              for m in model_rows]
    return (f"## Best sampler per run at {n} steps (mean +- std over {cfg.seeds} seeds)\n\n{markdown_table(best)}\n\n"
            f"## Trained models (NLL: Heun {n} steps; dopri5: rtol = atol = {cfg.adaptive_tol:g}; field error over "
            f"t in {list(cfg.field_times)})\n\n{markdown_table(models)}\n")


def run(cfg: AblationConfig, out: Path, preset: str = "custom") -> dict:
    """Train, sample and evaluate every run of ``cfg``; write every output into ``out``."""
    specs: List[RunSpec] = list(cfg.specs)
    resolved = dict(dataclasses.asdict(cfg), preset=preset, devices=[str(d) for d in jax.devices()])
    save_json(out / "config.json", resolved)
    previous_file = out / "training.json"
    previous = ({(d["dataset"], d["run"]): d for d in json.loads(previous_file.read_text())}
                if previous_file.is_file() else {})
    programs = Programs(cfg)
    n_eval = len(cfg.datasets) * sum(len(cfg.sampler_runs(s)) for s in specs) * len(cfg.sample_steps)
    bars = {"train": progress(total=len(cfg.datasets) * len(specs) * cfg.train_steps, desc="train"),
            "sample": progress(total=n_eval, desc="sample")}
    rows, model_rows, training, paths = [], [], [], []
    for dataset in cfg.datasets:
        r, m, t, p = _dataset(cfg, programs, dataset, out, previous, bars)
        rows += r
        model_rows += m
        training += t
        paths += p
    for bar in bars.values():
        bar.close()
    write_table(rows, out, "results")
    write_table([{k: v for k, v in m.items() if k != "field_mse_by_t"} for m in model_rows], out, "models")
    save_json(out / "models_field_error_by_t.json", model_rows)
    save_json(out / "training.json", training)
    summary = _tables(cfg, rows, model_rows)
    (out / "summary.md").write_text(summary)
    print("\n" + summary)
    print(f"full tables: {out / 'results.md'}, {out / 'models.md'} (also .csv, .json); figures: {', '.join(paths)}")
    return {"rows": rows, "models": model_rows, "training": training, "figures": paths}


def main(argv=None) -> dict:
    """Parse ``argv`` (preset and ``--field value`` overrides), validate, then :func:`run`.

    Raises :class:`experiments.common.ConfigError` for an invalid configuration before
    anything is trained or written.
    """
    from experiments.ablation.config import PRESETS
    from experiments.common import parse_config, run_dir

    cfg, args = parse_config(AblationConfig, PRESETS, argv, description=AblationConfig.__doc__)
    out = run_dir(args.out, f"ablation-{args.preset}")
    return run(cfg, out, args.preset)
