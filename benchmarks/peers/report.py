"""A case of the peer benchmark (runners timed together) and the Markdown table of its results.

The targets the ratios are judged against live in ``benchmarks/README.md``, not here.
"""
from __future__ import annotations

import dataclasses

from benchmarks.harness import Runner, quartiles

PEERS = ("flow_matching", "torchcfm")


@dataclasses.dataclass
class Case:
    """Runners that do the same work, timed interleaved; ``flops`` of one unit (step, point)
    from XLA's cost analysis of jflow's program (the peers do the same math); ``notes`` say
    what was checked and chosen for this case."""

    label: str
    runners: list[Runner]
    flops: float
    notes: list[str] = dataclasses.field(default_factory=list)


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _ratios(run: Runner, peers: dict) -> list[str]:
    """``median [IQR]`` of the per-repeat ratios of a jflow runner over each peer."""
    cells = []
    for lib in PEERS:
        if run.lib != "jflow" or lib not in peers:
            cells.append("")
            continue
        p1, pm, p3 = quartiles([a / b for a, b in zip(run.rates, peers[lib].rates)])
        cells.append(f"{pm:.2f}x [{p1:.2f}-{p3:.2f}]")
    return cells


def table(cases: list[Case], peak: float) -> str:
    """One row per runner: median rate, IQR, ratios jflow / peer, GFLOP/s and % of ``peak`` FLOP/s."""
    lines = [
        "| case | runner | median | IQR | / flow_matching | / torchcfm | GFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        peers = {r.lib: r for r in case.runners if r.lib != "jflow"}
        for run in case.runners:
            q1, med, q3 = quartiles(run.rates)
            gflops = med * case.flops / 1e9 if case.flops else None
            rate = "" if gflops is None else f"{gflops:.1f} | {100 * gflops * 1e9 / peak:.0f}%"
            ratios = " | ".join(_ratios(run, peers))
            lines.append(f"| {case.label} | {run.name} | {_fmt(med)} {run.unit} | {_fmt(q1)}-{_fmt(q3)} | "
                         f"{ratios} | {rate or ' | '} |")
    return "\n".join(lines)


def best_ratios(cases: list[Case]) -> str:
    """Per case and peer, the best jflow runner's median ratio (fused steps count): the figure the
    README's targets are about."""
    lines = ["| case | peer | best jflow / peer |", "|---|---|---:|"]
    for case in cases:
        peers = {r.lib: r for r in case.runners if r.lib != "jflow"}
        for lib in PEERS:
            if lib not in peers:
                continue
            best = max(quartiles([a / b for a, b in zip(r.rates, peers[lib].rates)])[1]
                       for r in case.runners if r.lib == "jflow")
            lines.append(f"| {case.label} | {lib} | {best:.2f}x |")
    return "\n".join(lines)
